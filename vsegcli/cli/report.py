"""`vseg report ...`: read consistency reports (NAME.json) written by `vseg run --report`."""
from __future__ import annotations

from pathlib import Path

import click

from vsegcli.cli._options import CONTEXT, echo_json, json_flag
from vsegcli.report.compare import HEADLINE, compare_reports

MAX_CLASS_ROWS = 20  # per-class rows in the table; --json has them all


@click.group("report", context_settings=CONTEXT)
def report() -> None:
    """Read consistency reports written by `vseg run --report`.

    \b
    Examples:
      vseg report compare baseline.json stt.json
      vseg report compare a.json b.json c.json --json
    """


def _fmt(value: float | None, fraction: bool) -> str:
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if fraction else f"{value:.2f}"


@report.command("compare", context_settings=CONTEXT)
@click.argument("reports", nargs=-1, required=True, type=click.Path(path_type=Path))
@json_flag("Machine-readable comparison on stdout.")
def compare(reports: tuple[Path, ...], as_json: bool) -> None:
    """Compare consistency reports side by side (the best value per row in green).

    REPORTS are the .json files of reports (a report .html finds the .json beside it). Runs on the same
    clip show which model is steadier, e.g. a temporal model against its per-frame baseline.

    \b
    Examples:
      vseg report compare segformer.json stt.json
      vseg report compare runs/*.json --json
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
    fraction = {key: frac for key, _, _, frac in HEADLINE}
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
