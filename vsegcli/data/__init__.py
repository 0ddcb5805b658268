"""Label sets and datasets (the papers' clip protocols).

`labels`: what a model's output channels mean (Cityscapes 19, CamVid 11, VSPW 124 classes, or a
checkpoint's own names and colours). `datasets`: CamVid, Cityscapes and VSPW readers, imported
from `vsegcli.data.datasets` (they need OpenCV and PIL; label sets do not).
"""
from __future__ import annotations

from vsegcli.data.labels import (
    IGNORE_INDEX,
    LABEL_SET_NAMES,
    LabelSet,
    generic_label_set,
    get_label_set,
    label_set_for,
)

__all__ = [
    "IGNORE_INDEX",
    "LABEL_SET_NAMES",
    "LabelSet",
    "generic_label_set",
    "get_label_set",
    "label_set_for",
]
