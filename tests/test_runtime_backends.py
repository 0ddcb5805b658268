"""The ONNX Runtime backend and the CPU precisions agree with fp32 torch on real frames.

Frames: CamVid val (../shared/data/camvid) when present, else the repository's examples/bikes.mp4
(a real street clip); run at a 256-pixel short side to stay small. Thresholds (share of pixels
with the fp32 torch label):
  ORT fp32 (same graph, float rounding only)      >= 99.5 %   measured 100.0 % at 288x640
  ORT int8 (QDQ; stem + decoder fp32; effl0's     >= 90 %     measured 98.69 % on CamVid val (PERFORMANCE.md 8.2)
           depthwise convs int8, mrcfa-effl0's fp32)
  torch bf16 autocast (CPUs with AVX512-BF16/AMX) >= 90 %     measured 99.55 %
  temporal sessions (stt-effl0, mrcfa-effl0) through ORT vs their torch sessions: >= 99.5 %
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vsegcli.errors import VsegError

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'vseg[onnx]')")
pytest.importorskip("onnx", reason="onnx not installed (pip install 'vseg[onnx]')")

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
CAMVID_VAL = REPO.parent / "shared" / "data" / "camvid" / "val"
BIKES = REPO / "examples" / "bikes.mp4"
SIZE = 256


def _frames(count: int, offset: int = 0) -> list[np.ndarray]:
    """`count` consecutive real RGB frames (CamVid val if present, else examples/bikes.mp4)."""
    if CAMVID_VAL.is_dir():
        import cv2

        files = sorted(p for p in CAMVID_VAL.iterdir() if p.suffix in (".png", ".jpg"))[offset:offset + count]
        assert len(files) == count, f"{CAMVID_VAL}: fewer than {offset + count} frames"
        return [np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1]) for p in files]
    from vsegcli.io.video import FrameReader

    if not BIKES.is_file():
        pytest.skip("no real frames: neither ../shared/data/camvid nor examples/bikes.mp4")
    with FrameReader(BIKES, start=offset, max_frames=count) as reader:
        return [f for _, f in reader]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, one_thread) -> Path:
    """One ONNX cache for the module (exports are the slow part); calibration frames beside it."""
    import os

    import cv2

    root = tmp_path_factory.mktemp("ortcache")
    calib = root / "calibration"
    calib.mkdir()
    for i, f in enumerate(_frames(4, offset=40)):  # other frames than the ones scored
        cv2.imwrite(str(calib / f"{i:03d}.png"), f[:, :, ::-1])
    old = {k: os.environ.get(k) for k in ("VSEG_CACHE_DIR", "VSEG_CALIBRATION_FRAMES", "VSEG_MEASURE_PRECISION")}
    os.environ.update(VSEG_CACHE_DIR=str(root), VSEG_CALIBRATION_FRAMES=str(calib), VSEG_MEASURE_PRECISION="1")
    yield root
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _labels(name: str, frames: list[np.ndarray], **kw) -> tuple[list[np.ndarray], object]:
    from vsegcli import api

    seg = api.load(WEIGHTS / name, device="cpu", size=SIZE, **kw)
    return seg.segment_frames(frames), seg


def _agreement(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(np.mean([np.mean(x == y) for x, y in zip(a, b)]))


def test_effl0_onnxruntime_fp32_equals_torch(cache):
    frames = _frames(3)
    ref, _ = _labels("effl0-camvid.safetensors", frames)
    out, seg = _labels("effl0-camvid.safetensors", frames, runtime="onnxruntime")
    assert seg.predictor.runtime == "onnxruntime"
    assert len(list((cache / "onnx").glob("effl0-frame-fp32-*.onnx"))) == 1  # exported once, at this input size
    assert _agreement(ref, out) >= 0.995


def test_onnx_cache_is_reused_and_keyed_by_weights(cache):
    import torch

    from vsegcli import api
    from vsegcli.runtime.onnx_backend import cache_key

    seg = api.load(WEIGHTS / "effl0-camvid.safetensors", device="cpu", size=SIZE, runtime="onnxruntime")
    seg.segment_frames(_frames(1))
    path = next(iter(seg.predictor.backend.paths.values()))
    stamp = path.stat().st_mtime_ns
    api.load(WEIGHTS / "effl0-camvid.safetensors", device="cpu", size=SIZE, runtime="onnxruntime").segment_frames(_frames(1))
    assert path.stat().st_mtime_ns == stamp  # not exported again
    model = seg.predictor.model
    key = cache_key(model, "frame", "fp32", "x")
    with torch.no_grad():
        model.decode_head.cls.bias.add_(1.0)  # other weights -> another cache entry
    try:
        assert cache_key(model, "frame", "fp32", "x") != key
    finally:
        with torch.no_grad():
            model.decode_head.cls.bias.sub_(1.0)


@pytest.mark.skipif(not CAMVID_VAL.is_dir(), reason="int8's threshold holds on CamVid (the calibration domain); "
                    "needs ../shared/data/camvid (on bikes.mp4 close-ups, 4 calibration frames give ~80 %)")
def test_effl0_int8_agrees_with_fp32(cache):
    frames = _frames(3)
    ref, _ = _labels("effl0-camvid.safetensors", frames)
    out, seg = _labels("effl0-camvid.safetensors", frames, runtime="onnxruntime", precision="int8")
    assert seg.predictor.precision == "int8"
    assert _agreement(ref, out) >= 0.90
    # calibrated on frames: the conservative recipe (depthwise convs fp32); the stem stays fp32
    nodes = _int8_nodes(seg)
    assert _depthwise(nodes) and not any(_quantised(n, nodes) for n in _depthwise(nodes))
    stem = [n for n in nodes if n.op_type == "Conv" and n.name.startswith("/backbone/_conv_stem/")]
    assert stem and not any(_quantised(n, nodes) for n in stem)


def _int8_nodes(seg) -> list:
    import onnx

    (path,) = seg.predictor.backend.paths.values()  # the graph this segmenter ran
    return list(onnx.load(str(path)).graph.node)


def _depthwise(nodes) -> list:
    return [n for n in nodes if n.op_type == "Conv" and "_depthwise_conv/" in n.name]


def _quantised(conv, nodes) -> bool:
    """Both the conv's input and weight come out of DequantizeLinear nodes (an int8 conv)."""
    dq = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    return conv.input[0] in dq and conv.input[1] in dq


@pytest.mark.skipif("not __import__('vsegcli.runtime.onnx_backend', fromlist=['x']).cpu_has_bf16()",
                    reason="this CPU has no native bf16 (AVX512-BF16/AMX)")
def test_effl0_bf16_agrees_with_fp32(cache):
    frames = _frames(2)
    ref, _ = _labels("effl0-camvid.safetensors", frames)
    out, _ = _labels("effl0-camvid.safetensors", frames, precision="bf16")
    assert _agreement(ref, out) >= 0.90


@pytest.mark.parametrize("name,count", [("stt-effl0-camvid.safetensors", 4), ("mrcfa-effl0-camvid.safetensors", 5)])
def test_temporal_session_through_onnxruntime_equals_torch(cache, name, count):
    """The temporal module stays in torch; only the per-frame part runs in ORT: same labels."""
    frames = _frames(count)
    ref, _ = _labels(name, frames)
    out, seg = _labels(name, frames, runtime="onnxruntime")
    assert seg.predictor.backend.part in ("features", "encode")
    assert _agreement(ref, out) >= 0.995
    assert _agreement(ref[-1:], out[-1:]) >= 0.995  # the frame that used the temporal context


def _vseg(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "vsegcli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)


def test_run_json_reports_runtime_and_precision(cache, tmp_path, tiny_video):
    proc = _vseg("run", str(tiny_video), "-c", str(WEIGHTS / "effl0-camvid.safetensors"), "--runtime", "auto",
                 "--device", "cpu", "--no-video", "--labels-dir", str(tmp_path / "lab"), "--max-frames", "2", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["runtime"] == "onnxruntime"  # auto: installed, on CPU, model supported
    assert result["precision"] == "fp32"
    assert len(list((tmp_path / "lab").glob("*.png"))) == 2


def test_unvalidated_precision_is_refused_in_one_line(cache, tmp_path, tiny_video):
    proc = _vseg("run", str(tiny_video), "-m", "segformer-b0", "--precision", "int8", "--no-video",
                 "--labels-dir", str(tmp_path / "lab"), env_extra={"VSEG_MEASURE_PRECISION": "0"})
    assert proc.returncode == 2
    assert "int8" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "lab").exists()


def test_measured_int8_is_offered_and_reported(cache, tmp_path, tiny_video):
    """effl0's int8 kept CamVid val mIoU within 0.5 (MEASURED_MIOU): `--precision int8` alone runs
    it in ONNX Runtime, and the JSON says so."""
    proc = _vseg("run", str(tiny_video), "-c", str(WEIGHTS / "effl0-camvid.safetensors"), "--precision", "int8",
                 "--no-video", "--labels-dir", str(tmp_path / "lab"), "--max-frames", "2", "--json", "-q",
                 env_extra={"VSEG_MEASURE_PRECISION": "0"})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert (result["precision"], result["runtime"]) == ("int8", "onnxruntime")
    assert len(list((tmp_path / "lab").glob("*.png"))) == 2


def test_int8_from_measured_ranges_is_the_graph_the_frames_give(cache):
    """Ranges measured once (`calibrate_ranges`, what ships beside a checkpoint) quantise to the
    very int8 graph that calibrating on the same frames gives: every scale, zero point and weight."""
    import onnx
    from onnx import numpy_helper

    from vsegcli import api
    from vsegcli.runtime.onnx_backend import INT8_STEM_AND_HEAD, OrtBackend, calibrate_ranges, quantize_int8

    seg = api.load(WEIGHTS / "effl0-camvid.safetensors", device="cpu")
    p = seg.predictor
    backend = OrtBackend(p.model, "fp32", p.mean.flatten().tolist(), p.std.flatten().tolist())
    size = (128, 224)
    fp32 = backend.graph_path(size)
    arrays = [backend.prepare(f, size) for f in _frames(3, offset=50)]
    from_frames = quantize_int8(fp32, cache / "from_frames.onnx", arrays, INT8_STEM_AND_HEAD)
    ranges = calibrate_ranges(fp32, arrays)
    assert len(ranges) > 50 and all(lo <= hi for lo, hi in ranges.values())
    ranges["/from/another/export_output_0"] = (0.0, 1.0)  # names this graph lacks are ignored
    from_ranges = quantize_int8(fp32, cache / "from_ranges.onnx", ranges, INT8_STEM_AND_HEAD)
    a, b = ({i.name: numpy_helper.to_array(i) for i in onnx.load(str(f)).graph.initializer}
            for f in (from_frames, from_ranges))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    del ranges[next(k for k in ranges if "_project_conv" in k)]
    with pytest.raises(VsegError, match="int8 ranges lack 1 activations"):
        quantize_int8(fp32, cache / "partial.onnx", ranges, INT8_STEM_AND_HEAD)


def test_shipped_ranges_make_int8_work_without_frames(cache, tmp_path, tiny_video):
    """The shipped checkpoints carry their int8 ranges (X.int8-ranges.json, CamVid train): with no
    VSEG_CALIBRATION_FRAMES, `--precision int8` alone runs, and the JSON names the ranges file."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("VSEG_CALIBRATION_FRAMES", "VSEG_MEASURE_PRECISION")}
    proc = subprocess.run([sys.executable, "-m", "vsegcli", "run", str(tiny_video), "-c",
                           str(WEIGHTS / "stt-effl0-camvid.safetensors"), "--precision", "int8", "--no-video",
                           "--labels-dir", str(tmp_path / "lab"), "--max-frames", "3", "--json", "-q"],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    model = json.loads(proc.stdout)["model"]
    assert model["int8_calibration"] == str(WEIGHTS / "stt-effl0-camvid.int8-ranges.json")
    assert model["int8_recipe"] == "stem-and-head"
    assert len(list((tmp_path / "lab").glob("*.png"))) == 3
    from vsegcli.runtime.onnx_backend import INT8_CONSERVATIVE, INT8_STEM_AND_HEAD, Int8Ranges

    recipes = {name: Int8Ranges.read(WEIGHTS / f"{name}-camvid.int8-ranges.json").recipe
               for name in ("effl0", "stt-effl0", "mrcfa-effl0")}  # every shipped model that offers int8
    assert recipes == {"effl0": INT8_STEM_AND_HEAD, "stt-effl0": INT8_STEM_AND_HEAD, "mrcfa-effl0": INT8_CONSERVATIVE}


def test_shipped_ranges_quantise_the_depthwise_convs(cache, monkeypatch):
    """effl0's shipped file names the fast recipe: its depthwise convs run int8 (the speed), and
    the labels agree with fp32 on real frames."""
    monkeypatch.delenv("VSEG_CALIBRATION_FRAMES")
    frames = _frames(2, offset=20)
    ref, _ = _labels("effl0-camvid.safetensors", frames)
    out, seg = _labels("effl0-camvid.safetensors", frames, runtime="onnxruntime", precision="int8")
    assert seg.info.int8_calibration == str(WEIGHTS / "effl0-camvid.int8-ranges.json")
    nodes = _int8_nodes(seg)
    assert _depthwise(nodes) and all(_quantised(n, nodes) for n in _depthwise(nodes))
    assert _agreement(ref, out) >= 0.80  # on bikes.mp4 too (CI without CamVid); CamVid val: 98.69 %


def test_unusable_ranges_files_are_refused_in_one_line(cache, tmp_path, monkeypatch):
    from vsegcli import api

    monkeypatch.delenv("VSEG_CALIBRATION_FRAMES")
    good = json.loads((WEIGHTS / "effl0-camvid.int8-ranges.json").read_text())
    cases = {"list": [], "inverted": {**good, "ranges": {"/a_output_0": [2.0, 1.0]}},
             "nan": {**good, "ranges": {"/a_output_0": [0.0, float("nan")]}}, "no-recipe": {k: v for k, v in good.items()
                                                                                          if k != "recipe"}}
    for name, doc in cases.items():
        path = tmp_path / f"{name}.int8-ranges.json"
        path.write_text(json.dumps(doc))
        with pytest.raises(VsegError, match="not a usable vseg int8 ranges file"):
            api.load(WEIGHTS / "effl0-camvid.safetensors", device="cpu", runtime="onnxruntime", precision="int8",
                     calibration=path)
    # effl0's file for the stt-effl0 model (its activations are a subset of effl0's), and for
    # other effl0 weights: the architecture, then the weights' hash tell
    with pytest.raises(VsegError, match="int8 ranges of effl0, not stt-effl0"):
        api.load(WEIGHTS / "stt-effl0-camvid.safetensors", device="cpu", precision="int8",
                 calibration=WEIGHTS / "effl0-camvid.int8-ranges.json")
    retrained = tmp_path / "retrained.int8-ranges.json"
    retrained.write_text(json.dumps({**good, "weights": "0" * 16}))
    with pytest.raises(VsegError, match="measured on other weights"):
        api.load(WEIGHTS / "effl0-camvid.safetensors", device="cpu", precision="int8", calibration=retrained)
    other = tmp_path / "ranges.json"
    other.write_text(json.dumps(good))
    with pytest.raises(VsegError, match=r"\*\.int8-ranges\.json"):
        api.load(WEIGHTS / "effl0-camvid.safetensors", device="cpu", precision="int8", calibration=other)


def test_calibration_frames_override_the_shipped_ranges(cache):
    """$VSEG_CALIBRATION_FRAMES (set by the fixture) wins over the file beside the checkpoint."""
    import os

    _, seg = _labels("effl0-camvid.safetensors", _frames(1), runtime="onnxruntime", precision="int8")
    assert seg.info.int8_calibration == os.environ["VSEG_CALIBRATION_FRAMES"]
    assert seg.info.int8_recipe == "conservative"  # frames: the depthwise convs stay fp32
