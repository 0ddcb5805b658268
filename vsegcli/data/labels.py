"""Label sets: class names, colours, ignore index and id maps for Cityscapes, CamVid and VSPW.

A `LabelSet` describes what the model's output channels mean. Checkpoints carry their own
names/palette (so a custom set works too); these are the three the papers use.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from vsegcli.errors import VsegError

IGNORE_INDEX = 255


@dataclass(frozen=True)
class LabelSet:
    name: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]  # RGB per class index
    ignore_index: int = IGNORE_INDEX
    # Optional mapping from the dataset's raw label ids to class indices (e.g. Cityscapes ids).
    raw_to_train: dict[int, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def palette_array(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: class colours, everything else black."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.asarray(self.palette, dtype=np.uint8)
        return lut

    def raw_lut(self) -> np.ndarray:
        """(256,) uint8 table mapping raw dataset ids to class indices (others -> ignore)."""
        lut = np.full(256, self.ignore_index, dtype=np.uint8)
        for raw, train in self.raw_to_train.items():
            if 0 <= raw < 256:
                lut[raw] = train
        return lut

    def train_to_raw_lut(self) -> np.ndarray:
        """(256,) uint8 table mapping class indices back to raw ids (e.g. Cityscapes label ids)."""
        lut = np.zeros(256, dtype=np.uint8)
        for raw, train in self.raw_to_train.items():
            lut[train] = raw
        return lut


# Cityscapes: (train id order) name, label id, colour — cityscapesscripts' helpers/labels.py facts.
_CITYSCAPES = [
    ("road", 7, (128, 64, 128)), ("sidewalk", 8, (244, 35, 232)), ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)), ("fence", 13, (190, 153, 153)), ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)), ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)), ("terrain", 22, (152, 251, 152)), ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)), ("rider", 25, (255, 0, 0)), ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)), ("bus", 28, (0, 60, 100)), ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)), ("bicycle", 33, (119, 11, 32)),
]

# CamVid 11 classes in the SegNet order; raw label 11 is void.
_CAMVID = [
    ("sky", (128, 128, 128)), ("building", (128, 0, 0)), ("pole", (192, 192, 128)),
    ("road", (128, 64, 128)), ("pavement", (60, 40, 222)), ("tree", (128, 128, 0)),
    ("sign symbol", (192, 128, 128)), ("fence", (64, 64, 128)), ("car", (64, 0, 128)),
    ("pedestrian", (64, 64, 0)), ("bicyclist", (0, 128, 192)),
]

_VSPW_JSON = Path(__file__).with_name("vspw_palette.json")


@lru_cache(maxsize=None)
def get_label_set(name: str) -> LabelSet:
    key = name.lower()
    if key == "cityscapes":
        return LabelSet(
            "cityscapes",
            tuple(n for n, _, _ in _CITYSCAPES),
            tuple(c for _, _, c in _CITYSCAPES),
            raw_to_train={lid: i for i, (_, lid, _) in enumerate(_CITYSCAPES)},
        )
    if key == "camvid":
        return LabelSet(
            "camvid",
            tuple(n for n, _ in _CAMVID),
            tuple(c for _, c in _CAMVID),
            raw_to_train={i: i for i in range(len(_CAMVID))},  # raw 11 (void) -> ignore
        )
    if key == "vspw":
        data = json.loads(_VSPW_JSON.read_text())
        rows = sorted(data["classes"], key=lambda r: r["train_index"])
        return LabelSet(
            "vspw",
            tuple(r["name"] for r in rows),
            tuple(tuple(r["rgb"]) for r in rows),
            raw_to_train={r["raw_id"]: r["train_index"] for r in rows},  # raw 0 and 255 -> ignore
        )
    raise VsegError(f"unknown label set {name!r}; choose one of: {', '.join(LABEL_SET_NAMES)}")


LABEL_SET_NAMES = ("cityscapes", "camvid", "vspw")


def generic_label_set(num_classes: int) -> LabelSet:
    """Names class_0.. and a deterministic distinct palette, for checkpoints without metadata."""
    rng = np.random.default_rng(42)
    colours = rng.integers(0, 256, size=(num_classes, 3))
    return LabelSet(
        f"generic-{num_classes}",
        tuple(f"class_{i}" for i in range(num_classes)),
        tuple(tuple(int(v) for v in c) for c in colours),
    )


def label_set_for(num_classes: int) -> LabelSet:
    """The standard label set with this many classes, else a generic one."""
    for name in LABEL_SET_NAMES:
        ls = get_label_set(name)
        if ls.num_classes == num_classes:
            return ls
    return generic_label_set(num_classes)
