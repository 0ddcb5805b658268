"""Worst moments: the runs of frame pairs whose labels flicker much more than the video's usual.

Positions are in the processed sequence (pair p = frames p and p+1); frame indices and times are
in the source video, so a reader can seek to them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["WorstMoment", "format_timestamp", "worst_moments"]


def format_timestamp(seconds: float | None) -> str:
    """mm:ss.ss (h:mm:ss.ss past an hour) — the form video players seek to; '' when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    seconds = max(0.0, float(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if s >= 59.995:  # rounding to 2 decimals must not print 00:60.00
        s, m = 0.0, m + 1
        if m >= 60:
            m, h = 0, h + 1
    return f"{int(h)}:{int(m):02d}:{s:05.2f}" if h else f"{int(m):02d}:{s:05.2f}"


@dataclass
class WorstMoment:
    """A run of consecutive frame pairs that flicker much more than usual."""

    rank: int
    first_pair: int  # positions in the processed sequence (pair p = frames p and p+1)
    last_pair: int
    first_frame: int  # source frame indices
    last_frame: int
    start_s: float | None
    end_s: float | None
    peak_flow_flicker: float
    mean_flow_flicker: float
    mean_flicker: float
    typical_flow_flicker: float  # the video's median, for scale

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        for key in ("peak_flow_flicker", "mean_flow_flicker", "mean_flicker", "typical_flow_flicker"):
            d[key] = round(float(d[key]), 6)
        d["start"] = format_timestamp(self.start_s)
        d["end"] = format_timestamp(self.end_s)
        return d


def worst_moments(
    flow_flicker: list[float] | np.ndarray,
    flicker: list[float] | np.ndarray,
    frame_indices: list[int],
    fps: float | None,
    k: int = 5,
) -> list[WorstMoment]:
    """The `k` worst windows of per-pair flow-compensated flicker, worst first.

    Greedy: take the worst unused pair, grow it over neighbours that stay above halfway between
    the video's median and that peak (so one burst is one window, not k adjacent pairs), repeat.
    A later window that touches an earlier one (or its shoulders) belongs to that event: it is
    merged in if it reaches the earlier window's halfway level, else kept as an unlisted
    shoulder — so one dip is one row, and long mildly-bad stretches do not chain into one range.
    Only pairs clearly above the median count (1.25x it and half a percent of pixels more), so a
    steady video lists fewer than k windows, or none.
    """
    values = np.asarray(flow_flicker, dtype=np.float64)
    # NaN pairs (no valid pixel, or across a shot cut) are never a moment and stop a window.
    s = np.nan_to_num(values, nan=0.0)
    raw = np.nan_to_num(np.asarray(flicker, dtype=np.float64), nan=0.0)
    n = len(s)
    if n == 0 or k <= 0 or not np.isfinite(values).any():
        return []
    median = float(np.nanmedian(values))
    bar = max(1.25 * median, median + 0.005)
    owner = np.full(n, -1)  # which window each examined pair belongs to (listed or shoulder)
    windows: list[list[float]] = []  # [first_pair, last_pair, floor], in order of their peaks
    for seed in np.argsort(-s, kind="stable"):
        if len(windows) >= k:
            break
        if owner[seed] >= 0:
            continue
        peak = float(s[seed])
        if peak < bar:
            break
        floor = median + 0.5 * (peak - median)
        a = b = int(seed)
        while a > 0 and owner[a - 1] < 0 and s[a - 1] >= floor:
            a -= 1
        while b < n - 1 and owner[b + 1] < 0 and s[b + 1] >= floor:
            b += 1
        near = [int(owner[i]) for i in (a - 1, b + 1) if 0 <= i < n and owner[i] >= 0]
        if near:
            w = min(near)  # the worse neighbour event
            owner[a : b + 1] = w
            if peak >= windows[w][2]:
                windows[w][0] = min(windows[w][0], a)
                windows[w][1] = max(windows[w][1], b)
        else:
            owner[a : b + 1] = len(windows)
            windows.append([a, b, floor])
    out: list[WorstMoment] = []
    for rank, (fa, fb, _) in enumerate(windows, start=1):
        a, b = int(fa), int(fb)
        first, last = frame_indices[a], frame_indices[b + 1]
        out.append(WorstMoment(
            rank=rank, first_pair=a, last_pair=b, first_frame=int(first), last_frame=int(last),
            start_s=first / fps if fps else None, end_s=last / fps if fps else None,
            peak_flow_flicker=float(s[a : b + 1].max()), mean_flow_flicker=float(s[a : b + 1].mean()),
            mean_flicker=float(raw[a : b + 1].mean()), typical_flow_flicker=median,
        ))
    return out
