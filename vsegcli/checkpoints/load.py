"""Loading any supported checkpoint into a model, and converting one to the native format.

`load_checkpoint` reads the file safely (`readers`), takes native metadata as it is or renames a
foreign layout (`convert`) and detects its architecture (`detect`), then builds the model and
loads it strictly, with errors that name the keys that do not fit. `convert_checkpoint` is that
load followed by `format.save_checkpoint` (what `vseg convert` runs).
"""
from __future__ import annotations

import os
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from vsegcli.checkpoints.convert import check_hf_config, imported_meta, to_native_keys
from vsegcli.checkpoints.detect import detect_architecture, num_classes_of
from vsegcli.checkpoints.format import (
    META_KEY,
    CheckpointMeta,
    LoadedCheckpoint,
    decode_header,
    same_class_names,
    save_checkpoint,
)
from vsegcli.checkpoints.readers import read_raw
from vsegcli.data.labels import LABEL_SET_NAMES, get_label_set
from vsegcli.errors import NeedsOption, VsegError
from vsegcli.io.jsonio import jsonable
from vsegcli.models.base import Segmentor

__all__ = ["convert_checkpoint", "load_checkpoint"]

# Keys of official checkpoints that no vseg model uses (dropped and reported when the model has no
# such parameter): the mmseg base decode head's unused `conv_seg` (SegFormer). MRCFA builds its
# conv_seg and training-only deco1..deco3 itself, so its official checkpoints drop nothing.
_IGNORABLE = re.compile(r"^decode_head\.conv_seg\.")


def load_checkpoint(
    path: str | os.PathLike,  # a file, a folder or hf://owner/repo[@rev][/file]
    architecture: str | None = None,
    num_classes: int | None = None,
) -> LoadedCheckpoint:
    """Load a native or foreign checkpoint into an fp32 CPU model in eval mode.

    `architecture` / `num_classes` are only needed when the file cannot tell (foreign files of
    non-SegFormer families); when given they must agree with the file.
    """
    from vsegcli.models.registry import build_model, get_architecture

    from vsegcli.checkpoints.hub import is_hub_spec, resolve_checkpoint

    spec = path if isinstance(path, str) else os.fspath(path)  # a URL stays a string: Path collapses '//'
    path = resolve_checkpoint(spec)  # hf:// -> the downloaded file or folder
    raw = read_raw(path)
    name = spec if is_hub_spec(spec) else (path.name or str(path))

    if raw.header and META_KEY in raw.header:
        meta = CheckpointMeta.from_dict(decode_header(raw.header, path))
        if architecture is not None and architecture != meta.architecture:
            get_architecture(architecture)  # unknown names get suggestions first
            raise NeedsOption(f"{name} is a {meta.architecture} checkpoint, not {architecture}", "architecture",
                              "drop {flag} or pick another file", "pick another file")
        _check_class_count(name, meta.num_classes, num_classes)
        model = build_model(meta.architecture, meta.num_classes, **meta.arch_options)
        ignored = _load_strict(model, dict(raw.tensors), name)
        return LoadedCheckpoint(model.eval(), meta, "vseg", ignored, path)

    sd, from_hf = to_native_keys(raw.tensors)
    if architecture is not None:
        get_architecture(architecture)
        try:
            detected, options = detect_architecture(sd)
        except VsegError:
            detected, options = architecture, {}  # not a family detection knows: trust the caller
        if detected != architecture:
            raise NeedsOption(f"{name} looks like a {detected} checkpoint, not {architecture}", "architecture",
                              "drop {flag} or pick another file", "pick another file")
    else:
        architecture, options = detect_architecture(sd)

    k = num_classes_of(sd, architecture, options)
    if k is None:
        if num_classes is None:
            raise NeedsOption(
                f"cannot tell the class count of {name} from its weights ({architecture}'s classifier not found)",
                "num_classes", "pass it with {flag}", "check that the file is a checkpoint of that architecture")
        k = num_classes
    _check_class_count(name, k, num_classes)

    fmt = "huggingface" if from_hf else ("mrcfa" if architecture.startswith("mrcfa-") else "mmseg")
    if raw.hf_config is not None and from_hf:
        check_hf_config(raw.hf_config, architecture, options, k, name)
    model = build_model(architecture, k, **options)
    ignored = _load_strict(model, sd, name)
    meta = imported_meta(model, raw, fmt, path)
    return LoadedCheckpoint(model.eval(), meta, fmt, ignored, path)


def _check_class_count(name: str, have: int, want: int | None) -> None:
    if want is not None and want != have:
        raise NeedsOption(f"{name} predicts {have} classes but {want} were requested", "num_classes",
                          f"drop {{flag}} or use a checkpoint trained for {want} classes",
                          f"use a checkpoint trained for {want} classes")


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
    # Training-only parameters (MRCFA's deco1..3) absent from files written before vseg built them:
    # inference never reads them; the model starts them after the load (start_new_parts).
    training_only = [k for k in missing if k in model.training_only_keys()]
    for k in training_only:
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
        raise NeedsOption(
            f"{name} does not fit {arch}: {' and '.join(parts)}", "architecture",
            f"check that the file is a {arch} checkpoint or pass the right {{flag}}",
            f"check that the file is a {arch} checkpoint")
    bad = [k for k in expected if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise NeedsOption(
            f"{name} does not fit {arch}: {k} has shape {list(sd[k].shape)} in the file but "
            f"{list(expected[k].shape)} in the model{more}", "architecture",
            f"check that the file is a {arch} checkpoint or pass the right {{flag}}",
            f"check that the file is a {arch} checkpoint")
    for k, ref in expected.items():
        t = sd[k]
        if ref.is_floating_point():
            sd[k] = t.to(ref.dtype)  # fp16/bf16 files load as fp32
        elif t.dtype != ref.dtype:
            sd[k] = t.to(ref.dtype)
    model.load_state_dict(sd, strict=True)
    model.float()
    if training_only:
        model.start_new_parts(training_only)
    return ignored


def _few(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", ..." if len(keys) > n else "")


# --------------------------------------------------------------------------------------------
# Conversion


def convert_checkpoint(
    src: str | os.PathLike,  # a file, a folder or hf://owner/repo[@rev][/file]
    dst: str | os.PathLike,
    *,
    half: bool = False,
    architecture: str | None = None,
    num_classes: int | None = None,
    num_frames: int | None = None,
    **overrides: Any,
) -> Path:
    """Any supported checkpoint -> a native `.safetensors` file.

    `num_frames` sets an STT model's T (key frames attended to): its weights are the same for
    every T, so a model trained with T = 7 runs with fewer (cheaper) or more.
    `overrides` replace metadata fields (`classes`, `palette`, `label_set`, `mean`, `std`,
    `input_size`, `ignore_index`, `provenance` — the latter merged into the imported one).
    `label_set="cityscapes"` alone also sets the names and colours of that set.
    """
    from vsegcli.checkpoints.hub import is_hub_spec

    src = src if isinstance(src, str) else os.fspath(src)  # hf:// specs stay strings
    dst = Path(dst)
    if not is_hub_spec(src) and dst.exists() and Path(src).exists() and dst.resolve() == Path(src).resolve():
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
    if num_frames is not None:
        from vsegcli.models.registry import get_architecture

        if "num_frames" not in get_architecture(meta.architecture).defaults:  # the architecture's own options
            raise VsegError(f"--num-frames sets STT's key frames; {meta.architecture} has no STT")
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise VsegError(f"--num-frames must be a whole number >= 1, got {num_frames!r}")
        changes["arch_options"] = {**meta.arch_options, "num_frames": num_frames}
        # what the file no longer says by itself: it was trained with another T
        trained = (meta.provenance.get("converted") or {}).get("trained_num_frames") or meta.arch_options.get("num_frames")
        changes["provenance"] = {**changes.get("provenance", meta.provenance),  # already merged above
                                 "converted": {"num_frames": num_frames, "trained_num_frames": trained}}
    meta = replace(meta, **jsonable(changes)) if changes else meta
    if "palette" in changes:
        meta.palette = [[int(v) for v in c] for c in meta.palette]
    if "classes" in changes and "label_set" not in changes and meta.label_set in LABEL_SET_NAMES:
        # custom names no longer describe the standard set
        if not same_class_names(meta.classes, get_label_set(meta.label_set)):
            meta.label_set = None
    return save_checkpoint(loaded.model, meta, dst, half=half)
