"""`vseg bench`: model-only speed, streaming vs naive recompute, and the end-to-end pipeline.

A thin shell over `vsegcli.bench`: options -> `run_benchmarks` -> rich tables and/or JSON.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from vsegcli.cli._options import CONTEXT, check_json_file, command_line, device_option, emit_json, gpu_option, quiet_option
from vsegcli.errors import VsegError


def _canonical_command(opts: dict[str, Any]) -> str:
    """The command that reproduces this run, with every default made explicit."""
    e2e = opts["e2e"]
    mode = opts["compile"]
    return command_line(["vseg", "bench"], [
        ("--device", opts["device"]), ("--protocol", opts["protocol"]), ("--model", list(opts["models"])),
        ("--checkpoint", opts.get("checkpoint") or None),
        ("--size", ",".join(f"{h}x{w}" for h, w in opts["sizes"])),
        ("--precision", ",".join(opts["precisions"])), ("--batch", opts["batch"]), ("--frames", opts["frames"]),
        ("--warmup", opts["warmup"]), ("--classes", opts["classes"]),
        ("--repeat", opts["repeat"] if opts["repeat"] > 1 else None),
        ("--paired", bool(opts.get("paired"))),
        # --compile alone is torch's default mode; other modes are named
        ("--compile", (True if mode in (True, "default") else mode) if mode else None),
        ("--channels-last", bool(opts["channels_last"])),
        ("--threads", opts.get("threads") or None),
        ("--no-e2e", not e2e),
        ("--hwaccel", opts["hwaccel"] if opts.get("hwaccel", "auto") != "auto" and e2e else None),
        ("--frame-batch", opts["frame_batch"] if opts.get("frame_batch", 1) != 1 and e2e else None),
        ("--no-fold-bn", not opts.get("fold_bn", True)),
        ("--host-allocator", opts["host_allocator"] if opts.get("host_allocator", "retain") != "retain" else None),
        ("--e2e-only", bool(opts.get("e2e_only"))),
        ("--input", opts["input"] if opts.get("input") and not opts.get("e2e_only") else None),
    ])


def _fps(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def render_tables(result: dict[str, Any], console: Any) -> None:
    """The three tables (model-only, streaming vs naive, end-to-end) on a rich console."""
    from rich.table import Table

    from vsegcli.bench.table import fmt_number

    settings = result["settings"]
    machine = result["machine"]
    where = machine.get("device_name") or machine.get("cpu_model")
    threads = f", {machine.get('torch_threads')} torch threads" if settings["device"] == "cpu" else ""
    console.print(f"[bold]vseg bench[/] on {settings['device']} ({where}{threads}); protocol {settings['protocol']}, "
                  f"{settings['frames']} timed frames after {settings['warmup']} warm-up; "
                  f"load average {machine.get('load_average', '?')}")
    for note in result.get("notes", []):
        console.print(f"note: {note}")

    rows = result["model_only"]
    if rows:
        on_cpu = any("cpu_time_ms" in r for r in rows)
        t = Table(title="Model only: one step = normalise + model + resize logits + argmax (upload excluded)")
        cols = [("model", {}), ("mode", {}), ("size", {}), ("prec", {}), ("batch", {"justify": "right"}),
                ("median ms", {"justify": "right"}), ("p95 ms", {"justify": "right"})]
        if on_cpu:
            cols += [("CPU ms", {"justify": "right"}), ("faults/step", {"justify": "right"})]
        cols += [("ms/frame", {"justify": "right"}), ("fps", {"justify": "right"}),
                 ("act. MiB", {"justify": "right"}), ("backbone/frame", {"justify": "right"}),
                 ("note", {"overflow": "fold"})]
        for col, kw in cols:
            t.add_column(col, no_wrap=col != "note", **kw)
        for r in rows:
            size = f"{r['size'][0]}x{r['size'][1]}"
            if r["status"] != "ok":
                t.add_row(r["model"], r["mode"], size, r["precision"], str(r["batch"]),
                          *["-"] * (len(cols) - 6), r.get("note", ""))
                continue
            lat = r["latency_ms"]
            cpu = [fmt_number(r["cpu_time_ms"]["median"]) if "cpu_time_ms" in r else "-",
                   fmt_number(r.get("page_faults_per_step"), 0)] if on_cpu else []
            t.add_row(r["model"], r["mode"], size, r["precision"], str(r["batch"]), fmt_number(lat["median"]),
                      fmt_number(lat["p95"]), *cpu, fmt_number(r["ms_per_frame"]), _fps(r["fps"]), fmt_number(r["peak_memory_mib"], 0),
                      fmt_number(r.get("backbone_frames_per_frame"), 1), r.get("note", ""))
        console.print(t)
        mem = next((r["memory_method"] for r in rows if r.get("memory_method")), None)
        if mem:
            console.print(f"act. MiB: {mem}")
        if on_cpu:
            console.print("CPU ms: median process CPU time per step (all threads), hardly moved by other "
                          "processes' load; wall-clock columns are. faults/step: median minor page faults "
                          "per step (memory freed and mapped again; see --host-allocator).")

    comps = result["temporal"]
    if comps:
        with_cpu = any(c.get("naive_over_streaming_cpu_time") is not None for c in comps)
        t = Table(title="Streaming session vs naive clip recompute vs per-frame baseline (median step latency)")
        cols = ["model", "baseline", "size", "prec", "stream ms", "naive ms", "base ms", "naive/stream", "stream/base"]
        if with_cpu:
            cols += ["naive/stream CPU-time", "stream/base CPU-time"]
        for col in cols:
            t.add_column(col, no_wrap=True, justify="right" if ("ms" in col or "/" in col) else "left")

        def ms(part: dict[str, Any] | None) -> str:
            return fmt_number(part.get("median_ms")) if part and "median_ms" in part else "-"

        def x(v: float | None) -> str:
            return f"{v:.2f}x" if v is not None else "-"

        for c in comps:
            extra = [x(c.get("naive_over_streaming_cpu_time")), x(c.get("streaming_over_baseline_cpu_time"))] if with_cpu else []
            t.add_row(c["model"], c["baseline"] or "-", f"{c['size'][0]}x{c['size'][1]}" if c["size"] else "-",
                      c["precision"] or "-", ms(c["streaming"]), ms(c["naive"]), ms(c["baseline_row"]),
                      x(c["naive_over_streaming"]), x(c["streaming_over_baseline"]), *extra)
        console.print(t)
        console.print(f"ratios: {comps[0].get('ratio_method', '')}")

    pipes = result["pipeline"]
    if pipes:
        t = Table(title="End to end: decode -> infer -> encode (+ label PNGs), and each stage alone (frames/s)")
        for col in ["model", "size", "prec", "frames", "decode", "inference", "encode", "label PNG",
                    "end-to-end", "bottleneck", "e2e % of slowest"]:
            t.add_column(col, no_wrap=True, justify="left" if col in ("model", "size", "prec", "bottleneck") else "right")
        for p in pipes:
            size = f"{p['size'][0]}x{p['size'][1]}"
            if p.get("status") != "ok":
                t.add_row(p["model"], size, p["precision"], "-", "-", "-", "-", "-", "-", p.get("note", ""), "-")
                continue
            st = p["stages"]
            nvdec = " (NVDEC)" if st["decode"].get("decoder") == "cuda" else ""
            t.add_row(p["model"], size, p["precision"], str(p["frames"]), _fps(st["decode"]["fps"]) + nvdec,
                      _fps(st["inference"]["fps"]), _fps(st.get("encode", {}).get("fps")),
                      _fps(st.get("label_png", {}).get("fps")), _fps(p["end_to_end"]["fps"]), p["bottleneck"],
                      f"{p['e2e_percent_of_slowest']:.0f} %")
        console.print(t)
        console.print(f"source: {pipes[0].get('source', '')}")


@click.command("bench", context_settings=CONTEXT)
@device_option()
@gpu_option()
@click.option("--model", "-m", "models", multiple=True,
              help="Architecture(s) to measure (repeat or comma-separate; see `vseg models`). Default: mrcfa-b0.")
@click.option("--checkpoint", "-c", metavar="FILE|hf://REPO",  # a string: URLs must not go through pathlib
              help="Measure this checkpoint's architecture (weights do not change speed).")
@click.option("--size", "sizes", multiple=True,
              help="Network input HEIGHTxWIDTH, multiples of 32 (repeat or comma-separate). Default: 480x864.")
@click.option("--precision", "precisions", multiple=True,
              help="fp32, fp16, bf16 (comma list). Default: fp32 on CPU, fp32,bf16 on GPU. fp16 rows are skipped on CPU.")
@click.option("--batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Frames per step (independent streams for sessions).")
@click.option("--compile", "use_compile", is_flag=False, flag_value="default", default=None,
              type=click.Choice(["default", "reduce-overhead", "max-autotune"]),
              help="torch.compile the backbone (rows skipped with a note if it fails); `--compile reduce-overhead` "
                   "adds CUDA graphs for the fixed input size.")
@click.option("--channels-last", is_flag=True, help="channels_last weights and inputs (helps convolutional bases on GPU).")
@click.option("--frames", type=click.IntRange(min=1),
              help="Timed frames per measurement. Default: 200 on GPU, 20 on CPU (with --protocol upstream: 195 + 5 warm-up).")
@click.option("--warmup", type=click.IntRange(min=0), help="Untimed warm-up steps. Default: 5 on GPU, 3 on CPU.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Measure each row this many times (interleaved) and keep the best median: for noisy machines.")
@click.option("--paired", is_flag=True,
              help="Time each temporal model's streaming, naive and baseline steps interleaved in one loop; "
                   "ratios = median of per-step ratios. For machines shared with other work (no memory column).")
@click.option("--classes", type=click.IntRange(min=1), default=19, show_default=True,
              help="Class count of the random-weight models (19 Cityscapes, 124 VSPW).")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="Video for the end-to-end test, resized to --size. Default: examples/bikes.mp4.")
@click.option("--no-e2e", is_flag=True, help="Skip the end-to-end decode/infer/encode measurement.")
@click.option("--e2e-only", is_flag=True, help="Only the end-to-end measurement (no model-only rows).")
@click.option("--protocol", type=click.Choice(["vseg", "upstream"]), default="vseg", show_default=True,
              help="vseg: session step + post-processing, CUDA events. upstream: mmseg benchmark.py "
                   "(batch 1, sync per call, cudnn.benchmark off, labels to host, 5 of 200 iterations warm-up).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads (default: torch's choice).")
@click.option("--frame-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="End-to-end: frames per model call, as `vseg run --frame-batch` (micro-batching).")
@click.option("--hwaccel", type=click.Choice(["auto", "cuda", "none"]), default="auto", show_default=True,
              help="End-to-end decoding: auto = NVDEC (ffmpeg -hwaccel cuda) when benchmarking CUDA, with a "
                   "software fallback; cuda = NVDEC or an error; none = software.")
@click.option("--no-fold-bn", is_flag=True,
              help="Keep BatchNorm layers separate (by default they are folded into the convolution before "
                   "them, as `vseg run` does): to measure what folding buys.")
@click.option("--host-allocator", type=click.Choice(["retain", "system"]), default=None,
              help="retain (default, also $VSEG_HOST_ALLOCATOR): freed host memory stays in the process, so "
                   "CPU steps do not page-fault their activations back in every frame; system: C library defaults "
                   "(to measure what retain buys).")
@click.option("--json", "json_out", metavar="FILE", help="Write all results + machine + command as JSON ('-' for stdout).")
@quiet_option("No progress, notes or tables on the terminal.")
def bench(**options: Any) -> None:
    """Measure speed honestly: model-only latency, streaming vs naive recompute, end to end.

    Model-only rows time one step on frames already on the device (random weights): median and
    p95 latency, throughput, peak memory. Each temporal model (STT, MRCFA) is measured three ways
    in the same run: its streaming session, the naive clip recompute of the official test code,
    and its per-frame baseline. The end-to-end test runs decode -> infer -> encode on a real video
    and each stage alone, and names the bottleneck.

    \b
    Examples:
      vseg bench --gpu 0
      vseg bench --gpu 0 -m mrcfa-b0,stt-effl0 --precision bf16 --size 480x864 --json bench.json
      vseg bench --gpu 0 -m segformer-b0 --protocol upstream --no-e2e
      vseg bench --device cpu -m segformer-b0 --size 256x448 --frames 10
    """
    _bench(**options)  # a VsegError becomes one line and exit 2 in the `vseg` group


def _bench(*, device: str, gpu: int | None, models: tuple[str, ...], checkpoint: str | None, sizes: tuple[str, ...],
           precisions: tuple[str, ...], batch: int, use_compile: str | None, channels_last: bool, frames: int | None,
           warmup: int | None, repeat: int, paired: bool, classes: int, input_path: Path | None, no_e2e: bool,
           e2e_only: bool, protocol: str, threads: int | None, frame_batch: int, hwaccel: str, no_fold_bn: bool, host_allocator: str | None,
           json_out: str | None, quiet: bool) -> None:
    from rich.console import Console

    from vsegcli import bench as B
    from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
    from vsegcli.runtime import resolve_device
    from vsegcli.io.hostmem import configure_host_allocator, requested_mode
    from vsegcli.models import get_architecture

    host_allocator = requested_mode(host_allocator)
    allocator_state = configure_host_allocator(host_allocator)  # before any model or frame is allocated
    dev, device_note = resolve_device(device, gpu)
    from vsegcli.runtime.threads import set_threads, thread_report

    set_threads(threads)
    if no_e2e and e2e_only:
        raise VsegError("--no-e2e and --e2e-only contradict each other")
    if protocol == "upstream" and batch != 1:
        raise VsegError("--protocol upstream is batch 1 (as mmseg's benchmark.py); drop --batch")
    model_names = B.parse_list(models)
    given: dict[str, Any] = {}
    mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
    if checkpoint is not None:
        from vsegcli.checkpoints import load_checkpoint

        loaded = load_checkpoint(checkpoint)  # a missing or unreadable file: one VsegError
        arch_name = loaded.meta.architecture
        given[arch_name] = loaded.model.eval()
        classes = loaded.meta.num_classes
        mean, std = list(loaded.meta.mean), list(loaded.meta.std)
        if arch_name not in model_names:
            model_names.insert(0, arch_name)
    if not model_names:
        model_names = list(B.DEFAULT_MODELS)
    for m in model_names:
        get_architecture(m)  # unknown names fail now, with suggestions
    size_list = [B.parse_size(s) for s in B.parse_list(sizes)] or [B.DEFAULT_SIZE]
    prec_list = B.parse_list(precisions) or (["fp32", "bf16"] if dev.type == "cuda" else ["fp32"])
    for p in prec_list:
        if p not in ("fp32", "fp16", "bf16"):
            raise VsegError(f"unknown precision {p!r}: use fp32, fp16 or bf16 (comma-separated)")
    n_frames, n_warmup, count_note = B.default_counts(dev, frames, warmup, protocol)
    if input_path is not None and not input_path.exists():
        raise VsegError(f"{input_path}: no such video")
    if json_out and json_out != "-":
        check_json_file(json_out)  # a folder: say so before a long run, not after

    err = Console(stderr=True)
    tables_to = Console(stderr=True) if json_out == "-" else Console()
    if not tables_to.is_terminal:
        tables_to.width = max(tables_to.width, 180)  # logs and pipes: don't squeeze the tables
    notes = [n for n in (device_note, count_note) if n]
    if not allocator_state.startswith(host_allocator):  # set earlier in this process, or not tunable here
        notes.append(f"host allocator: {allocator_state}, not the requested {host_allocator}")
    if dev.type == "cpu":
        notes.append("CPU timings share the machine with whatever else runs (see load_average); on a busy "
                     "machine use --threads 1 (CPU ms stays meaningful), --paired for ratios and --repeat")
    show_progress = not quiet and err.is_terminal
    if show_progress:  # the tables repeat these at the end; say them now too, before a long wait
        for n in notes:
            err.print(f"note: {n}")

    def log(msg: str) -> None:
        if show_progress:
            err.print(f"[dim]measuring {msg}[/]")

    load_start = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    config = B.BenchConfig(
        models=model_names, sizes=size_list, precisions=prec_list, device=dev, frames=n_frames, warmup=n_warmup,
        batch=batch, protocol=protocol, num_classes=classes, compile=use_compile, channels_last=channels_last,
        repeat=repeat, e2e=not no_e2e, model_only=not e2e_only, paired=paired, input=input_path,
        checkpoint_models=given, mean=mean, std=std, hwaccel=hwaccel, frame_batch=frame_batch, fold_bn=not no_fold_bn,
    )
    results = B.run_benchmarks(config, log)
    opts = {"device": str(dev), "protocol": protocol, "models": model_names,
            "checkpoint": str(checkpoint) if checkpoint else None, "sizes": size_list, "precisions": prec_list,
            "batch": batch, "frames": n_frames, "warmup": n_warmup, "classes": classes, "repeat": repeat,
            "paired": paired, "compile": use_compile, "channels_last": channels_last, "threads": threads,
            "e2e": not no_e2e, "e2e_only": e2e_only, "input": str(input_path) if input_path else None,
            "hwaccel": hwaccel, "frame_batch": frame_batch, "fold_bn": not no_fold_bn,
            "host_allocator": host_allocator}
    out = B.run_metadata(dev, command=_canonical_command(opts), argv=sys.argv)
    out["settings"] = {**opts, "sizes": [list(s) for s in size_list]}
    out["notes"] = notes
    out["threads"] = thread_report()
    out.update(results)
    out["machine"]["load_average"] = load_start
    out["machine"]["load_average_end"] = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    if not quiet:
        render_tables(out, tables_to)
    if json_out:
        emit_json(out, json_out)
