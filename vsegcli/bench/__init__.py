"""Honest speed measurements: model-only latency, streaming vs naive recompute, end-to-end pipeline.

Three questions, each answered in one run on one machine:

* **Model-only** (`bench_model`): one step = uint8 frame(s) already on the device -> normalise ->
  model -> resize logits to the frame size -> argmax. Random weights (speed does not depend on
  them), warm-up first, then per-step times with CUDA events (GPU) or `perf_counter` (CPU):
  median / p95 latency, throughput, peak memory. Modes:
    - `session`: the streaming session (`new_session().step`), each backbone once per frame;
    - `naive`:   `forward_clip` on the whole clip window for every frame, i.e. what the official
                 MRCFA test code does (4 frames: t-9, t-6, t-3, t; STT: the T+1 last frames);
    - `frame`:   `forward_frame`, the model's per-frame path.
  `protocol="upstream"` follows mmseg's `tools/benchmark.py` instead: batch 1, synchronise around
  every call, `cudnn.benchmark=False`, labels copied to the host, fps = timed frames / summed time.
* **Streaming vs naive** (`bench_temporal`): a temporal model's session, its naive recompute and
  its per-frame baseline (`get_architecture(name).baseline`), interleaved in the same run, as
  ratios naive/streaming and streaming/baseline.
* **End-to-end** (`bench_pipeline`): decode -> infer -> encode (+ label PNGs) through the engine's
  `stream()` on a real video, and each stage alone, so the bottleneck has a name.

Everything returns plain dicts (JSON-serialisable); the `vseg bench` command prints them.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

try:  # Unix only; read every timed CPU step, so imported once here
    import resource as _resource
except ImportError:  # pragma: no cover - Windows
    _resource = None

from vsegcli import __version__
from vsegcli.runtime import PRECISIONS, logits_to_labels, select_device
from vsegcli.errors import VsegError
from vsegcli.io.hostmem import host_allocator_state
from vsegcli.models.base import Segmentor

MODES = ("session", "naive", "frame")
PROTOCOLS = ("vseg", "upstream")
IMAGENET_MEAN = [123.675, 116.28, 103.53]
IMAGENET_STD = [58.395, 57.12, 57.375]
DEFAULT_SIZE = (480, 864)  # VSPW after mmseg's AlignedResize (480x853 -> 480x864)
DEFAULT_MODELS = ("mrcfa-b0",)
# GPU defaults follow mmseg (5 warm-up, 200 frames); a 2-core CPU would take minutes per row.
GPU_FRAMES, GPU_WARMUP = 200, 5
CPU_FRAMES, CPU_WARMUP = 20, 3
UPSTREAM_WARMUP = 5
POOL_SIZE = 4  # distinct input frames cycled through, so no step reuses the previous one's input
DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "examples" / "bikes.mp4"

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def parse_size(text: str | Sequence[int]) -> tuple[int, int]:
    """'480x864' (height x width) -> (480, 864). Both sides must be multiples of 32 (the MiT and
    EfficientNet strides; MRCFA refuses anything else)."""
    if isinstance(text, (tuple, list)):
        parts = [str(v) for v in text]
    else:
        parts = str(text).lower().replace("*", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise VsegError(f"size {text!r}: write it as HEIGHTxWIDTH, e.g. 480x864") from None
    if h < 32 or w < 32 or h % 32 or w % 32:
        raise VsegError(f"size {h}x{w}: both sides must be multiples of 32 and at least 32 (e.g. 480x864, 256x448)")
    return h, w


def parse_list(values: Iterable[str] | str | None) -> list[str]:
    """Repeated and/or comma-separated option values -> a flat list without duplicates."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for part in str(v).split(","):
            part = part.strip()
            if part and part not in out:
                out.append(part)
    return out


def resolve_device(device: str | int | None = "auto", gpu: int | None = None) -> tuple[torch.device, str | None]:
    """The device to benchmark and, for `auto` on a machine without CUDA, a note saying so."""
    if gpu is not None:
        if device not in (None, "auto") and str(device).lower() not in (f"cuda:{gpu}", str(gpu)):
            raise VsegError(f"--gpu {gpu} and --device {device} disagree; give one of them")
        device = f"cuda:{gpu}"
    spec = "auto" if device is None else str(device).strip().lower()
    dev = select_device(spec)
    note = None
    if spec == "auto" and dev.type == "cpu":
        note = "--device auto: no CUDA device here, so the CPU is benchmarked"
    return dev, note


def default_counts(device: torch.device, frames: int | None, warmup: int | None,
                   protocol: str = "vseg") -> tuple[int, int, str | None]:
    """Timed frames and warm-up steps per measurement, with a note when CPU defaults apply."""
    if protocol == "upstream" and warmup is None:
        warmup = UPSTREAM_WARMUP
    if device.type == "cuda":
        # upstream: 200 iterations in all, of which the first 5 are warm-up (mmseg's benchmark.py)
        default_frames = GPU_FRAMES - (warmup if protocol == "upstream" else 0)
        return (frames if frames is not None else default_frames,
                warmup if warmup is not None else GPU_WARMUP, None)
    note = None
    if frames is None:
        note = (f"CPU defaults: {CPU_FRAMES} timed frames per measurement + "
                f"{warmup if warmup is not None else CPU_WARMUP} warm-up (GPU: {GPU_FRAMES} + {GPU_WARMUP}); "
                "pass --frames/--warmup for more")
    return (frames if frames is not None else CPU_FRAMES,
            warmup if warmup is not None else CPU_WARMUP, note)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _release_host_memory() -> None:
    """Give freed heap back to the OS (glibc), so an RSS delta is not hidden by an earlier run's cache."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class _RssSampler:
    """Peak resident memory over a block, sampled every `interval` s from /proc (Linux only).

    A sampled peak can miss a spike shorter than the interval; it includes allocator caches."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.base = self.peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = _rss_bytes()
            if rss is not None and self.peak is not None:
                self.peak = max(self.peak, rss)

    def __enter__(self) -> _RssSampler:
        self.base = self.peak = _rss_bytes()
        if self.base is not None:
            self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = _rss_bytes()
        if rss is not None and self.peak is not None:
            self.peak = max(self.peak, rss)

    @property
    def delta_mib(self) -> float | None:
        if self.base is None or self.peak is None:
            return None
        return (self.peak - self.base) / 2**20


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (all threads): fresh pages the kernel had to map."""
    if _resource is None:
        return None
    return _resource.getrusage(_resource.RUSAGE_SELF).ru_minflt


def _load_average() -> list[float] | None:
    """1/5/15-minute load average: how busy the machine was (CPU numbers depend on it)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _stats_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "median": float(np.median(ms)),
        "p95": float(np.percentile(ms, 95)),
        "mean": float(ms.mean()),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "std": float(ms.std()),
    }


# --------------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi() -> list[dict[str, str]]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=index,name,driver_version,memory.total,pci.bus_id", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    rows = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            rows.append(dict(zip(("index", "name", "driver", "memory", "bus_id"), parts)))
    return rows


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, load, library versions, GPU name and driver."""
    info: dict[str, Any] = {
        "vseg_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "numpy": np.__version__,
        "host_allocator": host_allocator_state(),
    }
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    try:
        import cv2

        info["opencv"] = cv2.__version__
    except ImportError:
        pass
    try:
        import imageio_ffmpeg

        info["ffmpeg"] = imageio_ffmpeg.get_ffmpeg_version()
    except Exception:  # noqa: BLE001 - informational only
        pass
    if torch.cuda.is_available():
        smi = {row["index"]: row for row in _nvidia_smi()}
        gpus = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({
                "index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                "driver": smi.get(str(i), {}).get("driver"),
            })
        info["gpus"] = gpus
        info["cudnn"] = torch.backends.cudnn.version()
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        if dev.type == "cuda":
            info["device_name"] = torch.cuda.get_device_name(dev)
        else:
            info["device_name"] = info["cpu_model"]
    return info


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def build_bench_model(name: str, num_classes: int = 19, seed: int = 0, fold_bn: bool = True) -> Segmentor:
    """A named architecture with seeded random weights, in eval mode (speed is weight-independent),
    BatchNorms folded into their convolutions unless `fold_bn` is off, as `api.load` does."""
    from vsegcli.models import build_model
    from vsegcli.models.fold import fold_batchnorm

    torch.manual_seed(seed)
    model = build_model(name, num_classes).eval()
    if fold_bn:
        fold_batchnorm(model)
    return model


def _clip_offsets(model: Segmentor) -> tuple[int, ...]:
    """Frame offsets (oldest first, 0 = target) of the window the model's clip forward reads."""
    from vsegcli.models.mrcfa import MRCFA

    if isinstance(model, MRCFA):
        return (*model.dilation, 0)
    stt = getattr(model, "stt", None)
    if stt is not None:
        return tuple(range(-stt.num_frames, 1))
    raise VsegError(f"{model.arch_name or type(model).__name__} is a per-frame model: it has no naive clip mode")


def _history(model: Segmentor) -> int:
    """Frames a session must have seen before its steps cost what steady state costs."""
    if not model.temporal:
        return 0
    if getattr(model, "stt", None) is not None:
        return -min(_clip_offsets(model))
    return next(t for t in range(64) if model.reference_indices(t))  # MRCFA: from its first temporal frame


class Stepper:
    """One benchmark step: (B, H, W, 3) uint8 frames on the device -> (B, H, W) uint8 labels.

    Pre- and post-processing mirror `engine.Predictor.step` (normalise, autocast, resize logits to
    the frame size, argmax), batched; `mode` picks what runs in between (see the module doc).
    """

    def __init__(self, model: Segmentor, mode: str, device: torch.device, precision: str = "fp32",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels_last: bool = False, to_host: bool = False) -> None:
        if mode not in MODES:
            raise VsegError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
        self.model = model
        self.mode = mode
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.mean = torch.tensor(list(mean), device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), device=device).view(1, 3, 1, 1)
        self.channels_last = channels_last
        self.to_host = to_host
        self.session = model.new_session() if mode == "session" else None
        self.offsets = _clip_offsets(model) if mode == "naive" else (0,)
        # Naive mode keeps normalised frames (not features): the clip forward recomputes everything.
        self.ring: deque[torch.Tensor] = deque(maxlen=1 - min(self.offsets))

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def prime(self, frames: Sequence[torch.Tensor]) -> None:
        """Bring the stepper to steady state before timing: fill the session's cache (by running it)
        or the naive window (normalised frames only, nothing is computed)."""
        with torch.inference_mode():
            for f in frames:
                if self.mode == "session":
                    self(f)
                elif self.mode == "naive":
                    self.ring.append(self.prepare(f))

    @torch.inference_mode()
    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        h, w = frames.shape[1:3]
        x = self.prepare(frames)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            if self.mode == "session":
                logits = self.session.step(x)
            elif self.mode == "frame":
                logits = self.model.forward_frame(x)
            else:
                self.ring.append(x)
                # Before the window is full (not primed), the oldest frame stands in for missing ones.
                n = len(self.ring)
                clip = torch.stack([self.ring[max(o - 1, -n)] for o in self.offsets], dim=1)  # (B, T, 3, H, W)
                logits = self.model.forward_clip(clip)
        labels = logits_to_labels(logits, (h, w))
        return labels.cpu() if self.to_host else labels


def _frame_pool(size: tuple[int, int], batch: int, device: torch.device, seed: int = 0,
                n: int = POOL_SIZE) -> list[torch.Tensor]:
    """Distinct random uint8 frames (never zeros: they can run faster than real data)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [torch.randint(0, 256, (batch, h, w, 3), generator=g, dtype=torch.uint8).to(device) for _ in range(n)]


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def _apply_compile(model: Segmentor, mode: str | bool = "default") -> str:
    """torch.compile the backbone in place (the per-frame cost every mode shares). Sessions call head
    and temporal methods that are not `forward`, so compiling the whole model would miss them.
    `mode` "reduce-overhead" records CUDA graphs for the fixed input size (launch overhead gone)."""
    mode = "default" if mode is True else str(mode)
    if mode not in COMPILE_MODES:
        raise VsegError(f"unknown compile mode {mode!r}: use {', '.join(COMPILE_MODES)}")
    target = getattr(model, "backbone", None)
    what = "the whole model" if target is None else "the backbone (heads and temporal modules eager)"
    target = model if target is None else target
    if not getattr(target, "_vseg_compiled", False):
        target.compile(mode=None if mode == "default" else mode)
        target._vseg_compiled = True
    return f"torch.compile (mode {mode}) on {what}"


def _count_backbone_frames(model: Segmentor, stepper: Stepper, pool: list[torch.Tensor], steps: int = 2) -> float | None:
    """Frames that went through the backbone per output frame, counted with a hook on extra steps."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        return None
    count = [0]

    def hook(_module: torch.nn.Module, args: tuple) -> None:
        count[0] += int(args[0].shape[0])

    handle = backbone.register_forward_pre_hook(hook)
    try:
        for i in range(steps):
            stepper(pool[i % len(pool)])
    finally:
        handle.remove()
    batch = pool[0].shape[0]
    return count[0] / (steps * batch)


def _skipped(base: dict[str, Any], note: str) -> dict[str, Any]:
    return {**base, "status": "skipped", "note": note}


def _skip_reason(model: Segmentor, name: str, mode: str, precision: str, device: torch.device, protocol: str,
                 batch: int) -> str | None:
    """Why a row cannot run on this machine (a note for a skipped row), or None. User errors raise."""
    if precision not in PRECISIONS:
        raise VsegError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
    if protocol == "upstream" and batch != 1:
        raise VsegError("--protocol upstream is batch 1 (as mmseg's benchmark.py); drop --batch")
    if mode == "naive" and not model.temporal:
        raise VsegError(f"{name} is a per-frame model: the naive clip mode is for temporal models")
    if device.type == "cpu" and precision == "fp16":
        return "fp16 on CPU: no fast kernels (use bf16 or fp32); skipped"
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16 support; skipped"
    return None


def _measure_many(
    jobs: Sequence[tuple[Segmentor, str, str]],
    size: tuple[int, int],
    precision: str,
    device: torch.device,
    frames: int,
    warmup: int,
    batch: int = 1,
    protocol: str = "vseg",
    compile: bool | str = False,
    channels_last: bool = False,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    count_backbone: bool = True,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Time (model, name, mode) jobs on the same input frames; one row per job.

    One job: a plain measurement, with peak memory. Several: a *paired* loop, where step i of every
    job runs back to back, so load changes on a shared machine hit all of them alike and per-step
    ratios stay meaningful; memory cannot be attributed to one job then and is not reported.
    """
    upstream = protocol == "upstream"
    rows: list[dict[str, Any]] = []
    active: list[dict[str, Any]] = []
    for model, name, mode in jobs:
        row: dict[str, Any] = {
            "model": name, "mode": mode, "size": [size[0], size[1]], "precision": precision, "batch": batch,
            "device": str(device), "protocol": protocol, "frames": frames, "warmup": warmup,
            "compile": compile, "channels_last": channels_last, "temporal": bool(model.temporal),
            "load_average": _load_average(),
        }
        rows.append(row)
        reason = _skip_reason(model, name, mode, precision, device, protocol, batch)
        if reason:
            row.update(status="skipped", note=reason)
            continue
        notes: list[str] = []
        model.to(device).eval()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        if compile:
            notes.append(_apply_compile(model, compile))
        elif getattr(getattr(model, "backbone", model), "_vseg_compiled", False):
            row["compile"] = True  # compiled in place by an earlier measurement of the same model
            notes.append("backbone already compiled by an earlier measurement")
        stepper = Stepper(model, mode, device, precision, mean, std, channels_last, to_host=upstream)
        # Sessions reach steady state by running; naive only needs its window of frames filled.
        row["primed"] = _history(model) if mode == "session" else -min(stepper.offsets)
        active.append({"model": model, "row": row, "stepper": stepper, "notes": notes, "times": [], "cpu": [],
                       "faults": []})
    if not active:
        return rows
    paired = len(active) > 1
    pool = _frame_pool(size, batch, device, seed)
    use_events = device.type == "cuda" and not upstream
    old_benchmark = torch.backends.cudnn.benchmark
    if upstream:
        torch.backends.cudnn.benchmark = False  # mmseg's benchmark.py
    gpu_base = 0
    if device.type == "cpu":
        _release_host_memory()
    else:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        gpu_base = torch.cuda.memory_allocated(device)  # weights (of every model on the device) + inputs
    sampler = _RssSampler() if device.type == "cpu" and not paired else None
    wall = 0.0
    try:
        if sampler is not None:
            sampler.__enter__()
        for a in list(active):
            try:
                a["stepper"].prime([pool[i % len(pool)] for i in range(a["row"]["primed"])])
                for i in range(warmup):
                    a["stepper"](pool[i % len(pool)])
            except Exception as exc:  # a failed compile is a note, not a crash
                if not compile:
                    raise
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                a["row"].update(status="skipped",
                                note=f"torch.compile failed ({type(exc).__name__}: {first[:200]}); skipped")
                active.remove(a)
        _sync(device)
        for a in active:
            a["row"]["cudnn_benchmark"] = bool(torch.backends.cudnn.benchmark) if device.type == "cuda" else None
            if use_events:
                a["events"] = ([torch.cuda.Event(enable_timing=True) for _ in range(frames)],
                               [torch.cuda.Event(enable_timing=True) for _ in range(frames)])
        t_start = time.perf_counter()
        for i in range(frames if active else 0):
            x = pool[(warmup + i) % len(pool)]
            for a in active:
                step = a["stepper"]
                if use_events:  # no host sync: the CPU may queue ahead, as in a real stream
                    a["events"][0][i].record()
                    step(x)
                    a["events"][1][i].record()
                elif device.type == "cuda":  # upstream: synchronise before and after each call
                    torch.cuda.synchronize(device)
                    t0 = time.perf_counter()
                    step(x)
                    torch.cuda.synchronize(device)
                    a["times"].append(time.perf_counter() - t0)
                else:  # CPU work is synchronous: the host clock is the truth
                    f0, c0, t0 = _minor_faults(), time.process_time(), time.perf_counter()
                    step(x)
                    a["times"].append(time.perf_counter() - t0)
                    # CPU-seconds of this process (all threads): what the step costs even when
                    # other processes make it wait for a core (wall time then measures that queue too).
                    a["cpu"].append(time.process_time() - c0)
                    f1 = _minor_faults()
                    if f0 is not None and f1 is not None:  # pages freed and faulted back in per step
                        a["faults"].append(f1 - f0)
        _sync(device)
        wall = time.perf_counter() - t_start
        if use_events:
            for a in active:
                a["times"] = [s.elapsed_time(e) / 1000.0 for s, e in zip(*a["events"])]
    finally:
        if sampler is not None:
            sampler.__exit__(None, None, None)
        torch.backends.cudnn.benchmark = old_benchmark
    for a in active:
        row, times, model = a["row"], a["times"], a["model"]
        lat = _stats_ms(times)
        row["status"] = "ok"
        row["latency_ms"] = lat  # per step, i.e. per batch of `batch` frames
        row["ms_per_frame"] = lat["median"] / batch
        row["step_ms"] = [round(t * 1000.0, 4) for t in times]
        if a["cpu"]:
            row["cpu_time_ms"] = _stats_ms(a["cpu"])
            row["cpu_step_ms"] = [round(t * 1000.0, 4) for t in a["cpu"]]
        if a["faults"]:  # (the RSS sampler thread adds a few; the step's own are thousands when it churns)
            row["page_faults_per_step"] = float(np.median(a["faults"]))
        row["paired"] = paired
        if upstream:
            row["fps"] = frames * batch / sum(times)
            row["fps_method"] = "timed frames / summed per-call time (mmseg benchmark.py)"
        elif paired:
            row["fps"] = frames * batch / sum(times)
            row["fps_method"] = "timed frames / summed step time (paired loop: its wall clock covers every job)"
        else:
            row["fps"] = frames * batch / wall
            row["fps_method"] = "timed frames / wall-clock time of the timed loop"
        row["wall_seconds"] = wall
        # Peak memory above what was there before (weights and inputs excluded on both devices, so
        # other models left on the device do not count); this model's weights are reported beside it.
        row["weights_mib"] = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())) / 2**20
        if paired:
            row["peak_memory_mib"] = None
            row["memory_method"] = "not attributed in a paired (step-interleaved) loop; measure without --paired"
        elif device.type == "cuda":
            row["peak_memory_mib"] = (torch.cuda.max_memory_allocated(device) - gpu_base) / 2**20
            row["memory_method"] = ("torch.cuda.max_memory_allocated minus memory allocated before warm-up "
                                    "(activations, caches, workspaces; weights and inputs excluded)")
        else:
            row["peak_memory_mib"] = sampler.delta_mib if sampler is not None else None
            row["memory_method"] = ("peak RSS minus RSS before warm-up, sampled every 5 ms from /proc "
                                    "(activations + allocator caches; weights and inputs excluded)")
        row["timing"] = ("CUDA events around each step" if use_events else
                         "torch.cuda.synchronize + perf_counter around each step" if device.type == "cuda" else
                         "time.perf_counter (wall) and time.process_time (CPU) around each step")
        row["backbone_frames_per_frame"] = (
            _count_backbone_frames(model, a["stepper"], pool) if count_backbone and not compile else None
        )
        if a["notes"]:
            row["note"] = "; ".join(a["notes"])
    return rows


def _measure(model: Segmentor, name: str, mode: str, size: tuple[int, int], precision: str, device: torch.device,
             frames: int, warmup: int, batch: int = 1, protocol: str = "vseg", compile: bool | str = False,
             channels_last: bool = False, mean: Sequence[float] = IMAGENET_MEAN,
             std: Sequence[float] = IMAGENET_STD, count_backbone: bool = True, seed: int = 0) -> dict[str, Any]:
    """One plain (unpaired) measurement of an already built model. See `bench_model`."""
    return _measure_many([(model, name, mode)], size, precision, device, frames, warmup, batch, protocol, compile,
                         channels_last, mean, std, count_backbone, seed)[0]


def _measure_group(
    jobs: Sequence[tuple[str, Segmentor, str, str]],
    rounds: int,
    paired: bool,
    log: Log = _quiet,
    **kw: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """Measure labelled jobs `(label, model, name, mode)` for `rounds` rounds: each round is either
    one paired loop over all jobs or one plain measurement per job in turn (round-robin). Keeps each
    label's best row (lowest median) with every round's median in `runs_median_ms`; when paired,
    also returns the per-step latency ratios 'a/b' (and CPU-time ratios 'a/b:cpu') of every pair of
    labels, pooled over rounds."""
    best: dict[str, dict[str, Any]] = {}
    medians: dict[str, list[float]] = {label: [] for label, *_ in jobs}
    step_ratios: dict[str, list[float]] = {}
    size, precision = kw["size"], kw["precision"]
    for r in range(max(1, rounds)):
        live = [j for j in jobs if best.get(j[0], {}).get("status", "ok") == "ok"]
        rnd = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
        if paired:
            log(f"{' + '.join(f'{n} {mo}' for _, _, n, mo in live)} paired, {size[0]}x{size[1]} {precision}{rnd}")
            rows = _measure_many([(m, n, mo) for _, m, n, mo in live], **kw)
            got = {j[0]: row for j, row in zip(live, rows)}
            ok = {k: v for k, v in got.items() if v["status"] == "ok"}
            for a in ok:
                for b in ok:
                    if a != b:
                        step_ratios.setdefault(f"{a}/{b}", []).extend(
                            x / y for x, y in zip(ok[a]["step_ms"], ok[b]["step_ms"]))
                        if "cpu_step_ms" in ok[a] and "cpu_step_ms" in ok[b]:
                            step_ratios.setdefault(f"{a}/{b}:cpu", []).extend(
                                x / y for x, y in zip(ok[a]["cpu_step_ms"], ok[b]["cpu_step_ms"]) if y > 0)
        else:
            got = {}
            for label, m, n, mo in live:
                log(f"{n} {mo} {size[0]}x{size[1]} {precision} batch {kw.get('batch', 1)}{rnd}")
                got[label] = _measure_many([(m, n, mo)], **kw)[0]
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
    compile: bool | str = False,
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
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    size = parse_size(size) if isinstance(size, str) else tuple(size)
    net = build_bench_model(model, num_classes, seed) if isinstance(model, str) else model
    name = model if isinstance(model, str) else (model.arch_name or type(model).__name__)
    best, _ = _measure_group([("row", net, name, mode)], repeat, False, size=size, precision=precision,
                             device=dev, frames=frames, warmup=warmup, batch=batch, protocol=protocol,
                             compile=compile, channels_last=channels_last, count_backbone=count_backbone, seed=seed)
    return best["row"]


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "latency_ms") -> float | None:
    if not a or not b or a.get("status") != "ok" or b.get("status") != "ok" or key not in a or key not in b:
        return None
    return a[key]["median"] / b[key]["median"]


def compare_rows(name: str, baseline: str | None, streaming: dict[str, Any] | None,
                 naive: dict[str, Any] | None, base: dict[str, Any] | None,
                 step_ratios: dict[str, list[float]] | None = None) -> dict[str, Any]:
    """The streaming/naive/baseline comparison of one temporal model from its measured rows.

    Without `step_ratios`: ratios of median step latencies (separate loops, same run). With the
    per-step ratios of a paired loop: their medians, which other processes' load hardly biases."""
    ref = streaming or naive or base or {}

    def brief(r: dict[str, Any] | None) -> dict[str, Any] | None:
        if not r:
            return None
        if r.get("status") != "ok":
            return {"status": r.get("status"), "note": r.get("note")}
        out = {"median_ms": r["latency_ms"]["median"], "p95_ms": r["latency_ms"]["p95"], "fps": r["fps"],
               "backbone_frames_per_frame": r.get("backbone_frames_per_frame")}
        if "cpu_time_ms" in r:
            out["cpu_median_ms"] = r["cpu_time_ms"]["median"]
        return out

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
        "batch": ref.get("batch"), "streaming": brief(streaming), "naive": brief(naive), "baseline_row": brief(base),
        **ratios,
    }


def _temporal_jobs(model: str, net: Callable[[str], Segmentor]) -> list[tuple[str, Segmentor, str, str]]:
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
    log: Log = _quiet,
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
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    size = parse_size(size) if isinstance(size, str) else tuple(size)
    nets: dict[str, Segmentor] = {}

    def net(name: str) -> Segmentor:
        if name not in nets:
            nets[name] = build_bench_model(name, num_classes, seed)
        return nets[name]

    jobs = _temporal_jobs(model, net)
    rows, step_ratios = _measure_group(jobs, repeat, paired, log, size=size, precision=precision, device=dev,
                                       frames=frames, warmup=warmup, batch=batch, protocol=protocol,
                                       compile=compile, channels_last=channels_last, seed=seed)
    out = compare_rows(model, jobs[0][2] if len(jobs) == 3 else None, rows.get("streaming"), rows.get("naive"),
                       rows.get("baseline"), step_ratios if paired else None)
    out["rows"] = rows
    return out


# --------------------------------------------------------------------------------------------
# End-to-end pipeline
# --------------------------------------------------------------------------------------------


def _prepare_source(src: Path, size: tuple[int, int], frames: int, workdir: Path) -> tuple[Path, int, str]:
    """The input video at exactly `size` (HxW), at most `frames` frames. A video already at that
    size is used as is; otherwise it is resized (bilinear) and re-encoded once, outside any timing,
    so decode, inference and encode all work at the benchmark size."""
    import cv2

    from vsegcli.io.video import FrameReader, VideoWriter, probe

    info = probe(src)
    h, w = size
    if (info.height, info.width) == (h, w):
        return src, frames, f"{src.name} ({w}x{h}) as is"
    out = workdir / f"source_{h}x{w}.mp4"
    n = 0
    with FrameReader(src, max_frames=frames) as reader, VideoWriter(out, w, h, info.fps) as writer:
        for _, frame in reader:
            writer.write(cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR))
            n += 1
    return out, n, f"{src.name} ({info.width}x{info.height}) resized to {w}x{h} and re-encoded (libx264 crf 15) before timing"


def measure_io_stages(source: Path, frames: int, workdir: Path, repeat: int = 1,
                      hwaccel: str = "none") -> dict[str, Any]:
    """Decode-only and encode-only throughput of a video (shared by every model at this size), best
    of `repeat` runs each. Returns the stage dicts and the decoded frames (for the other stages)."""
    from vsegcli.io.video import FrameReader, VideoWriter

    decode_runs: list[float] = []
    decoded: list[np.ndarray] = []
    fps_source = 25.0
    decoder, fallback = "software", None
    for _ in range(max(1, repeat)):
        reader = FrameReader(source, max_frames=frames, hwaccel=hwaccel)
        decoder, fallback = reader.decoder, reader.hwaccel_fallback
        fps_source = reader.info.fps
        decoded = []
        t0 = time.perf_counter()  # after opening: the pipeline opens its reader before its clock starts too
        with reader:
            for _, frame in reader:
                decoded.append(frame)
        decode_runs.append(time.perf_counter() - t0)
    if not decoded:
        raise VsegError(f"{source}: no frames decoded")
    h, w = decoded[0].shape[:2]
    encode_runs: list[float] = []
    for _ in range(max(1, repeat)):
        writer = VideoWriter(workdir / "encode_only.mp4", w, h, fps_source, overwrite=True)
        t0 = time.perf_counter()
        try:
            for frame in decoded:
                writer.write(frame)
            writer.close()  # includes flushing the encoder: a finished file is what counts
        except BaseException:
            writer.abort()
            raise
        encode_runs.append(time.perf_counter() - t0)
    n = len(decoded)
    return {
        "frames": decoded,
        "fps_source": fps_source,
        "decode": {"fps": n / min(decode_runs), "seconds": min(decode_runs), "frames": n,
                   "runs_fps": [n / t for t in decode_runs], "decoder": decoder, "hwaccel_fallback": fallback,
                   "what": f"FrameReader iteration (ffmpeg {'NVDEC' if decoder == 'cuda' else 'software'} decode "
                           "+ pipe + numpy frame)"},
        "encode": {"fps": n / min(encode_runs), "seconds": min(encode_runs), "frames": n,
                   "runs_fps": [n / t for t in encode_runs],
                   "what": "VideoWriter.write of the decoded frames + close (libx264 veryfast, crf 15)"},
    }


def bench_pipeline(
    model: str | Segmentor,
    size: tuple[int, int] | str = DEFAULT_SIZE,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    input: str | Path | None = None,
    frames: int = GPU_FRAMES,
    warmup: int = GPU_WARMUP,
    num_classes: int = 19,
    labels: bool = True,
    video: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int = 0,
    io_cache: dict[Any, Any] | None = None,
    log: Log = _quiet,
    repeat: int = 1,
    hwaccel: str = "auto",
    frame_batch: int = 1,
) -> dict[str, Any]:
    """End-to-end decode -> infer -> encode (+ label PNGs) through `engine.stream`, and each stage alone.

    Stages alone: decode (FrameReader), inference (upload + session step + overlay + copy back, on
    the decoded frames, exactly the engine's inference thread), encode (VideoWriter on the decoded
    frames), label PNGs (LabelPngSink on the inference labels). The bottleneck is the slowest stage;
    `e2e_percent_of_slowest` says how close the overlapped pipeline gets to it. With `repeat` > 1,
    inference alone, PNGs alone and end to end run that many rounds back to back and each keeps its
    best; `rounds_percent` gives every round's own e2e / slowest. `io_cache` lets several models
    share the decode/encode measurements of one source and size. On CPU, `cpu_ms_per_frame` is this
    process's CPU time per frame (ffmpeg subprocesses not included).
    """
    from vsegcli.runtime import LabelPngSink, Predictor, VideoSink, stream
    from vsegcli.data.labels import label_set_for
    from vsegcli.runtime.render import Palette, overlay
    from vsegcli.io.video import FrameReader, VideoWriter

    if not (labels or video):
        raise VsegError("the pipeline needs at least one sink: video and/or labels")
    dev = torch.device(device) if not isinstance(device, torch.device) else device
    size = parse_size(size) if isinstance(size, str) else tuple(size)
    src = Path(input) if input is not None else DEFAULT_INPUT
    if not src.exists():
        raise VsegError(f"{src}: no such video; pass --input VIDEO")
    net = build_bench_model(model, num_classes, seed) if isinstance(model, str) else model
    name = model if isinstance(model, str) else (model.arch_name or type(model).__name__)
    if precision == "fp16" and dev.type == "cpu":
        return {"model": name, "size": list(size), "precision": precision, "status": "skipped",
                "note": "fp16 on CPU: skipped"}
    if io_cache is None:  # a one-off call: clean up its temporary videos afterwards
        own: dict[Any, Any] = {}
        try:
            return bench_pipeline(net, size, precision, dev, src, frames, warmup, num_classes, labels, video,
                                  mean, std, seed, own, log, repeat, hwaccel, frame_batch)
        finally:
            cleanup_io_cache(own)
    cache = io_cache
    if hwaccel == "auto" and dev.type != "cuda":  # as `vseg run`: NVDEC only next to CUDA inference
        hwaccel = "none"
    key = (str(src.resolve()), size, frames, hwaccel)
    if key not in cache:
        workdir = Path(tempfile.mkdtemp(prefix="vseg-bench-"))
        log(f"preparing {src.name} at {size[0]}x{size[1]}; timing decode and encode alone")
        prepared, n, how = _prepare_source(src, size, frames, workdir)
        io = measure_io_stages(prepared, n, workdir, repeat, hwaccel)
        cache[key] = {"workdir": workdir, "source": prepared, "source_note": how, **io}
    io = cache[key]
    decoded: list[np.ndarray] = io["frames"]
    n = len(decoded)
    palette = Palette.from_label_set(label_set_for(net.num_classes))
    predictor = Predictor(net, list(mean), list(std), palette, dev, precision)
    predictor.frame_batch = frame_batch

    # Inference alone, the engine's inference-thread body on frames already in memory.
    def infer_all(count: int) -> tuple[list[np.ndarray], float, float]:
        session = predictor.new_session()
        out: list[np.ndarray] = []
        _sync(dev)
        c0, t0 = time.process_time(), time.perf_counter()
        for k0 in range(0, count, frame_batch):
            frames_dev = [predictor.upload(decoded[k % n]) for k in range(k0, min(count, k0 + frame_batch))]
            for frame_dev, lab in zip(frames_dev, predictor.step_many(session, frames_dev)):
                if video:
                    overlay(frame_dev, lab, palette, 0.5).cpu().numpy()
                out.append(lab.cpu().numpy())
        _sync(dev)
        return out, time.perf_counter() - t0, time.process_time() - c0

    load_start = _load_average()
    log(f"{name} {precision}: warm-up")
    infer_all(max(1, warmup))  # allocator, cuDNN plans, lazy init
    runs: dict[str, list[tuple[float, float]]] = {"inference": [], "label_png": [], "end_to_end": []}
    e2e_stats: list[Any] = []
    for r in range(max(1, repeat)):
        rnd = f" (round {r + 1}/{repeat})" if repeat > 1 else ""
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=io["workdir"]))
        try:
            log(f"{name} {precision}: inference alone{rnd}")
            label_maps, t_infer, c_infer = infer_all(n)
            runs["inference"].append((t_infer, c_infer))
            if labels:
                sink = LabelPngSink(workdir / "labels_only", palette)
                c0, t0 = time.process_time(), time.perf_counter()
                try:
                    for k, lab in enumerate(label_maps):
                        sink.write(k, decoded[k], lab, None)
                    sink.close()
                except BaseException:
                    sink.abort()
                    raise
                runs["label_png"].append((time.perf_counter() - t0, time.process_time() - c0))
            log(f"{name} {precision}: end to end{rnd}")
            reader = FrameReader(io["source"], max_frames=n, hwaccel=hwaccel)
            sinks: list[Any] = []
            if video:
                sinks.append(VideoSink(VideoWriter(workdir / "e2e.mp4", reader.info.width, reader.info.height,
                                                   reader.info.fps)))
            if labels:
                sinks.append(LabelPngSink(workdir / "e2e_labels", palette))
            c0 = time.process_time()
            stats = stream(predictor, iter(reader), sinks, opacity=0.5)
            runs["end_to_end"].append((stats.seconds, time.process_time() - c0))
            e2e_stats.append(stats)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def stage(key: str, what: str) -> dict[str, Any]:
        best = min(runs[key])
        out = {"fps": n / best[0], "seconds": best[0], "frames": n, "runs_fps": [n / t for t, _ in runs[key]],
               "what": what}
        if dev.type == "cpu":  # the least CPU time of the rounds: its cost with the least interference
            out["cpu_ms_per_frame"] = 1000.0 * min(c for _, c in runs[key]) / n
        return out

    stages: dict[str, dict[str, Any]] = {
        "decode": {k: v for k, v in io["decode"].items()},
        "inference": stage("inference", "upload + session step + post-processing" + (" + overlay" if video else "")
                           + " + copy to host, frames in memory"),
    }
    if video:
        stages["encode"] = dict(io["encode"])
    if labels:
        stages["label_png"] = stage("label_png", "LabelPngSink (cv2.imwrite, PNG level 1) of the inference labels")
    slowest = min(stages, key=lambda s: stages[s]["fps"])
    e2e = stage("end_to_end", "engine.stream: decode thread -> inference -> sink threads, outputs finished")
    best_round = min(range(len(e2e_stats)), key=lambda i: e2e_stats[i].seconds)
    best_stats = e2e_stats[best_round]
    e2e["stage_seconds"] = {"decode_wait": best_stats.times.decode_wait, "inference": best_stats.times.inference,
                            **best_stats.times.sinks}
    # Every round's e2e against the same round's own inference (the other stages are far faster on
    # any machine we measured; they come from the shared decode/encode runs).
    rounds_percent = []
    for i, (t_e2e, _) in enumerate(runs["end_to_end"]):
        slowest_fps = min([n / runs["inference"][i][0]] + [stages[s]["fps"] for s in stages if s != "inference"])
        rounds_percent.append(100.0 * (n / t_e2e) / slowest_fps)
    return {
        "model": name, "size": list(size), "precision": precision, "device": str(dev), "status": "ok",
        "input": str(src), "source": io["source_note"], "frames": n, "repeat": max(1, repeat),
        "frame_batch": frame_batch, "load_average": {"start": load_start, "end": _load_average()},
        "sinks": [s for s, on in (("video", video), ("labels", labels)) if on],
        "stages": stages,
        "end_to_end": e2e,
        "bottleneck": slowest,
        "e2e_percent_of_slowest": 100.0 * e2e["fps"] / stages[slowest]["fps"],
        "rounds_percent": rounds_percent,
    }


def cleanup_io_cache(cache: dict[Any, Any]) -> None:
    for entry in cache.values():
        shutil.rmtree(entry.get("workdir", ""), ignore_errors=True)
    cache.clear()


# --------------------------------------------------------------------------------------------
# A whole `vseg bench` run
# --------------------------------------------------------------------------------------------


def run_benchmarks(
    models: Sequence[str],
    sizes: Sequence[tuple[int, int]],
    precisions: Sequence[str],
    device: torch.device,
    frames: int,
    warmup: int,
    batch: int = 1,
    protocol: str = "vseg",
    num_classes: int = 19,
    compile: bool | str = False,
    channels_last: bool = False,
    repeat: int = 1,
    e2e: bool = True,
    input: str | Path | None = None,
    checkpoint_models: dict[str, Segmentor] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    log: Log = _quiet,
    model_only: bool = True,
    paired: bool = False,
    hwaccel: str = "auto",
    frame_batch: int = 1,
    fold_bn: bool = True,
) -> dict[str, Any]:
    """Everything `vseg bench` measures, as one JSON-ready dict (without machine/command fields).

    For every size x precision: each per-frame model; each temporal model's streaming, naive and
    baseline rows, round-robin (a baseline already measured is reused) or, with `paired`, in one
    step-interleaved loop per round (the baseline is then measured again inside each group, and
    the table keeps its first row). Then, unless `e2e` is off, the end-to-end pipeline per model
    (decode/encode timed once per size). `model_only=False` skips the model-only part.
    """
    from vsegcli.models import get_architecture

    given = dict(checkpoint_models or {})
    if fold_bn:  # checkpoint models get what build_bench_model gives the others
        from vsegcli.models.fold import fold_batchnorm

        for m in given.values():
            fold_batchnorm(m.eval())
    nets: dict[str, Segmentor] = {}

    def net(name: str) -> Segmentor:
        if name not in nets:
            nets[name] = given[name] if name in given else build_bench_model(name, num_classes, fold_bn=fold_bn)
        return nets[name]

    archs = {m: get_architecture(m) for m in models}
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    pipelines: list[dict[str, Any]] = []
    done: dict[tuple, dict[str, Any]] = {}
    for size in sizes if model_only else ():
        for precision in precisions:
            kw = dict(size=size, precision=precision, device=device, frames=frames, warmup=warmup, batch=batch,
                      protocol=protocol, compile=compile, channels_last=channels_last, mean=mean, std=std)
            for m in models:
                arch = archs[m]
                if arch.temporal:
                    jobs = _temporal_jobs(m, net)
                else:
                    jobs = [("row", net(m), m, "session")]
                if not (paired and arch.temporal):
                    jobs = [j for j in jobs if (j[2], j[3], size, precision) not in done]
                group, step_ratios = _measure_group(jobs, repeat, paired and arch.temporal, log, **kw)
                by_key = {(j[2], j[3]): group[j[0]] for j in jobs}
                for (name, mode), row in by_key.items():
                    key = (name, mode, size, precision)
                    if key not in done:
                        done[key] = row
                        rows.append(row)
                if arch.temporal:
                    # This group's own rows first (paired: the same loop), else the run's earlier ones.
                    picked = [by_key.get((n, mo)) or done.get((n, mo, size, precision)) if n else None
                              for n, mo in ((m, "session"), (m, "naive"), (arch.baseline, "session"))]
                    comparisons.append(compare_rows(m, arch.baseline, *picked, step_ratios if paired else None))
    if e2e:
        cache: dict[Any, Any] = {}
        try:
            for size in sizes:
                for precision in precisions:
                    for m in models:
                        # A fresh, uncompiled model in default layout: what `vseg run` executes.
                        fresh = (given[m] if m in given and not (compile or channels_last)
                                 else build_bench_model(m, num_classes, fold_bn=fold_bn))
                        pipelines.append(bench_pipeline(
                            fresh, size, precision, device, input=input, frames=frames, warmup=warmup,
                            mean=mean, std=std, io_cache=cache, log=log, repeat=repeat, hwaccel=hwaccel,
                            frame_batch=frame_batch,
                        ))
        finally:
            cleanup_io_cache(cache)
    return {"model_only": rows, "temporal": comparisons, "pipeline": pipelines}


def run_metadata(device: torch.device, command: str | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The machine and the exact command, for the JSON header."""
    return {
        "schema": "vseg-bench/1",
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "argv": list(argv if argv is not None else sys.argv),
        "machine": machine_info(device),
    }
