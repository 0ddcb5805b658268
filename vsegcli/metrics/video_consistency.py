"""Video consistency mVC_k, as the official VSPW ``VC_perclip.py`` computes it.

For a video with N frames (GT g_0..g_{N-1}, predictions p_0..p_{N-1}) and window length k:

* windows start at i in range(N - k) — the last possible window (start N - k) is NOT used;
* G_i = AND_{j=1..k-1} (g_i == g_{i+j}), P_i = AND_{j=1..k-1} (p_i == p_{i+j});
* VC_i = |G_i AND P_i| / |G_i| (NaN when G_i is empty);
* mVC_k = NaN-mean of VC_i over all windows of all videos pooled together (a long video weighs
  more than a short one; it is not a mean of per-video means);
* videos with N <= 16 frames are skipped for every k (the official script uses one threshold,
  16, for both mVC8 and mVC16). `skip_threshold` keeps that default; pass ``skip_threshold=None``
  to skip only videos too short to have a window (N <= k);
* ignore / void pixels are NOT excluded: they count like any label. The official script remaps
  the GT first (raw 0 -> 255, others -1, 254 -> 255), so raw "others" (0) and void (255) are
  the same value there: pass GT in that train-index form to reproduce it.

Results are in **percent** (like the VSPW and MRCFA papers): ``{"mVC8": 87.1, "mVC16": 84.0}``.

Streaming with O(1) frames of memory per video: a pixel is constant over the window ending at
frame e exactly when its current run of equal consecutive labels is >= k long (equality is
transitive, so "all equal to g_i" == "every consecutive pair equal"). Each frame therefore only
updates one run-length map for the GT and one for the prediction, and every window's VC is
computed when its last frame arrives; it is committed once a further frame proves it was not
the video's final window.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.jsonio import finite
from vsegcli.metrics.pairs import strict_pairs

__all__ = ["VideoConsistency", "OFFICIAL_SKIP_THRESHOLD"]

OFFICIAL_SKIP_THRESHOLD = 16  # VC_perclip.py: videos with <= 16 frames are skipped, for any k


class VideoConsistency:
    """Streaming mVC_k over many videos.

    >>> vc = VideoConsistency(ks=(8, 16))
    >>> vc.add_video(preds, gts)            # or: for p, g in ...: vc.update(p, g); vc.end_video()
    >>> vc.result()                          # {"mVC8": ..., "mVC16": ...} in percent
    """

    def __init__(
        self,
        ks: Sequence[int] = (8, 16),
        skip_threshold: int | None = OFFICIAL_SKIP_THRESHOLD,
    ) -> None:
        self.ks = tuple(int(k) for k in ks)
        if not self.ks or any(k < 2 for k in self.ks):
            raise VsegError(f"window lengths must be >= 2, got {tuple(ks)}")
        if len(set(self.ks)) != len(self.ks):
            raise VsegError(f"duplicate window lengths in {tuple(ks)}")
        self.skip_threshold = skip_threshold
        self._cap = max(self.ks)
        # Pooled over committed videos: sum of non-NaN VC_i and their count, per k.
        self._sum = {k: 0.0 for k in self.ks}
        self._count = {k: 0 for k in self.ks}
        self._windows_nan = {k: 0 for k in self.ks}
        self.videos_used = 0
        self.videos_skipped = 0
        self._start_video()

    def _start_video(self) -> None:
        self._n = 0
        self._prev_gt: np.ndarray | None = None
        self._prev_pred: np.ndarray | None = None
        self._run_gt: np.ndarray | None = None  # length of the current constant run, capped
        self._run_pred: np.ndarray | None = None
        self._pending: dict[int, float | None] = {k: None for k in self.ks}
        # This video's committed windows (moved to the pool at end_video unless skipped).
        self._v_sum = {k: 0.0 for k in self.ks}
        self._v_count = {k: 0 for k in self.ks}
        self._v_nan = {k: 0 for k in self.ks}

    @staticmethod
    def _as_array(x: Any) -> np.ndarray:
        if hasattr(x, "detach"):  # torch tensor
            x = x.detach().cpu().numpy()
        return np.asarray(x)

    @staticmethod
    def _extend_run(run: np.ndarray, same: np.ndarray, cap: int) -> np.ndarray:
        # Run length of equal consecutive labels ending at this frame, saturated at `cap`.
        return np.where(same, np.minimum(run + 1, cap), 1).astype(np.uint16)

    def update(self, pred: Any, gt: Any) -> None:
        """Add the next frame of the current video (H x W label maps, numpy or torch)."""
        pred = self._as_array(pred)
        gt = self._as_array(gt)
        if pred.shape != gt.shape:
            raise VsegError(f"prediction {pred.shape} and ground truth {gt.shape} differ in size")
        if self._prev_gt is not None and gt.shape != self._prev_gt.shape:
            raise VsegError(
                f"frame size changed from {self._prev_gt.shape} to {gt.shape} mid-video"
            )
        cap = self._cap
        # A frame arriving proves the windows that ended at the previous frame were not last.
        self._commit_pending()
        if self._prev_gt is None:
            self._run_gt = np.ones(gt.shape, dtype=np.uint16)
            self._run_pred = np.ones(gt.shape, dtype=np.uint16)
        else:
            assert self._run_gt is not None and self._run_pred is not None
            self._run_gt = self._extend_run(self._run_gt, gt == self._prev_gt, cap)
            self._run_pred = self._extend_run(self._run_pred, pred == self._prev_pred, cap)
        self._n += 1
        for k in self.ks:
            if self._n >= k:  # the window [n - k, n - 1] just completed
                g = self._run_gt >= k
                g_count = int(np.count_nonzero(g))
                if g_count == 0:
                    self._pending[k] = float("nan")
                else:
                    both = int(np.count_nonzero(g & (self._run_pred >= k)))
                    self._pending[k] = both / g_count
        self._prev_gt = gt.copy()
        self._prev_pred = pred.copy()

    def _commit_pending(self) -> None:
        for k, vc in self._pending.items():
            if vc is None:
                continue
            if math.isnan(vc):
                self._v_nan[k] += 1
            else:
                self._v_sum[k] += vc
                self._v_count[k] += 1
            self._pending[k] = None

    def end_video(self) -> bool:
        """Close the current video; returns whether it counted (False if skipped as too short).

        The window ending at the last frame is dropped here (the official range(N - k)).
        """
        n = self._n
        if n == 0:
            self._start_video()
            return False
        threshold = self.skip_threshold
        skipped = n <= threshold if threshold is not None else n <= min(self.ks)
        if skipped:
            self.videos_skipped += 1
        else:
            self.videos_used += 1
            for k in self.ks:
                self._sum[k] += self._v_sum[k]
                self._count[k] += self._v_count[k]
                self._windows_nan[k] += self._v_nan[k]
        self._start_video()
        return not skipped

    def add_video(self, preds: Iterable[Any], gts: Iterable[Any]) -> bool:
        """Score one whole video (iterables of H x W label maps, consumed lazily)."""
        try:
            for p, g in strict_pairs(preds, gts, "add_video: different numbers of predictions and ground truths"):
                self.update(p, g)
        except VsegError:
            self._start_video()  # drop the half-scored video
            raise
        return self.end_video()

    def merge(self, other: VideoConsistency) -> VideoConsistency:
        """Add another accumulator's finished videos (e.g. from another worker) into this one."""
        if other.ks != self.ks or other.skip_threshold != self.skip_threshold:
            raise VsegError("cannot merge video-consistency accumulators with different settings")
        for k in self.ks:
            self._sum[k] += other._sum[k]
            self._count[k] += other._count[k]
            self._windows_nan[k] += other._windows_nan[k]
        self.videos_used += other.videos_used
        self.videos_skipped += other.videos_skipped
        return self

    def result(self) -> dict[str, float]:
        """{"mVC<k>": percent} per k; NaN where no window had a non-empty G."""
        return {
            f"mVC{k}": (self._sum[k] / self._count[k] * 100) if self._count[k] else float("nan")
            for k in self.ks
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result with the counts behind it (NaN -> None)."""
        out: dict[str, Any] = {
            key: finite(v) for key, v in self.result().items()
        }
        out["units"] = "percent"
        out["videos_used"] = self.videos_used
        out["videos_skipped"] = self.videos_skipped
        out["skip_threshold"] = self.skip_threshold
        out["windows"] = {f"mVC{k}": self._count[k] for k in self.ks}
        out["windows_empty_G"] = {f"mVC{k}": self._windows_nan[k] for k in self.ks}
        return out
