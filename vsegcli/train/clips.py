"""Training clips: which frames a clip holds and the augmentation drawn once per clip.

Pure functions of an RNG (testable, independent of data-loader workers); see the package doc.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import cv2
import numpy as np

from vsegcli.data.labels import IGNORE_INDEX as IGNORE
from vsegcli.errors import VsegError

if TYPE_CHECKING:
    from vsegcli.models.base import Segmentor


@dataclass(frozen=True)
class ClipSpec:
    """Which earlier frames a clip holds: `num_prev` frames with random gaps 1..`max_gap`, or the
    fixed `offsets` (MRCFA on dense video). With probability `reverse_prob` a fixed-offset clip
    runs backwards in time (MRCFA's official sampler reverses the video with p = 0.5): its
    "earlier" frames are then t - d, the frames after the target."""

    num_prev: int = 0
    max_gap: int = 1
    offsets: tuple[int, ...] | None = None
    reverse_prob: float = 0.0

    @property
    def length(self) -> int:
        return 1 + (len(self.offsets) if self.offsets is not None else self.num_prev)


def references_exist(target: int, spec: ClipSpec, length: int, reverse: bool = False) -> bool:
    """Whether every fixed-offset reference of `target` lies inside a sequence of `length` frames
    (always true for gap-sampled clips, whose early targets repeat the first frame)."""
    if spec.offsets is None:
        return True
    span = -min(spec.offsets)
    return target + span <= length - 1 if reverse else target - span >= 0


def draw_reverse(target: int, spec: ClipSpec, length: int, rng: np.random.Generator) -> bool:
    """The clip's direction: backwards with probability `reverse_prob` where both directions have
    all their references, else the one that has them (forward when neither does)."""
    if spec.offsets is None or spec.reverse_prob <= 0:
        return False
    forward, backward = references_exist(target, spec, length), references_exist(target, spec, length, True)
    if forward and backward:
        return bool(rng.random() < spec.reverse_prob)
    return backward and not forward


def clip_spec_for(model: Segmentor, dataset: str, max_gap: int) -> ClipSpec:
    """The clip the architecture trains on (package docstring): the model's fixed offsets, or as
    many earlier frames as it attends to with random gaps; a per-frame model trains on the target."""
    offsets = model.clip_offsets()
    if not offsets:
        return ClipSpec()
    if model.fixed_offsets:
        return ClipSpec(offsets=tuple(offsets), reverse_prob=model.train_reverse_prob)
    return ClipSpec(num_prev=len(offsets), max_gap=max_gap)


def clip_positions(target: int, spec: ClipSpec, rng: np.random.Generator, reverse: bool = False,
                   length: int | None = None) -> list[int]:
    """Frame positions of a clip in the order the model reads them, target last: oldest first, or
    for a `reverse` clip (`draw_reverse`) newest first (t+9, t+6, t+3, t). Positions outside the
    sequence repeat its first (last: `length`) frame."""
    if spec.offsets is not None:
        if reverse:
            last = (length - 1) if length is not None else None
            return [min(last, target - d) if last is not None else target - d for d in spec.offsets] + [target]
        return [max(0, target + d) for d in spec.offsets] + [target]
    prev = []
    p = target
    for _ in range(spec.num_prev):
        p -= int(rng.integers(1, spec.max_gap + 1))
        prev.append(max(0, p))
    return prev[::-1] + [target]


@dataclass(frozen=True)
class AugmentParams:
    crop: tuple[int, int]
    base_short: int | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = True
    pad_rgb: tuple[float, float, float] = (123.675, 116.28, 103.53)  # the mean: pads normalise to 0


def geometry(h: int, w: int, p: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """A 2x3 affine matrix (source -> crop pixels): random scale, crop and flip, drawn once per clip.

    Equivalent to resize-by-s (cv2 pixel-centre convention), crop at (y0, x0), then flip; a crop
    larger than the scaled frame keeps it at the top-left and pads the rest."""
    ch, cw = p.crop
    s = (p.base_short / min(h, w) if p.base_short else 1.0) * float(rng.uniform(*p.scale_range))
    sh, sw = round(h * s), round(w * s)
    y0 = int(rng.integers(0, max(sh - ch, 0) + 1))
    x0 = int(rng.integers(0, max(sw - cw, 0) + 1))
    flip = p.flip and bool(rng.random() < 0.5)
    m = np.array([[s, 0.0, 0.5 * s - 0.5 - x0], [0.0, s, 0.5 * s - 0.5 - y0]])
    if flip:
        m[0] = -m[0]
        m[0, 2] += cw - 1
    return m


def photometric_params(rng: np.random.Generator) -> dict[str, Any]:
    """mmseg PhotoMetricDistortion parameters: each distortion applied with probability 0.5."""
    return {
        "brightness": float(rng.uniform(-32, 32)) if rng.random() < 0.5 else None,
        "contrast_first": bool(rng.random() < 0.5),
        "contrast": float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None,
        "saturation": float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None,
        "hue": int(rng.integers(-18, 19)) if rng.random() < 0.5 else None,  # OpenCV hue units (0..180)
    }


def apply_photometric(img: np.ndarray, q: dict[str, Any]) -> np.ndarray:
    """Apply `photometric_params` to an RGB uint8 image."""
    x = img.astype(np.float32)
    if q["brightness"] is not None:
        x = np.clip(x + q["brightness"], 0, 255)
    if q["contrast"] is not None and q["contrast_first"]:
        x = np.clip(x * q["contrast"], 0, 255)
    if q["saturation"] is not None or q["hue"] is not None:
        hsv = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2HSV)  # float: H in degrees, S and V in 0..1
        if q["saturation"] is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * q["saturation"], 0, 1)
        if q["hue"] is not None:
            hsv[..., 0] = (hsv[..., 0] + 2 * q["hue"]) % 360
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    if q["contrast"] is not None and not q["contrast_first"]:
        x = np.clip(x * q["contrast"], 0, 255)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_clip(images: Sequence[np.ndarray], labels: Sequence[np.ndarray | None], p: AugmentParams,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same scale/crop/flip/photometric draw for every frame of a clip.

    images: HxWx3 uint8 RGB, all the same size; labels: HxW uint8 or None (no ground truth).
    Returns frames (T, h, w, 3) uint8 and labels (T, h, w) uint8 (255 = ignore / padding)."""
    h, w = images[0].shape[:2]
    for im in images:
        if im.shape[:2] != (h, w):
            raise VsegError(f"frames of one sequence differ in size ({im.shape[1]}x{im.shape[0]} vs {w}x{h}); "
                            "resize the dataset's frames to one size")
    m = geometry(h, w, p, rng)
    q = photometric_params(rng) if p.photometric else None
    ch, cw = p.crop
    frames = np.empty((len(images), ch, cw, 3), np.uint8)
    targets = np.full((len(images), ch, cw), IGNORE, np.uint8)
    for i, (im, lb) in enumerate(zip(images, labels)):
        out = cv2.warpAffine(im, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=p.pad_rgb)
        frames[i] = apply_photometric(out, q) if q is not None else out
        if lb is not None:
            if lb.shape != (h, w):
                raise VsegError(f"a label map is {lb.shape[1]}x{lb.shape[0]} but its frame is {w}x{h}; fix the dataset")
            targets[i] = cv2.warpAffine(lb, m, (cw, ch), flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
    return frames, targets
