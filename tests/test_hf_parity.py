"""Hugging Face SegFormer -> vseg: the imported model must give the same logits as transformers.

transformers is only an independent reference here. Models are randomly initialised from a
`SegformerConfig` (no download), every parameter and BN statistic is randomised so a wrong name
mapping (norm1/norm2, key/value, stage order) cannot hide behind default values.

LayerNorm eps: the original MiT uses eps 1e-6 in the block norms (norm1/norm2) and the stage
norms, as vseg does; transformers builds those LayerNorms with the default 1e-5. The main check
sets HF's eps to the original's (what the weights were trained with), so the two computations
are the same up to float rounding; a second check runs stock transformers and bounds the
difference the eps alone makes. Acceptance: relative error (max |diff| / max |ref|) <= 1e-4.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers", reason="transformers is not installed (reference for parity tests)")

from vsegcli.checkpoints import load_checkpoint  # noqa: E402

TOL = 1e-4

# name -> (hidden_sizes, depths, decoder_hidden_size, num_labels, vseg architecture, options)
VARIANTS = {
    "b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256, 7, "segformer-b0", {"variant": "b0", "embed_dim": 256}),
    # B2 depths; a 256-wide decoder (NVlabs uses 768) keeps it fast and exercises embed_dim detection.
    "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 256, 5, "segformer-b2", {"variant": "b2", "embed_dim": 256}),
}


def _randomise(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)

    def rnd(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=g) * std

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + rnd(m.weight, 0.1))
                m.bias.copy_(rnd(m.bias, 0.1))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + rnd(m.weight, 0.1))
                m.bias.copy_(rnd(m.bias, 0.1))
                m.running_mean.copy_(rnd(m.running_mean, 0.1))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.num_batches_tracked.fill_(7)
            elif isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.add_(rnd(m.weight, 0.01))
                if m.bias is not None:
                    m.bias.copy_(rnd(m.bias, 0.02))


def _set_original_eps(model: nn.Module) -> None:
    """Block and stage LayerNorms back to the original MiT's eps 1e-6 (HF uses 1e-5)."""
    for name, m in model.named_modules():
        if not isinstance(m, nn.LayerNorm):
            continue
        # patch-embedding and attention (spatial-reduction) norms keep 1e-5 in the original too
        if ".patch_embeddings." in name or ".attention." in name:
            continue
        m.eps = 1e-6  # layernorm_before/after (norm1/norm2) and the stage norms


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a - ref).abs().max() / ref.abs().max())


_CASES: dict[str, dict] = {}


def _case(key: str, tmp_path_factory) -> dict:
    if key not in _CASES:
        _CASES[key] = _make_case(key, tmp_path_factory)
    return _CASES[key]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def hf_case(request, tmp_path_factory):
    return _case(request.param, tmp_path_factory)  # shared with hf_b0: build each model once


@pytest.fixture(scope="module")
def hf_b0(tmp_path_factory):
    return _case("b0", tmp_path_factory)


def _make_case(key: str, tmp_path_factory) -> dict:
    hidden, depths, dec, k, arch, options = VARIANTS[key]
    names = {i: f"thing {i}" for i in range(k)} if key == "b0" else None
    cfg = transformers.SegformerConfig(
        hidden_sizes=hidden, depths=depths, decoder_hidden_size=dec, num_labels=k,
        **({"id2label": names, "label2id": {v: i for i, v in names.items()}} if names else {}),
    )
    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(cfg).eval()
    _randomise(hf, seed=1)

    root = tmp_path_factory.mktemp(f"hf_{key}")
    hf.save_pretrained(root / "st")  # model.safetensors + config.json (Hub layout of names)

    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(2))  # non-square: catches H/W mixups
    with torch.no_grad():
        stock = hf(pixel_values=x).logits
        _set_original_eps(hf)
        exact = hf(pixel_values=x).logits
    return {"key": key, "root": root, "x": x, "stock": stock, "exact": exact, "arch": arch,
            "options": options, "k": k, "names": names, "hf": hf}


def _vseg_logits(path: Path, case) -> torch.Tensor:
    loaded = load_checkpoint(path)
    assert loaded.source_format == "huggingface"
    assert loaded.meta.architecture == case["arch"]
    assert loaded.meta.arch_options == case["options"]
    assert loaded.model.num_classes == case["k"]
    assert not loaded.model.training
    with torch.no_grad():
        return loaded.model(case["x"])


def test_safetensors_folder_parity(hf_case):
    out = _vseg_logits(hf_case["root"] / "st", hf_case)
    assert out.shape == hf_case["exact"].shape
    err = _rel(out, hf_case["exact"])
    print(f"\n{hf_case['key']} safetensors: rel err vs HF (eps aligned) {err:.2e}, vs stock HF {_rel(out, hf_case['stock']):.2e}")
    assert err <= TOL
    # Stock transformers (LayerNorm eps 1e-5) differs only by the eps: still within tolerance.
    assert _rel(out, hf_case["stock"]) <= TOL


def test_safetensors_file_reads_config_beside_it(hf_case):
    loaded = load_checkpoint(hf_case["root"] / "st" / "model.safetensors")
    if hf_case["names"]:
        assert loaded.meta.classes == [hf_case["names"][i] for i in range(hf_case["k"])]
    else:  # transformers' placeholder LABEL_i names are not kept
        assert not any(n.startswith("LABEL_") for n in loaded.meta.classes)
    assert loaded.meta.provenance["source_format"] == "huggingface"


def test_pytorch_model_bin_parity(hf_case, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    torch.save(load_file(hf_case["root"] / "st" / "model.safetensors"), folder / "pytorch_model.bin")
    shutil.copy(hf_case["root"] / "st" / "config.json", folder / "config.json")
    out = _vseg_logits(folder / "pytorch_model.bin", hf_case)
    err = _rel(out, hf_case["exact"])
    print(f"\n{hf_case['key']} pytorch_model.bin: rel err {err:.2e}")
    assert err <= TOL


def test_in_memory_state_dict_names(hf_b0, tmp_path):
    """torch.save(model.state_dict()) of transformers>=5 uses other names (stages/q_proj...)."""
    path = tmp_path / "hf_state_dict.pth"
    torch.save(hf_b0["hf"].state_dict(), path)
    out = _vseg_logits(path, hf_b0)
    assert _rel(out, hf_b0["exact"]) <= TOL


def test_config_that_disagrees_with_weights_is_refused(hf_b0, tmp_path):
    from vsegcli.errors import VsegError

    folder = tmp_path / "bad"
    shutil.copytree(hf_b0["root"] / "st", folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_attention_heads"] = [1, 1, 1, 1]  # invisible in the weights, so only config can say
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(VsegError, match="num_attention_heads"):
        load_checkpoint(folder)
