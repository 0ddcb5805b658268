"""BatchNorm folding: same outputs as the unfolded model, and no BatchNorm left behind."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from vsegcli import api
from vsegcli.errors import VsegError
from vsegcli.models import build_model, list_architectures
from vsegcli.models.fold import fold_batchnorm


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> int:
    """Non-trivial statistics and affine parameters, so a wrong fold cannot hide behind mean 0 / var 1."""
    g = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.2)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
                count += 1
    return count


def _pair(name: str) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    model = build_model(name, 11).eval()
    assert _randomise_batchnorms(model) > 0
    with torch.no_grad():  # zero-initialised temporal outputs (STT's Wo, MRCFA's value projection)
        for p in model.parameters():  # get values, so the temporal path really is compared
            if p.ndim > 1 and not p.any():
                p.normal_(0, 0.1)
    folded = build_model(name, 11).eval()
    folded.load_state_dict(model.state_dict())
    return model, folded


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", ["effl0", "bisenet-r18", "pspnet-r18", "segformer-b0"])
def test_folded_per_frame_model_gives_the_same_logits(name):
    model, folded = _pair(name)
    n = fold_batchnorm(folded)
    assert n == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 96, 128)
    with torch.inference_mode():
        ref, out = model.forward_frame(x), folded.forward_frame(x)
    assert _rel(out, ref) < 1e-4
    assert (out.argmax(1) == ref.argmax(1)).float().mean() > 0.999


@pytest.mark.parametrize("name", ["stt-effl0", "mrcfa-effl0"])
def test_folded_temporal_session_gives_the_same_steps(name):
    model, folded = _pair(name)
    fold_batchnorm(folded)
    torch.manual_seed(1)
    frames = [torch.randn(1, 3, 96, 128) for _ in range(5)]
    a, b = model.new_session(), folded.new_session()
    with torch.inference_mode():
        for f in frames:
            ref, out = a.step(f), b.step(f)
            assert _rel(out, ref) < 1e-4


def test_every_architecture_folds_all_its_batchnorms():
    left = {}
    for arch in list_architectures():
        with torch.device("meta"):  # structure only: no weights to initialise
            model = build_model(arch.name, 19).eval()
        fold_batchnorm(model)
        names = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if names:
            left[arch.name] = names[:3]
    assert not left, f"BatchNorms without a declared conv pair (add conv_bn_pairs): {left}"


def test_folding_a_training_model_is_refused():
    model = build_model("effl0", 11).train()
    with pytest.raises(VsegError, match="eval"):
        fold_batchnorm(model)


def test_api_load_folds_by_default_and_labels_match():
    folded = api.load(model="effl0", device="cpu", label_set="camvid")
    plain = api.load(model="effl0", device="cpu", label_set="camvid", fold_bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.predictor.model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in plain.predictor.model.modules())
    frames = [(torch.rand(120, 160, 3) * 255).to(torch.uint8).numpy() for _ in range(2)]
    for a, b in zip(folded.segment_frames(frames), plain.segment_frames(frames)):
        assert a.shape == (120, 160) and (a == b).mean() > 0.999
