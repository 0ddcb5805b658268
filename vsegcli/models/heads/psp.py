"""PSPNet decoder: pyramid pooling (bins 1, 2, 3, 6) + a 3x3 bottleneck + a 1x1 classifier.

Layout per the semseg/ETC PSPNet-18 (reference §3.2): each pyramid branch is adaptive average
pooling -> 1x1 conv-BN-ReLU to in/4 channels -> bilinear upsample; the branches are concatenated
with the input (2x in channels) and reduced by a 3x3 conv-BN-ReLU (256 ch for ResNet-18/34,
512 for ResNet-50/101), then dropout + 1x1 conv to classes. `fuse()` returns the bottleneck
output — the per-pixel feature the classifier sees, where STT attaches — and `classify()` the rest.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.models.heads.segformer_head import ConvBNReLU


class PyramidPooling(nn.Module):
    def __init__(self, in_ch: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.bins = tuple(bins)
        reduced = in_ch // len(self.bins)
        self.stages = nn.ModuleList(ConvBNReLU(in_ch, reduced) for _ in self.bins)
        self.out_channels = in_ch + reduced * len(self.bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        parts = [x]
        for b, stage in zip(self.bins, self.stages):
            y = stage(F.adaptive_avg_pool2d(x, b))
            parts.append(F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return torch.cat(parts, dim=1)


class PSPHead(nn.Module):
    def __init__(self, in_ch: int, channels: int, num_classes: int, dropout: float = 0.1,
                 bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_ch, bins)
        self.bottleneck = ConvBNReLU(self.ppm.out_channels, channels, kernel=3, padding=1)
        self.dropout = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)
        self.channels = channels

    def fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(self.ppm(x))

    def classify(self, feature: torch.Tensor) -> torch.Tensor:
        return self.cls(self.dropout(feature))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.fuse(x))


class FCNHead(nn.Module):
    """The training-only auxiliary head: 3x3 conv-BN-ReLU, dropout, 1x1 conv to classes."""

    def __init__(self, in_ch: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, channels, kernel=3, padding=1)
        self.dropout = nn.Dropout2d(dropout)
        self.cls = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.dropout(self.conv(x)))
