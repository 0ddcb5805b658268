"""The report's plots (timeline, class share, flicker heat-map) as base64 PNGs.

matplotlib is optional (the ``report`` extra): without it `render_plots` returns no plots and the
page says so. Figure objects with the Agg canvas, never pyplot: no global state, so plotting is
safe on a sink's worker thread.
"""
from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np

from vsegcli.metrics.temporal_consistency import TemporalConsistencyResult
from vsegcli.report.document import source_fps

__all__ = ["TOP_CLASSES", "render_plots"]

TOP_CLASSES = 8  # classes drawn individually in the class-share plot; the rest is "other"


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


def render_plots(
    r: TemporalConsistencyResult | None, doc: dict[str, Any], palette: np.ndarray, thumb: np.ndarray | None
) -> dict[str, str]:
    """name -> base64 PNG for 'timeline', 'share', 'heatmap' (empty without matplotlib)."""
    mpl = _load_matplotlib()
    if mpl is None or r is None:
        return {}
    Figure, Canvas = mpl
    plots: dict[str, str] = {}
    fps = source_fps(doc["context"])
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
        cut_label = "shot cut (pair left out)"
        for frame in doc.get("shot_cuts") or []:
            pos = int(np.searchsorted(idx, frame))  # the pair ending at this frame is plotted here
            ax.axvline(x[pos], color="#555", ls="--", lw=1.0, label=cut_label)
            cut_label = "_nolegend_"
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
