"""Foreign checkpoints -> native: key renaming and metadata, as small named steps.

Like transformers' `convert_segformer_original_to_pytorch.py`, but in the other direction: a
table of renaming rules (`_HF_RULES`) takes Hugging Face SegFormer names (both the Hub layout and
transformers>=5's in-memory layout) to the NVlabs/mmseg names vseg's models use; the separate
key/value projections are fused into NVlabs' `kv`. NVlabs SegFormer, mmseg and official MRCFA
files already use native names (a DDP `module.` prefix is dropped). The metadata of an imported
file (class names, palette, normalisation, provenance) comes from the mmcv wrapper's `meta` or
the Hugging Face `config.json` / `preprocessor_config.json` beside the weights.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vsegcli.checkpoints.format import CheckpointMeta, same_class_names, standard_label_set
from vsegcli.checkpoints.readers import RawCheckpoint
from vsegcli.errors import VsegError
from vsegcli.io.jsonio import jsonable
from vsegcli.models.base import Segmentor

__all__ = ["check_hf_config", "hf_to_native_keys", "imported_meta", "to_native_keys"]


# --------------------------------------------------------------------------------------------
# Keys

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


def _strip_ddp_prefix(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop the `module.` prefix of a state dict saved from a DDP wrapper."""
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return dict(sd)


def _rename_hf_key(key: str) -> str:
    """One Hugging Face name -> its NVlabs name (`kv#k`/`kv#v` still separate)."""
    for pat, rep in _HF_RULES:
        key = pat.sub(rep, key)
    # HF numbers stages/projections from 0, NVlabs from 1.
    return _STAGE_PLACEHOLDER.sub(lambda m: str(int(m.group(1)) + 1), key)


def _fuse_key_value(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Key rows then value rows make NVlabs' fused `kv` projection."""
    out = dict(sd)
    for k_name in [k for k in out if ".attn.kv#k." in k]:
        v_name = k_name.replace(".attn.kv#k.", ".attn.kv#v.")
        if v_name in out:
            out[k_name.replace(".attn.kv#k.", ".attn.kv.")] = torch.cat([out.pop(k_name), out.pop(v_name)], 0)
    return out


def hf_to_native_keys(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """A Hugging Face SegFormer state dict under NVlabs/mmseg names: rename, then fuse k/v."""
    return _fuse_key_value({_rename_hf_key(k): t for k, t in sd.items()})


def to_native_keys(sd: dict[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Rename the keys of any supported layout to vseg's native names (DDP prefix dropped, HF
    names mapped); also says whether it was the Hugging Face layout. Tensors are not copied."""
    sd = _strip_ddp_prefix(sd)
    if _is_hf_layout(list(sd)):
        return hf_to_native_keys(sd), True
    return sd, False


# --------------------------------------------------------------------------------------------
# Metadata


def check_hf_config(cfg: dict[str, Any], arch: str, options: dict[str, Any], k: int, name: str) -> None:
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


def imported_meta(model: Segmentor, raw: RawCheckpoint, fmt: str, path: Path) -> CheckpointMeta:
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

    std = standard_label_set(k, None)
    label_set = std.name if same_class_names(names, std) and not std.name.startswith("generic-") else None
    meta = CheckpointMeta(
        architecture=model.arch_name,
        arch_options=jsonable(dict(model.arch_options)),
        num_classes=k,
        classes=names or list(std.classes),
        palette=palette or [list(c) for c in std.palette],
        label_set=label_set,
        ignore_index=std.ignore_index,
        provenance=jsonable(provenance),
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
        rows = [[int(v) for v in row] for row in jsonable(value)]
    except (TypeError, ValueError):
        return None
    if len(rows) == k and all(len(r) == 3 and all(0 <= v <= 255 for v in r) for r in rows):
        return rows
    return None
