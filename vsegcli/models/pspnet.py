"""PSPNet on a dilated ResNet (output stride 8): the per-frame family `pspnet-r18/r50/r101`.

ResNet (torchvision layout, layer3/layer4 dilated 2/4) -> pyramid pooling (bins 1/2/3/6) -> 3x3
bottleneck (256 ch for R18, 512 for R50/R101) -> dropout + 1x1 classifier, logits at stride 8
(TDNet's PSP18 sub-network / semseg's PSPNet-18, reference §3.1-3.2). While training, an FCN aux
head on layer3 also runs; its logits are left in `self.aux_logits` (weight `aux_weight`, 0.4 in
semseg) for the training loop — `forward_frame` always returns the main logits only.

`features(images)` is the bottleneck output (the map STT attaches to); `head(feature)` the rest.
"""
from __future__ import annotations

import torch

from vsegcli.models.backbones.resnet import ResNet
from vsegcli.models.base import Segmentor
from vsegcli.models.heads.psp import FCNHead, PSPHead
from vsegcli.models.registry import register_architecture

PSP_DEPTHS = (18, 50, 101)


class PSPNet(Segmentor):
    output_stride = 8
    size_divisor = 8
    aux_weight = 0.4

    def __init__(self, num_classes: int, depth: int = 18, dropout: float = 0.1) -> None:
        super().__init__(num_classes)
        self.backbone = ResNet(depth, output_stride=8)
        c3, c4 = self.backbone.out_channels[2:]
        small = depth < 50
        self.decode_head = PSPHead(c4, 256 if small else 512, num_classes, dropout)
        self.aux_head = FCNHead(c3, 64 if small else 256, num_classes, dropout)
        self.feature_channels = self.decode_head.channels
        self.aux_logits: list[torch.Tensor] = []

    def features(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(images)
        # Aux logits are a training signal only: skip the work at inference.
        self.aux_logits = [self.aux_head(feats[2])] if self.training else []
        return self.decode_head.fuse(feats[3])

    def head(self, feature: torch.Tensor) -> torch.Tensor:
        return self.decode_head.classify(feature)

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def _register(depth: int) -> None:
    @register_architecture(
        f"pspnet-r{depth}", family="pspnet", temporal=False,
        description=f"PSPNet, dilated ResNet-{depth} (output stride 8), per-frame", depth=depth,
    )
    def build(num_classes: int, **options) -> PSPNet:
        return PSPNet(num_classes, **options)


for _d in PSP_DEPTHS:
    _register(_d)
