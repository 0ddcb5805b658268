"""Where the numbers come from, and what the machine did meanwhile.

The machine description (CPU model, GPUs from torch and nvidia-smi, library versions) written into
every result's header, and the process probes the timing loop reads around each step: resident
memory, minor page faults, load average, device synchronisation.
"""
from __future__ import annotations

import ctypes
import datetime as _dt
import os
import platform
import shutil
import subprocess
import sys
import threading
from typing import Any, Sequence

import numpy as np
import torch

try:  # Unix only; read every timed CPU step, so imported once here
    import resource as _resource
except ImportError:  # pragma: no cover - Windows
    _resource = None

from vsegcli import __version__
from vsegcli.io.hostmem import host_allocator_state

SCHEMA = "vseg-bench/1"


# --------------------------------------------------------------------------------------------
# Process probes
# --------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU, where work is synchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release_host_memory() -> None:
    """Give freed heap back to the OS (glibc), so an RSS delta is not hidden by an earlier run's cache."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int | None:
    """Resident memory of this process now (Linux /proc), or None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class RssSampler:
    """Peak resident memory over a block, sampled every `interval` s from /proc (Linux only).

    A sampled peak can miss a spike shorter than the interval; it includes allocator caches."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.base = self.peak = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            rss = rss_bytes()
            if rss is not None and self.peak is not None:
                self.peak = max(self.peak, rss)

    def __enter__(self) -> RssSampler:
        self.base = self.peak = rss_bytes()
        if self.base is not None:
            self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        rss = rss_bytes()
        if rss is not None and self.peak is not None:
            self.peak = max(self.peak, rss)

    @property
    def delta_mib(self) -> float | None:
        if self.base is None or self.peak is None:
            return None
        return (self.peak - self.base) / 2**20


def minor_faults() -> int | None:
    """Minor page faults of this process so far (all threads): fresh pages the kernel had to map."""
    if _resource is None:
        return None
    return _resource.getrusage(_resource.RUSAGE_SELF).ru_minflt


def load_average() -> list[float] | None:
    """1/5/15-minute load average: how busy the machine was (CPU numbers depend on it)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


# --------------------------------------------------------------------------------------------
# Machine description
# --------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi() -> list[dict[str, str]]:
    """One row per GPU from nvidia-smi (index, name, driver, memory, bus id); [] without it."""
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


def _gpus() -> list[dict[str, Any]]:
    smi = {row["index"]: row for row in nvidia_smi()}
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({
            "index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
            "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
            "driver": smi.get(str(i), {}).get("driver"),
        })
    return gpus


def machine_info(device: torch.device | str | None = None) -> dict[str, Any]:
    """Where the numbers come from: CPU, cores, load, library versions, GPU name and driver."""
    info: dict[str, Any] = {
        "vseg_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
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
    load = load_average()
    if load is not None:
        info["load_average"] = load
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
        info["gpus"] = _gpus()
        info["cudnn"] = torch.backends.cudnn.version()
    if device is not None:
        dev = torch.device(device)
        info["device"] = str(dev)
        info["device_name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else info["cpu_model"]
    return info


def run_metadata(device: torch.device, command: str | None = None, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The machine and the exact command, for the JSON header."""
    return {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "argv": list(argv if argv is not None else sys.argv),
        "machine": machine_info(device),
    }
