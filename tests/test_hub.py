"""hf:// checkpoints through huggingface_hub's real download code, against a local HTTP server
that answers like the Hub (resolve endpoint with ETag / X-Repo-Commit, model-info API)."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch

from vsegcli import api
from vsegcli.checkpoints import CheckpointMeta, save_checkpoint
from vsegcli.errors import VsegError
from vsegcli.checkpoints.hub import parse_hub_spec, resolve_checkpoint
from vsegcli.data.labels import get_label_set
from vsegcli.models import build_model

pytest.importorskip("huggingface_hub", reason="the optional hub extra (huggingface_hub) is not installed")

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo: str, files: dict[str, bytes]) -> None:
        self.repo, self.files, self.requests = repo, files, []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _send(self, body: bytes | None, head: bool, extra: dict[str, str] | None = None) -> None:
                hub.requests.append((self.command, self.path))
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head: bool) -> None:
                info = f"/api/models/{hub.repo}/revision/"
                tree = f"/api/models/{hub.repo}/tree/"
                resolve = f"/{hub.repo}/resolve/"
                if self.path.startswith(tree):  # file listing used by snapshot downloads
                    body = json.dumps([{"type": "file", "path": n, "size": len(b),
                                        "oid": hashlib.sha1(b).hexdigest()} for n, b in hub.files.items()]).encode()
                    return self._send(body, head, {"Content-Type": "application/json"})
                if self.path.startswith(info):
                    body = json.dumps({"id": hub.repo, "sha": COMMIT,
                                       "siblings": [{"rfilename": n} for n in hub.files]}).encode()
                    return self._send(body, head, {"Content-Type": "application/json"})
                if self.path.startswith(resolve):
                    name = self.path[len(resolve):].split("/", 1)[1].split("?")[0]
                    body = hub.files.get(name)
                    etag = hashlib.sha256(body).hexdigest() if body is not None else ""
                    return self._send(body, head, {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT})
                return self._send(None, head)

            def do_HEAD(self) -> None:
                self._route(head=True)

            def do_GET(self) -> None:
                self._route(head=False)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture()
def native_bytes(tmp_path) -> bytes:
    torch.manual_seed(0)
    model = build_model("segformer-b0", 11)
    meta = CheckpointMeta.from_model(model, label_set=get_label_set("camvid"), input_size=64)
    return save_checkpoint(model, meta, tmp_path / "w.safetensors", half=True).read_bytes()


@pytest.fixture()
def hub_env(monkeypatch, tmp_path):
    def start(repo: str, files: dict[str, bytes]) -> FakeHub:
        hub = FakeHub(repo, files)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        return hub

    yield start


def test_parse_hub_spec():
    assert parse_hub_spec("hf://a/b") == ("a/b", None, None)
    assert parse_hub_spec("hf://a/b@v1/x/y.safetensors") == ("a/b", "v1", "x/y.safetensors")
    with pytest.raises(VsegError):
        parse_hub_spec("hf://onlyowner")
    assert resolve_checkpoint("local/file.pth") == Path("local/file.pth")


def test_file_download_and_load(hub_env, native_bytes):
    hub = hub_env("vseg/weights", {"small.safetensors": native_bytes})
    seg = api.load("hf://vseg/weights/small.safetensors", device="cpu")
    assert seg.info.architecture == "segformer-b0" and seg.info.num_classes == 11
    local = Path(seg.info.checkpoint)
    assert local.read_bytes() == native_bytes and "hf_home" in str(local)
    assert any(path.endswith("/resolve/main/small.safetensors") for _, path in hub.requests)


def test_folder_download(hub_env, native_bytes):
    hub_env("vseg/folder", {"model.safetensors": native_bytes, "README.md": b"card"})
    folder = resolve_checkpoint("hf://vseg/folder")
    assert folder.is_dir() and (folder / "model.safetensors").read_bytes() == native_bytes
    assert not (folder / "README.md").exists()  # only weights and configs are fetched


def test_missing_file_is_a_clear_error(hub_env, native_bytes):
    hub_env("vseg/weights", {"small.safetensors": native_bytes})
    with pytest.raises(VsegError, match="hub download failed|not in the local cache"):
        resolve_checkpoint("hf://vseg/weights/absent.safetensors")


def test_unknown_repo_is_a_clear_error(hub_env, native_bytes):
    hub_env("vseg/weights", {"small.safetensors": native_bytes})
    with pytest.raises(VsegError, match="hf://someone/else"):
        resolve_checkpoint("hf://someone/else/small.safetensors")


def test_offline_uses_the_cache_and_says_when_it_cannot(hub_env, native_bytes, monkeypatch):
    import huggingface_hub.constants as c

    hub = hub_env("vseg/weights", {"small.safetensors": native_bytes})
    first = resolve_checkpoint("hf://vseg/weights/small.safetensors")
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    n = len(hub.requests)
    assert resolve_checkpoint("hf://vseg/weights/small.safetensors") == first  # served from the cache
    assert len(hub.requests) == n  # without touching the network
    with pytest.raises(VsegError, match="not in the local cache"):
        resolve_checkpoint("hf://vseg/weights/other.safetensors")


def _cli(*args: str):
    from click.testing import CliRunner

    from vsegcli.cli.main import cli

    return CliRunner().invoke(cli, list(args))


def test_convert_from_the_hub_keeps_the_url_intact(hub_env, native_bytes, tmp_path):
    """`vseg convert hf://owner/repo/file out` resolves owner/repo (pathlib would make it
    'hf:/owner/...') and its messages show the URL as typed."""
    hub = hub_env("vseg/weights", {"small.safetensors": native_bytes})
    out = tmp_path / "out.safetensors"
    r = _cli("convert", "hf://vseg/weights/small.safetensors", str(out))
    assert r.exit_code == 0, r.output
    assert any(p.startswith("/vseg/weights/resolve/main/small.safetensors") for _, p in hub.requests)
    seg = api.load(out, device="cpu")
    assert seg.info.architecture == "segformer-b0" and seg.info.num_classes == 11

    r = _cli("convert", "hf://someone/else/x.safetensors", str(tmp_path / "y.safetensors"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, r.output
    assert "hf://someone/else/x.safetensors" in lines[0] and "hf:/someone" not in lines[0].replace("hf://", "")


def test_every_entry_point_hands_owner_repo_to_the_hub(monkeypatch, native_bytes, tmp_path, tiny_video):
    """load_checkpoint, convert and run -c give huggingface_hub 'owner/repo' and the file name."""
    import huggingface_hub

    local = tmp_path / "cache" / "small.safetensors"
    local.parent.mkdir()
    local.write_bytes(native_bytes)
    calls = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        return str(local)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    from vsegcli.checkpoints import load_checkpoint

    assert load_checkpoint("hf://own/repo@v2/sub/small.safetensors").meta.num_classes == 11
    assert _cli("convert", "hf://own/repo/small.safetensors", str(tmp_path / "c.safetensors")).exit_code == 0
    r = _cli("run", str(tiny_video), "-c", "hf://own/repo/small.safetensors", "--max-frames", "2",
             "-o", str(tmp_path / "o.mp4"), "--quiet")
    assert r.exit_code == 0, r.output
    assert calls == [("own/repo", "sub/small.safetensors", "v2"), ("own/repo", "small.safetensors", None),
                     ("own/repo", "small.safetensors", None)]
