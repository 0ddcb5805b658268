"""Checkpoints from the Hugging Face Hub: `hf://owner/repo[@revision][/path/in/repo]`.

    hf://nvidia/segformer-b0-finetuned-cityscapes-1024-1024      a whole HF model folder
    hf://someone/vseg-weights@v1/stt-effl0-camvid.safetensors    one file at a revision

Files are cached by huggingface_hub (HF_HOME, HF_HUB_OFFLINE=1 for cached-only use; HF_ENDPOINT
for a mirror). Needs the optional `hub` extra: `pip install "vseg[hub]"`.
"""
from __future__ import annotations

import os
from pathlib import Path

from vsegcli.errors import VsegError

PREFIX = "hf://"
# What a model folder needs: weights in either format plus the configs naming classes/architecture.
FOLDER_PATTERNS = ["*.json", "*.safetensors", "*.bin", "*.pth"]


def is_hub_spec(spec: object) -> bool:
    """Whether `spec` is an hf:// string (a Path never is: pathlib turns 'hf://a' into 'hf:/a')."""
    return isinstance(spec, str) and spec.startswith(PREFIX)


def parse_hub_spec(spec: str) -> tuple[str, str | None, str | None]:
    """'hf://owner/repo@rev/a/b.safetensors' -> ('owner/repo', 'rev', 'a/b.safetensors')."""
    parts = spec[len(PREFIX):].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise VsegError(f"{spec!r} is not a hub checkpoint: use hf://owner/repo[@revision][/file]")
    owner, repo = parts[0], parts[1]
    revision = None
    if "@" in repo:
        repo, revision = repo.split("@", 1)
    filename = "/".join(parts[2:]) or None
    return f"{owner}/{repo}", revision, filename


def download(spec: str) -> Path:
    """Download (or find in the cache) a hub checkpoint; return the local file or folder."""
    repo_id, revision, filename = parse_hub_spec(spec)
    try:
        import huggingface_hub
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError as exc:
        raise VsegError(f"{spec}: downloading from the Hugging Face Hub needs `pip install \"vseg[hub]\"`") from exc
    # Read the endpoint and cache from the environment now, not at huggingface_hub's import time.
    where = {"endpoint": os.environ.get("HF_ENDPOINT") or None, "cache_dir": os.environ.get("HF_HUB_CACHE") or None}
    try:
        if filename:
            return Path(huggingface_hub.hf_hub_download(repo_id, filename, revision=revision, **where))
        return Path(huggingface_hub.snapshot_download(repo_id, revision=revision, allow_patterns=FOLDER_PATTERNS,
                                                      **where))
    except LocalEntryNotFoundError as exc:
        raise VsegError(f"{spec}: not in the local cache and the hub is unreachable (offline?): {_first_line(exc)}") from exc
    except HfHubHTTPError as exc:
        raise VsegError(f"{spec}: hub download failed: {_first_line(exc)}") from exc
    except OSError as exc:  # connection refused, DNS, disk full
        raise VsegError(f"{spec}: hub download failed: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """huggingface_hub's messages run over several lines; the CLI prints one."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def resolve_checkpoint(spec: str | os.PathLike) -> Path:
    """A local path as is; an hf:// spec (a string: never a Path, which collapses '//') downloaded
    to the cache first."""
    if is_hub_spec(spec):
        return download(spec)  # type: ignore[arg-type]
    return Path(spec)
