"""Mix Transformer (MiT-B0..B5), the SegFormer encoder.

Written from the published architecture facts (overlapping patch embeddings, efficient
self-attention with spatial reduction, Mix-FFN with a depthwise 3x3 conv). Parameter names follow
the NVlabs/mmseg layout (`patch_embed1.proj`, `block1.0.attn.kv`, `norm1`, ...) so official
checkpoints load without renaming. Attention uses `scaled_dot_product_attention` (fused kernels on
GPU, same math as softmax(q·kᵀ/√d)·v).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.models.backbones.pretrained import PretrainedBackbone


@dataclass(frozen=True)
class MiTConfig:
    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4


MIT_CONFIGS: dict[str, MiTConfig] = {
    "b0": MiTConfig((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MiTConfig((64, 128, 320, 512), (2, 2, 2, 2)),
    "b2": MiTConfig((64, 128, 320, 512), (3, 4, 6, 3)),
    "b3": MiTConfig((64, 128, 320, 512), (3, 4, 18, 3)),
    "b4": MiTConfig((64, 128, 320, 512), (3, 8, 27, 3)),
    "b5": MiTConfig((64, 128, 320, 512), (3, 6, 40, 3)),
}


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, stride, patch // 2)
        self.norm = nn.LayerNorm(dim)  # default eps 1e-5, as upstream

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # rows [0:dim] keys, [dim:2dim] values
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q = self.q(x).reshape(b, n, self.heads, d).transpose(1, 2)
        if self.sr_ratio > 1:
            r = x.transpose(1, 2).reshape(b, c, h, w)
            x = self.norm(self.sr(r).flatten(2).transpose(1, 2))
        kv = self.kv(x).reshape(b, -1, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w))
        return x.flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as upstream
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int, sr_ratio: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EfficientSelfAttention(dim, heads, sr_ratio)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MixFFN(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixVisionTransformer(PretrainedBackbone, nn.Module):
    """Returns four feature maps (B, C_i, H/s_i, W/s_i) at strides 4, 8, 16, 32."""

    pretrained_hint = "NVlabs mit_b0.pth"
    pretrained_strict = True  # a partial encoder is a wrong file (another MiT size), not a start

    def __init__(self, cfg: MiTConfig, in_chans: int = 3, drop_path_rate: float = 0.1) -> None:
        super().__init__()
        self.cfg = cfg
        self.out_channels = tuple(cfg.embed_dims)
        n = sum(cfg.depths)  # stochastic-depth rate grows linearly over all blocks (plain floats: meta-device safe)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]
        start = 0
        for s in range(4):
            dim = cfg.embed_dims[s]
            prev = in_chans if s == 0 else cfg.embed_dims[s - 1]
            patch, stride = (7, 4) if s == 0 else (3, 2)
            setattr(self, f"patch_embed{s + 1}", OverlapPatchEmbed(prev, dim, patch, stride))
            blocks = [
                Block(dim, cfg.num_heads[s], cfg.mlp_ratio, cfg.sr_ratios[s], rates[start + i])
                for i in range(cfg.depths[s])
            ]
            setattr(self, f"block{s + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{s + 1}", nn.LayerNorm(dim, eps=1e-6))
            start += cfg.depths[s]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        b = x.shape[0]
        for s in range(1, 5):
            x, h, w = getattr(self, f"patch_embed{s}")(x)
            for blk in getattr(self, f"block{s}"):
                x = blk(x, h, w)
            x = getattr(self, f"norm{s}")(x)
            x = x.transpose(1, 2).reshape(b, -1, h, w)
            outs.append(x)
        return outs

    def _mismatch(self, path: Path, missing: Sequence[str]) -> str:
        name = next((f"MiT-{v.upper()}" for v, c in MIT_CONFIGS.items() if c == self.cfg), "MiT")
        return (f"{path} does not match the {name} encoder ({len(missing)} tensors missing, e.g. {missing[0]}); "
                "give the NVlabs mit_{b0..b5}.pth of the same size")


def mit(variant: str, drop_path_rate: float = 0.1) -> MixVisionTransformer:
    return MixVisionTransformer(MIT_CONFIGS[variant], drop_path_rate=drop_path_rate)
