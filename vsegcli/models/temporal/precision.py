"""Float32 regions inside autocast: the temporal modules' similarity products (MRCFA's unscaled
64-512-dim affinities, STT's attention logits) exceed fp16's range (65,504) on real features, so
they are computed with autocast off, from float32 copies of their inputs, on every device."""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def autocast_off(device: torch.device) -> Iterator[None]:
    """Autocast disabled for `device`'s type (no-op where autocast does not exist, e.g. meta)."""
    if torch.amp.is_autocast_available(device.type):
        with torch.autocast(device.type, enabled=False):
            yield
    else:
        yield
