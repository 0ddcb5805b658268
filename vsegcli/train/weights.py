"""A run's initial weights: `--init CHECKPOINT` by matching names and shapes, else ImageNet
weights for the backbone (`--backbone-weights`), which each backbone class knows how to load."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from vsegcli.errors import VsegError
from vsegcli.models.base import Segmentor
from vsegcli.models.backbones.pretrained import PretrainedBackbone, transfer_weights
from vsegcli.train.config import TrainConfig


def summarise_keys(keys: Sequence[str], depth: int = 2, limit: int = 6) -> str:
    """'stt.* (8), decode_head.linear_pred.* (2)' — key names grouped by their first components."""
    if not keys:
        return "none"
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        groups[prefix] = groups.get(prefix, 0) + 1
    items = [f"{p} ({n})" for p, n in groups.items()]
    more = f", ... {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def input_norm(prov: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The RGB mean/std (0-255) a run normalises with, from its `initialise` provenance; runs
    recorded before it was stored used ImageNet's."""
    from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD

    return list(prov.get("input_mean", IMAGENET_MEAN)), list(prov.get("input_std", IMAGENET_STD))


def initialise(model: Segmentor, cfg: TrainConfig, note: Callable[[str], None]) -> dict[str, Any]:
    """--init checkpoint, else ImageNet backbone weights where available. Returns provenance,
    including the input normalisation the weights expect (`input_mean`/`input_std`): the init
    checkpoint's, else the backbone's pretrained one, else ImageNet mean/std."""
    prov = _initialise(model, cfg, note)
    if "input_mean" not in prov:
        from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD

        bb = getattr(model, "backbone", None)
        # Only the backbone's own automatic weights are known to expect `pretrained_norm`; a
        # --backbone-weights file (e.g. a timm conversion) is taken to use ImageNet mean/std.
        automatic = cfg.backbone_weights is None and prov.get("init", "").startswith("imagenet:")
        norm = getattr(bb, "pretrained_norm", None) if automatic else None
        mean, std = norm if norm is not None else (IMAGENET_MEAN, IMAGENET_STD)
        prov["input_mean"], prov["input_std"] = [float(v) for v in mean], [float(v) for v in std]
        if norm is not None:
            note(f"input normalisation: mean {prov['input_mean']}, std {prov['input_std']} "
                 "(what the backbone's ImageNet weights expect)")
    return prov


def _initialise(model: Segmentor, cfg: TrainConfig, note: Callable[[str], None]) -> dict[str, Any]:
    if cfg.init is not None:
        from vsegcli.checkpoints import load_checkpoint

        loaded = load_checkpoint(cfg.init)  # any vseg-loadable layout, native names
        got, new, dropped = transfer_weights(model, loaded.model.state_dict())
        if not got:
            raise VsegError(f"{cfg.init} ({loaded.meta.architecture}) shares no tensor names/shapes with {cfg.arch}; "
                            "give a checkpoint of the same family")
        note(f"init from {cfg.init} ({loaded.meta.architecture}): {len(got)} tensors loaded; "
             f"new: {summarise_keys(new)}; dropped: {summarise_keys(dropped)}")
        started = model.start_new_parts(new)  # e.g. MRCFA from a per-frame checkpoint
        if started:
            note(started)
        return {"init": str(cfg.init), "init_architecture": loaded.meta.architecture,
                "init_new_keys": len(new), "init_dropped_keys": len(dropped),
                # fine-tuning keeps the normalisation the init checkpoint was trained with
                "input_mean": [float(v) for v in loaded.meta.mean], "input_std": [float(v) for v in loaded.meta.std]}

    spec = cfg.backbone_weights
    if spec is not None and spec.lower() == "none":
        note("backbone: random init (--backbone-weights none)")
        return {"init": "random"}
    path = Path(spec) if spec is not None else None
    bb = getattr(model, "backbone", None)
    if not isinstance(bb, PretrainedBackbone):
        if path is not None:
            raise VsegError(f"{cfg.arch} has no separate backbone to load --backbone-weights into; use --init")
        note("warning: no ImageNet weights for the model backbone; training from random init. "
             "Give --backbone-weights FILE (a state dict) for the papers' numbers.")
        return {"init": "random"}
    kind = type(bb).__name__
    try:
        label = bb.load_pretrained(path)
    except VsegError as e:
        if path is not None:
            raise
        note(f"warning: {e}. Training {kind} from random init (expect far lower accuracy).")
        return {"init": "random"}
    if label is None:
        note(f"warning: no ImageNet weights for the {kind} backbone; training from random init. "
             f"Give --backbone-weights FILE ({bb.pretrained_hint}) for the papers' numbers.")
        return {"init": "random"}
    note(f"backbone: ImageNet weights from {path}" if path is not None
         else f"backbone: ImageNet {kind} weights ({label.removeprefix('imagenet:')})")
    return {"init": label}
