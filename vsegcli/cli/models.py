"""`vseg models`: the architectures vseg can build, with parameter counts, then the shipped
checkpoints a user can run right away (weights/models.json: classes, model-card scores, default)."""
from __future__ import annotations

import click

from vsegcli.cli._options import CONTEXT, echo_json, json_flag


@click.command(context_settings=CONTEXT)
@json_flag("Machine-readable list on stdout.")
def models(as_json: bool) -> None:
    """List the architectures vseg can build (parameter counts), then the shipped checkpoints.

    \b
    Examples:
      vseg models
      vseg models --json | python -m json.tool
      vseg run clip.mp4 -c weights/effl0-camvid.safetensors   # a shipped checkpoint by path
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
    shipped = _shipped_rows()
    if as_json:
        echo_json({"architectures": rows, "shipped": shipped})
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
    if not shipped:
        console.print("No shipped checkpoints in this installation (weights/models.json).")
        return
    ship = Table(title=f"shipped checkpoints ({shipped[0]['folder']}); scores: model card, % on the dataset's split")
    for col in ("name", "architecture", "classes", "mIoU", "TC", "mVC8", "default"):
        ship.add_column(col, no_wrap=True, justify="right" if col in ("mIoU", "TC", "mVC8") else "left")
    for r in shipped:
        pct = [("-" if r[k] is None else f"{r[k]:.2f}") for k in ("miou", "tc", "mvc8")]
        ship.add_row(r["name"], r["architecture"], f"{r['num_classes']} ({r['dataset']} {r['split']})", *pct,
                     "yes" if r["default"] else "")
    console.print(ship)


def _shipped_rows() -> list[dict]:
    """One row per shipped checkpoint (vsegcli.api.shipped_models), the default first."""
    from vsegcli.api import shipped_models, weights_dir
    from vsegcli.data.labels import get_label_set

    index = shipped_models()
    default = index.get("default")
    rows = []
    for name, card in index.get("models", {}).items():
        dataset = card.get("dataset")
        try:
            k = get_label_set(dataset).num_classes if dataset else None
        except Exception:  # noqa: BLE001 - an unknown set in a card: show the name without a count
            k = None
        rows.append({"name": name, "path": str(weights_dir() / name), "folder": str(weights_dir()),
                     "architecture": card.get("architecture"), "dataset": dataset, "split": card.get("split"),
                     "num_classes": k, "miou": card.get("miou"), "tc": card.get("tc"), "mvc8": card.get("mvc8"),
                     "present": (weights_dir() / name).is_file(), "default": name == default})
    return sorted(rows, key=lambda r: (not r["default"], r["name"]))
