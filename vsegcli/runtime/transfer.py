"""Device -> host copies that do not stop the inference thread.

On CUDA, `to_host` starts a non-blocking copy into pinned host memory and records a CUDA event on
the device's stream; the `HostCopy` it returns travels to the sink threads, and the first
`result()` there waits for the event. The inference thread meanwhile queues the next frame's work,
so transfers and compute overlap instead of a blocking `.cpu()` per result. Pinned buffers come
from torch's caching host allocator: a block returns to the cache when the sinks drop the array
and is reused by a later frame (after the copy that last used it has finished: torch records
that), so nothing is allocated from the driver per frame and no buffer is overwritten while a
sink still reads it.

On the CPU, `to_host` returns the numpy view directly: the CPU path is exactly what it was.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def _pinned_empty(like: torch.Tensor) -> torch.Tensor:
    """Page-locked host memory shaped like `like` (the one call tests replace when there is no GPU)."""
    return torch.empty(like.shape, dtype=like.dtype, pin_memory=True)


class HostCopy:
    """A device -> host copy in flight; `result()` waits for it and returns the numpy array.

    Safe to call from several sink threads: each waits on the same event and gets the same array."""

    __slots__ = ("_host", "_event", "_array")

    def __init__(self, host: torch.Tensor, event: Any | None) -> None:
        self._host = host
        self._event = event
        self._array: np.ndarray | None = None

    def result(self) -> np.ndarray:
        if self._array is None:
            if self._event is not None:
                self._event.synchronize()  # this thread waits, not the inference thread
            self._array = self._host.numpy()
        return self._array


def to_host(tensor: torch.Tensor, device: torch.device) -> np.ndarray | HostCopy:
    """`tensor` (on `device`) on the host: a numpy array for the CPU, a `HostCopy` for CUDA."""
    if device.type != "cuda":
        return tensor.numpy()
    host = _pinned_empty(tensor)
    host.copy_(tensor, non_blocking=True)
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))  # the stream the copy was queued on
    return HostCopy(host, event)


def resolved(value: Any) -> Any:
    """`value`, or its array once a `HostCopy` has arrived (what the sink threads call)."""
    return value.result() if isinstance(value, HostCopy) else value
