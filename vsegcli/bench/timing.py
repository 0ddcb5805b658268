"""Model-only timing: warm up, time every step, summarise.

One step = uint8 frame(s) already on the device -> normalise -> model -> resize logits to the
frame size -> argmax (a `Stepper`). Random weights (speed does not depend on them), warm-up first,
then per-step times with CUDA events (GPU) or `perf_counter` + `process_time` (CPU): median / p95
latency, throughput, peak memory. `protocol="upstream"` follows mmseg's `tools/benchmark.py`
instead: batch 1, synchronise around every call, `cudnn.benchmark=False`, labels copied to the
host, fps = timed frames / summed time. CUDA math per protocol (recorded in every row): vseg times
what `vseg run` does by default (cuDNN autotuning and TF32 on, `set_cuda_math(True)`), upstream
runs torch's defaults (TF32 for convolutions only) with autotuning off.

A measurement of one job is *plain* (with peak memory); of several jobs it is *paired*: step i of
every job runs back to back, so load changes on a shared machine hit all of them alike and
per-step ratios stay meaningful (memory cannot be attributed to one job then).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from vsegcli.errors import VsegError
from vsegcli.models.base import Segmentor
from vsegcli.runtime import PRECISIONS
from vsegcli.runtime.device import bf16_supported, cuda_math_state, device_scope, set_cuda_math
from vsegcli.bench import machine
from vsegcli.bench.settings import (DEFAULT_SIZE, GPU_FRAMES, GPU_WARMUP, MODES, PROTOCOLS, Log, as_device, as_size,
                                    quiet)
from vsegcli.bench.stepper import (Stepper, apply_compile, build_bench_model, count_backbone_frames, frame_pool,
                                   is_compiled, model_name)

# (label, model, name, mode): a job of a measurement group; the label names its row in the result.
Job = tuple[str, Segmentor, str, str]


@dataclass(frozen=True)
class TimingSettings:
    """How every row of one measurement is timed (the same for every job of a group)."""

    size: tuple[int, int]
    precision: str
    device: torch.device
    frames: int
    warmup: int
    batch: int = 1
    protocol: str = "vseg"
    compile: bool | str | None = False
    channels_last: bool = False
    mean: Sequence[float] = tuple(IMAGENET_MEAN)
    std: Sequence[float] = tuple(IMAGENET_STD)
    count_backbone: bool = True
    seed: int = 0

    @property
    def upstream(self) -> bool:
        return self.protocol == "upstream"

    @property
    def use_events(self) -> bool:
        """CUDA events around each step, without host syncs (not in the upstream protocol)."""
        return self.device.type == "cuda" and not self.upstream


def stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    """median / p95 / mean / min / max / std of step times, in milliseconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "std": float(ms.std()),
    }


def skip_reason(model: Segmentor, name: str, mode: str, s: TimingSettings) -> str | None:
    """Why a row cannot run on this machine (a note for a skipped row), or None. User errors raise."""
    if s.precision not in PRECISIONS:
        raise VsegError(f"unknown precision {s.precision!r}: use fp32, fp16 or bf16")
    if s.upstream and s.batch != 1:
        raise VsegError("--protocol upstream is batch 1 (as mmseg's benchmark.py); drop --batch")
    if mode == "naive" and not model.temporal:
        raise VsegError(f"{name} is a per-frame model: the naive clip mode is for temporal models")
    if s.device.type == "cpu" and s.precision == "fp16":
        return "fp16 on CPU: no fast kernels (use bf16 or fp32); skipped"
    if s.device.type == "cuda" and s.precision == "bf16" and not bf16_supported(s.device):
        return "this GPU has no bf16 support; skipped"
    return None


@dataclass
class _Active:
    """A job being timed: its row, its stepper and what the timed loop collects."""

    model: Segmentor
    row: dict[str, Any]
    stepper: Stepper
    notes: list[str]
    times: list[float] = field(default_factory=list)  # seconds per step
    cpu: list[float] = field(default_factory=list)  # process CPU seconds per step (CPU only)
    faults: list[int] = field(default_factory=list)  # minor page faults per step (CPU only)
    events: tuple[list[Any], list[Any]] | None = None  # CUDA start/end events per step


def _new_row(model: Segmentor, name: str, mode: str, s: TimingSettings) -> dict[str, Any]:
    return {
        "model": name, "mode": mode, "size": [s.size[0], s.size[1]], "precision": s.precision, "batch": s.batch,
        "device": str(s.device), "protocol": s.protocol, "frames": s.frames, "warmup": s.warmup,
        "compile": s.compile, "channels_last": s.channels_last, "temporal": bool(model.temporal),
        "load_average": machine.load_average(),
    }


def _set_up(model: Segmentor, mode: str, row: dict[str, Any], s: TimingSettings) -> _Active:
    """The model on the device in the asked layout (compiled if asked) and its stepper."""
    notes: list[str] = []
    model.to(s.device).eval()
    if s.channels_last:
        model.to(memory_format=torch.channels_last)
    if s.compile:
        notes.append(apply_compile(model, s.compile))
    elif is_compiled(model):
        row["compile"] = True  # compiled in place by an earlier measurement of the same model
        notes.append("backbone already compiled by an earlier measurement")
    stepper = Stepper(model, mode, s.device, s.precision, s.mean, s.std, s.channels_last, to_host=s.upstream)
    # Sessions reach steady state by running; naive only needs its window of frames filled.
    row["primed"] = model.priming_frames if mode == "session" else -min(stepper.offsets)
    return _Active(model, row, stepper, notes)


def _memory_baseline(device: torch.device) -> int:
    """Start a clean memory count; returns the device memory already allocated (weights + inputs)."""
    if device.type == "cpu":
        machine.release_host_memory()
        return 0
    with device_scope(device):  # empty_cache takes no device: it frees the current one's
        torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _warm_up(active: list[_Active], pool: list[torch.Tensor], s: TimingSettings) -> list[_Active]:
    """Prime and warm up every job; a job whose compiled model fails becomes a skipped row."""
    alive = []
    for a in active:
        try:
            a.stepper.prime([pool[i % len(pool)] for i in range(a.row["primed"])])
            for i in range(s.warmup):
                a.stepper(pool[i % len(pool)])
        except Exception as exc:  # a failed compile is a note, not a crash
            if not s.compile:
                raise
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            a.row.update(status="skipped", note=f"torch.compile failed ({type(exc).__name__}: {first[:200]}); skipped")
            continue
        alive.append(a)
    return alive


def _time_step(a: _Active, x: torch.Tensor, i: int, s: TimingSettings) -> None:
    """Run and time step `i` of one job, the way this device and protocol time a step."""
    if s.use_events:  # no host sync: the CPU may queue ahead, as in a real stream
        stream = torch.cuda.current_stream(s.device)  # the timed device's stream, not GPU 0's
        a.events[0][i].record(stream)
        a.stepper(x)
        a.events[1][i].record(stream)
    elif s.device.type == "cuda":  # upstream: synchronise before and after each call
        torch.cuda.synchronize(s.device)
        t0 = time.perf_counter()
        a.stepper(x)
        torch.cuda.synchronize(s.device)
        a.times.append(time.perf_counter() - t0)
    else:  # CPU work is synchronous: the host clock is the truth
        f0, c0, t0 = machine.minor_faults(), time.process_time(), time.perf_counter()
        a.stepper(x)
        a.times.append(time.perf_counter() - t0)
        # CPU-seconds of this process (all threads): what the step costs even when other
        # processes make it wait for a core (wall time then measures that queue too).
        a.cpu.append(time.process_time() - c0)
        f1 = machine.minor_faults()
        if f0 is not None and f1 is not None:  # pages freed and faulted back in per step
            a.faults.append(f1 - f0)


def _timed_loop(active: list[_Active], pool: list[torch.Tensor], s: TimingSettings) -> float:
    """Step i of every job back to back, `frames` times; returns the loop's wall-clock seconds."""
    machine.sync(s.device)
    for a in active:
        cuda = s.device.type == "cuda"
        math = cuda_math_state()
        a.row["cudnn_benchmark"] = math["cudnn_benchmark"] if cuda else None
        a.row["tf32_matmul"] = math["tf32_matmul"] if cuda else None
        a.row["tf32_cudnn"] = math["tf32_cudnn"] if cuda else None
        if s.use_events:
            a.events = ([torch.cuda.Event(enable_timing=True) for _ in range(s.frames)],
                        [torch.cuda.Event(enable_timing=True) for _ in range(s.frames)])
    t_start = time.perf_counter()
    for i in range(s.frames if active else 0):
        x = pool[(s.warmup + i) % len(pool)]
        for a in active:
            _time_step(a, x, i, s)
    machine.sync(s.device)
    wall = time.perf_counter() - t_start
    if s.use_events:
        for a in active:
            a.times = [start.elapsed_time(end) / 1000.0 for start, end in zip(*a.events)]
    return wall


def _finish_row(a: _Active, s: TimingSettings, wall: float, paired: bool, gpu_base: int,
                sampler: machine.RssSampler | None, pool: list[torch.Tensor]) -> None:
    """Latency statistics, throughput, memory and method notes into the job's row."""
    row, times, model = a.row, a.times, a.model
    lat = stats_ms(times)
    row["status"] = "ok"
    row["latency_ms"] = lat  # per step, i.e. per batch of `batch` frames
    row["ms_per_frame"] = lat["median"] / s.batch
    row["step_ms"] = [round(t * 1000.0, 4) for t in times]
    if a.cpu:
        row["cpu_time_ms"] = stats_ms(a.cpu)
        row["cpu_step_ms"] = [round(t * 1000.0, 4) for t in a.cpu]
    if a.faults:  # (the RSS sampler thread adds a few; the step's own are thousands when it churns)
        row["page_faults_per_step"] = float(np.median(a.faults))
    row["paired"] = paired
    if s.upstream:
        row["fps"] = s.frames * s.batch / sum(times)
        row["fps_method"] = "timed frames / summed per-call time (mmseg benchmark.py)"
    elif paired:
        row["fps"] = s.frames * s.batch / sum(times)
        row["fps_method"] = "timed frames / summed step time (paired loop: its wall clock covers every job)"
    else:
        row["fps"] = s.frames * s.batch / wall
        row["fps_method"] = "timed frames / wall-clock time of the timed loop"
    row["wall_seconds"] = wall
    # Peak memory above what was there before (weights and inputs excluded on both devices, so
    # other models left on the device do not count); this model's weights are reported beside it.
    row["weights_mib"] = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20
    if paired:
        row["peak_memory_mib"] = None
        row["memory_method"] = "not attributed in a paired (step-interleaved) loop; measure without --paired"
    elif s.device.type == "cuda":
        row["peak_memory_mib"] = (torch.cuda.max_memory_allocated(s.device) - gpu_base) / 2**20
        row["memory_method"] = ("torch.cuda.max_memory_allocated minus memory allocated before warm-up "
                                "(activations, caches, workspaces; weights and inputs excluded)")
    else:
        row["peak_memory_mib"] = sampler.delta_mib if sampler is not None else None
        row["memory_method"] = ("peak RSS minus RSS before warm-up, sampled every 5 ms from /proc "
                                "(activations + allocator caches; weights and inputs excluded)")
    row["timing"] = ("CUDA events around each step" if s.use_events else
                     "torch.cuda.synchronize + perf_counter around each step" if s.device.type == "cuda" else
                     "time.perf_counter (wall) and time.process_time (CPU) around each step")
    row["backbone_frames_per_frame"] = (
        count_backbone_frames(model, a.stepper, pool) if s.count_backbone and not s.compile else None
    )
    if a.notes:
        row["note"] = "; ".join(a.notes)


def measure_many(jobs: Sequence[tuple[Segmentor, str, str]], s: TimingSettings) -> list[dict[str, Any]]:
    """Time (model, name, mode) jobs on the same input frames; one row per job, in order.

    One job: a plain measurement, with peak memory. Several: a paired loop (see the module doc).
    """
    rows: list[dict[str, Any]] = []
    active: list[_Active] = []
    for model, name, mode in jobs:
        row = _new_row(model, name, mode, s)
        rows.append(row)
        reason = skip_reason(model, name, mode, s)
        if reason:
            row.update(status="skipped", note=reason)
            continue
        active.append(_set_up(model, mode, row, s))
    if not active:
        return rows
    paired = len(active) > 1
    pool = frame_pool(s.size, s.batch, s.device, s.seed)
    old_math = cuda_math_state()
    if s.upstream:  # mmseg's benchmark.py: torch's defaults, autotuning off
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    elif s.device.type == "cuda":
        set_cuda_math(True)  # what `vseg run` does by default
    gpu_base = _memory_baseline(s.device)
    sampler = machine.RssSampler() if s.device.type == "cpu" and not paired else None
    wall = 0.0
    try:
        if sampler is not None:
            sampler.__enter__()
        with device_scope(s.device):  # --gpu N: whatever takes no device acts on GPU N
            active = _warm_up(active, pool, s)
            wall = _timed_loop(active, pool, s)
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
        torch.backends.cudnn.benchmark = old_math["cudnn_benchmark"]
        torch.backends.cuda.matmul.allow_tf32 = old_math["tf32_matmul"]
        torch.backends.cudnn.allow_tf32 = old_math["tf32_cudnn"]
    for a in active:
        _finish_row(a, s, wall, paired, gpu_base, sampler, pool)
    return rows


def _pair_ratios(ok: dict[str, dict[str, Any]], step_ratios: dict[str, list[float]]) -> None:
    """Add the per-step latency ratios 'a/b' (and CPU-time ratios 'a/b:cpu') of every pair of rows."""
    for a in ok:
        for b in ok:
            if a == b:
                continue
            step_ratios.setdefault(f"{a}/{b}", []).extend(x / y for x, y in zip(ok[a]["step_ms"], ok[b]["step_ms"]))
            if "cpu_step_ms" in ok[a] and "cpu_step_ms" in ok[b]:
                step_ratios.setdefault(f"{a}/{b}:cpu", []).extend(
                    x / y for x, y in zip(ok[a]["cpu_step_ms"], ok[b]["cpu_step_ms"]) if y > 0)


def measure_group(jobs: Sequence[Job], rounds: int, paired: bool, s: TimingSettings,
                  log: Log = quiet) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Measure labelled jobs `(label, model, name, mode)` for `rounds` rounds: each round is either
    one paired loop over all jobs or one plain measurement per job in turn (round-robin). Keeps each
    label's best row (lowest median) with every round's median in `runs_median_ms`; when paired,
    also returns the per-step latency ratios 'a/b' (and CPU-time ratios 'a/b:cpu') of every pair of
    labels, pooled over rounds."""
    best: dict[str, dict[str, Any]] = {}
    medians: dict[str, list[float]] = {label: [] for label, *_ in jobs}
    step_ratios: dict[str, list[float]] = {}
    where = f"{s.size[0]}x{s.size[1]} {s.precision}"
    for r in range(max(1, rounds)):
        live = [j for j in jobs if best.get(j[0], {}).get("status", "ok") == "ok"]
        rnd = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
        if paired:
            log(f"{' + '.join(f'{n} {mo}' for _, _, n, mo in live)} paired, {where}{rnd}")
            rows = measure_many([(m, n, mo) for _, m, n, mo in live], s)
            got = {j[0]: row for j, row in zip(live, rows)}
            _pair_ratios({k: v for k, v in got.items() if v["status"] == "ok"}, step_ratios)
        else:
            got = {}
            for label, m, n, mo in live:
                log(f"{n} {mo} {where} batch {s.batch}{rnd}")
                got[label] = measure_many([(m, n, mo)], s)[0]
        for label, row in got.items():
            if row["status"] != "ok":
                best[label] = row
                continue
            medians[label].append(row["latency_ms"]["median"])
            if label not in best or row["latency_ms"]["median"] < best[label]["latency_ms"]["median"]:
                best[label] = row
    for label, row in best.items():
        if row["status"] == "ok":
            row["runs_median_ms"] = medians[label]
    return best, step_ratios


def bench_model(
    model: str | Segmentor,
    size: tuple[int, int] | str = DEFAULT_SIZE,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    frames: int = GPU_FRAMES,
    warmup: int = GPU_WARMUP,
    batch: int = 1,
    mode: str = "session",
    protocol: str = "vseg",
    num_classes: int = 19,
    compile: bool | str | None = False,
    channels_last: bool = False,
    repeat: int = 1,
    count_backbone: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Model-only speed of one architecture (a name: random weights; or a built model).

    Returns a dict with `latency_ms` (median/p95/mean/min/max/std of one step = `batch` frames;
    on CPU also `cpu_time_ms`, the process CPU time per step, less moved by other processes' load),
    `step_ms` (every timed step), `ms_per_frame`, `fps`, `peak_memory_mib` (+ `memory_method`),
    `weights_mib`, `backbone_frames_per_frame` (counted with a hook: 1 for a session, the clip
    length for naive) and the settings. With `repeat` > 1 the measurement runs that many times and
    the run with the lowest median is kept (`runs_median_ms` lists all). Rows that cannot run here
    (fp16 on CPU, a failed compile) come back with `status: "skipped"` and a `note`.
    """
    if mode not in MODES:
        raise VsegError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
    if protocol not in PROTOCOLS:
        raise VsegError(f"unknown protocol {protocol!r}: use {', '.join(PROTOCOLS)}")
    net = build_bench_model(model, num_classes, seed) if isinstance(model, str) else model
    name = model if isinstance(model, str) else model_name(model)
    s = TimingSettings(size=as_size(size), precision=precision, device=as_device(device), frames=frames,
                       warmup=warmup, batch=batch, protocol=protocol, compile=compile, channels_last=channels_last,
                       count_backbone=count_backbone, seed=seed)
    best, _ = measure_group([("row", net, name, mode)], repeat, False, s)
    return best["row"]

