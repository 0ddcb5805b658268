"""Colouring label maps and blending them over frames, on whatever device the labels live on.

Only uint8 leaves the device: `overlay` takes the uint8 frame and uint8 labels as tensors and
returns the blended uint8 frame, so a GPU run never copies float logits or colour maps to the host.
"""
from __future__ import annotations

import numpy as np
import torch

from vsegcli.data.labels import LabelSet


class Palette:
    """A (256, 3) uint8 colour table (class index -> RGB; ignore/unknown -> black) kept per device."""

    def __init__(self, colours: np.ndarray) -> None:
        if colours.shape != (256, 3) or colours.dtype != np.uint8:
            raise ValueError("palette must be a (256, 3) uint8 table")
        self.colours = colours
        self._cache: dict[torch.device, torch.Tensor] = {}

    @classmethod
    def from_label_set(cls, label_set: LabelSet) -> "Palette":
        return cls(label_set.palette_array())

    @classmethod
    def from_list(cls, palette: list[list[int]]) -> "Palette":
        table = np.zeros((256, 3), dtype=np.uint8)
        table[: len(palette)] = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
        return cls(table)

    def on(self, device: torch.device) -> torch.Tensor:
        if device not in self._cache:
            self._cache[device] = torch.from_numpy(self.colours).to(device)
        return self._cache[device]

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """(H, W) uint8 labels -> (H, W, 3) uint8 RGB."""
        return self.on(labels.device)[labels.long()]

    def colorize_np(self, labels: np.ndarray) -> np.ndarray:
        return self.colours[labels]


def overlay(frame: torch.Tensor, labels: torch.Tensor, palette: Palette, opacity: float) -> torch.Tensor:
    """Blend class colours over an (H, W, 3) uint8 frame: out = frame·(1−α) + colour·α, uint8.

    Pixels whose label is outside the palette's classes are coloured black like any other, so
    `opacity` 0 returns the frame and 1 the pure colour map.
    """
    colour = palette.colorize(labels)
    if opacity >= 1.0:
        return colour
    if opacity <= 0.0:
        return frame
    # Integer arithmetic (int32: 255·256 overflows int16), exact rounding, no float copy.
    a = int(round(opacity * 256))
    blended = (frame.to(torch.int32) * (256 - a) + colour.to(torch.int32) * a + 128) >> 8
    return blended.to(torch.uint8)
