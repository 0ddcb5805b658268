"""Turn `vseg bench --json` files into the Markdown tables of docs/PERFORMANCE.md.

    python benchmarks/to_markdown.py benchmarks/results/cpu_*.json > /tmp/tables.md

One section per file: the exact command, the machine line, then the model-only, streaming vs
naive and end-to-end tables (whichever the file has).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from vsegcli.bench.table import fmt_number


def _f(v: Any, digits: int = 1) -> str:
    return fmt_number(v, digits)  # the same cell format as `vseg bench`'s tables


def _size(s: list[int] | None) -> str:
    return f"{s[0]}x{s[1]}" if s else "-"


def _load(la: dict[str, Any] | None) -> str:
    if not la or not la.get("start") or not la.get("end"):
        return "-"
    return f"{la['start'][0]:.1f} / {la['end'][0]:.1f}"


def machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    dev = data["settings"]["device"]
    if dev.startswith("cuda"):
        gpu = next((g for g in m.get("gpus", []) if f"cuda:{g['index']}" == dev), {})
        where = f"{gpu.get('name', '?')} (driver {gpu.get('driver', '?')}, CUDA {m.get('torch_cuda')})"
    else:
        where = f"{m.get('cpu_model')} ({m.get('cpu_count')} cores, {m.get('torch_threads')} torch threads)"
    return (f"{where}; torch {m.get('torch')}, vseg {m.get('vseg_version')}; "
            f"load average at start {m.get('load_average')}, at end {m.get('load_average_end')}; {data.get('created')}")


def tables(data: dict[str, Any]) -> str:
    out = [f"`{data['command']}`", "", machine_line(data), ""]
    s = data["settings"]
    out.append(f"protocol {s['protocol']}, {s['frames']} timed frames after {s['warmup']} warm-up per measurement, "
               f"batch {s['batch']}, {s['classes']} classes" + (f", best of {s['repeat']} interleaved runs" if s["repeat"] > 1 else ""))
    out.append("")
    rows = data.get("model_only") or []
    if rows:
        out += ["| model | mode | size | precision | median ms | p95 ms | CPU ms | page faults / step | fps | activation peak MiB | backbone frames / frame | runs (median ms) |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows:
            if r["status"] != "ok":
                out.append(f"| {r['model']} | {r['mode']} | {_size(r['size'])} | {r['precision']} | - | - | - | - | - | - | - | {r.get('note', '')} |")
                continue
            runs = ", ".join(_f(x) for x in r.get("runs_median_ms", []))
            cpu = _f(r["cpu_time_ms"]["median"]) if "cpu_time_ms" in r else "-"
            out.append(f"| {r['model']} | {r['mode']} | {_size(r['size'])} | {r['precision']} | {_f(r['latency_ms']['median'])} "
                       f"| {_f(r['latency_ms']['p95'])} | {cpu} | {_f(r.get('page_faults_per_step'), 0)} | {_f(r['fps'], 2)} | {_f(r['peak_memory_mib'], 0)} "
                       f"| {_f(r.get('backbone_frames_per_frame'))} | {runs} |")
        out.append("")
    comps = data.get("temporal") or []
    if comps:
        out += ["| temporal model | baseline | size | precision | streaming ms | naive ms | baseline ms | naive / streaming | streaming / baseline | naive / streaming (CPU time) | streaming / baseline (CPU time) |",
                "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
        for c in comps:
            def ms(p: dict[str, Any] | None) -> str:
                return _f(p.get("median_ms")) if p and "median_ms" in p else "-"

            out.append(f"| {c['model']} | {c['baseline']} | {_size(c['size'])} | {c['precision']} | {ms(c['streaming'])} "
                       f"| {ms(c['naive'])} | {ms(c['baseline_row'])} | {_f(c['naive_over_streaming'], 2)}x "
                       f"| {_f(c['streaming_over_baseline'], 2)}x | {_f(c.get('naive_over_streaming_cpu_time'), 2)}x "
                       f"| {_f(c.get('streaming_over_baseline_cpu_time'), 2)}x |")
        out.append("")
    pipes = data.get("pipeline") or []
    if pipes:
        out += ["| model | size | precision | frames | decode fps | inference fps | encode fps | label PNG fps | end-to-end fps | bottleneck | e2e / slowest | per round | CPU ms/frame: inference alone / end to end | load (1 min) start / end |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|---|---|"]
        for p in pipes:
            if p.get("status") != "ok":
                continue
            st = p["stages"]
            out.append(f"| {p['model']} | {_size(p['size'])} | {p['precision']} | {p['frames']} | {_f(st['decode']['fps'])} "
                       f"| {_f(st['inference']['fps'], 2)} | {_f(st.get('encode', {}).get('fps'))} "
                       f"| {_f(st.get('label_png', {}).get('fps'))} | {_f(p['end_to_end']['fps'], 2)} | {p['bottleneck']} "
                       f"| {p['e2e_percent_of_slowest']:.0f} % | {', '.join(f'{x:.0f} %' for x in p.get('rounds_percent', []))} "
                       f"| {_f(st['inference'].get('cpu_ms_per_frame'))} / {_f(p['end_to_end'].get('cpu_ms_per_frame'))} "
                       f"| {_load(p.get('load_average'))} |")
        out.append("")
        out.append(f"Source: {pipes[0].get('source')}.")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path)
    args = ap.parse_args(argv)
    for f in args.files:
        data = json.loads(f.read_text())
        print(f"### {f.name}\n")
        print(tables(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
