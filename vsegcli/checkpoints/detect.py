"""Architecture detection: which SegFormer / MRCFA variant a state dict is, from keys and shapes."""
from __future__ import annotations

import re
from typing import Any

from torch import Tensor

from vsegcli.checkpoints.convert import to_native_keys
from vsegcli.errors import NeedsOption, VsegError

__all__ = ["detect_architecture", "num_classes_of"]

_STAGE_BLOCK = re.compile(r"^backbone\.block([1-4])\.(\d+)\.")


def detect_architecture(state_dict: dict[str, Tensor]) -> tuple[str, dict[str, Any]]:
    """Architecture name and build options of a SegFormer / MRCFA state dict (NVlabs, mmseg or
    Hugging Face names), from its key names and shapes."""
    from vsegcli.models.backbones.mit import MIT_CONFIGS

    sd, _ = to_native_keys(state_dict)
    keys = list(sd)
    if any(k.startswith("decode_head.decoder_focal.") for k in keys):
        raise VsegError("this is a CFFM checkpoint; vseg runs MRCFA and SegFormer checkpoints, not CFFM")
    if "backbone.patch_embed1.proj.weight" not in sd:
        if "patch_embed1.proj.weight" in sd:
            raise VsegError(
                "these are ImageNet MiT backbone weights without a segmentation head; use them as "
                "pretrained weights for `vseg train`, not as a segmentation checkpoint"
            )
        raise NeedsOption(
            "cannot tell the architecture from the weights (no SegFormer/MRCFA backbone keys)",
            "architecture", "pass it with {flag}, e.g. one listed by `vseg models`",
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


def num_classes_of(sd: dict[str, Tensor], architecture: str | None = None,
                   options: dict[str, Any] | None = None) -> int | None:
    """The class count a state dict (native names) was trained for, from its classifier's shape.

    SegFormer/MRCFA: their classifier keys. Any registered `architecture`: the tensors whose shape
    depends on the class count are found by building the model twice on the meta device (no
    memory, milliseconds) with two class counts; the file's size along those dimensions is the
    count. None when it cannot be told (or the tensors disagree)."""
    for key in ("decode_head.linear_pred.weight", "decode_head.deco4.smalldecoder.1.weight"):
        if key in sd:
            return int(sd[key].shape[0])
    if architecture is None:
        return None
    import torch

    from vsegcli.models.registry import build_model

    a, b = 97, 89  # two counts no layer width is likely to equal
    with torch.device("meta"):
        sa = build_model(architecture, a, **(options or {})).state_dict()
        sb = build_model(architecture, b, **(options or {})).state_dict()
    found: set[int] = set()
    for key, ta in sa.items():
        tb, t = sb.get(key), sd.get(key)
        if tb is None or t is None or ta.shape == tb.shape or t.dim() != ta.dim():
            continue
        found |= {int(t.shape[d]) for d in range(ta.dim()) if (ta.shape[d], tb.shape[d]) == (a, b)}
    return found.pop() if len(found) == 1 else None
