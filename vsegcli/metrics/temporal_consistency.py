"""Label temporal consistency of a segmented video — no ground truth needed.

For each consecutive frame pair (t, t+1) the accumulator estimates optical flow from t to t+1
(OpenCV DIS, preset MEDIUM: classical, no weights to download), warps the labels of t+1 back
onto frame t with nearest-neighbour sampling, W_t(x) = P_{t+1}(x + F_t(x)), and accumulates a
K x K confusion between P_t and W_t over all pairs. Pixels whose flow target falls outside the
image, or whose label is outside [0, K), are excluded.

* **TC** (ETC protocol, stt-metrics-datasets §3.3): per class c, IoU_c = I_c / U_c of that
  dataset-level confusion (I_c = #{P_t = c and W_t = c}, U_c = #{P_t = c or W_t = c}, summed
  over all pairs, not averaged per pair); TC = mean over classes with U_c > 0.
  Two deliberate differences from ETC: flow is DIS on a reduced grid instead of FlowNet2 at full
  resolution, and labels are warped with nearest sampling (ETC samples bilinearly and truncates,
  which invents class ids at boundaries). So values are comparable between runs of vseg, not
  directly with published TC numbers.
* **flicker rate**: share of pixels whose label differs between t and t+1 at the same position
  (no flow): what a viewer sees as flicker, motion included.
* **flow-compensated flicker**: share of valid pixels with P_t != W_t = 1 - pixel agreement.
  Both per pair (for a timeline), overall, and per class (share of the pixels labelled c at t
  that change).
* per-frame **class shares** and a **flicker heat-map** (per analysis-grid pixel: the fraction of
  pairs, among those where it had a valid flow target, in which its warped label changed).

**Shot cuts**: a pair that straddles a cut between camera shots (`update(..., new_shot=True)`;
`temporal_consistency` finds them with `metrics.shots`) is left out of TC, both flicker rates,
the per-class numbers and the heat-map — every label "changes" there and no model is to blame.
Its per-pair values are NaN; the cut positions are `shot_cuts`, their count `pairs_excluded`, and
the three headline numbers over all pairs, cuts included, stay available as `including_cuts`.

Units: ``tc`` and ``per_class_tc`` are **percent** (0-100, as the papers print TC); every
``*flicker*``, ``*share*`` and ``valid_fraction`` value is a **fraction** in [0, 1].

Everything runs on an "analysis grid": the frame scaled so its short side is ``flow_size``
(never upscaled; ``flow_size=None`` keeps full resolution); labels are downscaled with exact
nearest-neighbour. The grid used is recorded as ``analysis_size``. Cost measured at 640x272,
flow_size=256 (grid 602x256) on a 2-core CPU: about 8-9 ms per frame, of which ~1.2 ms is
everything but the flow; preset "fast" about 3.3 ms, "ultrafast" about 2.3 ms.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.jsonio import finite
from vsegcli.metrics.pairs import strict_pairs
from vsegcli.metrics.shots import mark_shot_cuts

__all__ = ["TemporalConsistency", "TemporalConsistencyResult", "temporal_consistency", "FlowFn"]

# (gray_t, gray_t+1) on the analysis grid -> (h, w, 2) float32 flow (dx, dy) from t to t+1:
# pixel (x, y) of frame t sits at (x + dx, y + dy) in frame t+1.
FlowFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_DIS_MIN_SIDE = 12  # cv2 DIS needs the width or the height to be at least its patch size


def _finite_list(values: np.ndarray, ndigits: int = 6) -> list[float | None]:
    return [finite(v, ndigits) for v in values]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


@dataclass
class TemporalConsistencyResult:
    """Everything `TemporalConsistency` measured. See the module docstring for units."""

    num_classes: int
    num_frames: int
    num_pairs: int
    frame_size: tuple[int, int] | None  # (H, W) of the input frames
    analysis_size: tuple[int, int] | None  # (H', W') of the flow / statistics grid
    flow_method: str
    tc: float  # percent; NaN without pairs
    per_class_tc: np.ndarray  # (K,) percent; NaN where the class never appears in P_t or W_t
    flicker_rate: float  # fraction, no flow
    flow_flicker_rate: float  # fraction of valid pixels, flow-compensated
    valid_fraction: float  # share of pixels whose flow target lies inside the image
    per_pair_flicker: list[float] = field(default_factory=list)
    per_pair_flow_flicker: list[float] = field(default_factory=list)
    per_class_flicker: np.ndarray = field(default_factory=lambda: np.zeros(0))
    per_class_flow_flicker: np.ndarray = field(default_factory=lambda: np.zeros(0))
    class_share: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (frames, K)
    flicker_heatmap: np.ndarray | None = None  # (H', W') fraction of valid pairs that changed
    tc_confusion: np.ndarray | None = None  # (K, K) int64: rows P_t, columns warped P_t+1
    # Positions (in the processed sequence) of frames that start a new shot: pair p-1 -> p excluded.
    shot_cuts: list[int] = field(default_factory=list)
    # tc / flicker_rate / flow_flicker_rate over every pair, cut pairs included (for comparison).
    including_cuts: dict[str, float] = field(default_factory=dict)

    @property
    def pairs_excluded(self) -> int:
        return len(self.shot_cuts)

    def to_dict(
        self, include_heatmap: bool = False, include_confusion: bool = False
    ) -> dict[str, Any]:
        """JSON-ready dict (NaN -> None). The heat-map (H'xW' floats, ~1 MB of JSON at the
        default grid) and the confusion are left out unless asked for."""
        out: dict[str, Any] = {
            "units": {"tc": "percent", "flicker": "fraction", "class_share": "fraction"},
            "num_classes": self.num_classes,
            "num_frames": self.num_frames,
            "num_pairs": self.num_pairs,
            "shot_cuts": list(self.shot_cuts),
            "pairs_excluded": self.pairs_excluded,
            "including_cuts": {k: finite(v) for k, v in self.including_cuts.items()},
            "frame_size": list(self.frame_size) if self.frame_size else None,
            "analysis_size": list(self.analysis_size) if self.analysis_size else None,
            "flow_method": self.flow_method,
            "tc": finite(self.tc),
            "per_class_tc": _finite_list(self.per_class_tc, 4),
            "flicker_rate": finite(self.flicker_rate),
            "flow_flicker_rate": finite(self.flow_flicker_rate),
            "valid_fraction": finite(self.valid_fraction),
            "per_pair_flicker": _finite_list(np.asarray(self.per_pair_flicker)),
            "per_pair_flow_flicker": _finite_list(np.asarray(self.per_pair_flow_flicker)),
            "per_class_flicker": _finite_list(self.per_class_flicker),
            "per_class_flow_flicker": _finite_list(self.per_class_flow_flicker),
            "class_share": np.round(self.class_share, 6).tolist(),
        }
        if include_heatmap:
            out["flicker_heatmap"] = (
                None if self.flicker_heatmap is None else np.round(self.flicker_heatmap, 4).tolist()
            )
        if include_confusion:
            out["tc_confusion"] = None if self.tc_confusion is None else self.tc_confusion.tolist()
        return out


class TemporalConsistency:
    """Streaming TC / flicker accumulator: call `update(frame, labels)` once per frame in order.

    `flow_fn` replaces DIS (tests inject known flows; a learned flow could plug in here).
    `flow_preset` picks the DIS preset: "medium" (default, the measured protocol), or "fast" /
    "ultrafast" (flow about 3x / 6x cheaper, coarser) when TC must cost less.
    """

    def __init__(
        self,
        num_classes: int,
        flow_size: int | None = 256,
        flow_fn: FlowFn | None = None,
        keep_heatmap: bool = True,
        flow_preset: str = "medium",
    ) -> None:
        if not 1 <= int(num_classes) <= 255:
            raise VsegError(f"temporal consistency supports 1..255 classes, got {num_classes}")
        if flow_size is not None and int(flow_size) < 16:
            raise VsegError(f"flow_size must be at least 16 pixels (or None), got {flow_size}")
        if flow_preset not in _DIS_PRESETS:
            raise VsegError(
                f"unknown flow preset {flow_preset!r}; choose one of: {', '.join(_DIS_PRESETS)}"
            )
        self.flow_preset = flow_preset
        self.num_classes = int(num_classes)
        self.flow_size = None if flow_size is None else int(flow_size)
        self._flow_fn = flow_fn
        self._dis: Any = None
        self.keep_heatmap = keep_heatmap
        k = self.num_classes
        # Labels 0..K-1 keep their id, anything else becomes K ("no class"), then dropped.
        self._lut = np.minimum(np.arange(256), k).astype(np.uint8)  # for cv2.LUT (fast)
        self._k1 = k + 1
        self._flow_conf = np.zeros((k, k), dtype=np.int64)
        self._raw_conf = np.zeros((k, k), dtype=np.int64)
        self._cut_flow_conf = np.zeros((k, k), dtype=np.int64)  # pairs across a shot cut only
        self._cut_raw_conf = np.zeros((k, k), dtype=np.int64)
        self._shot_cuts: list[int] = []
        self._pair_flicker: list[float] = []
        self._pair_flow_flicker: list[float] = []
        self._share_counts: list[np.ndarray] = []
        self._pixels_flow = 0  # grid pixels over all pairs (valid or not)
        self._valid_flow = 0
        self.frame_size: tuple[int, int] | None = None
        self.analysis_size: tuple[int, int] | None = None
        self._prev_gray: np.ndarray | None = None
        self._prev_row: np.ndarray | None = None  # previous labels through the LUT (uint16)
        self._grid: tuple[np.ndarray, np.ndarray] | None = None
        self._heat_changed: np.ndarray | None = None
        self._heat_valid: np.ndarray | None = None
        self.elapsed_s = 0.0  # time spent in update(), for cost reporting

    # ------------------------------------------------------------------ geometry
    def _grid_size(self, h: int, w: int) -> tuple[int, int]:
        if self.flow_size is None or min(h, w) <= self.flow_size:
            return h, w
        scale = self.flow_size / min(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def _flow(self, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
        if self._flow_fn is not None:
            flow = np.asarray(self._flow_fn(prev, cur), dtype=np.float32)
        elif max(prev.shape) < _DIS_MIN_SIDE:
            # DIS refuses images this small; with no flow, TC degrades to the flow-free measure.
            flow = np.zeros((*prev.shape, 2), np.float32)
        else:
            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[self.flow_preset])
            flow = self._dis.calc(prev, cur, None)
        if flow.shape != (*prev.shape, 2):
            raise ValueError(f"flow has shape {flow.shape}, expected {(*prev.shape, 2)}")
        return flow

    # ------------------------------------------------------------------ accumulation
    def update(self, frame_rgb: np.ndarray, labels: np.ndarray, new_shot: bool = False) -> None:
        """Add the next frame (H x W x 3 uint8 RGB, or H x W grey) and its labels (H x W).

        `new_shot`: this frame starts a new camera shot, so the pair with the previous frame is
        not counted (see the module docstring)."""
        t0 = time.perf_counter()
        frame = np.asarray(frame_rgb)
        lab = np.asarray(labels)
        if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (1, 3)):
            raise VsegError(f"expected an H x W x 3 RGB frame, got shape {frame.shape}")
        if lab.shape != frame.shape[:2]:
            raise VsegError(f"labels {lab.shape} and frame {frame.shape[:2]} differ in size")
        h, w = lab.shape
        if self.frame_size is None:
            self.frame_size = (h, w)
            self.analysis_size = self._grid_size(h, w)
            gh, gw = self.analysis_size
            gy, gx = np.mgrid[0:gh, 0:gw].astype(np.float32)
            self._grid = (gx, gy)
            if self.keep_heatmap:
                self._heat_changed = np.zeros((gh, gw), dtype=np.uint32)
                self._heat_valid = np.zeros((gh, gw), dtype=np.uint32)
        elif (h, w) != self.frame_size:
            raise VsegError(f"frame size changed from {self.frame_size} to {(h, w)} mid-video")
        assert self.analysis_size is not None and self._grid is not None
        gh, gw = self.analysis_size

        if frame.dtype != np.uint8:
            frame = np.clip(frame, 0, 255).astype(np.uint8)
        if frame.ndim == 3 and frame.shape[2] == 3:
            gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        else:
            gray = frame.reshape(h, w)
        if lab.dtype != np.uint8:
            # Out-of-range ids become 255, which the LUT turns into "no class".
            lab = np.where((lab >= 0) & (lab < self.num_classes), lab, 255).astype(np.uint8)
        if (gh, gw) != (h, w):
            # AREA anti-aliases strong downscales; LINEAR is 6x cheaper and enough for mild ones.
            interp = cv2.INTER_AREA if gh < h / 2 else cv2.INTER_LINEAR
            gray = cv2.resize(gray, (gw, gh), interpolation=interp)
            # EXACT: pixel-centre nearest (plain INTER_NEAREST is shifted by half a pixel).
            lab = cv2.resize(lab, (gw, gh), interpolation=cv2.INTER_NEAREST_EXACT)
        gray = np.ascontiguousarray(gray)
        lab = np.ascontiguousarray(lab)
        # uint16 so that row * (K+1) + col (< 65536 for K <= 255) cannot overflow.
        row = cv2.LUT(lab, self._lut).astype(np.uint16)
        k1 = self._k1

        excluded = bool(new_shot) and self._prev_row is not None
        if excluded:
            self._shot_cuts.append(self.num_frames)
        if self._prev_gray is None or self._prev_row is None:
            self._share_counts.append(
                np.bincount(row.reshape(-1), minlength=k1)[: self.num_classes].astype(np.int32)
            )
        else:
            prev_row = self._prev_row
            npix = gh * gw
            raw = np.bincount((prev_row * k1 + row).reshape(-1), minlength=k1 * k1).reshape(k1, k1)
            # Column sums of the full matrix are this frame's class counts: no extra pass.
            self._share_counts.append(raw.sum(axis=0)[: self.num_classes].astype(np.int32))
            # Flow-free flicker: same position, both labels valid.
            raw = raw[:-1, :-1]
            raw_valid = int(raw.sum())
            if excluded:
                self._cut_raw_conf += raw
                self._pair_flicker.append(float("nan"))
            else:
                self._raw_conf += raw
                self._pair_flicker.append(
                    (raw_valid - int(np.trace(raw))) / raw_valid if raw_valid else float("nan")
                )
            # Flow-compensated: labels of t+1 sampled at x + F(x); outside -> 255 -> no class.
            flow = self._flow(self._prev_gray, gray)
            gx, gy = self._grid
            warped = cv2.remap(
                lab, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_NEAREST,
                borderMode=cv2.BORDER_CONSTANT, borderValue=255,
            )
            wrow = cv2.LUT(warped, self._lut).astype(np.uint16)
            conf = np.bincount((prev_row * k1 + wrow).reshape(-1), minlength=k1 * k1)
            conf = conf.reshape(k1, k1)
            conf = conf[:-1, :-1]
            if excluded:  # the flow is still computed: `including_cuts` needs this pair
                self._cut_flow_conf += conf
                self._pair_flow_flicker.append(float("nan"))
                self._prev_gray, self._prev_row = gray, row
                self.elapsed_s += time.perf_counter() - t0
                return
            self._flow_conf += conf
            valid = int(conf.sum())
            changed = valid - int(np.trace(conf))
            self._pair_flow_flicker.append(changed / valid if valid else float("nan"))
            self._pixels_flow += npix
            self._valid_flow += valid
            if self._heat_changed is not None and self._heat_valid is not None:
                k = self.num_classes
                vmask = (prev_row < k) & (wrow < k)
                self._heat_valid += vmask
                self._heat_changed += vmask & (prev_row != wrow)
        self._prev_gray = gray
        self._prev_row = row
        self.elapsed_s += time.perf_counter() - t0

    @property
    def num_frames(self) -> int:
        return len(self._share_counts)

    # ------------------------------------------------------------------ results
    @property
    def flow_method(self) -> str:
        if self._flow_fn is not None:
            return "custom"
        if self.analysis_size is not None and max(self.analysis_size) < _DIS_MIN_SIDE:
            return "none (frames too small for optical flow)"
        return f"opencv-dis-{self.flow_preset}"

    @staticmethod
    def _headline(conf: np.ndarray, raw_conf: np.ndarray) -> tuple[np.ndarray, float, float, float]:
        """(per-class IoU, TC %, flicker, flow-compensated flicker) of the two confusions."""
        diag = np.diag(conf).astype(np.float64)
        union = conf.sum(axis=1) + conf.sum(axis=0) - diag
        per_class_iou = _ratio(diag, union)
        tc = float(np.nanmean(per_class_iou) * 100) if (union > 0).any() else float("nan")
        raw_total = raw_conf.sum()
        flow_total = conf.sum()
        flicker = float(1 - np.trace(raw_conf) / raw_total) if raw_total else float("nan")
        flow_flicker = float(1 - diag.sum() / flow_total) if flow_total else float("nan")
        return per_class_iou, tc, flicker, flow_flicker

    def result(self) -> TemporalConsistencyResult:
        k = self.num_classes
        conf = self._flow_conf
        diag = np.diag(conf).astype(np.float64)
        rows = conf.sum(axis=1)
        per_class_iou, tc, flicker, flow_flicker = self._headline(conf, self._raw_conf)
        raw_diag = np.diag(self._raw_conf).astype(np.float64)
        raw_rows = self._raw_conf.sum(axis=1)
        _, tc_all, flicker_all, flow_flicker_all = self._headline(
            conf + self._cut_flow_conf, self._raw_conf + self._cut_raw_conf
        )
        heat = None
        if self._heat_changed is not None and self._heat_valid is not None:
            heat = _ratio(self._heat_changed, self._heat_valid).astype(np.float32)
            heat = np.nan_to_num(heat, nan=0.0)  # never-valid pixels: no evidence of change
        if self._share_counts:
            gh, gw = self.analysis_size or (1, 1)
            share = np.stack(self._share_counts).astype(np.float64) / float(gh * gw)
        else:
            share = np.zeros((0, k))
        return TemporalConsistencyResult(
            num_classes=k,
            num_frames=self.num_frames,
            num_pairs=len(self._pair_flow_flicker) - len(self._shot_cuts),
            frame_size=self.frame_size,
            analysis_size=self.analysis_size,
            flow_method=self.flow_method,
            tc=tc,
            per_class_tc=per_class_iou * 100,
            flicker_rate=flicker,
            flow_flicker_rate=flow_flicker,
            valid_fraction=(
                self._valid_flow / self._pixels_flow if self._pixels_flow else float("nan")
            ),
            per_pair_flicker=list(self._pair_flicker),
            per_pair_flow_flicker=list(self._pair_flow_flicker),
            per_class_flicker=1 - _ratio(raw_diag, raw_rows),
            per_class_flow_flicker=1 - _ratio(diag, rows),
            class_share=share,
            flicker_heatmap=heat,
            tc_confusion=conf.copy(),
            shot_cuts=list(self._shot_cuts),
            including_cuts={"tc": tc_all, "flicker_rate": flicker_all, "flow_flicker_rate": flow_flicker_all},
        )


def temporal_consistency(
    frames: Iterable[np.ndarray],
    labels: Iterable[np.ndarray],
    num_classes: int,
    shot_cuts: bool = True,
    **kwargs: Any,
) -> TemporalConsistencyResult:
    """TC / flicker of one whole sequence (same math as the streaming accumulator).

    `shot_cuts`: find cuts between camera shots (`metrics.shots`) and leave the pairs across them
    out. `kwargs` go to `TemporalConsistency` (flow_size, flow_fn, keep_heatmap, flow_preset).
    """
    acc = TemporalConsistency(num_classes, **kwargs)
    pairs = strict_pairs(frames, labels, "temporal_consistency: different numbers of frames and label maps")
    if shot_cuts:
        marked = mark_shot_cuts(pairs, frame_of=lambda pair: pair[0])
    else:
        marked = ((pair, False) for pair in pairs)
    for (f, lab), new_shot in marked:
        acc.update(f, lab, new_shot=new_shot)
    return acc.result()
