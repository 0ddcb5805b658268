"""The report's files and document: where they go, the run context, reading a report back.

A report is two files side by side, ``<name>.html`` and ``<name>.json``; the JSON document
(schema `REPORT_SCHEMA`) is what `vseg report compare` reads and what the page is made from.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsegcli.errors import VsegError

__all__ = ["REPORT_SCHEMA", "load_report", "make_context", "report_paths", "source_fps"]

REPORT_SCHEMA = 1


def report_paths(path: str | Path) -> tuple[Path, Path]:
    """(html, json) for a user-given report path.

    ``r.html`` -> r.html + r.json; ``r.json`` -> the same pair; a name without a suffix ``r``
    -> r.html + r.json too (no folder is made for it); an existing folder ``d`` ->
    d/report.html + d/report.json.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in (".html", ".htm", ".json"):
        return p.with_suffix(".html" if suffix == ".json" else p.suffix), p.with_suffix(".json")
    if p.is_dir():
        return p / "report.html", p / "report.json"
    if not suffix:
        return p.with_name(p.name + ".html"), p.with_name(p.name + ".json")
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


def source_fps(ctx: Mapping[str, Any]) -> float | None:
    """Frame rate of the source, which maps a source frame index to a time.

    ``source_fps`` if given; else ``video_fps`` (the api summary's output rate, source / stride)
    times ``stride``.
    """
    for key, mult in (("source_fps", 1), ("video_fps", int(ctx.get("stride") or 1))):
        v = ctx.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
            return float(v) * mult
    return None


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
