"""Checkpoints: one native format, importers for foreign layouts, architecture detection.

Native format: a single `.safetensors` file. Tensors carry the model's own state-dict names
(the NVlabs/mmseg names for SegFormer and MRCFA); the header metadata holds one JSON entry,
`"vseg"`, with everything needed to rebuild and run the model (architecture + options, class
names, palette, normalisation, input size, provenance). fp16 files are allowed to ship small
weights; loading always gives an fp32 model on the CPU.

Importers (each ends in native names and a strict load):
* Hugging Face `SegformerForSemanticSegmentation`: `model.safetensors` / `pytorch_model.bin`
  (or their folder, whose `config.json` gives class names and confirms the architecture).
* NVlabs SegFormer / mmseg 0.x: `.pth` with or without the mmcv `{'meta', 'state_dict',
  'optimizer'}` wrapper and with or without a DDP `module.` prefix.
* Official MRCFA: the same mmcv wrapper; `meta['CLASSES']` / `meta['PALETTE']` when present.

A checkpoint is data, never code: pickles are read with `torch.load(weights_only=True)`, and a
pickle that references anything but tensors and plain containers is refused.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import struct
import warnings
import zipfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write_bytes
from vsegcli.data.labels import LABEL_SET_NAMES, LabelSet, generic_label_set, get_label_set, label_set_for
from vsegcli.models.base import Segmentor

FORMAT_VERSION = 1
META_KEY = "vseg"
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]

# Keys of official checkpoints that no vseg model uses at inference time (dropped and reported
# when the model has no such parameter): the base decode head's unused `conv_seg`, and MRCFA's
# training-only auxiliary decoders deco1..deco3.
_IGNORABLE = re.compile(r"^decode_head\.(conv_seg|deco[123])\.")

_HF_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


# --------------------------------------------------------------------------------------------
# Metadata


@dataclass
class CheckpointMeta:
    architecture: str
    arch_options: dict[str, Any]
    num_classes: int
    classes: list[str]
    palette: list[list[int]]
    label_set: str | None = None
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    input_size: int | None = None  # inference short side
    ignore_index: int = 255
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model(
        cls,
        model: Segmentor,
        label_set: LabelSet | None = None,
        input_size: int | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> CheckpointMeta:
        """Metadata for a model built by `build_model`; names/colours from `label_set` or the
        standard set with the model's class count."""
        if not model.arch_name:
            raise ValueError("model has no arch_name: build it with vsegcli.models.build_model")
        ls = label_set if label_set is not None else label_set_for(model.num_classes)
        if ls.num_classes != model.num_classes:
            raise VsegError(
                f"label set {ls.name!r} has {ls.num_classes} classes but the model predicts "
                f"{model.num_classes}; pick a label set with {model.num_classes} classes"
            )
        return cls(
            architecture=model.arch_name,
            arch_options=_jsonable(dict(model.arch_options)),
            num_classes=model.num_classes,
            classes=list(ls.classes),
            palette=[list(map(int, c)) for c in ls.palette],
            label_set=_label_set_name(ls),
            input_size=input_size,
            ignore_index=ls.ignore_index,
            provenance=_jsonable(dict(provenance or {})),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointMeta:
        version = data.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise VsegError(
                f"checkpoint format version {version} is newer than this vseg understands "
                f"({FORMAT_VERSION}); upgrade vseg"
            )
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}  # unknown keys: newer minor additions
        for required in ("architecture", "num_classes"):
            if required not in kwargs:
                raise VsegError(f"checkpoint metadata lacks {required!r}; re-create the file with `vseg convert`")
        k = kwargs["num_classes"]
        if not isinstance(k, int) or k <= 0:
            raise VsegError(f"checkpoint metadata has an invalid num_classes {k!r}; re-create it with `vseg convert`")
        kwargs.setdefault("arch_options", {})
        if "classes" not in kwargs or "palette" not in kwargs:
            ls = _standard_label_set(k, kwargs.get("label_set"))
            kwargs.setdefault("classes", list(ls.classes))
            kwargs.setdefault("palette", [list(c) for c in ls.palette])
        meta = cls(**kwargs)
        meta.validate()
        return meta

    def validate(self) -> None:
        """Raise VsegError when the fields contradict each other."""
        k = self.num_classes
        if len(self.classes) != k:
            raise VsegError(f"metadata lists {len(self.classes)} class names for a {k}-class model; give exactly {k} names")
        try:
            rgb_ok = len(self.palette) == k and all(
                len(c) == 3 and all(0 <= int(v) <= 255 for v in c) for c in self.palette
            )
            mean, std = [float(v) for v in self.mean], [float(v) for v in self.std]
            norm_ok = len(mean) == 3 and len(std) == 3 and min(std) > 0
        except (TypeError, ValueError):
            rgb_ok = norm_ok = False
        if not rgb_ok:
            raise VsegError(f"metadata palette must be {k} RGB triples of integers 0..255")
        if not norm_ok:
            raise VsegError("metadata mean/std must be three RGB numbers each (0-255 scale), std > 0")
        if self.input_size is not None and (not isinstance(self.input_size, int) or self.input_size <= 0):
            raise VsegError(f"metadata input_size must be a positive integer, got {self.input_size!r}")

    def to_label_set(self) -> LabelSet:
        """The label set these outputs mean: the standard one (with its raw-id maps) when the
        names match it, else one built from the stored names and colours."""
        if self.label_set in LABEL_SET_NAMES:
            std = get_label_set(self.label_set)
            if list(std.classes) == list(self.classes):
                return std
        return LabelSet(
            self.label_set or "custom",
            tuple(self.classes),
            tuple(tuple(int(v) for v in c) for c in self.palette),
            ignore_index=self.ignore_index,
        )


@dataclass
class LoadedCheckpoint:
    model: Segmentor  # eval mode, fp32, CPU
    meta: CheckpointMeta
    source_format: str  # 'vseg' | 'huggingface' | 'mmseg' | 'mrcfa'
    ignored_keys: list[str]
    path: Path

    @property
    def label_set(self) -> LabelSet:
        return self.meta.to_label_set()


# --------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(model: Segmentor, meta: CheckpointMeta, path: str | os.PathLike, half: bool = False) -> Path:
    """Write `model` + `meta` as a native `.safetensors` file, atomically (temp name + rename).

    `half=True` stores floating-point tensors as fp16 (tensors outside fp16 range stay fp32);
    integer buffers keep their dtype.
    """
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise VsegError(f"native checkpoints are .safetensors files; name the output {path.with_suffix('.safetensors').name}")
    if path.is_dir():
        raise VsegError(f"{path} is a folder; give a file name ending in .safetensors")
    if model.arch_name and meta.architecture != model.arch_name:
        raise VsegError(f"metadata says {meta.architecture!r} but the model is {model.arch_name!r}")
    if meta.num_classes != model.num_classes:
        raise VsegError(f"metadata says {meta.num_classes} classes but the model predicts {model.num_classes}")
    meta.validate()

    fp16_max = torch.finfo(torch.float16).max
    tensors: dict[str, Tensor] = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.float()
            if half and (t.numel() == 0 or float(t.abs().max()) <= fp16_max):
                t = t.half()
        tensors[name] = t.contiguous().clone()  # clone: safetensors refuses shared storage
    header = {META_KEY: json.dumps(_jsonable(meta.to_dict())), "format": "pt"}
    data = st_save(tensors, metadata=header)

    return atomic_write_bytes(path, data, durable=True)


# --------------------------------------------------------------------------------------------
# Reading raw files (safely)


@dataclass
class _Raw:
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
    raw = _read_raw(Path(path))
    if raw.header and META_KEY in raw.header:
        return raw.tensors, _decode_header(raw.header, Path(path))
    meta = raw.wrapper_meta or raw.hf_config or raw.header or None
    return raw.tensors, meta


def _read_raw(path: Path) -> _Raw:
    if not path.exists():
        raise VsegError(f"checkpoint {path} does not exist; check the path")
    hf_config = hf_pre = None
    if path.is_dir():
        files = _hf_weight_files(path)
        folder = path
    else:
        files = [path]
        folder = path.parent
    if files[0].name in _HF_FILES or path.is_dir():
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
    for name in _HF_FILES:
        if (folder / name).is_file():
            return [folder / name]
    raise VsegError(
        f"{folder} is a folder without model weights; expected one of {', '.join(_HF_FILES)} "
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
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
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


def _read_file(path: Path) -> _Raw:
    kind = _sniff(path)
    if kind is None:
        raise VsegError(
            f"{path} is not a checkpoint (neither safetensors nor a PyTorch file); "
            "give a .safetensors, .pth/.pt or pytorch_model.bin file"
        )
    if kind == "safetensors":
        return _read_safetensors(path)
    return _read_pickle(path, kind)


def _read_safetensors(path: Path) -> _Raw:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise VsegError(f"{path} is not a checkpoint (damaged safetensors file: {e}); re-download or re-export it") from None
    return _Raw(tensors, "safetensors", header=header or None)


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


def _read_pickle(path: Path, kind: str) -> _Raw:
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # torch noise, not ours
            obj = torch.load(path, map_location="cpu", weights_only=True)
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
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, zipfile.BadZipFile, struct.error) as e:
        msg = str(e).splitlines()[0].split(". ")[0] if str(e) else type(e).__name__
        raise VsegError(f"{path} is not a checkpoint (damaged or truncated PyTorch file: {msg[:120]}); re-download it") from None

    tensors, meta = _unwrap(obj, path)
    return _Raw(tensors, "pickle", wrapper_meta=meta)


def _pickle_calls_code(path: Path) -> bool:
    """Whether a plain pickle imports or calls anything, read opcode by opcode (never executed)."""
    import pickletools

    calls = {"GLOBAL", "STACK_GLOBAL", "INST", "OBJ", "REDUCE", "NEWOBJ", "NEWOBJ_EX"}
    try:
        with open(path, "rb") as f:
            return any(op.name in calls for op, _, _ in pickletools.genops(f))
    except Exception:  # malformed stream: not a pickle we could judge
        return False


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Any] | None]:
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


def _decode_header(header: dict[str, str], path: Path) -> dict[str, Any]:
    try:
        data = json.loads(header[META_KEY])
    except ValueError:
        raise VsegError(f"{path} has damaged vseg metadata; re-create it with `vseg convert`") from None
    if not isinstance(data, dict):
        raise VsegError(f"{path} has damaged vseg metadata; re-create it with `vseg convert`")
    return data


# --------------------------------------------------------------------------------------------
# Foreign names -> native names


# (pattern, replacement) applied to Hugging Face names. Two spellings: the Hub/saved layout
# (`segformer.encoder.block.0.0.attention.self.query`) and transformers>=5's in-memory layout
# (`segformer.stages.0.blocks.0.attention.q_proj`, seen in torch.save(model.state_dict())).
# `key`/`value` go to temporary `kv#k`/`kv#v` names that are concatenated afterwards.
_HF_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p), r) for p, r in [
        # saved (Hub) layout
        (r"^segformer\.encoder\.patch_embeddings\.(\d)\.proj\.", r"backbone.patch_embed{\1}.proj."),
        (r"^segformer\.encoder\.patch_embeddings\.(\d)\.layer_norm\.", r"backbone.patch_embed{\1}.norm."),
        (r"^segformer\.encoder\.layer_norm\.(\d)\.", r"backbone.norm{\1}."),
        (r"^segformer\.encoder\.block\.(\d)\.(\d+)\.", r"backbone.block{\1}.\2."),
        # in-memory layout of transformers >= 5
        (r"^segformer\.stages\.(\d)\.patch_embeddings\.proj\.", r"backbone.patch_embed{\1}.proj."),
        (r"^segformer\.stages\.(\d)\.patch_embeddings\.layer_norm\.", r"backbone.patch_embed{\1}.norm."),
        (r"^segformer\.stages\.(\d)\.layer_norm\.", r"backbone.norm{\1}."),
        (r"^segformer\.stages\.(\d)\.blocks\.(\d+)\.", r"backbone.block{\1}.\2."),
        # inside a block (both layouts)
        (r"\.layer_norm_1\.|\.layernorm_before\.", ".norm1."),
        (r"\.layer_norm_2\.|\.layernorm_after\.", ".norm2."),
        (r"\.attention\.self\.query\.|\.attention\.q_proj\.", ".attn.q."),
        (r"\.attention\.self\.key\.|\.attention\.k_proj\.", ".attn.kv#k."),
        (r"\.attention\.self\.value\.|\.attention\.v_proj\.", ".attn.kv#v."),
        (r"\.attention\.self\.sr\.|\.attention\.sequence_reduction\.sequence_reduction\.", ".attn.sr."),
        (r"\.attention\.self\.layer_norm\.|\.attention\.sequence_reduction\.layer_norm\.", ".attn.norm."),
        (r"\.attention\.output\.dense\.|\.attention\.o_proj\.", ".attn.proj."),
        (r"\.mlp\.dense1\.", ".mlp.fc1."),
        (r"\.mlp\.dense2\.", ".mlp.fc2."),
        # decode head
        (r"^decode_head\.(?:linear_c|linear_projections)\.(\d)\.proj\.", r"decode_head.linear_c{\1}.proj."),
        (r"^decode_head\.linear_fuse\.weight$", "decode_head.linear_fuse.conv.weight"),
        (r"^decode_head\.batch_norm\.", "decode_head.linear_fuse.bn."),
        (r"^decode_head\.classifier\.", "decode_head.linear_pred."),
    ]
]
_STAGE_PLACEHOLDER = re.compile(r"\{(\d)\}")


def _is_hf_layout(keys: list[str]) -> bool:
    return any(
        k.startswith(("segformer.", "decode_head.classifier.", "decode_head.batch_norm.", "decode_head.linear_c."))
        for k in keys
    )


def _hf_to_native(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, t in sd.items():
        new = key
        for pat, rep in _HF_RULES:
            new = pat.sub(rep, new)
        # HF numbers stages/projections from 0, NVlabs from 1.
        new = _STAGE_PLACEHOLDER.sub(lambda m: str(int(m.group(1)) + 1), new)
        out[new] = t
    # Key rows then value rows make NVlabs' fused `kv` projection.
    for k_name in [k for k in out if ".attn.kv#k." in k]:
        v_name = k_name.replace(".attn.kv#k.", ".attn.kv#v.")
        if v_name in out:
            out[k_name.replace(".attn.kv#k.", ".attn.kv.")] = torch.cat([out.pop(k_name), out.pop(v_name)], 0)
    return out


def _normalise(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Native names for any supported layout; also says whether it was the HF layout."""
    keys = list(sd)
    if keys and all(k.startswith("module.") for k in keys):  # saved from a DDP wrapper
        sd = {k[len("module."):]: v for k, v in sd.items()}
        keys = list(sd)
    if _is_hf_layout(keys):
        return _hf_to_native(sd), True
    return dict(sd), False


# --------------------------------------------------------------------------------------------
# Architecture detection


_STAGE_BLOCK = re.compile(r"^backbone\.block([1-4])\.(\d+)\.")


def detect_architecture(state_dict: dict[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """Architecture name and build options of a SegFormer / MRCFA state dict (NVlabs, mmseg or
    Hugging Face names), from its key names and shapes."""
    from vsegcli.models.backbones.mit import MIT_CONFIGS

    sd, _ = _normalise(state_dict)
    keys = list(sd)
    if any(k.startswith("decode_head.decoder_focal.") for k in keys):
        raise VsegError("this is a CFFM checkpoint; vseg runs MRCFA and SegFormer checkpoints, not CFFM")
    if "backbone.patch_embed1.proj.weight" not in sd:
        if "patch_embed1.proj.weight" in sd:
            raise VsegError(
                "these are ImageNet MiT backbone weights without a segmentation head; use them as "
                "pretrained weights for `vseg train`, not as a segmentation checkpoint"
            )
        raise VsegError(
            "cannot tell the architecture from the weights (no SegFormer/MRCFA backbone keys); "
            "pass the architecture (--arch), e.g. one listed by `vseg models`"
        )
    dims = []
    for s in range(1, 5):
        w = sd.get(f"backbone.patch_embed{s}.proj.weight")
        if w is None:
            raise VsegError(f"checkpoint lacks backbone.patch_embed{s}.proj.weight; the file is incomplete")
        dims.append(int(w.shape[0]))
    blocks: dict[int, set[int]] = {s: set() for s in range(1, 5)}
    for k in keys:
        m = _STAGE_BLOCK.match(k)
        if m:
            blocks[int(m.group(1))].add(int(m.group(2)))
    depths = tuple(len(blocks[s]) for s in range(1, 5))
    variant = next(
        (v for v, c in MIT_CONFIGS.items() if tuple(c.embed_dims) == tuple(dims) and tuple(c.depths) == depths),
        None,
    )
    if variant is None:
        raise VsegError(
            f"backbone widths {dims} and depths {list(depths)} match no MiT-B0..B5 variant; "
            "vseg supports the standard SegFormer/MRCFA variants only"
        )
    if any(k.startswith("decode_head.hypercorre_module.") for k in keys):
        return f"mrcfa-{variant}", {"variant": variant}
    fuse = sd.get("decode_head.linear_fuse.conv.weight")
    if fuse is None or "decode_head.linear_pred.weight" not in sd:
        raise VsegError(
            f"the file has a MiT-{variant.upper()} backbone but no SegFormer decode head "
            "(decode_head.linear_fuse / linear_pred); encoder-only weights cannot segment, use them for `vseg train`"
        )
    return f"segformer-{variant}", {"variant": variant, "embed_dim": int(fuse.shape[0])}


def _num_classes_of(sd: dict[str, Tensor]) -> int | None:
    for key in ("decode_head.linear_pred.weight", "decode_head.deco4.smalldecoder.1.weight"):
        if key in sd:
            return int(sd[key].shape[0])
    return None


# --------------------------------------------------------------------------------------------
# Loading


def load_checkpoint(
    path: str | os.PathLike,
    architecture: str | None = None,
    num_classes: int | None = None,
) -> LoadedCheckpoint:
    """Load a native or foreign checkpoint into an fp32 CPU model in eval mode.

    `architecture` / `num_classes` are only needed when the file cannot tell (foreign files of
    non-SegFormer families); when given they must agree with the file.
    """
    from vsegcli.models.registry import build_model, get_architecture

    path = Path(path)
    raw = _read_raw(path)
    name = path.name or str(path)

    if raw.header and META_KEY in raw.header:
        meta = CheckpointMeta.from_dict(_decode_header(raw.header, path))
        if architecture is not None and architecture != meta.architecture:
            get_architecture(architecture)  # unknown names get suggestions first
            raise VsegError(f"{name} is a {meta.architecture} checkpoint, not {architecture}; drop --arch or pick another file")
        _check_class_count(name, meta.num_classes, num_classes)
        model = build_model(meta.architecture, meta.num_classes, **meta.arch_options)
        ignored = _load_strict(model, dict(raw.tensors), name)
        return LoadedCheckpoint(model.eval(), meta, "vseg", ignored, path)

    sd, from_hf = _normalise(raw.tensors)
    if architecture is not None:
        get_architecture(architecture)
        try:
            detected, options = detect_architecture(sd)
        except VsegError:
            detected, options = architecture, {}  # not a family detection knows: trust the caller
        if detected != architecture:
            raise VsegError(f"{name} looks like a {detected} checkpoint, not {architecture}; drop --arch or pick another file")
    else:
        architecture, options = detect_architecture(sd)

    k = _num_classes_of(sd)
    if k is None:
        if num_classes is None:
            raise VsegError(f"cannot tell the class count of {name}; pass the number of classes (--num-classes)")
        k = num_classes
    _check_class_count(name, k, num_classes)

    fmt = "huggingface" if from_hf else ("mrcfa" if architecture.startswith("mrcfa-") else "mmseg")
    if raw.hf_config is not None and from_hf:
        _check_hf_config(raw.hf_config, architecture, options, k, name)
    model = build_model(architecture, k, **options)
    ignored = _load_strict(model, sd, name)
    meta = _imported_meta(model, raw, fmt, path)
    return LoadedCheckpoint(model.eval(), meta, fmt, ignored, path)


def _check_class_count(name: str, have: int, want: int | None) -> None:
    if want is not None and want != have:
        raise VsegError(
            f"{name} predicts {have} classes but {want} were requested; drop --num-classes or use a "
            f"checkpoint trained for {want} classes"
        )


def _load_strict(model: Segmentor, sd: dict[str, Tensor], name: str) -> list[str]:
    """Strict load with readable errors; returns the known-unused keys that were dropped."""
    expected = model.state_dict()
    ignored = sorted(k for k in sd if k not in expected and _IGNORABLE.match(k))
    for k in ignored:
        del sd[k]
    missing = [k for k in expected if k not in sd]
    # BatchNorm step counters are absent from old checkpoints and do not affect inference.
    for k in [k for k in missing if k.endswith("num_batches_tracked")]:
        sd[k] = expected[k].clone()
        missing.remove(k)
    unexpected = [k for k in sd if k not in expected]
    arch = model.arch_name or type(model).__name__
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys ({_few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({_few(unexpected)})")
        raise VsegError(
            f"{name} does not fit {arch}: {' and '.join(parts)}; check that the file is a {arch} "
            "checkpoint or pass the right --arch"
        )
    bad = [k for k in expected if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise VsegError(
            f"{name} does not fit {arch}: {k} has shape {list(sd[k].shape)} in the file but "
            f"{list(expected[k].shape)} in the model{more}; check --arch and --num-classes"
        )
    for k, ref in expected.items():
        t = sd[k]
        if ref.is_floating_point():
            sd[k] = t.to(ref.dtype)  # fp16/bf16 files load as fp32
        elif t.dtype != ref.dtype:
            sd[k] = t.to(ref.dtype)
    model.load_state_dict(sd, strict=True)
    model.float()
    return ignored


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


def _check_hf_config(cfg: dict[str, Any], arch: str, options: dict[str, Any], k: int, name: str) -> None:
    """config.json must describe the same network as the weights (heads are invisible in them)."""
    from vsegcli.models.backbones.mit import MIT_CONFIGS

    model_type = cfg.get("model_type")
    if model_type not in (None, "segformer"):
        raise VsegError(f"{name}: config.json describes a {model_type!r} model, not SegFormer")
    mit = MIT_CONFIGS[options.get("variant", arch.rsplit("-", 1)[-1])]
    checks = [
        ("hidden_sizes", list(mit.embed_dims)),
        ("depths", list(mit.depths)),
        ("num_attention_heads", list(mit.num_heads)),
        ("sr_ratios", list(mit.sr_ratios)),
        ("mlp_ratios", [mit.mlp_ratio] * 4),
        ("patch_sizes", [7, 3, 3, 3]),
        ("strides", [4, 2, 2, 2]),
        ("hidden_act", "gelu"),
    ]
    if "embed_dim" in options:
        checks.append(("decoder_hidden_size", options["embed_dim"]))
    if isinstance(cfg.get("id2label"), dict):
        checks.append(("num_labels", k))
    for key, want in checks:
        have = len(cfg["id2label"]) if key == "num_labels" else cfg.get(key)
        if have is not None and have != want:
            raise VsegError(
                f"{name}: config.json says {key}={have} but the weights are a standard {arch} with "
                f"{key}={want}; vseg runs only the standard MiT-B0..B5 SegFormer configurations"
            )


def _imported_meta(model: Segmentor, raw: _Raw, fmt: str, path: Path) -> CheckpointMeta:
    k = model.num_classes
    names: list[str] | None = None
    palette: list[list[int]] | None = None
    provenance: dict[str, Any] = {"source": path.name, "source_format": fmt}

    wm = raw.wrapper_meta or {}
    if wm:
        names = _as_names(wm.get("CLASSES"), k)
        palette = _as_palette(wm.get("PALETTE"), k)
        for key in ("mmseg_version", "mmcv_version", "iter", "epoch", "time"):
            if key in wm:
                provenance[key] = wm[key]
    cfg = raw.hf_config or {}
    if cfg:
        id2label = cfg.get("id2label")
        if isinstance(id2label, dict):
            try:
                ordered = [str(id2label[i]) for i in sorted(id2label, key=int)]
            except (ValueError, TypeError):
                ordered = []
            # transformers fills LABEL_0.. when the model was built without names
            if not all(re.fullmatch(r"LABEL_\d+", n) for n in ordered):
                names = _as_names(ordered, k)
        for key in ("_name_or_path", "transformers_version"):
            if cfg.get(key):
                provenance[key] = cfg[key]

    std = _standard_label_set(k, None)
    label_set = std.name if _same_names(names, std) and not std.name.startswith("generic-") else None
    meta = CheckpointMeta(
        architecture=model.arch_name,
        arch_options=_jsonable(dict(model.arch_options)),
        num_classes=k,
        classes=names or list(std.classes),
        palette=palette or [list(c) for c in std.palette],
        label_set=label_set,
        ignore_index=std.ignore_index,
        provenance=_jsonable(provenance),
    )
    pre = raw.hf_preprocessor or {}
    mean, std_ = pre.get("image_mean"), pre.get("image_std")
    if _is_rgb(mean) and _is_rgb(std_):
        scale = 255.0 if max(mean) <= 1.0 else 1.0  # HF stores 0-1, we store 0-255
        meta.mean = [round(float(v) * scale, 4) for v in mean]
        meta.std = [round(float(v) * scale, 4) for v in std_]
    return meta


def _is_rgb(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)


def _as_names(value: Any, k: int) -> list[str] | None:
    if isinstance(value, (list, tuple)) and len(value) == k and all(isinstance(n, str) for n in value):
        return list(value)
    return None


def _as_palette(value: Any, k: int) -> list[list[int]] | None:
    try:
        rows = [[int(v) for v in row] for row in _jsonable(value)]
    except (TypeError, ValueError):
        return None
    if len(rows) == k and all(len(r) == 3 and all(0 <= v <= 255 for v in r) for r in rows):
        return rows
    return None


def _norm_name(n: str) -> str:
    return re.sub(r"[\s_\-]+", "", n.lower())


def _same_names(names: list[str] | None, ls: LabelSet) -> bool:
    if names is None:
        return True  # nothing says otherwise: the standard set of this size
    return [_norm_name(n) for n in names] == [_norm_name(n) for n in ls.classes]


def _standard_label_set(k: int, name: str | None) -> LabelSet:
    if name in LABEL_SET_NAMES:
        ls = get_label_set(name)
        if ls.num_classes == k:
            return ls
    return label_set_for(k) if k > 0 else generic_label_set(k)


def _label_set_name(ls: LabelSet) -> str | None:
    return None if ls.name.startswith("generic-") else ls.name


def _jsonable(value: Any) -> Any:
    """Plain JSON types (numpy numbers/arrays, tuples and tensors become lists/numbers)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Tensor):
        return value.tolist()
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return _jsonable(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# --------------------------------------------------------------------------------------------
# Conversion


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    *,
    half: bool = False,
    architecture: str | None = None,
    num_classes: int | None = None,
    **overrides: Any,
) -> Path:
    """Any supported checkpoint -> a native `.safetensors` file.

    `overrides` replace metadata fields (`classes`, `palette`, `label_set`, `mean`, `std`,
    `input_size`, `ignore_index`, `provenance` — the latter merged into the imported one).
    `label_set="cityscapes"` alone also sets the names and colours of that set.
    """
    src, dst = Path(src), Path(dst)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise VsegError(f"refusing to overwrite the input {src}; choose another output name")
    loaded = load_checkpoint(src, architecture=architecture, num_classes=num_classes)
    meta = loaded.meta
    allowed = {f.name for f in fields(CheckpointMeta)} - {"architecture", "arch_options", "num_classes"}
    unknown = sorted(set(overrides) - allowed)
    if unknown:
        raise VsegError(f"cannot set {', '.join(unknown)} on a checkpoint; settable fields: {', '.join(sorted(allowed))}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "label_set" in changes:
        ls = get_label_set(changes["label_set"])
        if ls.num_classes != meta.num_classes:
            raise VsegError(
                f"label set {ls.name!r} has {ls.num_classes} classes but the checkpoint predicts {meta.num_classes}"
            )
        changes["label_set"] = ls.name
        changes.setdefault("classes", list(ls.classes))
        changes.setdefault("palette", [list(c) for c in ls.palette])
        changes.setdefault("ignore_index", ls.ignore_index)
    if "provenance" in changes:
        changes["provenance"] = {**meta.provenance, **dict(changes["provenance"])}
    meta = replace(meta, **_jsonable(changes)) if changes else meta
    if "palette" in changes:
        meta.palette = [[int(v) for v in c] for c in meta.palette]
    if "classes" in changes and "label_set" not in changes and meta.label_set in LABEL_SET_NAMES:
        # custom names no longer describe the standard set
        if not _same_names(meta.classes, get_label_set(meta.label_set)):
            meta.label_set = None
    return save_checkpoint(loaded.model, meta, dst, half=half)


__all__ = [
    "CheckpointMeta",
    "LoadedCheckpoint",
    "convert_checkpoint",
    "detect_architecture",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]
