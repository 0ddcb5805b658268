"""What every architecture exposes: a clip forward pass and a streaming session.

* `forward_clip(frames)` takes a clip (B, T, 3, H, W) of normalised frames in time order, target
  last, and returns the target's logits (B, K, H/s, W/s) at the model's output stride s. This is the
  training / evaluation entry point.
* `new_session()` returns a `Session` whose `step(frame)` takes one normalised frame (B, 3, H, W)
  at a time and returns its logits. A session keeps only what later frames need (cached backbone
  features), so each frame's backbone runs exactly once. For the same frames, a session's output
  equals `forward_clip` on the frame window the architecture would pick.

Per-frame models are the T=1 case: the session just runs the model on each frame.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn


class Segmentor(nn.Module):
    temporal: ClassVar[bool] = False
    output_stride: ClassVar[int] = 4
    size_divisor: ClassVar[int] = 32

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        # Filled in by the registry so a model can be saved and rebuilt by name.
        self.arch_name: str = ""
        self.arch_options: dict[str, Any] = {}

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
        self.frame_index = 0


class PerFrameSession(Session):
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        self.frame_index += 1
        return self.model.forward_frame(frame)

    def step_many(self, frames: torch.Tensor) -> torch.Tensor:
        self.frame_index += frames.shape[0]
        return self.model.forward_frame(frames)
