"""MRCFA (Sun et al., ECCV 2022): SegFormer + cross-frame affinities, `mrcfa-b0` ... `mrcfa-b5`.

A target frame t attends to the reference frames t-9, t-6, t-3 (`mrcfa_reference_indices`).
The model splits into two parts so a streaming session can run each frame's expensive part once:

* per frame: MiT backbone + SegFormer fuse -> `FrameFeatures` (c2, c3, c4, fused `_c` at
  strides 4 and 8); `reference_features` reduces what a *later* target needs from this frame
  (projected stride-32 keys and `sr1_feat` values, about 1.1 MiB per frame for B0 at 480x864).
* per target: `MRCFAHead.temporal(target, references)` -> logits at stride 4.

Parameter names follow the official checkpoint (`decode_head.deco4.smalldecoder.1`,
`decode_head.hypercorre_module.*`, `decode_head.sr2`, ...). The training-only parts are built too,
so an official checkpoint loads with nothing dropped and fine-tuning starts where its authors
stopped: `deco1..deco3` (each classifies one reference's aggregated feature; training loss only)
and, in the official MiT head, the base class's never-used `conv_seg` (kept frozen). Inference
never reads them (`training_only_keys`); a checkpoint without them (vseg's before they existed)
still loads, with deco1..3 started as copies of deco4.

Training (`forward_train`, the official objective): 0.5 x CE of the per-frame logits of all 4
frames against their own labels + CE of the four outputs deco1(agg_1), deco2(agg_2), deco3(agg_3),
deco4(mean_r agg_r + target) against the target's labels (one CE over the four, i.e. their mean).
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.errors import VsegError
from vsegcli.models.backbones.efficientnet_lite import EfficientNetLite0
from vsegcli.models.backbones.mit import MIT_CONFIGS, mit
from vsegcli.models.base import Segmentor, Session
from vsegcli.models.heads.lite_fusion import LiteFusionHead
from vsegcli.models.heads.segformer_head import SegFormerHead, resize
from vsegcli.models.registry import register_architecture
from vsegcli.models.temporal.cross_frame_affinity import (
    DEFAULT_HPN_UNITS,
    DEFAULT_KEEP_RATIO,
    HyperCorrelation,
    ReferenceKeys,
)

MRCFA_DILATION = (-9, -6, -3)
MRCFA_EMBED_DIM = 256  # decoder width of every official MRCFA config, B2/B5 included
MRCFA_CONV_SEG_CHANNELS = 128  # `channels` of the official configs: the unused conv_seg's input
# Keys inference never reads (`MRCFA.training_only_keys`).
_TRAINING_ONLY = ("decode_head.conv_seg.", "decode_head.deco1.", "decode_head.deco2.", "decode_head.deco3.")
# Official defaults by backbone: keep 80% of the reference tokens for B0, 50% otherwise; a
# two-unit hypercorrelation pyramid for B1 only.
_KEEP_RATIO_BY_VARIANT = {"b0": 0.8}
_HPN_UNITS_BY_VARIANT = {"b1": 2}
# Training: the per-frame SegFormer logits of every clip frame are scored too, at this weight.
MRCFA_FRAME_LOSS_WEIGHT = 0.5


def default_keep_ratio(variant: str) -> float:
    return _KEEP_RATIO_BY_VARIANT.get(variant, DEFAULT_KEEP_RATIO)


def default_hpn_units(variant: str) -> int:
    return _HPN_UNITS_BY_VARIANT.get(variant, DEFAULT_HPN_UNITS)


# Hard-coded early-frame clips of the official VSPW test set (`CustomDataset_video2`).
_EARLY_REFERENCES = {3: [0, 1, 2], 4: [0, 2, 3], 5: [0, 2, 4], 6: [0, 2, 4], 7: [0, 3, 5], 8: [0, 3, 6]}


def check_dilation(dilation: Sequence[int]) -> tuple[int, ...]:
    d = tuple(sorted(int(x) for x in dilation))
    if len(d) != 3 or len(set(d)) != 3 or d[-1] >= 0:
        raise VsegError(f"MRCFA takes three distinct negative reference offsets, e.g. -9 -6 -3; got {list(dilation)}")
    return d


def mrcfa_reference_indices(t: int, dilation: Sequence[int] = MRCFA_DILATION) -> list[int]:
    """Reference frames (oldest first) for target frame `t`.

    Official offsets (-9, -6, -3): none for t < 3 (per-frame output), then the official test set's
    early-frame table. Other offsets (e.g. (-3, -2, -1) for a 1 Hz labelled video like CamVid):
    none for t = 0, then offsets before the video start repeat frame 0 — as the training clips do."""
    if t < 0:
        raise ValueError(f"frame index must be >= 0, got {t}")
    if tuple(dilation) != MRCFA_DILATION:
        return [max(0, t + d) for d in dilation] if t > 0 else []
    if t < 3:
        return []
    if t in _EARLY_REFERENCES:
        return list(_EARLY_REFERENCES[t])
    return [t + d for d in MRCFA_DILATION]


def _check_frame_size(h: int, w: int) -> None:
    # All three reference scales must land on the same stride-32 grid as c4.
    if h % 32 or w % 32:
        raise VsegError(
            f"MRCFA needs frame sizes divisible by 32, got {h}x{w}; resize frames to a multiple of 32 "
            "first (the official pipeline resizes 480x853 to 480x864)."
        )


class FrameFeatures(NamedTuple):
    """Per-frame results the temporal part needs from a target frame."""

    c2: torch.Tensor  # (B, C2, H/8, W/8)
    c3: torch.Tensor  # (B, C3, H/16, W/16)
    c4: torch.Tensor  # (B, C4, H/32, W/32)
    fused: torch.Tensor  # (B, E, H/4, W/4): SegFormer's `_c`
    fused8: torch.Tensor  # (B, E, H/8, W/8): `_c` resized to stride 8


class ReferenceFeatures(NamedTuple):
    """What a later target needs from a reference frame: stride-32 tokens, (B, [R,] N32, C)."""

    keys: ReferenceKeys  # k1(sr2(c2)), k2(sr3(c3)), k3(c4)
    values: torch.Tensor  # sr1_feat(fused8) tokens, (.., N32, E)


def stack_references(refs: Sequence[ReferenceFeatures]) -> ReferenceFeatures:
    """Per-frame (B, N, C) reference features -> (B, R, N, C), in the given order."""
    keys = ReferenceKeys(*(torch.stack(parts, dim=1) for parts in zip(*(r.keys for r in refs))))
    return ReferenceFeatures(keys, torch.stack([r.values for r in refs], dim=1))


class SmallDecoder(nn.Module):
    """`small_decoder2` upstream: Dropout2d then a 1x1 classifier (keys `smalldecoder.1.*`)."""

    def __init__(self, embed_dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.smalldecoder = nn.Sequential(nn.Dropout2d(dropout), nn.Conv2d(embed_dim, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.smalldecoder(x)


class CrossFrameAffinityMixin:
    """MRCFA's temporal part on a per-frame decode head: deco4, the cross-frame affinity module and
    the stride-32 reducers. The head class supplies `fuse` / `classify` and `frame_features`."""

    def add_temporal(self, in_channels: Sequence[int], embed_dim: int, num_classes: int, dropout: float,
                     hpn_units: int, keep_ratio: float) -> None:
        _, c2, c3, _ = in_channels
        # deco1..3: training-only (one reference each); deco4: the output.
        self.deco1 = SmallDecoder(embed_dim, num_classes, dropout)
        self.deco2 = SmallDecoder(embed_dim, num_classes, dropout)
        self.deco3 = SmallDecoder(embed_dim, num_classes, dropout)
        self.deco4 = SmallDecoder(embed_dim, num_classes, dropout)
        self.hypercorre_module = HyperCorrelation(in_channels, hpn_units, keep_ratio)
        self.sr2 = nn.Conv2d(c2, c2, 4, stride=4)  # stride 8 -> 32
        self.sr3 = nn.Conv2d(c3, c3, 2, stride=2)  # stride 16 -> 32
        self.sr1_feat = nn.Conv2d(embed_dim, embed_dim, 4, stride=4)  # fused stride 8 -> 32 (values)

    def start_from_per_frame(self) -> None:
        """After loading a per-frame checkpoint: deco4 = the per-frame classifier and zero values,
        so the temporal output starts equal to the per-frame output (and training moves from there)."""
        cls = self.classifier()
        for deco in self.decoders():
            deco.smalldecoder[1].load_state_dict(cls.state_dict())
        nn.init.zeros_(self.sr1_feat.weight)
        nn.init.zeros_(self.sr1_feat.bias)

    def decoders(self) -> tuple[SmallDecoder, SmallDecoder, SmallDecoder, SmallDecoder]:
        return self.deco1, self.deco2, self.deco3, self.deco4

    def start_aux_from_deco4(self) -> None:
        """deco1..3 absent from a checkpoint: start them as copies of the trained deco4."""
        for deco in self.decoders()[:3]:
            deco.load_state_dict(self.deco4.state_dict())

    def reference_features(self, f: FrameFeatures) -> ReferenceFeatures:
        keys = self.hypercorre_module.reference_keys(self.sr2(f.c2), self.sr3(f.c3), f.c4)
        return ReferenceFeatures(keys, self.sr1_feat(f.fused8).flatten(2).transpose(1, 2))

    def attention(self, target: FrameFeatures, refs: ReferenceFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Kept reference values (B, R, s, E), their attention (B, R, s, N8) and the kept-token mask."""
        aff = self.hypercorre_module(target.c2, target.c3, target.c4, refs.keys)
        logits = aff.logits  # (B, R, s, N8); on CPU a view of (B, N8, R, s) memory (token-major)
        if logits.stride(2) == 1:  # softmax along the contiguous axis, no transposing copy
            attn = logits.permute(0, 3, 1, 2).softmax(-1).permute(0, 2, 3, 1)
        else:
            attn = logits.softmax(dim=2)  # over the kept tokens of each reference separately
        index = aff.index.unsqueeze(-1).expand(-1, -1, -1, refs.values.shape[-1])
        values = refs.values.gather(2, index)  # (B, R, s, E)
        return values, attn, aff.mask

    def temporal(self, target: FrameFeatures, refs: ReferenceFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Target logits (B, K, h, w) at the fused map's stride and the kept-token mask (B, R, N32)."""
        values, attn, mask = self.attention(target, refs)
        # In training deco4's dropout acts on the E-channel mix, so the mix must exist.
        out = (self.classify_direct if self.training else self.classify_mixed)(values, attn, target.fused8)
        return resize(out, target.fused.shape[-2:]), mask

    def temporal_train(self, target: FrameFeatures, refs: ReferenceFeatures) -> list[torch.Tensor]:
        """The official training outputs out1..out4 (B, K, h, w) at the fused map's stride:
        deco_r(agg_r) for each of the 3 references (oldest first) and deco4(mean_r agg_r + target)."""
        values, attn, _ = self.attention(target, refs)
        b, r = values.shape[:2]
        if r != 3:
            raise ValueError(f"MRCFA trains on 3 references, got {r}")
        agg = (values.transpose(-2, -1) @ attn).reshape(b, r, -1, *target.fused8.shape[-2:])
        outs = [deco(agg[:, i]) for i, deco in enumerate(self.decoders()[:3])]
        outs.append(self.deco4(agg.mean(dim=1) + target.fused8))
        return [resize(o, target.fused.shape[-2:]) for o in outs]

    def classify_direct(self, values: torch.Tensor, attn: torch.Tensor, fused8: torch.Tensor) -> torch.Tensor:
        """deco4(mean_r(V_r^T·A_r) + fused8) as the official code computes it: values (B, R, s, E),
        attention (B, R, s, N8), fused8 (B, E, h, w) -> (B, K, h, w)."""
        b, r = values.shape[:2]
        agg = (values.transpose(-2, -1) @ attn).reshape(b, r, -1, *fused8.shape[-2:])
        return self.deco4(agg.mean(dim=1) + fused8)

    def classify_mixed(self, values: torch.Tensor, attn: torch.Tensor, fused8: torch.Tensor) -> torch.Tensor:
        """deco4(mean_r(V_r^T·A_r) + fused8) in eval mode, classifying the values before mixing.

        deco4 is dropout (identity in eval) + a 1x1 conv W, so W·(V^T·A) = (W·V^T)·A: mixing
        K-channel class scores instead of E-channel values makes the head's largest product E/K
        times smaller (256/19 = 13x for SegFormer-B0 at 19 classes) and never materialises the
        (B, R, E, N8) mix. Equal to the direct form up to float rounding (tested)."""
        conv = self.deco4.smalldecoder[1]
        scores = values @ conv.weight.flatten(1).t()  # (B, R, s, K)
        mixed = (scores.transpose(-2, -1) @ attn).mean(dim=1)  # (B, K, N8)
        b, _, h, w = fused8.shape
        return mixed.view(b, -1, h, w) + F.conv2d(fused8, conv.weight, conv.bias)


class MRCFAHead(CrossFrameAffinityMixin, SegFormerHead):
    """The official head: SegFormer head (fused map at stride 4) + the temporal part."""

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int, dropout: float = 0.1,
                 hpn_units: int = DEFAULT_HPN_UNITS, keep_ratio: float = DEFAULT_KEEP_RATIO) -> None:
        super().__init__(in_channels, embed_dim, num_classes, dropout)
        # The official head's base class builds `conv_seg` (channels=128 -> K) and never uses it,
        # not even in training; kept (frozen) only so official checkpoints load with nothing dropped.
        self.conv_seg = nn.Conv2d(MRCFA_CONV_SEG_CHANNELS, num_classes, 1).requires_grad_(False)
        self.add_temporal(in_channels, embed_dim, num_classes, dropout, hpn_units, keep_ratio)

    def classifier(self) -> nn.Conv2d:
        return self.linear_pred

    def frame_features(self, feats: Sequence[torch.Tensor]) -> FrameFeatures:
        _, c2, c3, c4 = feats
        fused = self.fuse(feats)
        h, w = fused.shape[-2:]
        return FrameFeatures(c2, c3, c4, fused, resize(fused, (h // 2, w // 2)))


class MRCFALiteHead(CrossFrameAffinityMixin, LiteFusionHead):
    """`effl0`'s fusion decoder (fused map at stride 8, from the stride 8/16/32 features) + the
    temporal part; the fused map is its own stride-8 map."""

    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int, dropout: float = 0.1,
                 hpn_units: int = DEFAULT_HPN_UNITS, keep_ratio: float = DEFAULT_KEEP_RATIO) -> None:
        super().__init__(in_channels[1:], embed_dim, num_classes, dropout)
        self.add_temporal(in_channels, embed_dim, num_classes, dropout, hpn_units, keep_ratio)

    def classifier(self) -> nn.Conv2d:
        return self.cls

    def frame_features(self, feats: Sequence[torch.Tensor]) -> FrameFeatures:
        _, c2, c3, c4 = feats
        fused = self.fuse(feats[1:])
        return FrameFeatures(c2, c3, c4, fused, fused)


class MRCFAOutputs(NamedTuple):
    logits: torch.Tensor  # the temporal (deco4) prediction
    frame_logits: torch.Tensor  # the per-frame SegFormer prediction of the target
    topk_mask: torch.Tensor  # (B, R, N32) bool: reference tokens kept by the top-k selection


class MRCFA(Segmentor):
    temporal = True
    output_stride = 4
    num_clips = 4  # 3 references + the target; other clip lengths fall back to per-frame output
    per_frame_part = "encode"  # backbone + fuse (c2/c3/c4); the affinities stay in torch
    fixed_offsets = True  # the references are exactly t + dilation
    trains_on_clip_labels = True  # every clip frame's per-frame logits are scored in training
    frame_loss_weight = MRCFA_FRAME_LOSS_WEIGHT
    train_reverse_prob = 0.5  # official: the training video is reversed with p = 0.5

    backbone: nn.Module
    decode_head: MRCFAHead | MRCFALiteHead

    def __init__(self, num_classes: int, dilation: Sequence[int] = MRCFA_DILATION) -> None:
        super().__init__(num_classes)
        self.dilation = check_dilation(dilation)

    def clip_offsets(self) -> tuple[int, ...]:
        return tuple(self.dilation)

    @property
    def history(self) -> int:
        return -self.dilation[0]  # frames a session keeps: the oldest reference

    @property
    def priming_frames(self) -> int:
        # Steady state starts at the first frame with references (official offsets: t = 3).
        return next(t for t in range(self.history + 1) if self.reference_indices(t))

    def reference_indices(self, t: int) -> list[int]:
        return mrcfa_reference_indices(t, self.dilation)

    def encode(self, images: torch.Tensor) -> FrameFeatures:
        """The per-frame part: backbone + decoder fuse, for a batch of frames (B, 3, H, W)."""
        return self.decode_head.frame_features(self.backbone(images))

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_head.classify(self.encode(images).fused)

    def _encode_clip(self, frames: torch.Tensor) -> tuple[FrameFeatures, ReferenceFeatures]:
        return self._split_clip(self._encode_frames(frames), *frames.shape[:2])

    def _encode_frames(self, frames: torch.Tensor) -> FrameFeatures:
        """One batched backbone pass over all frames of the clips (B, T, 3, H, W) -> (B*T, ...)."""
        t = frames.shape[1]
        if t != self.num_clips:
            raise ValueError(f"MRCFA clips have {self.num_clips} frames (3 references + target), got {t}")
        _check_frame_size(*frames.shape[-2:])
        return self.encode(frames.flatten(0, 1))

    def _split_clip(self, feats: FrameFeatures, b: int, t: int) -> tuple[FrameFeatures, ReferenceFeatures]:
        """Per-frame features (B*T, ...) -> the targets' features and their references' reductions."""
        per_clip = [x.unflatten(0, (b, t)) for x in feats]
        target = FrameFeatures(*(x[:, -1] for x in per_clip))
        refs = self.decode_head.reference_features(FrameFeatures(*(x[:, :-1].flatten(0, 1) for x in per_clip)))
        keys = ReferenceKeys(*(k.unflatten(0, (b, t - 1)) for k in refs.keys))
        return target, ReferenceFeatures(keys, refs.values.unflatten(0, (b, t - 1)))

    def forward_clip(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, 3, H, W) in time order, target last: T=4 -> MRCFA logits; T<4 -> the
        target's per-frame logits (the official early-frame fallback)."""
        if frames.dim() != 5:
            raise ValueError(f"forward_clip expects (B, T, 3, H, W), got {tuple(frames.shape)}")
        if frames.shape[1] < self.num_clips:
            return self.forward_frame(frames[:, -1])
        target, refs = self._encode_clip(frames)
        return self.decode_head.temporal(target, refs)[0]

    def clip_outputs(self, frames: torch.Tensor) -> MRCFAOutputs:
        """Everything the official head computes at test time for a 4-frame clip (for checks/debugging)."""
        target, refs = self._encode_clip(frames)
        logits, mask = self.decode_head.temporal(target, refs)
        return MRCFAOutputs(logits, self.decode_head.classify(target.fused), mask)

    def training_only_keys(self) -> frozenset[str]:
        return frozenset(k for k in self.state_dict() if k.startswith(_TRAINING_ONLY))

    def start_new_parts(self, new_keys: Sequence[str]) -> str | None:
        if any(k.startswith("decode_head.deco4.") for k in new_keys):
            self.decode_head.start_from_per_frame()  # a per-frame checkpoint: start at its predictions
            return ("MRCFA: deco1..deco4 = the per-frame classifier, value projection zero "
                    "(starts at the per-frame output)")
        if any(k.startswith(("decode_head.deco1.", "decode_head.deco2.", "decode_head.deco3.")) for k in new_keys):
            self.decode_head.start_aux_from_deco4()
            return "MRCFA: deco1..deco3 (training-only) start as copies of deco4"
        return None

    def forward_train(self, frames: torch.Tensor) -> dict[str, Any]:
        """The official training outputs from one batched encode of all frames (module docstring):
        "logits" = deco4's output, "aux" = deco1..deco3's outputs, and every frame's per-frame logits.
        With aux weight 1 (compute_loss) the target terms sum to 4 x the official mean over out1..4;
        the aux weight 1/4 on all four (main included via `main_weight`) keeps the official scale."""
        b, t = frames.shape[:2]
        feats = self._encode_frames(frames)
        frame_logits = self.decode_head.classify(feats.fused)  # before the temporal head: the dropout RNG order
        *aux, logits = self.decode_head.temporal_train(*self._split_clip(feats, b, t))
        w = 1.0 / len(self.decode_head.decoders())
        return {"logits": logits, "main_weight": w, "aux": [(a, w) for a in aux],
                "frame_logits": frame_logits, "frame_weight": self.frame_loss_weight}

    def new_session(self) -> MRCFASession:
        return MRCFASession(self)


class MRCFAMiT(MRCFA):
    """The paper's model: MiT backbone + SegFormer head + the temporal part (`mrcfa-b0..b5`)."""

    def __init__(self, num_classes: int, variant: str = "b0", embed_dim: int = MRCFA_EMBED_DIM,
                 keep_ratio: float | None = None, hpn_units: int | None = None,
                 drop_path_rate: float = 0.1, dropout: float = 0.1, dilation: Sequence[int] = MRCFA_DILATION) -> None:
        super().__init__(num_classes, dilation)
        keep_ratio = keep_ratio if keep_ratio is not None else default_keep_ratio(variant)
        hpn_units = hpn_units if hpn_units is not None else default_hpn_units(variant)
        self.backbone = mit(variant, drop_path_rate)
        self.decode_head = MRCFAHead(self.backbone.out_channels, embed_dim, num_classes, dropout,
                                     hpn_units, keep_ratio)

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(images))  # SegFormer exactly (no stride-8 copy)


class MRCFAEffL0(MRCFA):
    """MRCFA's temporal part on `effl0` (`mrcfa-effl0`): EfficientNet-Lite0 c2/c3/c4 (40/112/320
    ch at strides 8/16/32) give the affinities, the 128-ch stride-8 fused map the values; logits
    at stride 8. Parameter names of `effl0` carry over, so an effl0 checkpoint initialises it."""

    output_stride = 8

    def __init__(self, num_classes: int, embed_dim: int = 128, keep_ratio: float = DEFAULT_KEEP_RATIO,
                 hpn_units: int = DEFAULT_HPN_UNITS, dropout: float = 0.1,
                 dilation: Sequence[int] = MRCFA_DILATION) -> None:
        super().__init__(num_classes, dilation)
        self.backbone = EfficientNetLite0()
        self.decode_head = MRCFALiteHead(self.backbone.out_channels, embed_dim, num_classes, dropout,
                                         hpn_units, keep_ratio)


class MRCFASession(Session):
    """Streaming MRCFA: each frame's backbone, fuse and reference reduction run exactly once.

    A ring buffer keeps the `ReferenceFeatures` of the last `history` frames (9 for t-9; the
    official early-frame exceptions reach back to frame 0 at most from t=8). Output at frame t
    equals `forward_clip` on frames `model.reference_indices(t) + [t]`. Inference only (no autograd).
    """

    def __init__(self, model: MRCFA) -> None:
        super().__init__(model)
        self.cache: dict[int, ReferenceFeatures] = {}
        self._frame_shape: tuple[int, ...] | None = None

    @torch.no_grad()
    def step(self, frame: torch.Tensor) -> torch.Tensor:
        """The next frame (B, 3, H, W) — one frame of each of B videos stepped together."""
        self._check_shape(frame)
        head = self.model.decode_head
        t = self.frame_index
        target = self.model.encode(frame)
        ref_ids = self.model.reference_indices(t)
        if ref_ids:
            logits, _ = head.temporal(target, stack_references([self.cache[i] for i in ref_ids]))
        else:
            logits = head.classify(target.fused)
        self.cache[t] = head.reference_features(target)
        self.cache.pop(t - self.model.history, None)  # frame t+1 reaches back to t+1-history at most
        self.frame_index += 1
        return logits

    @torch.no_grad()
    def step_many(self, frames: torch.Tensor) -> torch.Tensor:
        """m consecutive frames: one batched encode and reference reduction, then every frame's
        temporal head in one batch too (MRCFA's head reads only earlier frames' cached features,
        never earlier outputs, so nothing in it is sequential)."""
        self._check_shape(frames[:1])
        head = self.model.decode_head
        t0 = self.frame_index
        target = self.model.encode(frames)
        refs = head.reference_features(target)
        for i in range(frames.shape[0]):
            self.cache[t0 + i] = ReferenceFeatures(ReferenceKeys(*(k[i:i + 1] for k in refs.keys)),
                                                   refs.values[i:i + 1])
        ids = [self.model.reference_indices(t0 + i) for i in range(frames.shape[0])]
        temporal = [i for i, r in enumerate(ids) if r]
        logits = head.classify(target.fused) if len(temporal) < len(ids) else None
        if temporal:
            pick = torch.tensor(temporal, device=frames.device)
            stacked = [stack_references([self.cache[j] for j in ids[i]]) for i in temporal]
            refs_t = ReferenceFeatures(
                ReferenceKeys(*(torch.cat(parts) for parts in zip(*(r.keys for r in stacked)))),
                torch.cat([r.values for r in stacked]))
            out, _ = head.temporal(FrameFeatures(*(x.index_select(0, pick) for x in target)), refs_t)
            logits = out if logits is None else logits.index_copy(0, pick, out.to(logits.dtype))
        self.frame_index += frames.shape[0]
        for t in range(t0, self.frame_index):
            self.cache.pop(t - self.model.history, None)  # frame t+1 reaches back to t+1-history at most
        return logits

    def _check_shape(self, frame: torch.Tensor) -> None:
        if self._frame_shape is None:
            _check_frame_size(*frame.shape[-2:])
            self._frame_shape = tuple(frame.shape)
        elif tuple(frame.shape) != self._frame_shape:
            raise VsegError(
                f"frame shape changed mid-video from {self._frame_shape} to {tuple(frame.shape)}; "
                "start a new session (or call reset()) for a new video."
            )

    def reset(self) -> None:
        super().reset()
        self.cache.clear()
        self._frame_shape = None


def _register(variant: str) -> None:
    cfg = MIT_CONFIGS[variant]
    keep_ratio = default_keep_ratio(variant)
    hpn_units = default_hpn_units(variant)

    @register_architecture(
        f"mrcfa-{variant}", family="mrcfa", temporal=True, baseline=f"segformer-{variant}",
        description=f"MRCFA on MiT-{variant.upper()} (depths {list(cfg.depths)}), references t-9, t-6, t-3",
        variant=variant, embed_dim=MRCFA_EMBED_DIM, keep_ratio=keep_ratio, hpn_units=hpn_units,
    )
    def build(num_classes: int, **options) -> MRCFA:
        return MRCFAMiT(num_classes, **options)


for _v in MIT_CONFIGS:
    _register(_v)


@register_architecture(
    "mrcfa-effl0", family="mrcfa", temporal=True, baseline="effl0",
    description="MRCFA's cross-frame affinities on EfficientNet-Lite0 + fusion decoder (stride 8); "
                "references t-9, t-6, t-3 (option dilation)",
    embed_dim=128, keep_ratio=DEFAULT_KEEP_RATIO, hpn_units=DEFAULT_HPN_UNITS, dilation=list(MRCFA_DILATION),
)
def _build_effl0(num_classes: int, **options) -> MRCFA:
    return MRCFAEffL0(num_classes, **options)
