"""What every dataset reader produces: videos (`Sequence`) of frame paths in time order, with the
label PNGs of the annotated frames, plus the image and label readers shared by eval and train.

Labels are always returned as uint8 train ids (class index 0..K-1, 255 = ignore): each dataset's
raw PNG values go through its label set's `raw_lut()` (CamVid 0..10 stay, 11 = void -> 255;
Cityscapes label ids -> 19 train ids; VSPW raw 1..124 -> 0..123, 0 and 255 -> 255).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vsegcli.errors import VsegError
from vsegcli.data.labels import LabelSet, get_label_set

DATASETS = ("camvid", "cityscapes", "vspw")
# Which label set a dataset's classes are (and so what a model must predict to be scored on it).
DATASET_LABEL_SETS = {"camvid": "camvid", "cityscapes": "cityscapes", "vspw": "vspw"}
# How each dataset stores labels in its PNGs.
DATASET_LABEL_FORMATS = {"camvid": "train", "cityscapes": "cityscapes-ids", "vspw": "vspw-raw"}
LABEL_FORMATS = tuple(DATASET_LABEL_FORMATS.values())
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


@dataclass
class Sequence:
    """One video in time order."""

    name: str
    frames: list[Path]  # every frame image of the video, in time order
    labels: dict[int, Path]  # frame position -> label PNG, for the annotated frames
    label_format: str  # 'train' | 'cityscapes-ids' | 'vspw-raw' (see DATASET_LABEL_FORMATS)

    @property
    def annotated(self) -> list[int]:
        """Positions of the annotated frames, ascending."""
        return sorted(self.labels)

    def __len__(self) -> int:
        return len(self.frames)


def check_dataset(dataset: str) -> str:
    key = str(dataset).lower()
    if key not in DATASETS:
        raise VsegError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    return key


def dataset_label_set(dataset: str) -> LabelSet:
    """The label set (class names, colours, raw-id map) of a dataset."""
    return get_label_set(DATASET_LABEL_SETS[check_dataset(dataset)])


@lru_cache(maxsize=None)
def label_lut(dataset: str) -> np.ndarray:
    """(256,) uint8 table: raw PNG value -> train id (255 = ignore)."""
    lut = dataset_label_set(dataset).raw_lut()
    lut.flags.writeable = False  # shared through the cache
    return lut


def _dataset_for_format(fmt: str) -> str:
    for name, f in DATASET_LABEL_FORMATS.items():
        if f == fmt:
            return name
    raise VsegError(f"unknown label format {fmt!r}; choose one of: {', '.join(LABEL_FORMATS)}")


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. EXIF orientation is ignored: pixels must line up with the label PNG."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise VsegError(f"{path}: cannot read this image (missing or corrupt); re-download the dataset file")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_raw_label(path: str | Path) -> np.ndarray:
    """(H, W) uint8 raw values of a single-channel (grey or palette) label PNG."""
    # PIL, not OpenCV: OpenCV expands palette ('P') PNGs to colours, PIL keeps the indices.
    try:
        with Image.open(path) as im:
            mode = im.mode
            if mode not in ("L", "P"):
                raise VsegError(
                    f"{path}: label PNG has mode {mode} (colour or 16-bit); vseg needs single-channel "
                    "class-index PNGs (SegNet *annot/, Cityscapes *_labelIds.png, VSPW mask/)"
                )
            return np.asarray(im, dtype=np.uint8).copy()
    except OSError as exc:
        raise VsegError(f"{path}: cannot read this label PNG ({exc}); re-download the dataset file") from exc


def read_label(path: str | Path, dataset: str) -> np.ndarray:
    """(H, W) uint8 train ids (255 = ignore) of a label PNG of `dataset` (a dataset name or a
    label format such as 'cityscapes-ids')."""
    return read_label_checked(path, dataset)[0]


# Raw values a dataset's label PNGs hold that are void by the dataset's own definition (besides
# its classes): CamVid's SegNet void 11; every Cityscapes label id 0..33 (the non-evaluated ones
# are void); VSPW's 0 ('others') and 255. 255 is the common ignore value in every set.
_VOID_RAW = {"camvid": {11, 255}, "cityscapes": set(range(34)) | {255}, "vspw": {0, 255}}


@lru_cache(maxsize=None)
def known_raw_values(dataset: str) -> np.ndarray:
    """(256,) bool: raw PNG values that are a class or a defined void value of `dataset`."""
    key = check_dataset(dataset)
    known = np.zeros(256, dtype=bool)
    known[[r for r in dataset_label_set(key).raw_to_train if 0 <= r < 256]] = True
    known[sorted(_VOID_RAW[key])] = True
    known.flags.writeable = False
    return known


def read_label_checked(path: str | Path, dataset: str) -> tuple[np.ndarray, dict[int, int]]:
    """`read_label`, plus {raw value: pixel count} of values outside the dataset's label set
    (neither a class nor its void values, e.g. 200 in a CamVid annotation). Those pixels are
    ignored like void ones; the caller reports them (never silently)."""
    key = str(dataset).lower()
    if key not in DATASETS:
        key = _dataset_for_format(key)
    raw = read_raw_label(path)
    outside = ~known_raw_values(key)[raw]
    unknown: dict[int, int] = {}
    if outside.any():
        values, counts = np.unique(raw[outside], return_counts=True)
        unknown = {int(v): int(n) for v, n in zip(values, counts)}
    return label_lut(key)[raw], unknown


_TRAILING_NUMBER = re.compile(r"(\d+)$")


def frame_sort_key(stem_suffix: str) -> tuple[int, int, str]:
    """Order frames by the number at the end of their name (0016E5_07959 < 0016E5_08001), falling
    back to the text for names without one."""
    m = _TRAILING_NUMBER.search(stem_suffix)
    return (0, int(m.group(1)), stem_suffix) if m else (1, 0, stem_suffix)


def images_in(folder: Path) -> list[Path]:
    """Image files (.png/.jpg/.jpeg, any case) directly inside `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
