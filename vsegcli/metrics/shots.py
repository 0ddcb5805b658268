"""Shot-cut detection on decoded frames: where one camera shot ends and the next begins.

Temporal models must not attend across a cut (another shot's features are wrong evidence), and
temporal-consistency metrics must not count the pair that straddles one (every label "changes"
there, and no model should be blamed for it). Both ask this module; numpy + OpenCV only, so it
runs on the decode thread, in the report sink and in evaluation alike, without torch.

Method (content histogram + motion-tolerant structure check + a short look-ahead):

* Each frame is shrunk once to a thumbnail ``width`` (64) pixels wide. Its features: an 8x4x4
  HSV histogram (sum 1) and the grey thumbnail.
* For frames i, j: ``H(i, j)`` = 1 - histogram intersection (0 same colours, 1 disjoint);
  ``S(i, j)`` = 1 - the best normalised cross-correlation of the grey thumbnails over shifts up
  to ``max_shift`` (6 %) of the frame in x and y (so a pan that moves the picture by up to 6 % a
  frame still lines up; a flat frame has no structure to line up: S = 1).
* The pair (i, j) *looks like a cut* when ``H >= max(hist_floor, hist_ratio * median)`` (the
  median of the last ``history`` consecutive-pair H values: adaptive, so busy footage needs a
  bigger jump than calm footage) **and** ``S >= struct_floor`` (the picture's layout changed too:
  a global light or colour change that keeps the layout is not a cut).
* Frame b starts a new shot when the pair (b-1, b) looks like a cut **and** so does every pair
  across it within the look-ahead L = ``lookahead`` (2): (b-1, b+1..b+L) and (b-1-L..b-2, b).
  A flash of one or two frames fails this: the frame after it returns to the earlier content.
  Decisions therefore come L frames late (`ShotCutDetector.push` / `mark_shot_cuts` buffer them).

What is guaranteed (tested in tests/test_shots.py on real footage from examples/bikes.mp4):
  * a hard cut between two different scenes is found at the exact frame, including between
    two street scenes of similar colours (all five cuts of bikes.mp4);
  * a camera pan of up to 6 % of the frame width per frame is not a cut;
  * a flash of 1 or 2 frames (even a fully white frame) is not a cut when the frames after it
    show the earlier scene again.
Not guaranteed: gradual transitions (fades, dissolves) are not cuts by design; a cut between two
shots of near-identical colours and layout can be missed; an insert of at most L frames between
two views of the same scene counts as a flash; a flash in the last L frames of a video, with
nothing after it to return to, counts as a cut.

Cost: 0.15–0.3 ms per 640x272 frame on one core (benchmarks/profile_run.py: 0.15) (features once per frame; a decision compares
2L+1 thumbnail pairs).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

__all__ = ["ShotCutDetector", "detect_shot_cuts", "mark_shot_cuts"]

T = TypeVar("T")

_HIST_BINS = [8, 4, 4]  # H, S, V: hue matters most; a coarse histogram shrugs off motion
_HIST_RANGES = [0, 180, 0, 256, 0, 256]
_FLAT_STD = 2.0  # grey levels: below this a thumbnail has no structure to correlate


@dataclass
class _Features:
    hist: np.ndarray  # (128,) float32, sums to 1
    gray: np.ndarray  # (h, w) float32 thumbnail
    flat: bool


class ShotCutDetector:
    """Streaming shot-cut detector: `push` each frame in order, then `finish` once.

    Both return the decisions made so far, one bool per frame in frame order ("this frame starts
    a new shot"); a frame is decided once `lookahead` frames after it have arrived (or at
    `finish`). `cuts` lists every position (0-based, in pushed frames) that starts a new shot;
    position 0 never does.
    """

    def __init__(
        self,
        lookahead: int = 2,
        width: int = 64,
        history: int = 24,
        hist_floor: float = 0.2,
        hist_ratio: float = 4.0,
        struct_floor: float = 0.35,
        max_shift: float = 0.06,
    ) -> None:
        if lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self.lookahead = int(lookahead)
        self.width = int(width)
        self.hist_floor = float(hist_floor)
        self.hist_ratio = float(hist_ratio)
        self.struct_floor = float(struct_floor)
        self.max_shift = float(max_shift)
        # Features of frames lookahead+1 back .. newest: all a decision can touch.
        self._feats: deque[_Features] = deque(maxlen=2 * self.lookahead + 2)
        self._pair_h: deque[float] = deque(maxlen=int(history))
        self._pushed = 0
        self._decided = 0
        self.cuts: list[int] = []
        self.elapsed_s = 0.0

    # ------------------------------------------------------------------ features
    def _features(self, frame: np.ndarray) -> _Features:
        f = np.asarray(frame)
        if f.ndim == 2:
            f = np.repeat(f[..., None], 3, axis=2)
        if f.dtype != np.uint8:
            f = np.clip(f, 0, 255).astype(np.uint8)
        h, w = f.shape[:2]
        tw = min(self.width, w)
        th = max(1, round(h * tw / w))
        # Plain subsampling down to ~2x the thumbnail first: INTER_AREA over the whole frame
        # costs most of the budget and buys nothing at this size.
        step = max(1, w // (2 * tw))
        small = cv2.resize(np.ascontiguousarray(f[::step, ::step]), (tw, th), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, _HIST_BINS, _HIST_RANGES).ravel()
        hist /= max(float(hist.sum()), 1.0)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        return _Features(hist, gray, float(gray.std()) < _FLAT_STD)

    @staticmethod
    def hist_distance(a: _Features, b: _Features) -> float:
        return float(1.0 - np.minimum(a.hist, b.hist).sum())

    def struct_distance(self, a: _Features, b: _Features) -> float:
        if a.flat or b.flat:
            return 1.0
        h, w = a.gray.shape
        mx, my = round(self.max_shift * w), round(self.max_shift * h)
        if w - 2 * mx < 2 or h - 2 * my < 2:
            mx = my = 0
        tmpl = b.gray[my : h - my, mx : w - mx]
        if float(tmpl.std()) < _FLAT_STD:  # the centre alone may be flat
            return 1.0
        ncc = cv2.matchTemplate(a.gray, tmpl, cv2.TM_CCOEFF_NORMED)
        return float(1.0 - np.nanmax(ncc))

    def _looks_like_cut(self, a: _Features, b: _Features, bar: float) -> bool:
        return self.hist_distance(a, b) >= bar and self.struct_distance(a, b) >= self.struct_floor

    # ------------------------------------------------------------------ decisions
    def _decide(self, pos: int) -> bool:
        """Whether frame `pos` starts a new shot; needs frames pos-1-L .. pos+L that exist."""
        if pos == 0:
            return False
        first = self._pushed - len(self._feats)  # position of self._feats[0]

        def feat(p: int) -> _Features | None:
            return self._feats[p - first] if first <= p < self._pushed else None

        prev, cur = feat(pos - 1), feat(pos)
        assert prev is not None and cur is not None
        h = self.hist_distance(prev, cur)
        median = float(np.median(self._pair_h)) if self._pair_h else 0.0
        bar = max(self.hist_floor, self.hist_ratio * median)
        cut = h >= bar and self.struct_distance(prev, cur) >= self.struct_floor
        if cut:
            for p in range(pos + 1, pos + 1 + self.lookahead):  # does the old scene come back?
                later = feat(p)
                if later is not None and not self._looks_like_cut(prev, later, bar):
                    cut = False
                    break
        if cut:
            for p in range(pos - 1 - self.lookahead, pos - 1):  # was the old frame a flash?
                earlier = feat(p)
                if earlier is not None and not self._looks_like_cut(earlier, cur, bar):
                    cut = False
                    break
        if cut:
            self.cuts.append(pos)
        else:
            self._pair_h.append(h)
        return cut

    def push(self, frame: np.ndarray) -> list[bool]:
        """Add the next frame (H x W x 3 uint8 RGB, or grey); returns the decisions now made."""
        t0 = time.perf_counter()
        self._feats.append(self._features(frame))
        self._pushed += 1
        out: list[bool] = []
        while self._decided < self._pushed - self.lookahead:
            out.append(self._decide(self._decided))
            self._decided += 1
        self.elapsed_s += time.perf_counter() - t0
        return out

    def finish(self) -> list[bool]:
        """The decisions for the last frames (no more frames to look ahead to)."""
        t0 = time.perf_counter()
        out: list[bool] = []
        while self._decided < self._pushed:
            out.append(self._decide(self._decided))
            self._decided += 1
        self.elapsed_s += time.perf_counter() - t0
        return out

    @property
    def frames(self) -> int:
        return self._pushed


def mark_shot_cuts(
    items: Iterable[T],
    frame_of: Callable[[T], np.ndarray] | None = None,
    detector: ShotCutDetector | None = None,
) -> Iterator[tuple[T, bool]]:
    """(item, starts_a_new_shot) for each item, in order, `detector.lookahead` items late.

    `frame_of` picks the frame out of an item (e.g. ``lambda it: it[1]`` for (index, frame));
    items are the frames themselves without it. Pass a `detector` to read its `cuts` afterwards.
    """
    det = detector if detector is not None else ShotCutDetector()
    pending: deque[T] = deque()
    for item in items:
        pending.append(item)
        for flag in det.push(item if frame_of is None else frame_of(item)):  # type: ignore[arg-type]
            yield pending.popleft(), flag
    for flag in det.finish():
        yield pending.popleft(), flag


def detect_shot_cuts(frames: Iterable[np.ndarray], **options: float) -> list[int]:
    """Positions (0-based) of the frames that start a new shot; `options` go to ShotCutDetector."""
    det = ShotCutDetector(**options)  # type: ignore[arg-type]
    for f in frames:
        det.push(f)
    det.finish()
    return det.cuts
