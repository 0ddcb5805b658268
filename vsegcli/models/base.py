"""What every architecture exposes: a clip forward pass and a streaming session.

* `forward_clip(frames)` takes a clip (B, T, 3, H, W) of normalised frames in time order, target
  last, and returns the target's logits (B, K, H/s, W/s) at the model's output stride s. This is the
  training / evaluation entry point.
* `new_session()` returns a `Session` whose `step(frame)` takes one normalised frame (B, 3, H, W)
  at a time and returns its logits. A session keeps only what later frames need (cached backbone
  features), so each frame's backbone runs exactly once. For the same frames, a session's output
  equals `forward_clip` on the frame window the architecture would pick.

Per-frame models are the T=1 case: the session just runs the model on each frame.

What a caller needs to know about a model's use of time is asked of the model, never decided by
its class elsewhere: `clip_offsets()` (the earlier frames a clip holds), `fixed_offsets` (exactly
those offsets, or any earlier frames in time order), `history` (frames a session keeps),
`priming_frames` (frames before a session step costs what steady state costs), and
`forward_train(frames)` (the training outputs: target logits, aux logits, per-frame logits).
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn


class Segmentor(nn.Module):
    temporal: ClassVar[bool] = False
    output_stride: ClassVar[int] = 4
    size_divisor: ClassVar[int] = 32
    # True: a clip must hold exactly the frames at `clip_offsets()` (MRCFA's references); False:
    # any `len(clip_offsets())` earlier frames in time order will do (STT; training draws gaps).
    fixed_offsets: ClassVar[bool] = False
    # True: `forward_train` also returns every clip frame's per-frame logits, scored against that
    # frame's own labels (MRCFA), so training clips load the earlier frames' labels too.
    trains_on_clip_labels: ClassVar[bool] = False
    aux_weight: ClassVar[float] = 0.0  # loss weight of each of `aux_logits` (PSPNet, BiSeNet)
    # Probability that a fixed-offset training clip runs backwards in time (MRCFA: 0.5, official).
    train_reverse_prob: ClassVar[float] = 0.0
    # The stateless per-frame method a runtime may run elsewhere (ONNX Runtime) while the session
    # stays in torch: "features" (STT), "encode" (MRCFA); None = per-frame models' forward_frame
    # ("frame"), or, for a temporal model, nothing exportable.
    per_frame_part: ClassVar[str | None] = None

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        # Filled in by the registry so a model can be saved and rebuilt by name.
        self.arch_name: str = ""
        self.arch_options: dict[str, Any] = {}
        # Training-only logits of auxiliary heads, left here by the last forward in training mode.
        self.aux_logits: list[torch.Tensor] = []

    def clip_offsets(self) -> tuple[int, ...]:
        """Offsets (negative, oldest first) of the earlier frames the clip forward reads before the
        target: MRCFA its reference dilation, STT -T..-1, a per-frame model none."""
        return ()

    @property
    def history(self) -> int:
        """How many frames back a streaming session keeps state for (0 for per-frame models)."""
        return -min(self.clip_offsets(), default=0)

    @property
    def priming_frames(self) -> int:
        """Frames a session must have stepped before a step costs what steady state costs."""
        return self.history

    def training_only_keys(self) -> frozenset[str]:
        """State-dict keys inference never reads (MRCFA's deco1..3 and the official head's unused
        conv_seg): a checkpoint without them still loads (`start_new_parts` then sets them)."""
        return frozenset()

    def start_new_parts(self, new_keys: Sequence[str]) -> str | None:
        """After a checkpoint of another architecture was loaded by matching names, `new_keys`
        were left as initialised: set them so the model starts where the checkpoint was, if the
        family knows how. Returns a note saying what it did, or None."""
        return None

    def forward_train(self, frames: torch.Tensor) -> dict[str, Any]:
        """The training forward of a clip (B, T, 3, H, W), target last: {"logits": the target's
        logits, "aux": [(aux logits, loss weight)] of the target, "frame_logits": per-frame logits
        of every clip frame (B*T, K, h, w) or None, "frame_weight": their loss weight, and
        optionally "main_weight": the target logits' loss weight (default 1)}."""
        logits = self.forward_clip(frames)
        aux = [(a, float(self.aux_weight)) for a in self.aux_logits] if self.aux_weight else []
        return {"logits": logits, "aux": aux, "frame_logits": None, "frame_weight": 0.0}

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        """Per-frame logits (B, K, h, w) for a batch of frames (B, 3, H, W)."""
        raise NotImplementedError

    def forward_clip(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits of the last frame of each clip (B, T, 3, H, W). Per-frame models ignore the rest."""
        if frames.dim() != 5:
            raise ValueError(f"forward_clip expects (B, T, 3, H, W), got {tuple(frames.shape)}")
        return self.forward_frame(frames[:, -1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() == 4:
            return self.forward_frame(frames)
        return self.forward_clip(frames)

    def new_session(self) -> "Session":
        return PerFrameSession(self)


class Session:
    """Streaming inference state for one video. `step` is called once per frame, in order."""

    def __init__(self, model: Segmentor) -> None:
        self.model = model
        self.frame_index = 0

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step_many(self, frames: torch.Tensor) -> torch.Tensor:
        """m consecutive frames of this (single) video, (m, 3, H, W) -> logits (m, K, h, w).

        Micro-batching: models override it to run their per-frame part (backbone, decoder) as one
        batch of m while the temporal part still goes frame by frame, in order. Equals m calls of
        `step` up to floating-point rounding (a batched kernel may sum in another order)."""
        return torch.cat([self.step(f.unsqueeze(0)) for f in frames])

    def reset(self) -> None:
        """Forget every cached frame (a new video, or a shot cut: attending to another shot's
        features is wrong). The next `step` / `step_many` then returns exactly what a fresh
        `model.new_session()` returns for the same frames (tested per family)."""
        self.frame_index = 0


class PerFrameSession(Session):
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        self.frame_index += 1
        return self.model.forward_frame(frame)

    def step_many(self, frames: torch.Tensor) -> torch.Tensor:
        self.frame_index += frames.shape[0]
        return self.model.forward_frame(frames)
