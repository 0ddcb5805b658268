"""SegFormer's all-MLP decoder.

Each stage is projected to `embed_dim` channels by a linear layer, stages 2-4 are upsampled
bilinearly to stride 4, the maps are concatenated in the order c4, c3, c2, c1 and fused by a 1x1
conv + BN + ReLU. Parameter names follow NVlabs/mmseg (`linear_c4.proj`, `linear_fuse.conv`,
`linear_fuse.bn`, `linear_pred`).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    """A linear projection applied to every pixel of a feature map."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.proj(x.flatten(2).transpose(1, 2))
        return y.transpose(1, 2).reshape(b, -1, h, w)


class ConvBNReLU(nn.Module):
    """mmcv's ConvModule layout (`conv` without bias, `bn`, ReLU) so keys match upstream."""

    conv_bn_pairs = (("conv", "bn"),)  # foldable for inference (models/fold.py)

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 1, padding: int = 0, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.activate = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class SegFormerHead(nn.Module):
    def __init__(self, in_channels: Sequence[int], embed_dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        c1, c2, c3, c4 = in_channels
        self.linear_c4 = MLP(c4, embed_dim)
        self.linear_c3 = MLP(c3, embed_dim)
        self.linear_c2 = MLP(c2, embed_dim)
        self.linear_c1 = MLP(c1, embed_dim)
        self.linear_fuse = ConvBNReLU(4 * embed_dim, embed_dim)
        self.dropout = nn.Dropout2d(dropout)
        self.linear_pred = nn.Conv2d(embed_dim, num_classes, 1)

    def fuse(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fused stride-4 feature (`_c` upstream) before the classifier."""
        c1, c2, c3, c4 = feats
        size = c1.shape[-2:]
        parts = [
            resize(self.linear_c4(c4), size),
            resize(self.linear_c3(c3), size),
            resize(self.linear_c2(c2), size),
            self.linear_c1(c1),
        ]
        return self.linear_fuse(torch.cat(parts, dim=1))

    def classify(self, fused: torch.Tensor) -> torch.Tensor:
        return self.linear_pred(self.dropout(fused))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.classify(self.fuse(feats))
