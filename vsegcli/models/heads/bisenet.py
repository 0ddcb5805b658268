"""BiSeNetV1 parts (reference §7): spatial path, context path (ARMs + global context), FFM, heads.

* Spatial path: 7x7/2 conv 64, 3x3/2 conv 64, 3x3/2 conv 64, 1x1 conv 128 (conv-BN-ReLU), stride 8.
* Context path on a ResNet's stride-16/32 features: global-average-pooled stride-32 feature ->
  1x1 conv 512->128 (global context); ARM32 (3x3 conv 512->128, channel attention
  GAP->1x1 conv->BN->sigmoid) + context, upsample x2, 3x3 conv 128; ARM16 (256->128) + that,
  upsample x2, 3x3 conv 128 -> the stride-8 context feature (128 ch). Upsampling is nearest, to
  the next map's exact size, so inputs need not be multiples of 32.
* FFM: concat spatial (128) + context (128) -> 1x1 conv-BN-ReLU 256, channel attention
  (GAP -> 1x1 conv -> BN -> sigmoid), out = feat * att + feat. Its output is where STT attaches.
* Output head: 3x3 conv-BN-ReLU 256->256 + 1x1 conv; aux heads 3x3 conv 128->64 + 1x1 conv on the
  two context features (training only).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.models.heads.segformer_head import ConvBNReLU


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> ConvBNReLU:
    """ConvBNReLU (shared key layout) with a stride; "same" padding for odd kernels."""
    m = ConvBNReLU(in_ch, out_ch, kernel, padding=kernel // 2)
    if stride != 1:
        m.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, bias=False)
    return m


class SpatialPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(3, 64, 7, stride=2)
        self.conv2 = conv_bn_relu(64, 64, 3, stride=2)
        self.conv3 = conv_bn_relu(64, 64, 3, stride=2)
        self.conv_out = conv_bn_relu(64, 128, 1)
        self.out_channels = 128

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class ChannelAttention(nn.Module):
    """GAP -> 1x1 conv -> BN -> sigmoid: one weight per channel."""

    conv_bn_pairs = (("conv", "bn"),)

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.bn(self.conv(x.mean((2, 3), keepdim=True))))


class AttentionRefinement(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, out_ch, 3)
        self.attention = ChannelAttention(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * self.attention(feat)


class ContextPath(nn.Module):
    """Refines the backbone's stride-16 and stride-32 features into stride-8 and stride-16 maps."""

    def __init__(self, c16: int, c32: int, ch: int = 128) -> None:
        super().__init__()
        self.arm16 = AttentionRefinement(c16, ch)
        self.arm32 = AttentionRefinement(c32, ch)
        self.conv_avg = ConvBNReLU(c32, ch)
        self.conv_head32 = conv_bn_relu(ch, ch, 3)
        self.conv_head16 = conv_bn_relu(ch, ch, 3)
        self.out_channels = ch

    def forward(self, feat8: torch.Tensor, feat16: torch.Tensor,
                feat32: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (context at stride 8, context at stride 16)."""
        context = self.conv_avg(feat32.mean((2, 3), keepdim=True))
        up32 = F.interpolate(self.arm32(feat32) + context, size=feat16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[-2:], mode="nearest")
        return self.conv_head16(up16), up32


class FeatureFusion(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.attention = ChannelAttention(out_ch)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.conv(torch.cat([spatial, context], dim=1))
        return feat * self.attention(feat) + feat


class BiSeNetOutput(nn.Module):
    """3x3 conv-BN-ReLU + 1x1 classifier (the main head and the two aux heads)."""

    def __init__(self, in_ch: int, mid_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv = conv_bn_relu(in_ch, mid_ch, 3)
        self.cls = nn.Conv2d(mid_ch, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.conv(x))
