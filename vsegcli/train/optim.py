"""Optimiser and schedule: frozen modules, parameter groups (backbone / head x10, no decay on
norms for the transformer recipe), AdamW or SGD, mmseg's poly schedule with linear warm-up."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from vsegcli.errors import VsegError
from vsegcli.train.config import TrainConfig, recipe_for


def freeze_modules(model: nn.Module, names: Sequence[str]) -> int:
    """Fix the parameters of the named submodules (`backbone`, `decode_head.lateral`, ...): no
    gradients, not in the optimizer. Returns how many parameters stay trainable. Fine-tuning only a
    temporal module on a trained per-frame base this way starts from, and can only move away from,
    the base's predictions (STT's output projection and MRCFA's value projection start at zero)."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            top = ", ".join(n for n, _ in model.named_children())
            raise VsegError(f"--freeze {name!r}: {type(model).__name__} has no such module; "
                            f"its top-level modules are {top} (sub-modules by dotted name)")
        for p in modules[name].parameters():
            p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not trainable:
        raise VsegError(f"--freeze {' '.join(names)} leaves nothing to train")
    return trainable


def set_train_mode(model: nn.Module, frozen: Sequence[str], training: bool) -> None:
    """model.train(training), with frozen modules always in eval mode: their BatchNorm keeps its
    running statistics and their dropout is off, so they compute exactly what the base did."""
    model.train(training)
    modules = dict(model.named_modules())
    for name in frozen:
        modules[name].eval()


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """backbone.* at the base lr; everything else (heads, STT, MRCFA's affinity module) at
    lr x head_lr_mult. Transformer recipes: no weight decay on norm layers / pos_block (mmseg)."""
    no_decay_norm = recipe_for(cfg.arch).no_decay_norm
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not name.startswith("backbone.")
        decay = not (no_decay_norm and ("norm" in name or "pos_block" in name))
        groups.setdefault((head, decay), []).append(p)
    out = []
    for (head, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": cfg.lr * (cfg.head_lr_mult if head else 1.0),
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "name": f"{'head' if head else 'backbone'}{'' if decay else '_no_decay'}",
        })
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def lr_factor(it: int, iters: int, power: float, warmup: int, warmup_ratio: float = 1e-6) -> float:
    """mmseg's poly schedule with linear warm-up: (1 - it/iters)^power, ramped from warmup_ratio
    over the first `warmup` iterations. `it` is the 0-based index of the step about to happen."""
    poly = (1.0 - min(it, iters) / iters) ** power
    if it < warmup:
        poly *= 1.0 - (1.0 - it / warmup) * (1.0 - warmup_ratio)
    return poly
