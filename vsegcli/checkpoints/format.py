"""The native checkpoint format: one `.safetensors` file with a `"vseg"` JSON header entry.

Tensors carry the model's own state-dict names (the NVlabs/mmseg names for SegFormer and MRCFA);
the header's `META_KEY` entry is `CheckpointMeta` as JSON: everything needed to rebuild and run
the model (architecture + options, class names, palette, normalisation, input size, provenance).
fp16 files are allowed to ship small weights; loading always gives an fp32 model on the CPU.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vsegcli.data.labels import LABEL_SET_NAMES, LabelSet, generic_label_set, get_label_set, label_set_for
from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write_bytes
from vsegcli.io.jsonio import dumps, jsonable
from vsegcli.models.base import Segmentor

__all__ = [
    "FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "META_KEY",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "decode_header",
    "save_checkpoint",
]

FORMAT_VERSION = 1
META_KEY = "vseg"
# The normalisation a checkpoint records when nothing else is known (0-255 RGB scale): the one
# definition; training and benchmarks import it from here.
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]


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
            arch_options=jsonable(dict(model.arch_options)),
            num_classes=model.num_classes,
            classes=list(ls.classes),
            palette=[list(map(int, c)) for c in ls.palette],
            label_set=_label_set_name(ls),
            input_size=input_size,
            ignore_index=ls.ignore_index,
            provenance=jsonable(dict(provenance or {})),
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
            ls = standard_label_set(k, kwargs.get("label_set"))
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
    header = {META_KEY: dumps(meta.to_dict(), indent=None), "format": "pt"}
    data = st_save(tensors, metadata=header)

    return atomic_write_bytes(path, data, durable=True)


def decode_header(header: dict[str, str], path: Path) -> dict[str, Any]:
    try:
        data = json.loads(header[META_KEY])
    except ValueError:
        raise VsegError(f"{path} has damaged vseg metadata; re-create it with `vseg convert`") from None
    if not isinstance(data, dict):
        raise VsegError(f"{path} has damaged vseg metadata; re-create it with `vseg convert`")
    return data


# --------------------------------------------------------------------------------------------
# Label sets behind stored class names


def _norm_name(n: str) -> str:
    return re.sub(r"[\s_\-]+", "", n.lower())


def same_class_names(names: list[str] | None, ls: LabelSet) -> bool:
    if names is None:
        return True  # nothing says otherwise: the standard set of this size
    return [_norm_name(n) for n in names] == [_norm_name(n) for n in ls.classes]


def standard_label_set(k: int, name: str | None) -> LabelSet:
    if name in LABEL_SET_NAMES:
        ls = get_label_set(name)
        if ls.num_classes == k:
            return ls
    return label_set_for(k) if k > 0 else generic_label_set(k)


def _label_set_name(ls: LabelSet) -> str | None:
    return None if ls.name.startswith("generic-") else ls.name
