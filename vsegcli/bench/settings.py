"""What a benchmark run measures and how much: modes, protocols, default counts, option parsing."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from vsegcli.errors import VsegError

MODES = ("session", "naive", "frame")
PROTOCOLS = ("vseg", "upstream")
DEFAULT_SIZE = (480, 864)  # VSPW after mmseg's AlignedResize (480x853 -> 480x864)
DEFAULT_MODELS = ("mrcfa-b0",)
# GPU defaults follow mmseg (5 warm-up, 200 frames); a 2-core CPU would take minutes per row.
GPU_FRAMES, GPU_WARMUP = 200, 5
CPU_FRAMES, CPU_WARMUP = 20, 3
UPSTREAM_WARMUP = 5
POOL_SIZE = 4  # distinct input frames cycled through, so no step reuses the previous one's input
DEFAULT_INPUT = Path(__file__).resolve().parents[2] / "examples" / "bikes.mp4"

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """The default progress log: says nothing."""


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


def as_size(size: tuple[int, int] | str) -> tuple[int, int]:
    """A size option as given to the library: 'HxW' text or a (height, width) pair."""
    return parse_size(size) if isinstance(size, str) else (int(size[0]), int(size[1]))


def as_device(device: str | torch.device) -> torch.device:
    return device if isinstance(device, torch.device) else torch.device(device)


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

