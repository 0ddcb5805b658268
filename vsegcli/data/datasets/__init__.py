"""Dataset readers for evaluation and training: CamVid (SegNet layout), Cityscapes (with the
`leftImg8bit_sequence` video package) and VSPW 480p.

    from vsegcli.data.datasets import list_sequences, read_image, read_label
    for seq in list_sequences("camvid", Path("data/camvid"), "val"):
        for i, path in enumerate(seq.frames):           # time order
            image = read_image(path)                     # (H, W, 3) uint8 RGB
            if i in seq.labels:
                gt = read_label(seq.labels[i], "camvid")  # (H, W) uint8 train ids, 255 ignore

A missing or malformed dataset folder raises `VsegError` naming the layout that was expected.
"""
from __future__ import annotations

from pathlib import Path

from vsegcli.data.datasets.base import (
    DATASET_LABEL_FORMATS,
    DATASET_LABEL_SETS,
    DATASETS,
    LABEL_FORMATS,
    Sequence,
    check_dataset,
    dataset_label_set,
    known_raw_values,
    label_lut,
    read_image,
    read_label,
    read_label_checked,
    read_raw_label,
)
from vsegcli.errors import VsegError

__all__ = [
    "DATASETS",
    "DATASET_LABEL_SETS",
    "DATASET_LABEL_FORMATS",
    "LABEL_FORMATS",
    "Sequence",
    "check_dataset",
    "dataset_label_set",
    "known_raw_values",
    "label_lut",
    "list_sequences",
    "read_image",
    "read_label",
    "read_label_checked",
    "read_raw_label",
]


def list_sequences(dataset: str, root: str | Path, split: str) -> list[Sequence]:
    """Every video of `split` ('train' | 'val' | 'test'), in a stable order (sorted by name for
    CamVid and Cityscapes, the split file's order for VSPW)."""
    key = check_dataset(dataset)
    root = Path(root)
    if not root.is_dir():
        raise VsegError(f"{root}: no such folder; give --data-root the {key} dataset folder")
    if key == "camvid":
        from vsegcli.data.datasets import camvid as module
    elif key == "cityscapes":
        from vsegcli.data.datasets import cityscapes as module  # type: ignore[no-redef]
    else:
        from vsegcli.data.datasets import vspw as module  # type: ignore[no-redef]
    return module.list_sequences(root, split)
