"""The one pre- and post-processing path: uint8 frame -> network input -> logits -> uint8 labels.

    inference_size     the network input size for a frame (short side, size divisor)
    normalise_pixels   (x - mean) / std per RGB channel, on the 0-255 scale the checkpoints record
    logits_to_labels   upsample logits to the frame size, argmax, uint8
    Predictor          a model on a device with its precision and the three steps above

Training, evaluation and the benchmark call these instead of keeping their own copies, so a model
sees the same pixels whichever command feeds it.
"""
from __future__ import annotations

import copy
import math
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vsegcli.errors import VsegError
from vsegcli.io.hostmem import configure_host_allocator
from vsegcli.models.base import Segmentor, Session
from vsegcli.runtime.render import Palette
from vsegcli.runtime.transfer import HostCopy, to_host

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# (height, width, size divisor) -> network input (height, width); see `inference_size`.
ResizeRule = Callable[[int, int, int], tuple[int, int]]


def channel_stat(values: Sequence[float] | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Three per-channel numbers (RGB mean or std) as a (3, 1, 1) float tensor, which broadcasts
    against any channel-first batch (..., 3, H, W). Build it once and reuse it in loops."""
    return torch.as_tensor(values, dtype=torch.float32, device=device).reshape(3, 1, 1)


def normalise_pixels(frames: torch.Tensor, mean: Sequence[float] | torch.Tensor,
                     std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Channel-first frames (..., 3, H, W), uint8 or float on the 0-255 scale -> float32
    (x - mean) / std per channel. `mean`/`std`: three numbers, or tensors that broadcast against
    the frames (`channel_stat`); numbers are turned into tensors on the frames' device per call."""
    if not isinstance(mean, torch.Tensor):
        mean = channel_stat(mean, frames.device)
    if not isinstance(std, torch.Tensor):
        std = channel_stat(std, frames.device)
    return (frames.float() - mean) / std


def prepare_pixels(frame: torch.Tensor, size: tuple[int, int], mean: Sequence[float] | torch.Tensor,
                   std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, h, w) float at `size` (bilinear when it differs), normalised.
    The one preparation of network inputs: inference and int8 calibration both use it."""
    h, w = frame.shape[:2]
    x = frame.permute(2, 0, 1).unsqueeze(0).float()
    if tuple(size) != (h, w):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
    return normalise_pixels(x, mean, std)


def inference_size(height: int, width: int, short_side: int | None, divisor: int) -> tuple[int, int]:
    """Network input size: scale so the short side is `short_side` (if given), then round each side
    up to a multiple of `divisor` by resizing (mmseg's AlignedResize: 480x853 -> 480x864)."""
    if short_side:
        scale = short_side / min(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def logits_to_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) logits -> (B, H, W) uint8 labels: bilinear resize to the frame size, argmax.

    On CPU both run on a channels-last copy of the (small) logits: the resize then vectorises over
    the classes and the per-pixel max reads C adjacent values, where torch's NCHW argmax over dim 1
    strides across whole planes: 40 -> 8 ms at 288x640 with 19 classes, one thread. The labels are
    those of the NCHW path up to float rounding of the resize (<= 5e-7); ties keep the first class,
    as argmax does. GPUs keep the NCHW path (not measured there yet)."""
    logits = logits.float()
    if logits.device.type == "cpu":
        logits = logits.contiguous(memory_format=torch.channels_last)
    up = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return up.max(dim=1).indices.to(torch.uint8)


class Predictor:
    """A model on a device with its pre- and post-processing: uint8 frame in, uint8 labels out."""

    def __init__(
        self,
        model: Segmentor,
        mean: list[float],
        std: list[float],
        palette: Palette,
        device: torch.device,
        precision: str = "fp32",
        size: int | None = None,
        classes: list[str] | None = None,
        runtime: str = "torch",
        calibration: str | None = None,
        channels_last: bool | None = None,
    ) -> None:
        from vsegcli.runtime.onnx_backend import make_backend

        if precision not in PRECISIONS and precision != "int8":
            raise VsegError(f"unknown precision {precision!r}: use fp32, fp16, bf16 or int8")
        if precision == "fp16" and device.type == "cpu":
            raise VsegError("fp16 is for GPUs; on CPU use --precision fp32, bf16 or int8")
        configure_host_allocator()  # steady frames reuse freed host memory instead of page-faulting it
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self.size = size
        self.palette = palette
        self.classes = classes or [f"class_{i}" for i in range(model.num_classes)]
        self.mean = channel_stat(mean, device)
        self.std = channel_stat(std, device)
        # Who runs the per-frame part (`runtime.onnx_backend`): torch, or ONNX Runtime on CPU.
        self.backend = make_backend(runtime, self.model, device, precision, mean, std, calibration)
        self.runtime = self.backend.name
        # Channels-last on CPU (None = auto: CPU with the torch runtime): oneDNN's convolutions
        # skip their layout conversions, 21-28 % less time per frame for the effl0 models, 11 % for
        # SegFormer-B0 (288x640, 2 threads; docs/PERFORMANCE.md 2.8); labels equal up to float
        # rounding. GPUs keep NCHW (not measured there). It converts the model in place, so a
        # caller holding a training model passes False.
        if channels_last is None:
            channels_last = device.type == "cpu" and self.runtime == "torch"
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.resize_rule: ResizeRule | None = None
        # Frames per model call in `stream` (micro-batching; temporal steps stay in frame order).
        self.frame_batch = 1
        # Temporal sessions forget their cached frames at a detected shot cut (`stream`, eval).
        self.shot_reset = True

    def with_resize_rule(self, rule: ResizeRule | None) -> "Predictor":
        """The same model and settings with another input-size rule (e.g. VSPW's official one)."""
        other = copy.copy(self)  # shares the model on the device: no weight copy
        other.resize_rule = rule
        return other

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for a frame: the resize rule if set, else `inference_size` with `size`."""
        if self.resize_rule is not None:
            return self.resize_rule(height, width, self.model.size_divisor)
        return inference_size(height, width, self.size, self.model.size_divisor)

    @property
    def predictor(self) -> "Predictor":
        """Itself: a Predictor and an `api.VideoSegmenter` both hand their Predictor over through
        `.predictor`, so code that takes either (`evaluate`) reads that one attribute."""
        return self

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def new_session(self) -> Session:
        return self.backend.model.new_session()

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        """A uint8 frame on the device. CUDA: staged in pinned memory (torch's caching host
        allocator hands back a freed block, reused once the copy that last read it has finished),
        then copied without blocking this thread."""
        t = torch.from_numpy(frame)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def to_host(self, tensor: torch.Tensor) -> np.ndarray | HostCopy:
        """Labels or an overlay on the host: a numpy array on CPU; on CUDA a non-blocking copy
        into pinned memory whose `result()` waits for it (`runtime.transfer`)."""
        return to_host(tensor, self.device)

    def prepare(self, frame: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, h, w) normalised float at the network input size."""
        x = prepare_pixels(frame, self.input_size(*frame.shape[:2]), self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def step(self, session: Session, frame: torch.Tensor) -> torch.Tensor:
        """One frame through the session: (H, W, 3) uint8 on device -> (H, W) uint8 labels on device."""
        x = self.prepare(frame)
        dtype = PRECISIONS.get(self.precision, torch.float32)  # int8 lives in the ORT graph
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = session.step(x)
        return logits_to_labels(logits, frame.shape[:2])[0]

    @torch.inference_mode()
    def step_many(self, session: Session, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Consecutive frames of one video through the session in one batch (`Session.step_many`):
        (H, W, 3) uint8 frames on device -> (H, W) uint8 labels on device, in order."""
        if len(frames) == 1:
            return [self.step(session, frames[0])]
        x = torch.cat([self.prepare(f) for f in frames])
        dtype = PRECISIONS.get(self.precision, torch.float32)  # int8 lives in the ORT graph
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = session.step_many(x)
        # One video: every frame has the same size, so the upsampling runs batched too.
        return list(logits_to_labels(logits, frames[0].shape[:2]))
