"""Streaming vs naive recompute vs per-frame baseline, for one temporal model.

A temporal model's streaming session, its naive clip recompute (what the official test code does)
and its per-frame baseline (`get_architecture(name).baseline`) are measured in the same run, and
compared as ratios naive/streaming and streaming/baseline.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from vsegcli.errors import VsegError
from vsegcli.models.base import Segmentor
from vsegcli.bench.settings import DEFAULT_SIZE, GPU_FRAMES, GPU_WARMUP, Log, as_device, as_size, quiet
from vsegcli.bench.stepper import build_bench_model
from vsegcli.bench.timing import Job, TimingSettings, measure_group


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "latency_ms") -> float | None:
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok" or key not in a or key not in b:
        return None
    return a[key]["median"] / b[key]["median"]


def _brief(r: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a measured row a comparison repeats."""
    if not r:
        return None
    if r.get("status") != "ok":
        return {"status": r.get("status"), "note": r.get("note")}
    out = {"median_ms": r["latency_ms"]["median"], "p95_ms": r["latency_ms"]["p95"], "fps": r["fps"],
           "backbone_frames_per_frame": r.get("backbone_frames_per_frame")}
    if "cpu_time_ms" in r:
        out["cpu_median_ms"] = r["cpu_time_ms"]["median"]
    return out


def compare_rows(name: str, baseline: str | None, streaming: dict[str, Any] | None,
                 naive: dict[str, Any] | None, base: dict[str, Any] | None,
                 step_ratios: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The streaming/naive/baseline comparison of one temporal model from its measured rows.

    Without `step_ratios`: ratios of median step latencies (separate loops, same run). With the
    per-step ratios of a paired loop: their medians, which other processes' load hardly biases."""
    ref = streaming or naive or base or {}

    def paired(key: str) -> float | None:
        values = (step_ratios or {}).get(key)
        return float(np.median(values)) if values else None

    if step_ratios:
        ratios = {
            "naive_over_streaming": paired("naive/streaming"),
            "streaming_over_baseline": paired("streaming/baseline"),
            "naive_over_streaming_cpu_time": paired("naive/streaming:cpu"),
            "streaming_over_baseline_cpu_time": paired("streaming/baseline:cpu"),
            "ratio_method": "median of per-step ratios in a paired (step-interleaved) loop",
        }
    else:
        ratios = {
            "naive_over_streaming": _ratio(naive, streaming),
            "streaming_over_baseline": _ratio(streaming, base),
            # CPU only: the same ratios from process CPU time.
            "naive_over_streaming_cpu_time": _ratio(naive, streaming, "cpu_time_ms"),
            "streaming_over_baseline_cpu_time": _ratio(streaming, base, "cpu_time_ms"),
            "ratio_method": "ratio of median step latencies (separate loops in the same run)",
        }
    return {
        "model": name, "baseline": baseline, "size": ref.get("size"), "precision": ref.get("precision"),
        "batch": ref.get("batch"), "streaming": _brief(streaming), "naive": _brief(naive),
        "baseline_row": _brief(base), **ratios,
    }


def temporal_jobs(model: str, net: Callable[[str], Segmentor]) -> list[Job]:
    """The labelled jobs of one comparison: (baseline,) streaming and naive; `net` builds a model by name."""
    from vsegcli.models import get_architecture

    arch = get_architecture(model)
    jobs = [("streaming", net(model), model, "session"), ("naive", net(model), model, "naive")]
    if arch.baseline:
        jobs.insert(0, ("baseline", net(arch.baseline), arch.baseline, "session"))
    return jobs


def bench_temporal(
    model: str,
    size: tuple[int, int] | str = DEFAULT_SIZE,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    frames: int = GPU_FRAMES,
    warmup: int = GPU_WARMUP,
    batch: int = 1,
    protocol: str = "vseg",
    num_classes: int = 19,
    compile: bool | str = False,
    channels_last: bool = False,
    repeat: int = 1,
    paired: bool = False,
    seed: int = 0,
    log: Log = quiet,
) -> dict[str, Any]:
    """Streaming session vs naive clip recompute vs per-frame baseline for one temporal model.

    Plain: the three are measured round-robin (`repeat` rounds, best median kept per mode).
    `paired=True`: each round is one step-interleaved loop and the ratios are medians of per-step
    ratios (the choice for a machine shared with other work). Returns `compare_rows(...)` plus the
    full rows under `rows`.
    """
    from vsegcli.models import get_architecture

    if not get_architecture(model).temporal:
        raise VsegError(f"{model} is a per-frame model; bench_temporal compares temporal models with their baseline")
    nets: dict[str, Segmentor] = {}

    def net(name: str) -> Segmentor:
        if name not in nets:
            nets[name] = build_bench_model(name, num_classes, seed)
        return nets[name]

    jobs = temporal_jobs(model, net)
    s = TimingSettings(size=as_size(size), precision=precision, device=as_device(device), frames=frames,
                       warmup=warmup, batch=batch, protocol=protocol, compile=compile, channels_last=channels_last,
                       seed=seed)
    rows, step_ratios = measure_group(jobs, repeat, paired, s, log)
    out = compare_rows(model, jobs[0][2] if len(jobs) == 3 else None, rows.get("streaming"), rows.get("naive"),
                       rows.get("baseline"), step_ratios if paired else None)
    out["rows"] = rows
    return out
