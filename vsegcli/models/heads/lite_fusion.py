"""A light multi-scale fusion decoder for small CNN encoders (used by `effl0`).

Design (our choice; no reference decoder exists for EfficientNet-Lite0 + STT): SegFormer's
all-MLP idea at output stride 8. The stride-8, 16 and 32 encoder features are each projected to
`embed_dim` channels by a 1x1 conv-BN-ReLU, the coarser two are upsampled bilinearly to stride 8,
the three are concatenated and fused by a 1x1 conv-BN-ReLU, then a 3x3 conv-BN-ReLU adds the
spatial context a pure 1x1 stack lacks. The fused stride-8 map is where STT attaches; the
classifier after it is dropout + 1x1 conv. Stride 8 (not 4) keeps STT's windows the same size in
pixels as for the stride-8 PSPNet/BiSeNet bases and the decoder cheap (~0.3 M parameters).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from vsegcli.models.heads.segformer_head import ConvBNReLU, resize


class LiteFusionHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(ConvBNReLU(c, embed_dim) for c in in_channels)
        self.fuse_conv = ConvBNReLU(len(in_channels) * embed_dim, embed_dim)
        self.refine = ConvBNReLU(embed_dim, embed_dim, kernel=3, padding=1)
        self.dropout = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(embed_dim, num_classes, 1)
        self.channels = embed_dim

    def fuse(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """Features finest first (stride 8, 16, 32) -> fused map at the finest stride."""
        size = feats[0].shape[-2:]
        parts = [resize(lat(f), size) for lat, f in zip(self.lateral, feats)]
        return self.refine(self.fuse_conv(torch.cat(parts, dim=1)))

    def classify(self, fused: torch.Tensor) -> torch.Tensor:
        return self.cls(self.dropout(fused))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classify(self.fuse(feats))
