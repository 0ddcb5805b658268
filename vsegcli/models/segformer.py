"""SegFormer (MiT backbone + all-MLP head): the per-frame family `segformer-b0` ... `segformer-b5`."""
from __future__ import annotations

import torch

from vsegcli.models.backbones.mit import MIT_CONFIGS, mit
from vsegcli.models.base import Segmentor
from vsegcli.models.heads.segformer_head import SegFormerHead
from vsegcli.models.registry import register_architecture

# Decoder width of the NVlabs configs: 256 for B0/B1, 768 for B2-B5.
SEGFORMER_EMBED_DIM = {"b0": 256, "b1": 256, "b2": 768, "b3": 768, "b4": 768, "b5": 768}


class SegFormer(Segmentor):
    output_stride = 4

    def __init__(self, num_classes: int, variant: str = "b0", embed_dim: int | None = None,
                 drop_path_rate: float = 0.1, dropout: float = 0.1) -> None:
        super().__init__(num_classes)
        self.backbone = mit(variant, drop_path_rate)
        self.decode_head = SegFormerHead(
            self.backbone.out_channels, embed_dim or SEGFORMER_EMBED_DIM[variant], num_classes, dropout
        )

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.decode_head(self.backbone(images))


def _register(variant: str) -> None:
    cfg = MIT_CONFIGS[variant]

    @register_architecture(
        f"segformer-{variant}", family="segformer", temporal=False,
        description=f"SegFormer, MiT-{variant.upper()} encoder (depths {'-'.join(map(str, cfg.depths))}) + all-MLP head",
        variant=variant, embed_dim=SEGFORMER_EMBED_DIM[variant],
    )
    def build(num_classes: int, **options) -> SegFormer:
        return SegFormer(num_classes, **options)


for _v in MIT_CONFIGS:
    _register(_v)
