"""BiSeNetV1 on a ResNet context path: the per-frame family `bisenet-r18`, `bisenet-r34`.

Spatial path (stride 8) + ResNet context path with attention refinement modules + feature fusion
module -> 3x3 conv + 1x1 classifier; logits at stride 8 (reference §7). While training, the two
aux heads on the context features also run; their logits are left in `self.aux_logits` (weight
`aux_weight`, 1.0 each upstream) — `forward_frame` always returns the main logits only.

`features(images)` is the FFM output (256 ch, stride 8), where STT attaches; `head` the rest.
"""
from __future__ import annotations

import torch

from vsegcli.models.backbones.resnet import ResNet
from vsegcli.models.base import Segmentor
from vsegcli.models.heads.bisenet import BiSeNetOutput, ContextPath, FeatureFusion, SpatialPath
from vsegcli.models.registry import register_architecture

BISENET_DEPTHS = (18, 34)


class BiSeNet(Segmentor):
    output_stride = 8
    size_divisor = 32
    aux_weight = 1.0

    def __init__(self, num_classes: int, depth: int = 18) -> None:
        super().__init__(num_classes)
        self.backbone = ResNet(depth, output_stride=32)
        _, _, c16, c32 = self.backbone.out_channels
        self.spatial_path = SpatialPath()
        self.context_path = ContextPath(c16, c32, 128)
        self.ffm = FeatureFusion(self.spatial_path.out_channels + self.context_path.out_channels, 256)
        self.decode_head = BiSeNetOutput(256, 256, num_classes)
        self.aux_head16 = BiSeNetOutput(128, 64, num_classes)
        self.aux_head32 = BiSeNetOutput(128, 64, num_classes)
        self.feature_channels = 256
        self.aux_logits: list[torch.Tensor] = []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        _, feat8, feat16, feat32 = self.backbone(images)
        context8, context16 = self.context_path(feat8, feat16, feat32)
        self.aux_logits = [self.aux_head16(context8), self.aux_head32(context16)] if self.training else []
        return self.ffm(self.spatial_path(images), context8)

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.decode_head(feature)

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _register(depth: int) -> None:
    @register_architecture(
        f"bisenet-r{depth}", family="bisenet", temporal=False,
        description=f"BiSeNetV1, ResNet-{depth} context path (output stride 8), per-frame", depth=depth,
    )
    def build(num_classes: int, **options) -> BiSeNet:
        return BiSeNet(num_classes, **options)


for _d in BISENET_DEPTHS:
    _register(_d)
