"""MRCFA's cross-frame affinity module: multi-scale affinities, token selection and the HPN.

Written from the published facts of MRCFA (Sun et al., ECCV 2022; official `hypercorre.py`).
Names follow the official checkpoint (`q1..q3`, `k1..k3`, `hpn.encoder_layer4.0.conv2`, ...) so
its weights load without renaming. Official wording: "query" = reference frames, "supp" =
target; here they are called what they are.

At test time, for a target frame and R reference frames:

1. Affinities (plain dot products, no scaling) between the target's projected c4/c3/c2 tokens
   (strides 32/16/8) and each reference's projected, stride-32-reduced c4/c3/c2 tokens.
2. Token selection: a reference token scores the sum of its top-5 stride-32 affinities over the
   target positions; each reference keeps its best `int(N * keep_ratio)` tokens (in index order)
   and that kept set is reused at all three scales.
3. Each kept token gives one 1-channel map over the target grid per scale; the HPN squeezes the
   three maps into one stride-8 map, coarse to fine (bilinear, align_corners=True).

Precision: the whole module (projections, affinities, selection, HPN) runs in float32 with
autocast off on every device (`precision.autocast_off`): the unscaled dot products of 64-512-dim
tokens overflow fp16 (65,504), and bf16 rounding flips near-tied token selections. It is small
next to the backbone, and given the same inputs its output under autocast equals fp32 exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.models.temporal.precision import autocast_off


@dataclass(frozen=True)
class Unit:
    """One HPN block: successive (out_channels, kernel) conv units."""

    in_ch: int
    outs: tuple[int, ...]
    kernels: tuple[int, ...]


@dataclass(frozen=True)
class HPNLayout:
    layer4: Unit
    layer3: Unit
    layer2: Unit
    layer4to3: Unit
    layer3to2: Unit


# Official layouts: two conv units per block for backbone 'b1' only, one unit for every other.
HPN_LAYOUTS: dict[int, HPNLayout] = {
    1: HPNLayout(
        layer4=Unit(1, (1,), (3,)), layer3=Unit(1, (1,), (5,)), layer2=Unit(1, (1,), (5,)),
        layer4to3=Unit(1, (1,), (3,)), layer3to2=Unit(1, (1,), (3,)),
    ),
    2: HPNLayout(
        layer4=Unit(1, (1, 2), (3, 3)), layer3=Unit(1, (1, 2), (3, 3)), layer2=Unit(1, (1, 2), (5, 3)),
        layer4to3=Unit(2, (2, 2), (3, 3)), layer3to2=Unit(2, (2, 1), (3, 3)),
    ),
}


class CenterPivotConv(nn.Module):
    """What is left of HSNet's center-pivot 4-D conv in MRCFA: a single 2-D conv (`conv2`)
    over the target grid. The wrapper exists so checkpoint keys read `...0.conv2.weight`."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x)

    def forward_packed(self, x: torch.Tensor, maps: int) -> torch.Tensor:
        """The same conv on `maps` maps packed as channels, (B, maps·C_in, H, W): one grouped
        convolution with the maps as groups (see `HPN.forward_packed`)."""
        weight = self.conv2.weight.repeat(maps, 1, 1, 1)
        bias = self.conv2.bias.repeat(maps) if self.conv2.bias is not None else None
        return F.conv2d(x, weight, bias, padding=self.conv2.padding, groups=maps)


def _building_block(unit: Unit) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_ch = unit.in_ch
    for out_ch, k in zip(unit.outs, unit.kernels):
        layers += [CenterPivotConv(in_ch, out_ch, k), nn.GroupNorm(1, out_ch), nn.ReLU(inplace=True)]
        in_ch = out_ch
    return nn.Sequential(*layers)


def _upsample(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # The only align_corners=True resize of the model (as upstream; False moves outputs 2-4%).
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


def _run_block_packed(block: nn.Sequential, x: torch.Tensor, maps: int) -> torch.Tensor:
    """`block` (CenterPivotConv, GroupNorm(1, C), ReLU)* on maps packed as channels: each map's
    GroupNorm over its own C channels is a GroupNorm with `maps` groups."""
    for layer in block:
        if isinstance(layer, CenterPivotConv):
            x = layer.forward_packed(x, maps)
        elif isinstance(layer, nn.GroupNorm):
            weight = layer.weight.repeat(maps) if layer.weight is not None else None
            bias = layer.bias.repeat(maps) if layer.bias is not None else None
            x = F.group_norm(x, maps * layer.num_groups, weight, bias, layer.eps)
        else:
            x = layer(x)
    return x


class HPN(nn.Module):
    """Squeezes per-token affinity maps at strides 32/16/8 into one stride-8 map per token."""

    def __init__(self, layout: HPNLayout) -> None:
        super().__init__()
        self.encoder_layer4 = _building_block(layout.layer4)
        self.encoder_layer3 = _building_block(layout.layer3)
        self.encoder_layer2 = _building_block(layout.layer2)
        self.encoder_layer4to3 = _building_block(layout.layer4to3)
        self.encoder_layer3to2 = _building_block(layout.layer3to2)

    def forward(self, a32: torch.Tensor, a16: torch.Tensor, a8: torch.Tensor) -> torch.Tensor:
        """Inputs (M, 1, h_s, w_s) for the three strides; returns (M, 1, h8, w8)."""
        sq4 = self.encoder_layer4(a32)
        sq3 = self.encoder_layer3(a16)
        sq2 = self.encoder_layer2(a8)
        mix = self.encoder_layer4to3(_upsample(sq4, sq3) + sq3)
        return self.encoder_layer3to2(_upsample(mix, sq2) + sq2)

    def forward_packed(self, p32: torch.Tensor, p16: torch.Tensor, p8: torch.Tensor, maps: int) -> torch.Tensor:
        """The same on `maps` maps per sample packed as the channels of a channels-last image per
        stride, (B, maps, h_s, w_s) stored (B, h_s, w_s, maps); returns (B, maps, h8, w8), alike.

        For CPUs: oneDNN runs a batch of M tiny 1-channel images slowly (M = 972 at 480x864: 5x5
        and 3x3 convs, GroupNorms, resizes and adds over 6.3 M values each); packed, the convs are
        one depthwise conv and every op vectorises over the maps. Same arithmetic per value as
        `forward` (equal up to float rounding)."""
        sq4 = _run_block_packed(self.encoder_layer4, p32, maps)
        sq3 = _run_block_packed(self.encoder_layer3, p16, maps)
        sq2 = _run_block_packed(self.encoder_layer2, p8, maps)
        mix = _run_block_packed(self.encoder_layer4to3, _upsample(sq4, sq3) + sq3, maps)
        return _run_block_packed(self.encoder_layer3to2, _upsample(mix, sq2) + sq2, maps)


class ReferenceKeys(NamedTuple):
    """Projected stride-32 tokens of reference frames, (B, [R,] N, C): k1(sr2(c2)), k2(sr3(c3)), k3(c4)."""

    k1: torch.Tensor
    k2: torch.Tensor
    k3: torch.Tensor


class Affinity(NamedTuple):
    logits: torch.Tensor  # (B, R, s, N8): HPN output, before the softmax over the s kept tokens
    index: torch.Tensor  # (B, R, s): kept reference tokens, ascending
    mask: torch.Tensor  # (B, R, N32) bool: the same selection as a mask


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, R, N, C), index (B, R, s) -> (B, R, s, C)."""
    return x.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, x.shape[-1]))


# The official module's defaults (MRCFA's MiT-B0 keeps 0.8 and B1 uses two units: models/mrcfa.py).
DEFAULT_KEEP_RATIO = 0.5
DEFAULT_HPN_UNITS = 1


class HyperCorrelation(nn.Module):
    """`hypercorre_module` of the official head (class `hypercorre_topk2`)."""

    #: Devices that compute the affinities token-major and run the HPN on packed maps
    #: (`_hpn_token_major`); others take the batched form of the official code. Equal up to rounding.
    token_major_devices: tuple[str, ...] = ("cpu",)

    def __init__(self, dims: Sequence[int], hpn_units: int = DEFAULT_HPN_UNITS, keep_ratio: float = DEFAULT_KEEP_RATIO,
                 top_k: int = 5) -> None:
        super().__init__()
        _, c2, c3, c4 = dims
        self.q1, self.q2, self.q3 = nn.Linear(c2, c2), nn.Linear(c3, c3), nn.Linear(c4, c4)
        self.k1, self.k2, self.k3 = nn.Linear(c2, c2), nn.Linear(c3, c3), nn.Linear(c4, c4)
        self.hpn = HPN(HPN_LAYOUTS[hpn_units])
        self.top_k = top_k
        self.keep_ratio = keep_ratio

    def reference_keys(self, r2: torch.Tensor, r3: torch.Tensor, c4: torch.Tensor) -> ReferenceKeys:
        """Key tokens of reference frames from their stride-32 maps (sr2(c2), sr3(c3), c4), float32."""
        with autocast_off(c4.device):
            return ReferenceKeys(self.k1(_tokens(r2.float())), self.k2(_tokens(r3.float())),
                                 self.k3(_tokens(c4.float())))

    def num_kept(self, n_ref: int) -> int:
        # int() truncation as upstream; at least one token so tiny frames do not softmax over nothing.
        return max(1, int(n_ref * self.keep_ratio))

    def forward(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, keys: ReferenceKeys) -> Affinity:
        """Target maps c2/c3/c4 (B, C, h, w) at strides 8/16/32; keys stacked as (B, R, N32, C).
        Float32 with autocast off (module docstring); a no-op for float32 inputs without autocast."""
        with autocast_off(c4.device):
            return self._forward(c2.float(), c3.float(), c4.float(), ReferenceKeys(*(k.float() for k in keys)))

    def _forward(self, c2: torch.Tensor, c3: torch.Tensor, c4: torch.Tensor, keys: ReferenceKeys) -> Affinity:
        b = c4.shape[0]
        r, n_ref = keys.k3.shape[1], keys.k3.shape[2]
        q3 = self.q3(_tokens(c4)).unsqueeze(1)  # (B, 1, N32, C4)
        full32 = keys.k3 @ q3.transpose(-2, -1)  # (B, R, N_ref, N32_target)

        # Score every reference token by its top-k affinities over the target positions.
        k = min(self.top_k, full32.shape[-1])
        score = full32.topk(k, dim=-1).values.sum(-1)  # (B, R, N_ref)
        index = score.topk(self.num_kept(n_ref), dim=-1).indices.sort(dim=-1).values
        mask = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, index, True)
        s = index.shape[-1]

        if c2.device.type in self.token_major_devices:
            queries = (q3.squeeze(1), self.q2(_tokens(c3)), self.q1(_tokens(c2)))
            return Affinity(self._hpn_token_major(queries, keys, index, (c4, c3, c2)), index, mask)
        a32 = full32.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, full32.shape[-1]))
        a16 = _gather_tokens(keys.k2, index) @ self.q2(_tokens(c3)).unsqueeze(1).transpose(-2, -1)
        a8 = _gather_tokens(keys.k1, index) @ self.q1(_tokens(c2)).unsqueeze(1).transpose(-2, -1)

        # One 1-channel map over the target grid per (batch, reference, kept token).
        maps = [a.reshape(b * r * s, 1, *f.shape[-2:]) for a, f in ((a32, c4), (a16, c3), (a8, c2))]
        out = self.hpn(*maps).reshape(b, r, s, -1)
        return Affinity(out, index, mask)

    def _hpn_token_major(self, queries: Sequence[torch.Tensor], keys: ReferenceKeys, index: torch.Tensor,
                         grids: Sequence[torch.Tensor]) -> torch.Tensor:
        """CPU: the affinities computed as (target position, kept token) matrices, which already
        are the channels-last images `HPN.forward_packed` wants (no transposing copy in or out);
        returns the logits (B, R, s, N8) as a view of (B, N8, R, s) memory, so the softmax over s
        (in `CrossFrameAffinityMixin.temporal`) runs along contiguous values. The stride-32 maps
        are recomputed from the kept keys (a small product) rather than gathered from the scoring
        affinities, which lie the other way round. `queries`: (B, N, C) at strides 32, 16, 8."""
        b, r, s = index.shape
        packed = []
        for q, k, grid in zip(queries, (keys.k3, keys.k2, keys.k1), grids):
            kept = _gather_tokens(k, index).reshape(b, r * s, -1)
            h, w = grid.shape[-2:]
            # (B, N, R·s) row-major = (B, h, w, maps) = a (B, maps, h, w) channels-last image.
            packed.append((q @ kept.transpose(1, 2)).view(b, h, w, r * s).permute(0, 3, 1, 2))
        out = self.hpn.forward_packed(*packed, maps=r * s)  # (B, maps, h8, w8), channels-last
        return out.permute(0, 2, 3, 1).reshape(b, -1, r, s).permute(0, 2, 3, 1)
