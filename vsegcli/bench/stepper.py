"""One timed step of a model, and the models and inputs it runs on.

`Stepper` is the unit every model-only measurement times: (B, H, W, 3) uint8 frames already on
the device -> (B, H, W) uint8 labels. Its pre- and post-processing are the runtime `Predictor`'s
(`normalise_pixels` with the predictor's mean and std, autocast at its precision,
`logits_to_labels`); `mode` picks what runs in between:

* `session`: the streaming session (`new_session().step`), each backbone once per frame;
* `naive`:   `forward_clip` on the whole clip window for every frame, i.e. what the official MRCFA
             test code does (4 frames: t-9, t-6, t-3, t; STT: the T+1 last frames);
* `frame`:   `forward_frame`, the model's per-frame path.
"""
from __future__ import annotations

from collections import deque
from typing import Sequence

import torch

from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from vsegcli.errors import VsegError
from vsegcli.models.base import Segmentor
from vsegcli.runtime import PRECISIONS, Predictor, logits_to_labels, normalise_pixels
from vsegcli.runtime.render import Palette
from vsegcli.bench.settings import MODES, POOL_SIZE

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


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


def model_name(model: Segmentor) -> str:
    """The name a built model's rows carry: its registry name, else its class name."""
    return model.arch_name or type(model).__name__


def naive_offsets(model: Segmentor) -> tuple[int, ...]:
    """Frame offsets (oldest first, 0 = target) of the window the model's clip forward reads."""
    if not model.temporal:
        raise VsegError(f"{model_name(model)} is a per-frame model: it has no naive clip mode")
    return (*model.clip_offsets(), 0)


def palette_for(model: Segmentor) -> Palette:
    """The standard palette of the model's class count (the pipeline's overlays; a Predictor needs one)."""
    from vsegcli.data.labels import label_set_for

    return Palette.from_label_set(label_set_for(model.num_classes))


class Stepper:
    """One benchmark step: (B, H, W, 3) uint8 frames on the device -> (B, H, W) uint8 labels.

    Built on the runtime's `Predictor` (pre-processing, precision, post-processing), batched: a
    batch of B frames is B independent streams for a session. See the module doc for `mode`.
    """

    def __init__(self, model: Segmentor, mode: str, device: torch.device, precision: str = "fp32",
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 channels_last: bool = False, to_host: bool = False) -> None:
        if mode not in MODES:
            raise VsegError(f"unknown mode {mode!r}: use {', '.join(MODES)}")
        self.predictor = Predictor(model, list(mean), list(std), palette_for(model), device, precision,
                                   channels_last=channels_last)  # the bench's --channels-last decides
        self.model = model
        self.mode = mode
        self.device = device
        self.dtype = PRECISIONS[precision]
        self.channels_last = channels_last
        self.to_host = to_host
        self.session = model.new_session() if mode == "session" else None
        self.offsets = naive_offsets(model) if mode == "naive" else (0,)
        # Naive mode keeps normalised frames (not features): the clip forward recomputes everything.
        self.ring: deque[torch.Tensor] = deque(maxlen=1 - min(self.offsets))

    def prepare(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, H, W) normalised with the predictor's mean and std (frames
        are already at the network input size: no resize)."""
        x = normalise_pixels(frames.permute(0, 3, 1, 2), self.predictor.mean, self.predictor.std)
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


def frame_pool(size: tuple[int, int], batch: int, device: torch.device, seed: int = 0,
               n: int = POOL_SIZE) -> list[torch.Tensor]:
    """Distinct random uint8 frames (never zeros: they can run faster than real data)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    return [torch.randint(0, 256, (batch, h, w, 3), generator=g, dtype=torch.uint8).to(device) for _ in range(n)]


def apply_compile(model: Segmentor, mode: str | bool = "default") -> str:
    """torch.compile the backbone in place (the per-frame cost every mode shares). Sessions call head
    and temporal methods that are not `forward`, so compiling the whole model would miss them.
    `mode` "reduce-overhead" records CUDA graphs for the fixed input size (launch overhead gone)."""
    mode = "default" if mode is True else str(mode)
    if mode not in COMPILE_MODES:
        raise VsegError(f"unknown compile mode {mode!r}: use {', '.join(COMPILE_MODES)}")
    target = getattr(model, "backbone", None)
    what = "the whole model" if target is None else "the backbone (heads and temporal modules eager)"
    target = model if target is None else target
    if not is_compiled(model):
        target.compile(mode=None if mode == "default" else mode)
        target._vseg_compiled = True
    return f"torch.compile (mode {mode}) on {what}"


def is_compiled(model: Segmentor) -> bool:
    """Whether `apply_compile` already compiled this model (in place, by an earlier measurement)."""
    return bool(getattr(getattr(model, "backbone", model), "_vseg_compiled", False))


def count_backbone_frames(model: Segmentor, stepper: Stepper, pool: list[torch.Tensor], steps: int = 2) -> float | None:
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
