"""`ConsistencySink`: the engine sink that measures temporal consistency and writes the report.

It feeds every processed frame to `metrics.TemporalConsistency` (on the reduced analysis grid,
a few ms per frame), and when the run completes builds the report document (`build`), its plots
and page, and writes report.json + report.html atomically. Shot cuts are found on the frames it
is given (`metrics.shots`, 2 frames of look-ahead, so frames reach the accumulator 2 late) and
the pairs across them are left out of every number, marked on the timeline and listed.
"""
from __future__ import annotations

import datetime as _dt
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vsegcli import __version__
from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write_files
from vsegcli.io.outputs import check_file_output
from vsegcli.io.jsonio import dumps, finite, jsonable
from vsegcli.metrics.shots import ShotCutDetector
from vsegcli.metrics.temporal_consistency import TemporalConsistency, TemporalConsistencyResult
from vsegcli.report.document import REPORT_SCHEMA, report_paths, source_fps
from vsegcli.report.html import render_html
from vsegcli.report.moments import worst_moments
from vsegcli.report.plots import render_plots

__all__ = ["JSON_HEATMAP_SIDE", "ConsistencySink"]

JSON_HEATMAP_SIDE = 64  # long side of the heat-map copy kept in report.json


class ConsistencySink:
    """Engine sink that measures temporal consistency and writes report.html + report.json.

    `context` describes the run for the page (all keys optional): architecture, checkpoint,
    temporal, random_init, label_set, input, width, height, source_fps (or video_fps = source
    rate / stride, as in the api summary), start, stride, device, precision — `make_context` builds
    it. Frames and processing fps are measured by the sink itself; `update_context(summary)`
    called after the run (even after `close()`) rewrites the report with the run's own numbers.
    """

    def __init__(
        self,
        path: str | Path,
        num_classes: int,
        classes: list[str],
        palette: Any,
        context: Mapping[str, Any] | None = None,
        flow_size: int | None = 256,
        overwrite: bool = False,
        flow_preset: str = "medium",
        top_k: int = 5,
        shot_cuts: bool = True,
    ) -> None:
        self.html_path, self.json_path = report_paths(path)
        for p in (self.html_path, self.json_path):  # the output rules every vseg output shares
            check_file_output(p, "report", overwrite=overwrite, flag="--report name")
        if len(classes) < num_classes:
            # A label set without names still gets a readable table.
            classes = list(classes) + [f"class_{i}" for i in range(len(classes), num_classes)]
        self.num_classes = int(num_classes)
        self.classes = [str(c) for c in classes[:num_classes]]
        pal = np.zeros((num_classes, 3), dtype=np.uint8)
        table = getattr(palette, "colours", palette)  # a render.Palette works as well as a list
        given = np.asarray(table, dtype=np.int64).reshape(-1, 3)[:num_classes]
        pal[: len(given)] = np.clip(given, 0, 255)
        self.palette = pal
        self.top_k = int(top_k)
        self.acc = TemporalConsistency(num_classes, flow_size=flow_size, flow_preset=flow_preset)
        # `shot_cuts=False` counts every pair (the numbers as they were before cuts were found).
        self.shots = ShotCutDetector() if shot_cuts else None
        self._pending: deque[tuple[int, np.ndarray, np.ndarray]] = deque()  # awaiting a cut decision
        self._ctx: dict[str, Any] = dict(context or {})
        self._lock = threading.Lock()
        self._indices: list[int] = []
        self._thumb: np.ndarray | None = None  # first frame on the analysis grid, for the heat-map
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._result: TemporalConsistencyResult | None = None
        self._plots: dict[str, str] | None = None
        self._plots_fps: float | None = None
        self.closed = False
        self._staged: tuple[str, dict[str, Any]] | tuple[()] | None = None  # rendered by finish()
        # No folder is made here: the atomic writer makes it when the report is written, so a
        # run that ends before that leaves nothing behind.

    # ------------------------------------------------------------------ Sink protocol
    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        self._t_last = now
        if self.shots is None:
            self._measure(int(index), frame, labels, False)
            return
        self._pending.append((int(index), frame, labels))
        for new_shot in self.shots.push(frame):
            self._measure(*self._pending.popleft(), new_shot)

    def _measure(self, index: int, frame: np.ndarray, labels: np.ndarray, new_shot: bool) -> None:
        self.acc.update(frame, labels, new_shot=new_shot)
        self._indices.append(index)
        if self._thumb is None and self.acc.analysis_size is not None:
            gh, gw = self.acc.analysis_size
            self._thumb = cv2.resize(np.asarray(frame), (gw, gh), interpolation=cv2.INTER_AREA)

    def finish(self) -> None:
        """The slow part, on the sink's thread: the last frames' metrics, the result, the page and
        its plots, rendered in memory (`close()` only writes them)."""
        if self._staged is not None or self.closed:
            return
        if self.shots is not None:
            for new_shot in self.shots.finish():
                self._measure(*self._pending.popleft(), new_shot)
        if self._indices:
            self._result = self.acc.result()
            self._staged = self._render()
        else:
            self._staged = ()

    def close(self) -> dict[str, Any] | None:
        """Write both files; returns their paths and the headline numbers (None without frames:
        the caller reports the empty input)."""
        self.finish()
        staged, self._staged = self._staged, None
        if not staged:
            self.closed = True
            return None
        self._write(staged)
        self.closed = True
        r = self._result
        return {
            "report_html": str(self.html_path), "report_json": str(self.json_path),
            "tc": finite(r.tc), "flicker_rate": finite(r.flicker_rate),
            "flow_flicker_rate": finite(r.flow_flicker_rate),
            "shot_cuts": [self._indices[p] for p in r.shot_cuts],
        }

    def abort(self) -> None:
        """Nothing to undo: the files appear only by rename when complete, and a failed write
        removes its own temporaries (`io.fsutil.atomic_write_files`)."""

    # ------------------------------------------------------------------ context
    def update_context(self, values: Mapping[str, Any]) -> None:
        """Add run facts (e.g. the api summary: frames, seconds, fps, video_fps). After `close()`
        the report files are rewritten (atomically) so the page shows them."""
        with self._lock:
            self._ctx.update(values)
        if self.closed and self._result is not None:
            self._write()

    @property
    def context(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._ctx)

    # ------------------------------------------------------------------ building
    def _measured(self) -> dict[str, Any]:
        n = len(self._indices)
        span = (self._t_last or 0.0) - (self._t_first or 0.0)
        return {
            "frames": n,
            "first_frame": self._indices[0] if n else None,
            "last_frame": self._indices[-1] if n else None,
            # n-1 intervals between the first and last frame's arrival: steady-state throughput
            # of the whole pipeline (model warm-up before the first frame excluded).
            "fps": round((n - 1) / span, 2) if n > 1 and span > 0 else None,
            "metrics_seconds": round(self.acc.elapsed_s + (self.shots.elapsed_s if self.shots else 0.0), 3),
        }

    def build(self) -> dict[str, Any]:
        """The report.json document (also what the HTML page is made from)."""
        assert self._result is not None
        r = self._result
        ctx = self.context
        fps = source_fps(ctx)
        moments = worst_moments(r.per_pair_flow_flicker, r.per_pair_flicker, self._indices, fps, self.top_k)
        metrics = r.to_dict()
        # Source frame indices (not positions in the processed sequence) of the frames that start
        # a new shot: the pair ending at each is left out of every number.
        metrics.pop("shot_cuts")
        cuts = [self._indices[p] for p in r.shot_cuts]
        share = r.class_share.mean(axis=0) if r.class_share.size else np.zeros(self.num_classes)
        per_class = [
            {
                "index": c, "name": self.classes[c], "color": [int(v) for v in self.palette[c]],
                "share": round(float(share[c]), 6), "tc": finite(r.per_class_tc[c], 4),
                "flicker": finite(r.per_class_flicker[c], 6),
                "flow_flicker": finite(r.per_class_flow_flicker[c], 6),
            }
            for c in range(self.num_classes)
        ]
        per_class.sort(key=lambda d: -d["share"])
        heat = None
        if r.flicker_heatmap is not None:
            hh, hw = r.flicker_heatmap.shape
            scale = min(1.0, JSON_HEATMAP_SIDE / max(hh, hw))
            size = (max(1, round(hw * scale)), max(1, round(hh * scale)))
            small = cv2.resize(r.flicker_heatmap, size, interpolation=cv2.INTER_AREA)
            heat = {"size": [size[1], size[0]], "values": np.round(small, 4).tolist()}
        return {
            "vseg_report": REPORT_SCHEMA,
            "vseg_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "context": jsonable(ctx),
            "measured": self._measured(),
            "classes": self.classes,
            "metrics": metrics,
            "shot_cuts": cuts,
            "pairs_excluded": r.pairs_excluded,
            "shot_cut_detection": "on" if self.shots is not None else "off",
            "frames": {
                "indices": list(self._indices),
                "timestamps": [round(i / fps, 4) for i in self._indices] if fps else None,
            },
            "worst_moments": [m.to_dict() for m in moments],
            "per_class": per_class,
            "flicker_heatmap": heat,
        }

    def _render(self) -> tuple[str, dict[str, Any]]:
        doc = self.build()
        fps = source_fps(doc["context"])
        if self._plots is None or fps != self._plots_fps:
            self._plots = render_plots(self._result, doc, self.palette, self._thumb)
            self._plots_fps = fps
        return render_html(doc, self._plots), doc

    def _write(self, rendered: tuple[str, dict[str, Any]] | None = None) -> None:
        page, doc = rendered if rendered is not None else self._render()
        try:
            # Both complete before either is renamed; a failure removes both temporaries.
            atomic_write_files({self.html_path: page, self.json_path: dumps(doc, indent=1)})
        except OSError as exc:
            raise VsegError(f"could not write the report {self.html_path}: {exc.strerror or exc}") from None
