"""Host memory: keep freed blocks in the process instead of handing them back to the OS.

PyTorch's CPU tensors come from the C library's malloc, and glibc returns large freed blocks to
the kernel (blocks over the mmap threshold are unmapped on free; free space at the top of the heap
is trimmed). A model step allocates and frees the same tens of megabytes of activations every
frame, so every frame page-faults them back in: measured here, 9,500-18,800 minor page faults per
step for effl0 / segformer-b0 at 256x448 (40-75 MB of fresh pages) and 1.3-1.9x the step time
(docs/PERFORMANCE.md, 2.8). Raising both thresholds makes the steady state fault-free: the blocks
freed by one frame serve the next.

The cost is that the process keeps its peak heap until it exits (nothing is lost: the memory is
reused by the next frame). That is right for a video or eval run; a long-lived library host that
must give memory back can opt out with `VSEG_HOST_ALLOCATOR=system`.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading

ENV_VAR = "VSEG_HOST_ALLOCATOR"
MODES = ("retain", "system")

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Largest value glibc accepts for M_TRIM_THRESHOLD (an int); blocks above the mmap threshold
# are still mapped on their own (single tensors over 1 GiB: rare, and page-faulted anyway). Older
# glibc refuses mmap thresholds over 32 MiB (HEAP_MAX_SIZE / 2): then 32 MiB, the most it takes.
_TRIM_THRESHOLD = 2**31 - 1
_MMAP_THRESHOLDS = ((1 << 30, "1 GiB"), (32 << 20, "32 MiB"))

_lock = threading.Lock()
_applied: str | None = None  # what the first call did, reported by every later call


def requested_mode(mode: str | None = None) -> str:
    """The mode to use: `mode` if given, else $VSEG_HOST_ALLOCATOR, else "retain"."""
    chosen = (mode or os.environ.get(ENV_VAR) or "retain").strip().lower()
    if chosen not in MODES:
        from vsegcli.errors import VsegError

        raise VsegError(f"unknown host allocator mode {chosen!r} (from {ENV_VAR} or the option): use "
                        + " or ".join(MODES))
    return chosen


def configure_host_allocator(mode: str | None = None) -> str:
    """Apply the host allocator mode once per process; returns what is in effect, as a short
    description for logs and benchmark JSON ("retain (glibc: ...)", "system", or why not).

    Process-wide and not reversible (glibc has no "back to the dynamic defaults"), so the first
    call decides; later calls only report it."""
    global _applied
    chosen = requested_mode(mode)  # a bad value is an error on every call, not only the first
    with _lock:
        if _applied is not None:
            return _applied
        if chosen == "system":
            _applied = "system (C library defaults)"
        else:
            _applied = _retain_freed_memory()
        return _applied


def host_allocator_state() -> str:
    """What `configure_host_allocator` did in this process ("not configured" before it ran)."""
    return _applied or "not configured (C library defaults)"


def _retain_freed_memory() -> str:
    if not sys.platform.startswith("linux"):
        return f"system (no glibc malloc tuning on {sys.platform})"
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return f"system ({name} has no mallopt)"
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    trim = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    mmap = next((text for value, text in _MMAP_THRESHOLDS if mallopt(_M_MMAP_THRESHOLD, value) == 1), None)
    if not trim and mmap is None:
        return "system (mallopt refused the thresholds)"
    parts = [f"mmap threshold {mmap}" if mmap else "mmap threshold unchanged (refused)",
             "trim threshold 2 GiB" if trim else "trim threshold unchanged (refused)"]
    return f"retain (glibc: {', '.join(parts)})"
