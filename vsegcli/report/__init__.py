"""Consistency report: how steady a segmentation is over time, as JSON and as one HTML page.

`ConsistencySink` is an engine sink (see `vsegcli.runtime.Sink`): it feeds every processed frame
to `metrics.TemporalConsistency` on its own thread (on the reduced "analysis grid", so it costs a
few ms per frame) and, when the run completes, writes two files side by side:

* ``report.json`` — schema ``{"vseg_report": 1, "context", "metrics", "frames", "worst_moments",
  "per_class", "flicker_heatmap"}``; ``metrics`` is `TemporalConsistencyResult.to_dict()`, the
  heat-map is a small downsampled copy. `vseg report compare a.json b.json` reads these.
* ``report.html`` — a self-contained page (plots are base64 PNGs, no scripts, no external
  assets): summary, headline numbers with what they mean, per-class table, a timeline of
  per-pair consistency with the worst moments marked and listed with seekable timestamps, class
  share over time, and the flicker heat-map. Plots need matplotlib (the ``report`` extra);
  without it the page says so and keeps the tables.

Both files are written under temporary names and renamed when complete; `abort()` removes them.

    sink = ConsistencySink(Path("out/report.html"), seg.predictor.num_classes,
                           seg.predictor.classes, palette,
                           context=make_context(seg.info, video_info, stride=1))
    summary = seg.run("clip.mp4", output=None, extra_sinks=[sink])
    sink.update_context(summary)        # optional: rewrites the report with the run's own fps
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vsegcli import __version__
from vsegcli.errors import VsegError
from vsegcli.metrics.temporal_consistency import TemporalConsistency, TemporalConsistencyResult

__all__ = [
    "REPORT_SCHEMA",
    "ConsistencySink",
    "WorstMoment",
    "format_timestamp",
    "load_report",
    "make_context",
    "report_paths",
    "worst_moments",
]

REPORT_SCHEMA = 1
TOP_CLASSES = 8  # classes drawn individually in the class-share plot; the rest is "other"
JSON_HEATMAP_SIDE = 64  # long side of the heat-map copy kept in report.json


# ---------------------------------------------------------------------------------------------
# paths and context
# ---------------------------------------------------------------------------------------------


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """(html, json) for a user-given report path.

    ``r.html`` -> r.html + r.json; ``r.json`` -> the same pair; an existing folder or a name
    without a suffix -> <folder>/report.html + <folder>/report.json.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".html", ".htm", ".json"):
        return p.with_suffix(".html" if suffix == ".json" else p.suffix), p.with_suffix(".json")
    if p.is_dir() or not suffix:
        return p / "report.html", p / "report.json"
    raise VsegError(f"report path {p}: give a .html or .json file name, or a folder")


def make_context(model_info: Any = None, video_info: Any = None, **extra: Any) -> dict[str, Any]:
    """A report context from an `api.ModelInfo` and a `video.VideoInfo` (either may be None).

    `extra` adds or overrides keys (start, stride, device, precision, ...). Every key is optional
    for the report; this only saves callers from knowing the names.
    """
    ctx: dict[str, Any] = {}
    if model_info is not None:
        d = model_info.to_dict() if hasattr(model_info, "to_dict") else dict(model_info)
        for key in ("architecture", "checkpoint", "temporal", "random_init", "label_set", "source_format"):
            if key in d:
                ctx[key] = d[key]
    if video_info is not None:
        ctx.update(input=str(video_info.path), width=int(video_info.width), height=int(video_info.height),
                   source_fps=float(video_info.fps))
    ctx.update(extra)
    return ctx


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


def _source_fps(ctx: Mapping[str, Any]) -> float | None:
    """Frame rate of the source, which maps a source frame index to a time.

    ``source_fps`` if given; else ``video_fps`` (the api summary's output rate, source / stride)
    times ``stride``.
    """
    for key, mult in (("source_fps", 1), ("video_fps", int(ctx.get("stride") or 1))):
        v = ctx.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
            return float(v) * mult
    return None


# ---------------------------------------------------------------------------------------------
# worst moments
# ---------------------------------------------------------------------------------------------


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
    s = np.nan_to_num(np.asarray(flow_flicker, dtype=np.float64), nan=0.0)
    raw = np.nan_to_num(np.asarray(flicker, dtype=np.float64), nan=0.0)
    n = len(s)
    if n == 0 or k <= 0:
        return []
    median = float(np.median(s))
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


# ---------------------------------------------------------------------------------------------
# the sink
# ---------------------------------------------------------------------------------------------


def _atomic_write(target: Path, data: bytes, temps: list[Path]) -> Path:
    """Write `data` to a temporary file beside `target` (registered in `temps`); return its path."""
    # open(..., "xb") rather than mkstemp: mkstemp's 0600 mode would survive the rename, and a
    # report is meant to be shared like any other output (the umask decides).
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            temps.append(tmp)
            f.write(data)
    except OSError as exc:
        raise VsegError(f"could not write {target}: {exc.strerror or exc}") from None
    return tmp


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
    ) -> None:
        self.html_path, self.json_path = report_paths(path)
        if not overwrite:
            for p in (self.html_path, self.json_path):
                if p.exists():
                    raise VsegError(f"{p} already exists; pass --overwrite or choose another report name")
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
        self._ctx: dict[str, Any] = dict(context or {})
        self._lock = threading.Lock()
        self._indices: list[int] = []
        self._thumb: np.ndarray | None = None  # first frame on the analysis grid, for the heat-map
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._temps: list[Path] = []
        self._result: TemporalConsistencyResult | None = None
        self._plots: dict[str, str] | None = None
        self._plots_fps: float | None = None
        self.closed = False
        self.html_path.parent.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ Sink protocol
    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        now = time.perf_counter()
        if self._t_first is None:
            self._t_first = now
        self._t_last = now
        self.acc.update(frame, labels)
        self._indices.append(int(index))
        if self._thumb is None and self.acc.analysis_size is not None:
            gh, gw = self.acc.analysis_size
            self._thumb = cv2.resize(np.asarray(frame), (gw, gh), interpolation=cv2.INTER_AREA)

    def close(self) -> dict[str, Any] | None:
        """Write both files; returns their paths and the headline numbers (None without frames:
        the caller reports the empty input)."""
        if not self._indices:
            self.closed = True
            return None
        self._result = self.acc.result()
        self._write()
        self.closed = True
        r = self._result
        return {
            "report_html": str(self.html_path), "report_json": str(self.json_path),
            "tc": _clean(r.tc), "flicker_rate": _clean(r.flicker_rate),
            "flow_flicker_rate": _clean(r.flow_flicker_rate),
        }

    def abort(self) -> None:
        for tmp in self._temps:
            tmp.unlink(missing_ok=True)
        self._temps.clear()

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
            "metrics_seconds": round(self.acc.elapsed_s, 3),
        }

    def build(self) -> dict[str, Any]:
        """The report.json document (also what the HTML page is made from)."""
        assert self._result is not None
        r = self._result
        ctx = self.context
        fps = _source_fps(ctx)
        moments = worst_moments(r.per_pair_flow_flicker, r.per_pair_flicker, self._indices, fps, self.top_k)
        share = r.class_share.mean(axis=0) if r.class_share.size else np.zeros(self.num_classes)
        per_class = [
            {
                "index": c, "name": self.classes[c], "color": [int(v) for v in self.palette[c]],
                "share": round(float(share[c]), 6), "tc": _clean(r.per_class_tc[c], 4),
                "flicker": _clean(r.per_class_flicker[c], 6),
                "flow_flicker": _clean(r.per_class_flow_flicker[c], 6),
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
            "context": _jsonable(ctx),
            "measured": self._measured(),
            "classes": self.classes,
            "metrics": r.to_dict(),
            "frames": {
                "indices": list(self._indices),
                "timestamps": [round(i / fps, 4) for i in self._indices] if fps else None,
            },
            "worst_moments": [m.to_dict() for m in moments],
            "per_class": per_class,
            "flicker_heatmap": heat,
        }

    def _write(self) -> None:
        doc = self.build()
        fps = _source_fps(doc["context"])
        if self._plots is None or fps != self._plots_fps:
            self._plots = _render_plots(self._result, doc, self.palette, self._thumb)
            self._plots_fps = fps
        page = render_html(doc, self._plots)
        temps: list[Path] = []
        self._temps = temps
        tmp_html = _atomic_write(self.html_path, page.encode("utf-8"), temps)
        tmp_json = _atomic_write(self.json_path, json.dumps(doc, indent=1).encode("utf-8"), temps)
        # Both complete before either is renamed: a crash never leaves a finished-looking pair
        # that disagrees.
        os.replace(tmp_html, self.html_path)
        os.replace(tmp_json, self.json_path)
        temps.clear()


def _clean(v: Any, ndigits: int | None = None) -> float | None:
    if v is None:
        return None
    f = float(v)
    if not math.isfinite(f):
        return None
    return round(f, ndigits) if ndigits is not None else f


def _jsonable(value: Any) -> Any:
    """Context values as JSON (Paths, numpy scalars, tuples); anything else becomes its str()."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return _clean(value) if isinstance(value, np.floating) else int(value)
    if isinstance(value, float):
        return _clean(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# loading (compare)
# ---------------------------------------------------------------------------------------------


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and check a report.json (or the .json beside a given .html)."""
    p = Path(path)
    if p.suffix.lower() in (".html", ".htm"):
        p = p.with_suffix(".json")
    if not p.is_file():
        raise VsegError(f"{p}: no such report file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise VsegError(f"{p}: not a vseg report (not JSON); give the report.json written by `vseg run --report`") from None
    if not isinstance(doc, dict) or "vseg_report" not in doc or not isinstance(doc.get("metrics"), dict):
        raise VsegError(f"{p}: not a vseg report (no 'vseg_report' schema field)")
    if not isinstance(doc["vseg_report"], int) or doc["vseg_report"] > REPORT_SCHEMA:
        raise VsegError(f"{p}: report schema {doc['vseg_report']!r} is newer than this vseg reads "
                        f"({REPORT_SCHEMA}); upgrade vseg")
    return doc


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def _load_matplotlib() -> Any:
    """matplotlib's object API with the Agg canvas, or None when the `report` extra is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _png(fig: Any, canvas_cls: Any) -> str:
    canvas_cls(fig)  # Figure objects, not pyplot: no global state, safe on a sink thread
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _render_plots(
    r: TemporalConsistencyResult | None, doc: dict[str, Any], palette: np.ndarray, thumb: np.ndarray | None
) -> dict[str, str]:
    """name -> base64 PNG for 'timeline', 'share', 'heatmap' (empty without matplotlib)."""
    mpl = _load_matplotlib()
    if mpl is None or r is None:
        return {}
    Figure, Canvas = mpl
    plots: dict[str, str] = {}
    fps = _source_fps(doc["context"])
    idx = np.asarray(doc["frames"]["indices"], dtype=np.float64)
    x = idx / fps if fps else idx
    xlabel = "time in the source video (s)" if fps else "source frame index"

    if r.num_pairs:
        fig = Figure(figsize=(11, 3.4), layout="constrained")
        ax = fig.add_subplot()
        xp = x[1:]  # a pair is plotted at its second frame
        agree = 100 * (1 - np.asarray(r.per_pair_flow_flicker, dtype=np.float64))
        still = 100 * (1 - np.asarray(r.per_pair_flicker, dtype=np.float64))
        ax.plot(xp, still, color="#e39b4b", lw=1.0, label="same-position agreement (1 − flicker)")
        ax.plot(xp, agree, color="#1f4e99", lw=1.5, label="flow-compensated agreement (1 − flow-compensated flicker)")
        for m in doc["worst_moments"]:
            a, b = x[m["first_pair"]], x[m["last_pair"] + 1]
            pad = 0.5 * (x[1] - x[0]) if len(x) > 1 else 0.5
            ax.axvspan(a - pad, b + pad, color="#d62728", alpha=0.15, lw=0)
            ax.annotate(f"#{m['rank']}", ((a + b) / 2, 1.0), xycoords=("data", "axes fraction"),
                        ha="center", va="bottom", color="#b00", fontsize=9, fontweight="bold")
        lo = float(np.nanmin(np.concatenate([agree, still]))) if np.isfinite(agree).any() else 0.0
        ax.set_ylim(max(0.0, lo - 0.1 * (100 - lo) - 0.5), 100.5)
        ax.set_xlim(x[0], x[-1])
        ax.set_xlabel(xlabel)
        ax.set_ylabel("pixels keeping their label (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
        plots["timeline"] = _png(fig, Canvas)

    if r.class_share.size:
        share = 100 * r.class_share
        order = [d["index"] for d in doc["per_class"] if d["share"] > 0]
        top = order[:TOP_CLASSES]
        ys = [share[:, c] for c in top]
        colors = [tuple(palette[c] / 255.0) for c in top]
        labels = [doc["classes"][c] for c in top]
        other = 100 - share[:, top].sum(axis=1) if top else 100 - share.sum(axis=1)
        if (other > 0.05).any():  # remaining classes and unlabelled pixels
            ys.append(np.clip(other, 0, None))
            colors.append((0.75, 0.75, 0.75))
            labels.append("other")
        fig = Figure(figsize=(11, 3.4), layout="constrained")
        ax = fig.add_subplot()
        if len(x) > 1:
            ax.stackplot(x, *ys, colors=colors, labels=labels, lw=0)
            ax.set_xlim(x[0], x[-1])
        else:  # a single frame: one bar
            bottom = 0.0
            for y, col, lab in zip(ys, colors, labels):
                ax.bar([x[0]], [y[0]], bottom=bottom, color=col, label=lab)
                bottom += float(y[0])
        ax.set_ylim(0, 100)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of pixels (%)")
        handles, names = ax.get_legend_handles_labels()
        ax.legend(handles[::-1], names[::-1], loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8,
                  frameon=False)  # reversed: legend reads top-down like the stack
        plots["share"] = _png(fig, Canvas)

    if r.flicker_heatmap is not None:
        heat = 100 * r.flicker_heatmap
        hh, hw = heat.shape
        vmax = max(float(np.percentile(heat, 99.5)), 1.0)
        panel_w = 5.2 if thumb is not None else 8.0
        img_h = panel_w * hh / hw
        ncols = 2 if thumb is not None else 1
        fig = Figure(figsize=(panel_w * ncols + 0.9, min(img_h, 7.5) + 0.7), layout="constrained")
        axes = fig.subplots(1, ncols, squeeze=False)[0]
        if thumb is not None:
            axes[0].imshow(thumb, cmap=None if thumb.ndim == 3 else "gray")
            axes[0].set_title("first processed frame (for orientation)", fontsize=9)
            axes[0].set_axis_off()
        ax = axes[-1]
        im = ax.imshow(heat, cmap="inferno", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(f"label changes along the motion, % of frame pairs (scale 0–{vmax:.0f} %)", fontsize=9)
        ax.set_axis_off()
        fig.colorbar(im, ax=ax, shrink=0.85, label="% of pairs")
        plots["heatmap"] = _png(fig, Canvas)
    return plots


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:0;background:#f6f7f9}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666;margin:0 0 16px}
table{border-collapse:collapse;font-size:14px}
td,th{padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
table.grid td,table.grid th{border-bottom:1px solid #e6e6e6}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{background:none;color:#555;font-weight:500;width:220px}
.cards{display:flex;gap:16px;flex-wrap:wrap}
.card{flex:1 1 260px;border:1px solid #ddd;border-radius:8px;padding:12px 16px}
.card .v{font-size:30px;font-weight:650;font-variant-numeric:tabular-nums}
.card .n{font-weight:600}.card .better{margin-top:2px}.card p{margin:6px 0 0;color:#555;font-size:13px}
.better{display:inline-block;font-size:12px;color:#1a6b2a;background:#e7f5ea;border-radius:4px;padding:0 6px}
.sw{display:inline-block;width:14px;height:14px;border:1px solid #888;vertical-align:-2px;margin-right:6px}
img.plot{max-width:100%;height:auto;display:block;margin:8px 0}
.note{color:#666;font-size:13px}.warn{background:#fff5e0;border:1px solid #f0c36d;padding:8px 12px;border-radius:6px}
code{background:#f0f2f5;padding:1px 4px;border-radius:3px}
"""


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _pct(v: float | None, digits: int = 2, fraction: bool = True) -> str:
    """Fractions (or percents with fraction=False) as 'x.xx %'; '–' when unknown."""
    if v is None:
        return "–"
    return f"{(100 * v if fraction else v):.{digits}f} %"


def _summary_rows(doc: dict[str, Any]) -> list[tuple[str, str]]:
    ctx, meas, met = doc["context"], doc["measured"], doc["metrics"]
    rows: list[tuple[str, str]] = []
    arch = ctx.get("architecture")
    rows.append(("model", str(arch) if arch else "unknown"))
    if ctx.get("random_init"):
        ckpt = "none — random weights (labels are not meaningful)"
    else:
        ckpt = str(ctx.get("checkpoint") or "unknown")
    rows.append(("checkpoint", ckpt))
    if "temporal" in ctx:
        rows.append(("mode", "temporal (uses earlier frames)" if ctx["temporal"] else "per-frame (each frame alone)"))
    if ctx.get("label_set"):
        rows.append(("label set", f"{ctx['label_set']} ({met['num_classes']} classes)"))
    rows.append(("input", str(ctx.get("input") or "unknown")))
    n = meas["frames"]
    frames = f"{n}"
    if meas.get("first_frame") is not None:
        frames += f" (source frames {meas['first_frame']}–{meas['last_frame']}"
        stride = int(ctx.get("stride") or 1)
        frames += f", stride {stride})" if stride > 1 else ")"
    rows.append(("frames processed", frames))
    fs = met.get("frame_size")
    if fs:
        rows.append(("resolution", f"{fs[1]} × {fs[0]}"))
    an = met.get("analysis_size")
    if an:
        rows.append(("analysis resolution (metrics)",
                     f"{an[1]} × {an[0]} — labels downscaled (nearest) for optical flow ({met['flow_method']})"))
    fps = _source_fps(ctx)
    if fps:
        dur = ""
        if meas.get("first_frame") is not None:
            dur = f"; covers {format_timestamp(meas['first_frame'] / fps)}–{format_timestamp(meas['last_frame'] / fps)}"
        rows.append(("video fps", f"{fps:.3f}".rstrip("0").rstrip(".") + dur))
    run_fps = ctx.get("fps")
    if isinstance(run_fps, (int, float)) and run_fps > 0:
        secs = ctx.get("seconds")
        extra = f" ({ctx.get('frames', n)} frames in {secs:.1f} s, whole run)" if isinstance(secs, (int, float)) else " (whole run)"
        rows.append(("processing fps", f"{run_fps:.1f}{extra}"))
    elif meas.get("fps"):
        rows.append(("processing fps", f"{meas['fps']:.1f} (measured between the first and last frame)"))
    dev = " ".join(str(ctx[k]) for k in ("device", "precision") if ctx.get(k))
    if dev:
        rows.append(("device", dev))
    return rows


def render_html(doc: dict[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The self-contained report page for a report document (see `ConsistencySink.build`)."""
    plots = plots or {}
    ctx, met = doc["context"], doc["metrics"]
    fps = _source_fps(ctx)
    input_name = Path(str(ctx.get("input") or "video")).name
    model = str(ctx.get("architecture") or "unknown model")
    out: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(input_name)} — {_e(model)} — vseg consistency report</title>",
        f"<style>{_CSS}</style></head><body><main>",
        f"<h1>Temporal consistency: {_e(input_name)} with {_e(model)}</h1>",
        (f'<p class="sub">vseg {_e(doc.get("vseg_version", ""))} consistency report, {_e(doc.get("created", ""))}. '
         "No ground truth is needed: these numbers say how steady the labels are over time, not how correct.</p>"),
    ]
    if ctx.get("random_init"):
        out.append('<p class="warn">This run used a randomly initialised model: its labels (and so these '
                   "numbers) show only that the pipeline works.</p>")
    if not plots:
        out.append('<p class="warn">Plots are missing: matplotlib is not installed. '
                   "Install it with <code>pip install 'vseg[report]'</code> and run again.</p>")

    out.append("<h2>Run</h2><table class=\"kv\">")
    out += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in _summary_rows(doc)]
    out.append("</table>")

    pairs = met.get("num_pairs", 0)
    out.append("<h2>Headline numbers</h2>")
    if not pairs:
        out.append('<p class="warn">Only one frame was processed: consistency needs at least two.</p>')
    cards = [
        ("TC (temporal consistency)", _pct(met.get("tc"), fraction=False), "higher is better",
         ("Mean over classes of the IoU between each frame's labels and the next frame's labels carried back "
          "along the optical flow. 100 % means labels move exactly with the scene.")),
        ("Flicker rate", _pct(met.get("flicker_rate")), "lower is better",
         ("Share of pixels whose label changes between consecutive frames at the same position — what a viewer "
          "sees. Camera and object motion raise it too.")),
        ("Flow-compensated flicker", _pct(met.get("flow_flicker_rate")), "lower is better",
         ("Share of pixels whose label changes even after following the motion: instability the motion does "
          "not explain. The fairest single number for comparing models on one clip.")),
    ]
    out.append('<div class="cards">')
    for name, value, better, text in cards:
        out.append(f'<div class="card"><div class="n">{_e(name)}</div><span class="better">{_e(better)}</span>'
                   f'<div class="v">{_e(value)}</div><p>{_e(text)}</p></div>')
    out.append("</div>")
    vf = met.get("valid_fraction")
    out.append(f'<p class="note">Measured over {pairs} consecutive frame pairs on the analysis grid'
               + (f"; {_pct(vf, 1)} of pixels had their flow target inside the frame" if vf is not None else "")
               + ". Values compare between vseg runs at the same analysis resolution, not with published TC "
               "numbers (those use FlowNet2 at full resolution). Compare runs with "
               "<code>vseg report compare a.json b.json</code>.</p>")

    out.append("<h2>Over time</h2>")
    if "timeline" in plots:
        out.append('<img class="plot" alt="per-frame-pair consistency over time" '
                   f'src="data:image/png;base64,{plots["timeline"]}">')
        out.append('<p class="note">Each point is one pair of consecutive processed frames. Dips are moments where '
                   "labels jump; the worst ones are shaded red and listed below.</p>")
    moments = doc["worst_moments"]
    out.append("<h3>Worst moments</h3>")
    if moments:
        out.append('<table class="grid"><tr><th>#</th><th>frames</th><th>from</th><th>to</th>'
                   '<th class="num">peak flow-comp. flicker</th><th class="num">mean flow-comp. flicker</th>'
                   '<th class="num">mean flicker</th><th class="num">vs typical</th></tr>')
        for m in moments:
            typ = m["typical_flow_flicker"]
            ratio = f"{m['peak_flow_flicker'] / typ:.1f}×" if typ > 0 else "–"
            out.append(
                f"<tr><td>{m['rank']}</td><td>{m['first_frame']}–{m['last_frame']}</td>"
                f"<td>{_e(m['start'] or '–')}</td><td>{_e(m['end'] or '–')}</td>"
                f'<td class="num">{_pct(m["peak_flow_flicker"])}</td><td class="num">{_pct(m["mean_flow_flicker"])}</td>'
                f'<td class="num">{_pct(m["mean_flicker"])}</td><td class="num">{ratio}</td></tr>')
        out.append("</table>")
        out.append('<p class="note">Frames are indices in the source video'
                   + (", times are positions in it (mm:ss.ss) to seek to." if fps else
                      "; the frame rate was unknown, so no times are given.")
                   + " “vs typical” is the peak over the video's median pair.</p>")
    else:
        out.append("<p>No frame pair stands out: the labels are equally steady throughout.</p>")

    if "share" in plots:
        out.append("<h2>Class share over time</h2>")
        out.append('<img class="plot" alt="class share over time" '
                   f'src="data:image/png;base64,{plots["share"]}">')
        out.append(f'<p class="note">The {TOP_CLASSES} largest classes; “other” is every other class and '
                   "pixels without a class.</p>")

    if "heatmap" in plots:
        an = met.get("analysis_size") or ["?", "?"]
        out.append("<h2>Where labels flicker</h2>")
        out.append('<img class="plot" alt="flicker heat-map" '
                   f'src="data:image/png;base64,{plots["heatmap"]}">')
        out.append(f'<p class="note">At the analysis resolution ({an[1]} × {an[0]}): for each position, the share of '
                   "frame pairs in which its label changed after following the motion. Bright regions are "
                   "where the model is unsure over time (often object boundaries and small or distant things).</p>")

    out.append("<h2>Per class</h2>")
    out.append('<table class="grid"><tr><th>class</th><th class="num">share of pixels</th>'
               '<th class="num">TC</th><th class="num">flicker</th><th class="num">flow-comp. flicker</th></tr>')
    absent = 0
    for d in doc["per_class"]:
        if d["share"] <= 0 and d["tc"] is None:
            absent += 1
            continue
        r, g, b = d["color"]
        share = "&lt;0.01 %" if 0 < d["share"] < 5e-5 else _pct(d["share"])  # not a misleading 0.00
        out.append(
            f'<tr><td><span class="sw" style="background:rgb({r},{g},{b})"></span>{_e(d["name"])}</td>'
            f'<td class="num">{share}</td><td class="num">{_pct(d["tc"], fraction=False)}</td>'
            f'<td class="num">{_pct(d["flicker"])}</td><td class="num">{_pct(d["flow_flicker"])}</td></tr>')
    out.append("</table>")
    notes = [("Sorted by share of pixels. TC: higher is better; flicker: share of the class's pixels that change "
             "label in the next frame, lower is better.")]
    if absent:
        notes.append(f"{absent} classes never predicted are not listed.")
    out.append(f'<p class="note">{" ".join(_e(n) for n in notes)}</p>')
    out.append("</main></body></html>")
    return "\n".join(out)
