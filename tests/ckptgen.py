"""Checkpoints in foreign layouts for tests: the official MRCFA key layout (from the reference
tables in ../shared when present, else from the published module facts) with random values."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from vsegcli.models import build_model
from vsegcli.models.backbones.mit import MIT_CONFIGS

REPO = Path(__file__).resolve().parents[1]


def reference_dir() -> Path | None:
    candidates = [os.environ.get("VSEG_REFERENCE_DIR"), REPO / "tests" / "fixtures",
                  REPO / "shared" / "docs" / "reference", REPO.parent / "shared" / "docs" / "reference"]
    for c in candidates:
        if c and (Path(c) / "keys_mrcfa_b0.tsv").is_file():
            return Path(c)
    return None


def tsv_layout(variant: str) -> dict[str, list[int]] | None:
    ref = reference_dir()
    if ref is None:
        return None
    layout = {}
    for line in (ref / f"keys_mrcfa_{variant}.tsv").read_text().splitlines():
        if line.strip():
            key, shape, _hf = line.split("\t")
            layout[key] = json.loads(shape)
    return layout


# HPN units per block as (in, out, kernel): B1 has two units per block, every other backbone one.
HPN = {
    "b1": {"encoder_layer4": [(1, 1, 3), (1, 2, 3)], "encoder_layer3": [(1, 1, 3), (1, 2, 3)],
           "encoder_layer2": [(1, 1, 5), (1, 2, 3)], "encoder_layer4to3": [(2, 2, 3), (2, 2, 3)],
           "encoder_layer3to2": [(2, 2, 3), (2, 1, 3)]},
    "other": {"encoder_layer4": [(1, 1, 3)], "encoder_layer3": [(1, 1, 5)], "encoder_layer2": [(1, 1, 5)],
              "encoder_layer4to3": [(1, 1, 3)], "encoder_layer3to2": [(1, 1, 3)]},
}


def generated_layout(variant: str, k: int = 124, e: int = 256) -> dict[str, list[int]]:
    """The official MRCFA key layout from the published module facts (used when the reference
    tables are not at hand, and cross-checked against them when they are)."""
    layout = {n: list(t.shape) for n, t in build_model(f"segformer-{variant}", k, embed_dim=e).state_dict().items()}
    c1, c2, c3, c4 = MIT_CONFIGS[variant].embed_dims
    h = "decode_head."
    layout[h + "conv_seg.weight"], layout[h + "conv_seg.bias"] = [k, 128, 1, 1], [k]
    for n in range(1, 5):
        layout[f"{h}deco{n}.smalldecoder.1.weight"], layout[f"{h}deco{n}.smalldecoder.1.bias"] = [k, e, 1, 1], [k]
    for i, c in zip((1, 2, 3), (c2, c3, c4)):
        for p in "qk":
            layout[f"{h}hypercorre_module.{p}{i}.weight"], layout[f"{h}hypercorre_module.{p}{i}.bias"] = [c, c], [c]
    for block, units in HPN["b1" if variant == "b1" else "other"].items():
        for j, (cin, cout, ks) in enumerate(units):
            base = f"{h}hypercorre_module.hpn.{block}"
            layout[f"{base}.{3 * j}.conv2.weight"], layout[f"{base}.{3 * j}.conv2.bias"] = [cout, cin, ks, ks], [cout]
            layout[f"{base}.{3 * j + 1}.weight"], layout[f"{base}.{3 * j + 1}.bias"] = [cout], [cout]
    for name, c, r in (("sr2", c2, 4), ("sr3", c3, 2), ("sr1_feat", e, 4)):
        layout[f"{h}{name}.weight"], layout[f"{h}{name}.bias"] = [c, c, r, r], [c]
    return layout


def mrcfa_layout(variant: str) -> dict[str, list[int]]:
    return tsv_layout(variant) or generated_layout(variant)


def mrcfa_state_dict(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in mrcfa_layout(variant).items():
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(160000)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.05
    return sd
