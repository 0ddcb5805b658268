"""`vseg report compare` as data: several consistency reports side by side, best value per row.

The command in `vsegcli/cli/report.py` only prints what `compare_reports` returns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from vsegcli.report.document import load_report

# (key in metrics, row label, "higher"/"lower" is better, shown as percent of a fraction?)
HEADLINE = [
    ("tc", "TC (%)", "higher", False),
    ("flicker_rate", "flicker (%)", "lower", True),
    ("flow_flicker_rate", "flow-comp. flicker (%)", "lower", True),
]



def _run_labels(paths: list[Path]) -> list[str]:
    """Column names: file stems, or full paths where stems collide (a/report.json, b/report.json)."""
    stems = [p.stem for p in paths]
    if len(set(stems)) == len(stems):
        return stems
    parents = [f"{p.parent.name}/{p.stem}" for p in paths]
    return parents if len(set(parents)) == len(parents) else [str(p) for p in paths]


def _model(doc: dict[str, Any]) -> str:
    ctx = doc.get("context") or {}
    arch = str(ctx.get("architecture") or "?")
    if "temporal" in ctx:
        arch += " (temporal)" if ctx["temporal"] else " (per-frame)"
    return arch


def _best(values: list[float | None], better: str) -> int | None:
    """Index of the single best value (None on ties or with fewer than two known values)."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return None
    pick = max(known) if better == "higher" else min(known)
    if sum(1 for v, _ in known if v == pick[0]) > 1:
        return None
    return pick[1]


def _class_tc(doc: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """class name -> (TC, share) for classes the run has a TC for."""
    return {d["name"]: (d["tc"], d.get("share") or 0.0) for d in doc.get("per_class") or []
            if d.get("tc") is not None}


def compare_reports(paths: list[Path]) -> dict[str, Any]:
    """The comparison as data: runs, metric rows (values, which is best, B − A) and warnings."""
    docs = [load_report(p) for p in paths]
    labels = _run_labels(paths)
    runs = []
    for p, lab, d in zip(paths, labels, docs):
        ctx = d.get("context") or {}
        m = d["metrics"]
        runs.append({
            "name": lab, "file": str(p), "model": _model(d), "checkpoint": ctx.get("checkpoint"),
            "input": ctx.get("input"), "frames": m.get("num_frames"),
            "analysis_size": m.get("analysis_size"),
            # None: a report from before shot cuts were left out (every pair counted).
            "shot_cuts": d.get("shot_cuts") if d.get("shot_cut_detection") == "on" else None,
            "pairs_excluded": m.get("pairs_excluded"),
        })
    rows: list[dict[str, Any]] = []
    for key, label, better, _ in HEADLINE:
        rows.append({"metric": key, "label": label, "better": better,
                     "values": [d["metrics"].get(key) for d in docs]})
    per_class = [_class_tc(d) for d in docs]
    common = set(per_class[0]).intersection(*per_class[1:]) if per_class else set()
    # Largest classes of the first run first: the rows a reader cares about come first.
    for name in sorted(common, key=lambda n: -per_class[0][n][1]):
        rows.append({"metric": f"class_tc:{name}", "label": f"TC {name} (%)", "better": "higher",
                     "values": [pc[name][0] for pc in per_class]})
    for row in rows:
        row["best"] = _best(row["values"], row["better"])
        a, b = row["values"][0], row["values"][-1]
        row["diff"] = (b - a) if len(docs) == 2 and a is not None and b is not None else None

    warnings = []
    inputs = {Path(str(r["input"])).name for r in runs}
    if len(inputs) > 1:
        warnings.append("different inputs (" + ", ".join(sorted(inputs)) + ")")
    if len({r["frames"] for r in runs}) > 1:
        warnings.append("different frame counts (" + ", ".join(str(r["frames"]) for r in runs) + ")")
    if len({tuple(r["analysis_size"] or ()) for r in runs}) > 1:
        warnings.append("different analysis resolutions")
    if len({None if r["shot_cuts"] is None else tuple(r["shot_cuts"]) for r in runs}) > 1:
        warnings.append("different pairs left out at shot cuts ("
                        + "; ".join("not detected" if r["shot_cuts"] is None else
                                    ("frames " + ", ".join(map(str, r["shot_cuts"])) if r["shot_cuts"] else "none")
                                    for r in runs) + ")")
    return {"runs": runs, "rows": rows, "warnings": warnings}
