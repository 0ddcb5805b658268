"""The report page: one self-contained HTML file (inline CSS, plots as base64 PNGs, no scripts)."""
from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsegcli.report.document import source_fps
from vsegcli.report.moments import format_timestamp
from vsegcli.report.plots import TOP_CLASSES

__all__ = ["render_html"]

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
    fps = source_fps(ctx)
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


def _cuts_note(doc: dict[str, Any], fps: float | None) -> str:
    """What the shot cuts did to the numbers: which pairs were left out, the numbers with them."""
    if doc.get("shot_cut_detection") == "off":
        return '<p class="note">Shot-cut detection was off: every pair is counted, cuts included.</p>'
    cuts = doc.get("shot_cuts") or []
    if not cuts:
        return '<p class="note">No shot cut found: every consecutive pair is counted.</p>'
    where = ", ".join(f"{c}" + (f" ({format_timestamp(c / fps)})" if fps else "") for c in cuts)
    inc = doc["metrics"].get("including_cuts") or {}
    with_cuts = ""
    if inc:
        with_cuts = (f" Counting them anyway: TC {_pct(inc.get('tc'), fraction=False)}, flicker "
                     f"{_pct(inc.get('flicker_rate'))}, flow-compensated flicker {_pct(inc.get('flow_flicker_rate'))}.")
    return (f'<p class="note">{len(cuts)} shot cut{"s" if len(cuts) != 1 else ""} found (a new shot starts at '
            f"source frame {_e(where)}): the pair across each cut is left out of every number on this page, "
            "since every label changes there and no model is to blame; the dashed lines on the timeline mark "
            f"them.{_e(with_cuts)}</p>")


def render_html(doc: dict[str, Any], plots: Mapping[str, str] | None = None) -> str:
    """The self-contained report page for a report document (see `ConsistencySink.build`)."""
    plots = plots or {}
    ctx, met = doc["context"], doc["metrics"]
    fps = source_fps(ctx)
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
    out.append(_cuts_note(doc, fps))

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
