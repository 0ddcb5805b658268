"""Checkpoints: one native format, importers for foreign layouts, architecture detection.

Native format (`format`): a single `.safetensors` file whose tensors carry the model's own
state-dict names and whose header holds `CheckpointMeta` as JSON under `"vseg"`.

Importers (each ends in native names and a strict load, `load`):
* Hugging Face `SegformerForSemanticSegmentation`: `model.safetensors` / `pytorch_model.bin`
  (or their folder, whose `config.json` gives class names and confirms the architecture).
* NVlabs SegFormer / mmseg 0.x: `.pth` with or without the mmcv `{'meta', 'state_dict',
  'optimizer'}` wrapper and with or without a DDP `module.` prefix.
* Official MRCFA: the same mmcv wrapper; `meta['CLASSES']` / `meta['PALETTE']` when present.

A checkpoint is data, never code: pickles are read with `torch.load(weights_only=True)`, and a
pickle that references anything but tensors and plain containers is refused (`readers`).

Modules: `format` (native format, metadata, saving), `readers` (safe file/folder reading),
`convert` (foreign key layouts and metadata -> native), `detect` (architecture from keys and
shapes), `load` (load_checkpoint, convert_checkpoint), `hub` (hf:// specs).
"""
from __future__ import annotations

from vsegcli.checkpoints.detect import detect_architecture
from vsegcli.checkpoints.format import (
    FORMAT_VERSION,
    IMAGENET_MEAN,
    IMAGENET_STD,
    META_KEY,
    CheckpointMeta,
    LoadedCheckpoint,
    save_checkpoint,
)
from vsegcli.checkpoints.load import convert_checkpoint, load_checkpoint
from vsegcli.checkpoints.readers import read_state_dict

__all__ = [
    "FORMAT_VERSION",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "META_KEY",
    "CheckpointMeta",
    "LoadedCheckpoint",
    "convert_checkpoint",
    "detect_architecture",
    "load_checkpoint",
    "read_state_dict",
    "save_checkpoint",
]
