"""`vseg report ...`: read consistency reports (report.json) written by `vseg run --report`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vsegcli.cli._options import CONTEXT, echo_json, json_flag

MAX_CLASS_ROWS = 20  # per-class rows in the table; --json has them all

# (key in metrics, row label, "higher"/"lower" is better, shown as percent of a fraction?)
_HEADLINE = [
    ("tc", "TC (%)", "higher", False),
    ("flicker_rate", "flicker (%)", "lower", True),
    ("flow_flicker_rate", "flow-comp. flicker (%)", "lower", True),
]


@click.group("report", context_settings=CONTEXT)
def report() -> None:
    """Read consistency reports written by `vseg run --report`.

    \b
    Examples:
      vseg report compare baseline.json stt.json
      vseg report compare a.json b.json c.json --json
    """


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
    from vsegcli.report import load_report

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
        })
    rows: list[dict[str, Any]] = []
    for key, label, better, _ in _HEADLINE:
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
    return {"runs": runs, "rows": rows, "warnings": warnings}


def _fmt(value: float | None, fraction: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if fraction else f"{value:.2f}"


@report.command("compare", context_settings=CONTEXT)
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_flag("Machine-readable comparison on stdout.")
def compare(reports: tuple[Path, ...], as_json: bool) -> None:
    """Compare consistency reports side by side (the best value per row in green).

    REPORTS are report.json files (a report.html finds the .json beside it). Runs on the same
    clip show which model is steadier, e.g. a temporal model against its per-frame baseline.

    \b
    Examples:
      vseg report compare segformer.json stt.json
      vseg report compare runs/*/report.json --json
    """
    from vsegcli.errors import VsegError

    if len(reports) < 2:
        raise VsegError("report compare needs at least two report files")
    result = compare_reports(list(reports))
    if result["warnings"]:
        click.echo("warning: runs differ: " + "; ".join(result["warnings"]) + " — compare with care", err=True)
    if as_json:
        echo_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    runs, rows = result["runs"], result["rows"]
    two = len(runs) == 2
    table = Table(title="vseg consistency reports", title_justify="left")
    table.add_column("", no_wrap=True)
    for r in runs:
        table.add_column(r["name"], justify="right", overflow="fold")
    if two:
        table.add_column(f"Δ ({runs[1]['name']} − {runs[0]['name']})", justify="right", no_wrap=True)
    blank = [""] if two else []
    table.add_row("model", *[r["model"] for r in runs], *blank)
    table.add_row("input", *[Path(str(r["input"])).name for r in runs], *blank)
    table.add_row("frames", *[str(r["frames"]) for r in runs], *blank)
    fraction = {key: frac for key, _, _, frac in _HEADLINE}
    shown = 0
    for row in rows:
        is_class = row["metric"].startswith("class_tc:")
        if is_class:
            if shown == 0:
                table.add_section()
            shown += 1
            if shown > MAX_CLASS_ROWS:
                continue
        frac = fraction.get(row["metric"], False)
        cells = []
        for i, v in enumerate(row["values"]):
            text = _fmt(v, frac)
            cells.append(f"[bold green]{text}[/]" if row["best"] == i else text)
        if two:
            d = row["diff"]
            if d is None or d == 0:
                cells.append("–" if d is None else "0.00")
            else:
                good = (d > 0) == (row["better"] == "higher")
                text = f"{100 * d:+.2f}" if frac else f"{d:+.2f}"
                cells.append(f"[green]{text}[/]" if good else f"[red]{text}[/]")
        arrow = "↑" if row["better"] == "higher" else "↓"
        table.add_row(f"{row['label']} {arrow}", *cells)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 120)  # pipes/logs: don't squeeze the table
    console.print(table)
    if shown > MAX_CLASS_ROWS:
        console.print(f"({shown - MAX_CLASS_ROWS} more classes in common; see --json)")
    if shown == 0:
        console.print("(no classes with a TC in every run)")
    console.print("↑ higher is better, ↓ lower is better; the best value per row is green.")
