"""Reading checkpoint files safely: safetensors, PyTorch pickles, Hugging Face folders and shards.

A checkpoint is data, never code: pickles are read with `torch.load(weights_only=True)` (plus a
few numpy constructors that only rebuild data), and a pickle that references anything else is
refused with a message that says how to clean it. Nothing here renames keys or builds a model.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vsegcli.checkpoints.format import META_KEY, decode_header
from vsegcli.errors import VsegError

__all__ = ["HF_FILES", "RawCheckpoint", "read_raw", "read_state_dict"]

# What a Hugging Face model folder holds its weights in, in order of preference.
HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


@dataclass
class RawCheckpoint:
    """Tensors under their stored names plus whatever metadata travelled with them."""

    tensors: dict[str, Tensor]
    container: str  # 'safetensors' | 'pickle'
    header: dict[str, str] | None = None  # safetensors header metadata
    wrapper_meta: dict[str, Any] | None = None  # mmcv wrapper 'meta'
    hf_config: dict[str, Any] | None = None  # config.json beside HF weights
    hf_preprocessor: dict[str, Any] | None = None
    files: list[Path] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """Tensors of a checkpoint file (or Hugging Face folder) under their stored names, plus the
    metadata that travels with them: the decoded native `vseg` header, else the mmcv wrapper's
    `meta`, else a Hugging Face `config.json`, else the raw safetensors header (or None)."""
    raw = read_raw(Path(path))
    if raw.header and META_KEY in raw.header:
        return raw.tensors, decode_header(raw.header, Path(path))
    meta = raw.wrapper_meta or raw.hf_config or raw.header or None
    return raw.tensors, meta


def read_raw(path: Path) -> RawCheckpoint:
    """A checkpoint file or Hugging Face folder (one file or all its shards), read safely."""
    if not path.exists():
        raise VsegError(f"checkpoint {path} does not exist; check the path")
    hf_config = hf_pre = None
    if path.is_dir():
        files = _hf_weight_files(path)
        folder = path
    else:
        files = [path]
        folder = path.parent
    if files[0].name in HF_FILES or path.is_dir():
        hf_config = _read_json(folder / "config.json")
        hf_pre = _read_json(folder / "preprocessor_config.json")
        if files[0].name.endswith(".index.json"):
            files = _hf_shards(files[0])

    raws = [_read_file(f) for f in files]
    raw = raws[0]
    for extra in raws[1:]:
        raw.tensors.update(extra.tensors)
    raw.hf_config, raw.hf_preprocessor, raw.files = hf_config, hf_pre, files
    return raw


def _hf_weight_files(folder: Path) -> list[Path]:
    for name in HF_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise VsegError(
        f"{folder} is a folder without model weights; expected one of {', '.join(HF_FILES)} "
        "(a Hugging Face model folder) or give the checkpoint file itself"
    )


def _hf_shards(index: Path) -> list[Path]:
    data = _read_json(index)
    if not data or not isinstance(data.get("weight_map"), dict):
        raise VsegError(f"{index} is not a valid shard index; re-download the model folder")
    shards = sorted(set(data["weight_map"].values()))
    paths = [index.parent / s for s in shards]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise VsegError(f"{index.parent} lacks shard files {', '.join(missing[:3])}; re-download the model folder")
    return paths


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise VsegError(f"{path} is not valid JSON ({e}); fix or remove it") from None
    return data if isinstance(data, dict) else None


def _sniff(path: Path) -> str | None:
    """'safetensors', 'torch-zip', 'torch-legacy', 'pickle' or None, from the first bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise VsegError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    # torch.save's legacy format starts with the pickled magic number 0x1950a86a20f9469cfc6c
    if head[:4] == b"\x80\x02\x8a\x0a" and head[4:14] == (0x1950A86A20F9469CFC6C).to_bytes(10, "little"):
        return "torch-legacy"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    return None


def _read_file(path: Path) -> RawCheckpoint:
    kind = _sniff(path)
    if kind is None:
        raise VsegError(
            f"{path} is not a checkpoint (neither safetensors nor a PyTorch file); "
            "give a .safetensors, .pth/.pt or pytorch_model.bin file"
        )
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_pickle(path, kind)


def _read_safetensors(path: Path) -> RawCheckpoint:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, Exception) as e:  # noqa: BLE001 - any parse failure: a damaged file
        raise VsegError(f"{path} is not a checkpoint (damaged safetensors file: {e}); re-download or re-export it") from None
    return RawCheckpoint(tensors, "safetensors", header=header or None)


def _numpy_data_globals() -> list[Any]:
    """numpy constructors that only rebuild data (scalars, arrays, dtypes): mmcv `meta` entries
    sometimes hold numpy numbers. They are allowlisted for the restricted unpickler; nothing
    else is."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return []
    try:
        mod = np._core.multiarray  # numpy >= 2
    except AttributeError:  # pragma: no cover - numpy 1.x
        mod = np.core.multiarray
    allowed: list[Any] = [np.ndarray, np.dtype, mod.scalar, mod._reconstruct]
    # Files written with numpy 1.x name the same functions under numpy.core.
    allowed += [(mod.scalar, "numpy.core.multiarray.scalar"), (mod._reconstruct, "numpy.core.multiarray._reconstruct")]
    for code in "?bBhHiIlLqQefdgFDGUSV":
        allowed.append(type(np.dtype(code)))
    return allowed


def _read_pickle(path: Path, kind: str) -> RawCheckpoint:
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch noise, not ours
            # An open file, not the path: torch.load dispatches on the name (a `.safetensors`
            # suffix goes to safetensors whatever the bytes are); `_sniff` already read them.
            with open(path, "rb") as fh:
                obj = torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refs = sorted(set(re.findall(r"GLOBAL ([\w.]+)", str(e))))
        if refs or kind in ("torch-zip", "torch-legacy") or _pickle_calls_code(path):
            what = f" (references {', '.join(refs[:3])})" if refs else ""
            raise VsegError(
                f"vseg refuses to load {path}: it contains code or non-data objects{what}; only tensors and "
                "plain containers are loaded; convert it in a trusted environment, e.g. "
                "torch.save({'state_dict': ckpt['state_dict']}, 'clean.pth')"
            ) from None
        raise VsegError(f"{path} is not a checkpoint (a pickle that torch.save did not write); give a .pth/.safetensors file") from None
    except Exception as e:  # noqa: BLE001 - any failure to parse untrusted bytes means a damaged file
        msg = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise VsegError(f"{path} is not a checkpoint (damaged or truncated PyTorch file: {msg[:120]}); re-download it") from None

    tensors, meta = _state_dict_in(obj, path)
    return RawCheckpoint(tensors, "pickle", wrapper_meta=meta)


def _pickle_calls_code(path: Path) -> bool:
    """Whether a plain pickle imports or calls anything, read opcode by opcode (never executed)."""
    import pickletools

    calls = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
    try:
        with open(path, "rb") as f:
            return any(op.name in calls for op, _, _ in pickletools.genops(f))
    except Exception:  # malformed stream: not a pickle we could judge
        return False


def _state_dict_in(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
    """State dict and mmcv `meta` from a loaded pickle: a bare state dict or a wrapper."""
    if not isinstance(obj, dict):
        raise VsegError(f"{path} holds a {type(obj).__name__}, not a state dict; save model.state_dict() instead")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else None
    sd: Any = obj
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            sd = obj[key]
            break
    tensors = {str(k): v for k, v in sd.items() if isinstance(v, Tensor)}
    if not tensors:
        raise VsegError(f"{path} contains no weights (no tensors under 'state_dict' or at the top level)")
    return tensors, meta
