"""Synthetic dense motion: a short clip made from one labelled frame by a smooth camera path.

CamVid's labelled training frames are 1 s apart, so temporal models trained on real clips never
see frame-to-frame motion. The static-image pretraining trick of memory-based video segmentation
(STM / STCN) fills that gap: warp one labelled frame along a random, smooth camera trajectory and
use the warped frames (and labels) as the clip's earlier frames.

The path is a per-clip velocity (pan, tilt, zoom, roll, a little perspective) plus a small
random-walk jitter per frame step, so frame k steps away from the target is displaced by about
k x velocity — the near-linear motion of a moving camera at 15-30 Hz. The target frame itself is
never warped (its labels stay exact). A clip takes the offsets the real clip spec draws
(`clip_positions`), read as *video frame* steps: on CamVid a real clip's step is the next labelled
frame (~1 s), a synthetic one's is one frame of 15-30 Hz video — the motion `vseg run` sees between
the frames a session caches. Areas a warp brings in from outside the frame are filled by
reflection (images) and `IGNORE` (labels). Earlier frames are resampled twice (this warp, then the
clip's scale/crop), the target once: a slight softening, as motion blur would give.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from vsegcli.data.labels import IGNORE_INDEX as IGNORE


@dataclass(frozen=True)
class MotionParams:
    """Per-step motion limits, as fractions of the frame size (translation), relative scale,
    degrees (roll) and perspective (fraction of the frame per frame width). A clip's velocity is
    drawn uniformly within them; `jitter` is the per-step random-walk noise as a fraction of them."""

    shift: float = 0.012  # 6 px per frame step at 480 wide: CamVid's typical flow at 15-30 Hz
    zoom: float = 0.012  # driving forwards / backwards
    roll: float = 0.4
    perspective: float = 0.004
    jitter: float = 0.35


def camera_path(deltas: Sequence[int], rng: np.random.Generator,
                p: MotionParams = MotionParams()) -> dict[int, np.ndarray]:
    """Motion parameters (dx, dy, log-zoom, roll, px, py) at each integer time offset in `deltas`
    (0 = the target, which stays at zero), walked outwards from the target step by step."""
    limits = np.array([p.shift, p.shift, p.zoom, p.roll, p.perspective, p.perspective])
    velocity = rng.uniform(-1.0, 1.0, 6) * limits
    path: dict[int, np.ndarray] = {0: np.zeros(6)}
    for sign in (-1, 1):
        far = max((sign * d for d in deltas), default=0)
        cur = np.zeros(6)
        for k in range(1, far + 1):
            cur = cur + sign * velocity + rng.normal(0.0, 1.0, 6) * limits * p.jitter
            path[sign * k] = cur
    return {int(d): path[int(d)] for d in deltas}


def homography(params: np.ndarray, h: int, w: int) -> np.ndarray:
    """3x3 map from the target frame to the frame with these motion parameters (about the centre)."""
    dx, dy, log_zoom, roll, px, py = (float(v) for v in params)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    a = np.deg2rad(roll)
    z = float(np.exp(log_zoom))
    centre = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, 1.0]])
    linear = np.array([[z * np.cos(a), -z * np.sin(a), 0.0], [z * np.sin(a), z * np.cos(a), 0.0],
                       [px / w, py / w, 1.0]])
    back = np.array([[1.0, 0.0, cx + dx * w], [0.0, 1.0, cy + dy * h], [0.0, 0.0, 1.0]])
    return back @ linear @ centre


def synthetic_clip(image: np.ndarray, label: np.ndarray | None, deltas: Sequence[int],
                   rng: np.random.Generator, p: MotionParams = MotionParams(),
                   ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Frames (and labels, when `label` is given) at time offsets `deltas` from the target (0 is
    the target itself, unchanged), in the order given."""
    h, w = image.shape[:2]
    path = camera_path(deltas, rng, p)
    images: list[np.ndarray] = []
    labels: list[np.ndarray | None] = []
    for d in deltas:
        if d == 0:
            images.append(image)
            labels.append(label)
            continue
        m = homography(path[int(d)], h, w)
        images.append(cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT_101))
        labels.append(None if label is None else
                      cv2.warpPerspective(label, m, (w, h), flags=cv2.INTER_NEAREST,
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE))
    return images, labels
