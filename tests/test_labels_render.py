from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vsegcli.errors import VsegError
from vsegcli.data.labels import get_label_set, label_set_for
from vsegcli.runtime.render import Palette, overlay

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def test_cityscapes_train_ids_and_label_ids():
    cs = get_label_set("cityscapes")
    assert cs.num_classes == 19
    assert cs.classes[0] == "road" and cs.classes[18] == "bicycle"
    raw = cs.raw_lut()
    # label ids of the 19 evaluated classes map to 0..18; void/ignored ids (0-6, 9, 10, 14-16, 18, 29, 30) to 255
    assert [int(raw[i]) for i in (7, 8, 11, 26, 33)] == [0, 1, 2, 13, 18]
    assert all(raw[i] == 255 for i in (0, 1, 6, 9, 10, 14, 15, 16, 18, 29, 30))
    back = cs.train_to_raw_lut()
    assert [int(back[t]) for t in range(19)] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert cs.palette[13] == (0, 0, 142)


def test_camvid_void_is_ignored():
    cv = get_label_set("camvid")
    assert cv.num_classes == 11
    assert cv.raw_lut()[11] == 255 and cv.raw_lut()[3] == 3
    assert cv.palette[4] == (60, 40, 222)


def test_vspw_reduces_zero_label():
    vs = get_label_set("vspw")
    assert vs.num_classes == 124
    lut = vs.raw_lut()
    assert lut[0] == 255 and lut[255] == 255 and lut[1] == 0 and lut[124] == 123
    assert vs.palette[0] == (120, 120, 120)


@pytest.mark.skipif(not (SHARED / "docs/reference/vspw_palette.json").is_file(), reason="../shared reference docs absent")
def test_vspw_matches_reference_table():
    ref = json.loads((SHARED / "docs/reference/vspw_palette.json").read_text())["classes"]
    vs = get_label_set("vspw")
    assert [r["name"] for r in ref] == list(vs.classes)
    assert [tuple(r["rgb"]) for r in ref] == list(vs.palette)


def test_unknown_label_set_and_generic():
    with pytest.raises(VsegError):
        get_label_set("ade21k")
    g = label_set_for(7)
    assert g.num_classes == 7 and len(set(g.palette)) == 7
    assert label_set_for(19).name == "cityscapes"


def test_overlay_blends_exactly():
    pal = Palette.from_label_set(get_label_set("camvid"))
    frame = torch.full((2, 3, 3), 100, dtype=torch.uint8)
    labels = torch.tensor([[0, 3, 255], [8, 8, 1]], dtype=torch.uint8)
    out = overlay(frame, labels, pal, 0.5).numpy().astype(int)
    colours = pal.colours[labels.numpy()].astype(int)
    expected = np.floor((100 * 128 + colours * 128 + 128) / 256).astype(int)
    np.testing.assert_array_equal(out, expected)
    assert (overlay(frame, labels, pal, 1.0).numpy() == colours).all()
    assert (overlay(frame, labels, pal, 0.0).numpy() == 100).all()
    # ignore (255) is black in the colour map
    assert (colours[0, 2] == 0).all()


def test_overlay_with_classes_colours_only_those():
    """`--classes`: pixels of the kept classes show the blended overlay, every other pixel the
    plain frame; without --classes and legend the blended array is passed on as it is."""
    import numpy as np

    from vsegcli.api import _OverlaySink
    from vsegcli.data.labels import get_label_set
    from vsegcli.runtime.render import Palette

    ls = get_label_set("camvid")
    palette = Palette.from_list([list(c) for c in ls.palette])
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    blended = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 11, (24, 32), dtype=np.uint8)
    sink = _OverlaySink(lambda fps: None, 10.0, None, palette, list(ls.classes), legend=False, only=[2, 8])
    image = sink._image(frame, labels, blended)
    keep = np.isin(labels, [2, 8])
    assert keep.any() and (~keep).any()
    assert np.array_equal(image[keep], blended[keep]) and np.array_equal(image[~keep], frame[~keep])
    assert image is not blended and image is not frame
    plain = _OverlaySink(lambda fps: None, 10.0, None, palette, list(ls.classes), legend=False, only=None)
    assert plain._image(frame, labels, blended) is blended
