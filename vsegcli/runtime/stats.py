"""Per-frame class statistics (`vseg run --stats FILE.csv|FILE.jsonl`): each frame's share of pixels
per class, with the frame's index and timestamp.

    CSV:   frame,time,road,sidewalk,...      one row per frame, every class a column (shares 0..1)
    JSONL: {"frame": 12, "time": 0.48, "shares": {"road": 0.41, "car": 0.07}}   (classes present)

Written under a temporary name beside the target (`fsutil.part_name`) and renamed when the run
completes, like every other output.
"""
from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from vsegcli.io.fsutil import part_name
from vsegcli.io.outputs import stats_format


class StatsSink:
    """A `runtime.Sink`: one line of class shares per frame. `timestamp(index)` gives a frame's
    time in seconds (index / fps for a file; seconds since the first frame for a live source)."""

    def __init__(self, path: str | os.PathLike, classes: list[str],
                 timestamp: Callable[[int], float] | None = None, fps: float | None = None) -> None:
        self.path = Path(path)
        self.format = stats_format(self.path)
        self.classes = list(classes)
        self._fps = fps
        self._timestamp = timestamp
        self._t0: float | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = part_name(self.path, self.format)
        self._file = open(self.tmp, "w", newline="", encoding="utf-8")
        self._csv = None
        if self.format == ".csv":
            self._csv = csv.writer(self._file)
            self._csv.writerow(["frame", "time", *self.classes])
        self.rows = 0

    def _time(self, index: int) -> float:
        if self._timestamp is not None:
            return float(self._timestamp(index))
        if self._fps:
            return index / self._fps
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        n = len(self.classes)
        counts = np.bincount(labels.reshape(-1), minlength=256)[:n]
        shares = counts / max(1, labels.size)
        t = round(self._time(index), 4)
        if self._csv is not None:
            self._csv.writerow([index, t, *(f"{s:.6f}" for s in shares)])
        else:
            present = {self.classes[i]: round(float(shares[i]), 6) for i in np.flatnonzero(counts)}
            self._file.write(json.dumps({"frame": int(index), "time": t, "shares": present}) + "\n")
        self.rows += 1

    def finish(self) -> None:
        self._file.close()  # idempotent

    def close(self) -> Path:
        self.finish()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        try:
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def read_stats(path: str | os.PathLike) -> list[dict]:
    """The rows of a stats file as dicts (frame, time, shares): for tests and scripts."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        head = rows[0]
        return [{"frame": int(r[0]), "time": float(r[1]),
                 "shares": {c: float(v) for c, v in zip(head[2:], r[2:]) if float(v) > 0}} for r in rows[1:]]
    return [json.loads(line) for line in text.splitlines() if line.strip()]
