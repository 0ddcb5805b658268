"""`vseg models`: the architectures vseg can build, with parameter counts."""
from __future__ import annotations

import click

from vsegcli.cli._options import CONTEXT, echo_json, json_flag


@click.command(context_settings=CONTEXT)
@json_flag("Machine-readable list on stdout.")
def models(as_json: bool) -> None:
    """List the architectures vseg can build, with parameter counts.

    \b
    Example:
      vseg models
    """
    import torch

    from vsegcli.models import build_model, list_architectures

    rows = []
    with torch.device("meta"):  # parameter counts without allocating weights
        for arch in list_architectures():
            net = build_model(arch.name, 19)
            params = sum(p.numel() for p in net.parameters())
            rows.append({"name": arch.name, "family": arch.family, "temporal": arch.temporal,
                         "params_m": round(params / 1e6, 2), "baseline": arch.baseline,
                         "description": arch.description})
    if as_json:
        echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vseg architectures (parameters with 19 classes)")
    table.add_column("name", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("temporal", no_wrap=True)
    table.add_column("params (M)", justify="right", no_wrap=True)
    table.add_column("per-frame baseline", no_wrap=True)
    table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["family"], "yes" if r["temporal"] else "", f"{r['params_m']:.2f}",
                      r["baseline"] or "", r["description"])
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # pipes/logs: don't squeeze the table
    console.print(table)
