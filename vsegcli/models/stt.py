"""STT temporal families: a per-frame base with the Sparse Temporal Transformer between its
`features` and its `head` (`stt-bisenet-r18`, `stt-pspnet-r18`, `stt-segformer-b0`, `stt-effl0`, ...).

Each temporal class is `STTMixin` + its per-frame class, so the base keeps its parameter names
(`backbone.*`, `decode_head.*`, ...) and only `stt.*` is new: a per-frame checkpoint loads into
the temporal model (non-strict, missing `stt.*` only) and, since STT's output projection starts at
zero, the fresh temporal model reproduces it exactly.

Insertion points (the map `features()` returns): BiSeNet — the FFM output (256 ch, stride 8);
PSPNet — the 3x3 bottleneck output (256/512 ch, stride 8; after, not before, the pyramid pooling
so d_v stays 256/512 rather than 1024/4096); EfficientNet-Lite0 — the fused decoder map (128 ch,
stride 8); SegFormer — the fused all-MLP map before the classifier. SegFormer's fused map is at
stride 4; by default (`stt_stride=8`) STT runs on its 2x2 average-pooled version and the update
(STT output minus input, zero where no query was selected) is upsampled bilinearly and added back:
4x fewer positions, and the same key windows in pixels as the stride-8 CNN bases.

Clip and stream agree: `forward_clip(frames)` uses the last frame as target and the up-to-T frames
before it as keys (nearest last in the clip, fewer at video start); a session caches each frame's
K and V (not images or backbone features) in a ring buffer of T, so each backbone runs once. In
eval mode `forward_clip` encodes frame by frame, as a session does, so both give the same numbers
(a batched convolution differs from a per-frame one by rounding, which could flip a near-tied
query selection); in training it encodes all frames in one batched pass.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from vsegcli.errors import VsegError
from vsegcli.models.backbones.mit import MIT_CONFIGS
from vsegcli.models.base import Segmentor, Session
from vsegcli.models.bisenet import BISENET_DEPTHS, BiSeNet
from vsegcli.models.effl0 import EffL0
from vsegcli.models.heads.segformer_head import resize
from vsegcli.models.pspnet import PSP_DEPTHS, PSPNet
from vsegcli.models.registry import register_architecture
from vsegcli.models.segformer import SEGFORMER_EMBED_DIM, SegFormer
from vsegcli.models.temporal.sparse_attention import KeyValue, SparseTemporalTransformer

# The paper's configuration: T = 7 key frames, s = 1, e = 5, eps = 1 (its key-size ablation, 527
# keys per query, holds only for T = 7). A checkpoint stores its own T in its metadata, so one
# run with another T keeps it (the shipped stt-effl0-camvid: trained with T = 7, runs with T = 3).
STT_DEFAULTS: dict[str, Any] = dict(
    num_frames=7, radius=5, query_ratio=0.5, s=1, e=5, eps=1, key_dim=64, value_dim=None,
)


class FrameModel(Protocol):
    """What a per-frame base offers STT: the insertion feature and the head after it."""

    feature_channels: int

    def features(self, images: torch.Tensor) -> torch.Tensor: ...

    def head(self, feature: torch.Tensor) -> torch.Tensor: ...


class STTMixin:
    """Adds `self.stt` to a per-frame base class and the clip / streaming passes through it."""

    temporal = True
    per_frame_part = "features"  # backbone + decoder fuse; STT and the head stay in torch
    stt: SparseTemporalTransformer

    def __init__(self, num_classes: int, *, num_frames: int = 7, radius: int = 5, query_ratio: float = 0.5,
                 s: int = 1, e: int = 5, eps: int = 1, key_dim: int = 64, value_dim: int | None = None,
                 **base_options: Any) -> None:
        super().__init__(num_classes, **base_options)  # the per-frame base
        self.stt = SparseTemporalTransformer(
            self.feature_channels, num_frames=num_frames, key_dim=key_dim, value_dim=value_dim,
            radius=radius, query_ratio=query_ratio, s=s, e=e, eps=eps,
        )

    def clip_offsets(self) -> tuple[int, ...]:
        """The T frames before the target (any gaps: STT attends to whichever frames precede it)."""
        return tuple(range(-self.stt.num_frames, 0))

    # Hooks for bases whose STT runs at another resolution than `features` (SegFormer).
    def stt_input(self, feature: torch.Tensor) -> torch.Tensor:
        return feature

    def stt_output(self, feature: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y

    def forward_clip(self, frames: torch.Tensor) -> torch.Tensor:
        """Logits of the last frame of each clip (B, n, 3, H, W), attending to up to T frames before it."""
        if frames.dim() != 5:
            raise ValueError(f"forward_clip expects (B, T, 3, H, W), got {tuple(frames.shape)}")
        b = frames.shape[0]
        n = min(frames.shape[1], self.stt.num_frames + 1)
        frames = frames[:, -n:]
        if self.training:  # one batched pass: BatchNorm sees every frame, kernels stay big
            feats = list(self.features(frames.flatten(0, 1)).unflatten(0, (b, n)).unbind(1))
            if getattr(self, "aux_logits", None):  # aux losses are for the target frame only
                self.aux_logits = [a.unflatten(0, (b, n))[:, -1] for a in self.aux_logits]
        else:  # frame by frame, exactly as a session computes them: clip and stream agree to the bit
            feats = [self.features(frames[:, i]) for i in range(n)]
        xs = [self.stt_input(f) for f in feats]
        memory = [self.stt.keys_values(x) for x in reversed(xs[:-1])]  # nearest first
        y = self.stt(xs[-1], memory)
        return self.head(self.stt_output(feats[-1], xs[-1], y))

    def new_session(self) -> "STTSession":
        return STTSession(self)


class STTSession(Session):
    """Streaming STT: a ring buffer of the last T frames' K and V; one backbone pass per frame."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__(model)
        self.memory: deque[KeyValue] = deque(maxlen=model.stt.num_frames)

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        return self._temporal(self.model.features(frame))

    def step_many(self, frames: torch.Tensor) -> torch.Tensor:
        """Backbone + decoder for all m frames in one batch; STT frame by frame; head batched."""
        m = self.model
        features = m.features(frames)
        updated = [self._temporal(f.unsqueeze(0), head=False) for f in features]
        return m.head(torch.cat(updated))

    def _temporal(self, feature: torch.Tensor, head: bool = True) -> torch.Tensor:
        m = self.model
        x = m.stt_input(feature)
        y = m.stt(x, self.memory)  # nearest first
        self.memory.appendleft(m.stt.keys_values(x))
        self.frame_index += 1
        out = m.stt_output(feature, x, y)
        return m.head(out) if head else out

    def reset(self) -> None:
        super().reset()
        self.memory.clear()


class SegFormerStages(SegFormer):
    """SegFormer split at the fused decoder map, plus where STT runs on it (stride 4 or 8)."""

    def __init__(self, num_classes: int, stt_stride: int = 8, **options: Any) -> None:
        super().__init__(num_classes, **options)
        if stt_stride not in (4, 8):
            raise VsegError(f"stt_stride must be 4 or 8 for SegFormer, got {stt_stride}")
        self.stt_stride = stt_stride
        self.feature_channels = self.decode_head.linear_fuse.conv.out_channels

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_head.fuse(self.backbone(images))

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.decode_head.classify(feature)


class STTBiSeNet(STTMixin, BiSeNet):
    pass


class STTPSPNet(STTMixin, PSPNet):
    pass


class STTEffL0(STTMixin, EffL0):
    pass


class STTSegFormer(STTMixin, SegFormerStages):
    def stt_input(self, feature: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(feature, 2) if self.stt_stride == 8 else feature

    def stt_output(self, feature: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.stt_stride == 4:
            return y
        # Only the update travels back to stride 4; it is zero where no query was selected.
        return feature + resize(y - x, feature.shape[-2:])


def _register(name: str, cls: type[Segmentor], baseline: str, description: str, **defaults: Any) -> None:
    @register_architecture(
        name, family="stt", temporal=True,
        description=description, baseline=baseline, **defaults, **STT_DEFAULTS,
    )
    def build(num_classes: int, **options: Any) -> Segmentor:
        return cls(num_classes, **options)


for _d in BISENET_DEPTHS:
    _register(f"stt-bisenet-r{_d}", STTBiSeNet, f"bisenet-r{_d}",
              f"STT on BiSeNetV1-R{_d} (FFM output, stride 8)", depth=_d)
for _d in PSP_DEPTHS:
    _register(f"stt-pspnet-r{_d}", STTPSPNet, f"pspnet-r{_d}",
              f"STT on PSPNet-R{_d} (bottleneck output, stride 8)", depth=_d)
for _v in MIT_CONFIGS:
    _register(f"stt-segformer-{_v}", STTSegFormer, f"segformer-{_v}",
              f"STT on SegFormer-{_v.upper()} (fused decoder map, attention at stride 8)",
              variant=_v, embed_dim=SEGFORMER_EMBED_DIM[_v], stt_stride=8)
_register("stt-effl0", STTEffL0, "effl0", "STT on EfficientNet-Lite0 + fusion decoder (stride 8)", embed_dim=128)
