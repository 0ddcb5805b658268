"""ResNet-18/34/50/101 encoders, optionally dilated (output stride 8 or 16), with torchvision names.

Parameter names follow torchvision (`conv1`, `bn1`, `layer1.0.conv1`, `layer2.0.downsample.0`, ...)
so an ImageNet torchvision state dict loads with `load_imagenet_weights`. The stem is torchvision's
single 7x7/2 conv + 3x3/2 max-pool (TDNet's `deep_base=False`) for every depth, so the same
ImageNet weights serve PSPNet-R50/R101 too (the deep-stem "v1c" variant would need other weights).

Dilation follows torchvision's `replace_stride_with_dilation`: a dilated stage drops its stride,
its first block keeps the previous dilation and the others use the stage's new one (2 for layer3,
4 for layer4 at output stride 8). Unlike torchvision, BasicBlock supports dilation (both 3x3 convs
dilated), which the dilated ResNet-18/34 of PSPNet/TDNet need.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vsegcli.errors import VsegError
from vsegcli.models.backbones.pretrained import PretrainedBackbone


class BasicBlock(nn.Module):
    expansion = 1
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))  # foldable for inference (models/fold.py)

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 conv."""

    expansion = 4
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


@dataclass(frozen=True)
class ResNetConfig:
    block: type[BasicBlock] | type[Bottleneck]
    layers: tuple[int, int, int, int]


RESNET_CONFIGS: dict[int, ResNetConfig] = {
    18: ResNetConfig(BasicBlock, (2, 2, 2, 2)),
    34: ResNetConfig(BasicBlock, (3, 4, 6, 3)),
    50: ResNetConfig(Bottleneck, (3, 4, 6, 3)),
    101: ResNetConfig(Bottleneck, (3, 4, 23, 3)),
}


class ResNet(PretrainedBackbone, nn.Module):
    """Returns the four stage outputs (layer1..layer4) at strides 4, 8, 16, 32 (or capped at the
    requested output stride by dilation). No classifier: `fc` keys are dropped when loading."""

    pretrained_hint = "torchvision resnet18-f37072fd.pth"

    conv_bn_pairs = (("conv1", "bn1"),)  # the stem; downsample Sequentials fold on their own

    def __init__(self, depth: int = 18, output_stride: int = 32) -> None:
        super().__init__()
        if depth not in RESNET_CONFIGS:
            raise VsegError(f"ResNet depth must be one of {sorted(RESNET_CONFIGS)}, got {depth}")
        if output_stride not in (8, 16, 32):
            raise VsegError(f"ResNet output stride must be 8, 16 or 32, got {output_stride}")
        cfg = RESNET_CONFIGS[depth]
        self.depth = depth
        self.output_stride = output_stride
        self.inplanes = 64
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        # Stages 3 and 4 trade their stride for dilation once the target stride is reached.
        dilate3 = output_stride <= 8
        dilate4 = output_stride <= 16
        self.layer1 = self._make_layer(cfg.block, 64, cfg.layers[0])
        self.layer2 = self._make_layer(cfg.block, 128, cfg.layers[1], stride=2)
        self.layer3 = self._make_layer(cfg.block, 256, cfg.layers[2], stride=2, dilate=dilate3)
        self.layer4 = self._make_layer(cfg.block, 512, cfg.layers[3], stride=2, dilate=dilate4)
        self.out_channels = tuple(c * cfg.block.expansion for c in (64, 128, 256, 512))
        self.strides = (4, 8, min(16, output_stride), output_stride)

    def _make_layer(self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int,
                    stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, previous_dilation, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            outs.append(x)
        return outs

    def load_pretrained(self, path: Path | None) -> str | None:
        """A torchvision ImageNet state dict (`load_imagenet_weights`); no automatic source."""
        if path is None:
            return None
        load_imagenet_weights(self, path)
        return f"imagenet:{path}"


def resnet(depth: int, output_stride: int = 32) -> ResNet:
    return ResNet(depth, output_stride)


def _read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise VsegError(f"ImageNet weights not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            # Weights are data, never code.
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt / foreign file is a user error, not a bug
        raise VsegError(f"could not read {path} as a PyTorch state dict: {exc}") from exc
    for wrapper in ("state_dict", "model"):  # common training-script wrappers
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict):
        raise VsegError(f"{path} does not hold a state dict (got {type(state).__name__})")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_imagenet_weights(backbone: ResNet, path: str | os.PathLike[str]) -> None:
    """Load a torchvision-layout ImageNet ResNet state dict (.pth or .safetensors) into `backbone`.

    Every key except the classifier (`fc.*`) must match by name and shape.
    """
    state = {k: v for k, v in _read_state_dict(path).items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong))
            if keys
        )
        raise VsegError(
            f"{os.fspath(path)} is not a torchvision ResNet-{backbone.depth} state dict ({details})"
        )
    backbone.load_state_dict(state, strict=True)
