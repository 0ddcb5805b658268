"""ImageNet weights for a backbone: each backbone class says where its weights come from.

`PretrainedBackbone.load_pretrained(path)` loads a file (`--backbone-weights FILE`), or with
`path=None` the backbone's automatic source (EfficientNet-Lite0: the optional weights package);
it returns the provenance label the training log and checkpoints record, or None when the
backbone has no automatic source. `transfer_weights` copies tensors that match by name and shape
(also what `vseg train --init` uses for whole models).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import nn

from vsegcli.errors import VsegError


def transfer_weights(model: nn.Module, source: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Copy tensors whose name and shape match. Returns (loaded, new (left as initialised),
    dropped (in the source but unused))."""
    own = model.state_dict()
    loaded = [k for k in own if k in source and tuple(source[k].shape) == tuple(own[k].shape)]
    new = [k for k in own if k not in set(loaded)]
    dropped = [k for k in source if k not in set(loaded)]
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(source[k].to(own[k].dtype))
    return loaded, new, dropped


class PretrainedBackbone:
    """Mixin for backbone modules. By default a file loads by matching names and shapes (any
    `module.` / `backbone.` prefix dropped); `pretrained_strict` backbones need every tensor."""

    pretrained_hint: ClassVar[str] = "a state dict"  # what to give as --backbone-weights
    pretrained_strict: ClassVar[bool] = False
    # The input normalisation (RGB mean, std on the 0-255 scale) the automatic ImageNet weights
    # (`load_pretrained(None)`) were trained with; None: ImageNet mean/std (torchvision / timm /
    # mmseg convention, also assumed for --backbone-weights files).
    pretrained_norm: ClassVar[tuple[tuple[float, float, float], tuple[float, float, float]] | None] = None

    def load_pretrained(self, path: Path | None) -> str | None:
        if path is None:
            return None
        from vsegcli.checkpoints import read_state_dict  # lazily: checkpoints builds on models

        tensors, _ = read_state_dict(path)  # safe reader: safetensors or weights-only pickles
        tensors = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in tensors.items()}
        got, new, _ = transfer_weights(self, tensors)  # type: ignore[arg-type]
        if self.pretrained_strict and new:
            raise VsegError(self._mismatch(path, new))
        if not got:
            raise VsegError(f"{path} has no tensor matching the {type(self).__name__} backbone by name and shape")
        return f"imagenet:{path}"

    def _mismatch(self, path: Path, missing: Sequence[str]) -> str:
        return f"{path} does not match the {type(self).__name__} backbone ({len(missing)} tensors missing, e.g. {missing[0]})"
