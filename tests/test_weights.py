"""Every shipped checkpoint loads and reproduces its model card's CamVid val scores."""
from __future__ import annotations

from pathlib import Path

import pytest

from vsegcli import api
from vsegcli.checkpoints import load_checkpoint
from vsegcli.evaluate import evaluate

CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"
SHIPPED = api.shipped_models()["models"]


def test_default_is_a_shipped_model():
    default = api.shipped_models()["default"]
    if default is None:
        assert api.default_checkpoint() is None
    else:
        assert default in SHIPPED and api.default_checkpoint() == api.weights_dir() / default


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_checkpoint_loads_with_its_card(name):
    card = SHIPPED[name]
    path = api.weights_dir() / name
    assert path.stat().st_size < 20 * 2**20, "shipped weights should stay a few MB (fp16)"
    loaded = load_checkpoint(path)
    assert loaded.meta.architecture == card["architecture"]
    assert loaded.meta.label_set == card["dataset"] and loaded.meta.num_classes == 11


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid absent: cannot re-score shipped weights")
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_checkpoint_reproduces_model_card_miou(name, one_thread):
    card = SHIPPED[name]
    seg = api.load(api.weights_dir() / name, device="cpu")
    result = evaluate(seg, card["dataset"], CAMVID, card["split"], size=card.get("size"))
    assert 100 * result["miou"] == pytest.approx(card["miou"], abs=0.2)
    if card.get("mvc8") is not None:
        assert result["mvc"]["mVC8"] == pytest.approx(card["mvc8"], abs=0.2)


def test_vseg_models_lists_the_shipped_checkpoints_after_the_architectures():
    import json

    from click.testing import CliRunner

    from vsegcli.cli.main import cli

    r = CliRunner().invoke(cli, ["models", "--json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {a["name"] for a in data["architectures"]} >= {card["architecture"] for card in SHIPPED.values()}
    assert sorted(s["name"] for s in data["shipped"]) == sorted(SHIPPED)
    default = api.shipped_models()["default"]
    assert [s["name"] for s in data["shipped"] if s["default"]] == ([default] if default else [])
    for s in data["shipped"]:
        card = SHIPPED[s["name"]]
        assert s["miou"] == card["miou"] and s["architecture"] == card["architecture"] and s["present"]
        assert s["num_classes"] == load_checkpoint(s["path"]).meta.num_classes
    r = CliRunner().invoke(cli, ["models"])
    assert r.exit_code == 0
    text = r.stdout
    assert text.index("shipped checkpoints") > text.index("vseg architectures")
    for name in SHIPPED:
        assert name in text
