"""Colouring label maps and blending them over frames, on whatever device the labels live on.

Only uint8 leaves the device: `overlay` takes the uint8 frame and uint8 labels as tensors and
returns the blended uint8 frame, so a GPU run never copies float logits or colour maps to the host.
"""
from __future__ import annotations

import functools

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


# -- palettes chosen by the user ----------------------------------------------------------------

PALETTE_NAMES = ("cityscapes", "camvid", "vspw")


def load_palette(spec: str, classes: list[str]) -> Palette:
    """``--palette``: a label set's colours (cityscapes, camvid, vspw: class i gets that set's
    colour i) or a JSON file: a list of [r, g, b] (by class index) or {"class name": [r, g, b]}
    (classes not named keep black)."""
    import json
    from pathlib import Path

    from vsegcli.data.labels import get_label_set
    from vsegcli.errors import VsegError

    if spec.lower() in PALETTE_NAMES:
        return Palette.from_label_set(get_label_set(spec.lower()))
    path = Path(spec)
    if not path.is_file():
        raise VsegError(f"--palette {spec}: not one of {', '.join(PALETTE_NAMES)} nor a JSON file")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VsegError(f"--palette {spec}: not readable JSON ({exc})") from None
    table = np.zeros((256, 3), dtype=np.uint8)
    try:
        if isinstance(data, dict):
            index = {name.lower(): i for i, name in enumerate(classes)}
            for name, rgb in data.items():
                if name.lower() not in index:
                    raise VsegError(f"--palette {spec}: no class {name!r} (classes: {', '.join(classes)})")
                table[index[name.lower()]] = _rgb(rgb)
        elif isinstance(data, list):
            for i, rgb in enumerate(data[:256]):
                table[i] = _rgb(rgb)
        else:
            raise ValueError("expected a list or an object")
    except (TypeError, ValueError) as exc:
        raise VsegError(f"--palette {spec}: colours must be [r, g, b] with values 0-255 ({exc})") from None
    return Palette(table)


def _rgb(value: object) -> tuple[int, int, int]:
    r, g, b = (int(v) for v in value)  # type: ignore[union-attr]
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"{value} is out of range")
    return r, g, b


def select_classes(spec: str, classes: list[str]) -> list[int]:
    """``--classes road,car`` -> class indices (names case-insensitive, or indices)."""
    from vsegcli.errors import VsegError

    index = {name.lower(): i for i, name in enumerate(classes)}
    picked = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.isdigit() and int(item) < len(classes):
            picked.append(int(item))
        elif item.lower() in index:
            picked.append(index[item.lower()])
        else:
            raise VsegError(f"--classes: no class {item!r}; this model's classes: {', '.join(classes)}")
    if not picked:
        raise VsegError("--classes: give at least one class name, e.g. --classes road,car")
    return sorted(set(picked))


# -- legend ---------------------------------------------------------------------------------------

# A class enters the legend when it covers at least this share of the frame (specks stay out).
LEGEND_MIN_SHARE = 0.001


def legend_entries(labels: np.ndarray, num_classes: int, only: list[int] | None = None,
                   min_share: float = LEGEND_MIN_SHARE) -> list[int]:
    """The classes visible in `labels`, largest first (restricted to `only` when given)."""
    counts = np.bincount(labels.reshape(-1), minlength=256)[:num_classes]
    keep = counts >= max(1, min_share * labels.size)
    if only is not None:
        mask = np.zeros(num_classes, bool)
        mask[[i for i in only if i < num_classes]] = True
        keep &= mask
    return [int(i) for i in np.argsort(-counts, kind="stable") if keep[i]]


def legend_box(height: int, width: int, n: int) -> tuple[int, int, int, int, float, int]:
    """Geometry of the legend at the top-left corner: (x0, y0, box w, row h, font scale, swatch).
    Small: rows ~1/22 of the frame's short side (at least 10 px), at most 1/3 of the width."""
    short = min(height, width)
    row = max(10, short // 22)
    swatch = max(6, row - 4)
    scale = row / 30.0
    return 4, 4, max(40, width // 3), row, scale, swatch


@functools.lru_cache(maxsize=1024)
def _text_width(text: str, scale: float, thick: int) -> int:
    """Pixel width of a legend label: the same few names at one scale every frame, so measured once."""
    import cv2

    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]


def draw_legend(image: np.ndarray, entries: list[int], names: list[str], palette: Palette,
                max_rows: int | None = None) -> np.ndarray:
    """Draw the legend (colour swatch + class name per visible class) into `image` (H, W, 3 RGB uint8,
    modified in place and returned) at the top-left corner, on a dark translucent box."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, box_w, row, scale, swatch = legend_box(h, w, len(entries))
    rows = max(0, min(len(entries), (h - 2 * y0) // row))
    if max_rows is not None:
        rows = min(rows, max_rows)
    if rows == 0:
        return image
    thick = 1
    text_w = max(_text_width(names[i], scale, thick) for i in entries[:rows])
    box_w = min(w - x0, max(box_w // 2, swatch + 8 + text_w + 4))
    y1 = min(h, y0 + rows * row + 4)
    region = image[y0:y1, x0:x0 + box_w]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken: text stays readable
    for k, cls in enumerate(entries[:rows]):
        top = y0 + 2 + k * row
        colour = tuple(int(c) for c in palette.colours[cls])
        cv2.rectangle(image, (x0 + 3, top + 1), (x0 + 3 + swatch, top + 1 + swatch), colour, -1)
        cv2.putText(image, names[cls], (x0 + swatch + 8, top + swatch), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (255, 255, 255), thick, cv2.LINE_AA)
    return image
