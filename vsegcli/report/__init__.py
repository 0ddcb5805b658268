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

Both files are written under temporary names and renamed when complete (`io.fsutil`); nothing,
not even the folder, exists before that.

Modules: `sink` (the sink and the document it builds), `document` (paths, context, reading a
report back), `moments` (worst moments, timestamps), `plots` (matplotlib), `html` (the page).

    sink = ConsistencySink(Path("out/report.html"), seg.predictor.num_classes,
                           seg.predictor.classes, palette,
                           context=make_context(seg.info, video_info, stride=1))
    summary = seg.run("clip.mp4", output=None, extra_sinks=[sink])
    sink.update_context(summary)        # optional: rewrites the report with the run's own fps
"""
from __future__ import annotations

from vsegcli.report.document import REPORT_SCHEMA, load_report, make_context, report_paths
from vsegcli.report.html import render_html
from vsegcli.report.moments import WorstMoment, format_timestamp, worst_moments
from vsegcli.report.sink import ConsistencySink

__all__ = [
    "REPORT_SCHEMA",
    "ConsistencySink",
    "WorstMoment",
    "format_timestamp",
    "load_report",
    "make_context",
    "render_html",
    "report_paths",
    "worst_moments",
]
