"""The ONNX Runtime graph cache: an int8 graph's key covers everything its calibration depends on
(the calibration frames' content, not only their names; the checkpoint's mean/std), and which part
of a model runs in ORT is asked of the model, not decided by its class (docs/ARCHITECTURE.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'vseg[onnx]')")


def _write_frames(folder: Path, value: int) -> Path:
    import cv2

    folder.mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((8, 8, 3), value + i, np.uint8))
    return folder


@pytest.fixture
def stub_export(monkeypatch, tmp_path):
    """No real export / quantisation: the cache logic alone (each writes a stub file)."""
    from vsegcli.runtime import onnx_backend

    monkeypatch.setenv("VSEG_CACHE_DIR", str(tmp_path / "cache"))

    def export(model, part, path, size):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"fp32")
        return path

    def quantize(fp32_path, out_path, calibration, keep_fp32=(), method=""):
        out_path.write_bytes(b"int8")
        return out_path

    monkeypatch.setattr(onnx_backend, "export_onnx", export)
    monkeypatch.setattr(onnx_backend, "quantize_int8", quantize)
    return onnx_backend


def test_int8_cache_key_follows_calibration_content_and_normalisation(stub_export, tmp_path):
    from vsegcli.models import build_model

    model = build_model("effl0", 11).eval()
    a = _write_frames(tmp_path / "a", 10)
    b = _write_frames(tmp_path / "b", 200)  # same file names, other pixels
    mean, std = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)

    def path(calib: Path, mean=mean, std=std) -> Path:
        return stub_export.OrtBackend(model, "int8", mean, std, calibration=calib).graph_path((32, 32))

    base = path(a)
    assert path(a) == base  # reused
    assert path(b) != base  # other calibration frames, same names: other activation ranges
    assert path(a, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)) != base  # calibrated on other inputs


def test_int8_cache_key_follows_the_ranges_file_content_and_recipe(stub_export, tmp_path):
    """Ranges files of the same weights: other ranges or another recipe -> another graph; the same
    content under another name -> the same graph."""
    import json

    from vsegcli.models import build_model

    model = build_model("effl0", 11).eval()
    ob = stub_export
    base = {"format": ob.RANGES_FORMAT, "architecture": "effl0", "weights": ob.weights_hash(model),
            "recipe": list(ob.INT8_CONSERVATIVE), "method": "minmax", "size": [32, 32], "frames": "test",
            "ranges": {"/x_output_0": [0.0, 6.0]}}

    def path(name: str, **change) -> Path:
        f = tmp_path / f"{name}.int8-ranges.json"
        f.write_text(json.dumps({**base, **change}))
        return ob.OrtBackend(model, "int8", calibration=f).graph_path((32, 32))

    first = path("a")
    assert path("copy") == first
    assert path("b", ranges={"/x_output_0": [0.0, 5.0]}) != first
    assert path("c", recipe=list(ob.INT8_STEM_AND_HEAD)) != first
    with pytest.raises(ob.VsegError, match="recipe must be a list"):
        path("d", recipe="abc")
    with pytest.raises(ob.VsegError, match="written by another vseg"):
        path("e", format="vseg-int8-ranges/1")
    with pytest.raises(ob.VsegError, match="int8 ranges of stt-effl0, not effl0"):
        path("f", architecture="stt-effl0")


def test_exported_part_is_asked_of_the_model():
    from vsegcli.models import build_model
    from vsegcli.models.base import Segmentor
    from vsegcli.runtime.onnx_backend import exported_part

    assert exported_part(build_model("effl0", 11)) == "frame"
    assert exported_part(build_model("stt-effl0", 11)) == "features"
    assert exported_part(build_model("mrcfa-effl0", 11)) == "encode"

    class OtherTemporal(Segmentor):  # a temporal family the runtime has never heard of
        temporal = True
        per_frame_part = "features"

    assert exported_part(OtherTemporal(3)) == "features"


def test_weights_hash_of_an_unfolded_batchnorm_model():
    """`api.load(fold_bn=False)` / `vseg bench --no-fold-bn` keep BatchNorm's 0-dim
    num_batches_tracked buffers; the cache key must still hash them."""
    import torch

    from vsegcli.models import build_model
    from vsegcli.runtime.onnx_backend import weights_hash

    model = build_model("effl0", 11)
    key = weights_hash(model)
    buf = next(b for n, b in model.named_buffers() if n.endswith("num_batches_tracked"))
    with torch.no_grad():
        buf.add_(1)
    assert weights_hash(model) != key
