"""`vseg run` end to end: real ffmpeg videos in, real mp4 + label PNGs out, and every user error."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from ckptgen import mrcfa_state_dict
from videogen import audio_duration, container_duration, count_packets, make_images, make_video

from vsegcli import api
from vsegcli.checkpoints import CheckpointMeta, load_checkpoint, save_checkpoint
from vsegcli.cli import cli
from vsegcli.data.labels import get_label_set
from vsegcli.models import build_model
from vsegcli.io.video import FrameReader, probe

REPO = Path(__file__).resolve().parents[1]
BIKES = REPO / "examples" / "bikes.mp4"


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory) -> Path:
    """A small random CamVid segformer-b0 checkpoint that runs at a 64-pixel short side."""
    torch.manual_seed(0)
    model = build_model("segformer-b0", 11)
    meta = CheckpointMeta.from_model(model, label_set=get_label_set("camvid"), input_size=64,
                                     provenance={"source": "random init for tests"})
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("ckpt") / "small.safetensors", half=True)


def run(*args: str):
    return CliRunner().invoke(cli, ["run", *args])


def one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def label_pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


def test_bikes_quickstart_acceptance(small_ckpt, tmp_path):
    """The issue's acceptance run: 250-frame 640x272 playable video + 250 label PNGs."""
    out, labels = tmp_path / "out.mp4", tmp_path / "labels"
    r = run(str(BIKES), "-o", str(out), "--labels-dir", str(labels), "--checkpoint", str(small_ckpt), "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["runs"][0]["frames"] == 250
    info = probe(out)
    assert (info.width, info.height) == (640, 272) and info.source_codec == "h264"
    assert count_packets(out) == 250
    assert abs(container_duration(out) - 10.0) <= 1 / 25
    pngs = label_pngs(labels)
    assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(250)]
    first = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert first.shape == (272, 640) and first.dtype == np.uint8 and first.max() < 11
    # the labels are the model's own predictions on the decoded frames
    seg = api.load(small_ckpt, device="cpu")
    with FrameReader(BIKES, max_frames=3) as reader:
        expected = seg.segment_frames([f for _, f in reader])
    for i in range(3):
        got_labels = cv2.imread(str(pngs[i]), cv2.IMREAD_UNCHANGED)
        if summary["device"] == "cpu":
            np.testing.assert_array_equal(got_labels, expected[i])
        else:  # a GPU run computes with TF32 (`--fast-math`): 99.95 % of pixels on an H200, PERFORMANCE 7.1
            assert (got_labels == expected[i]).mean() >= 0.995
    # the overlay really is the blend of frame and colours (within H.264 error)
    with FrameReader(out, max_frames=1) as reader, FrameReader(BIKES, max_frames=1) as src:
        (_, got), (_, frame) = next(iter(reader)), next(iter(src))
    colours = seg.predictor.palette.colours[expected[0]].astype(float)
    blend = 0.5 * frame + 0.5 * colours
    assert np.abs(got.astype(float) - blend).mean() < 6


def test_json_is_machine_readable_and_deterministic(small_ckpt, tmp_path, tiny_video):
    a = run(str(tiny_video), "--no-video", "--labels-dir", str(tmp_path / "a"), "-c", str(small_ckpt), "--json")
    b = run(str(tiny_video), "--no-video", "--labels-dir", str(tmp_path / "b"), "-c", str(small_ckpt), "--json", "-q")
    assert a.exit_code == 0 and b.exit_code == 0
    s = json.loads(a.stdout)
    assert s["model"]["architecture"] == "segformer-b0" and s["model"]["num_classes"] == 11
    assert s["runs"][0]["inference_size"] == [96, 64]  # 64x48 at short side 64 -> 85x64 -> aligned to 32
    # --hwaccel auto tries NVDEC only for CUDA inference: a CPU run decodes in software, silently.
    assert s["runs"][0]["decoder"] == ("software" if s["device"] == "cpu" else s["runs"][0]["decoder"])
    assert "hwaccel_fallback" not in s["runs"][0] or s["device"] != "cpu"
    assert b.stderr == ""  # --quiet: nothing on stderr
    for pa, pb in zip(label_pngs(tmp_path / "a"), label_pngs(tmp_path / "b")):
        assert pa.read_bytes() == pb.read_bytes()


def test_audio_is_kept_and_trimmed(small_ckpt, tmp_path, tiny_video_audio):
    out = tmp_path / "o.mp4"
    r = run(str(tiny_video_audio), "-o", str(out), "-c", str(small_ckpt), "--max-frames", "5")
    assert r.exit_code == 0, r.output
    assert count_packets(out) == 5
    assert probe(out).has_audio
    assert abs(audio_duration(out) - 0.5) < 0.1  # 5 frames at 10 fps


def test_odd_size_is_padded_not_rescaled(small_ckpt, tmp_path):
    src = make_video(tmp_path / "odd.mp4", 321, 241, 4, fps=10)
    r = run(str(src), "-o", str(tmp_path / "o.mp4"), "--labels-dir", str(tmp_path / "l"), "-c", str(small_ckpt), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["runs"][0]
    assert (s["width"], s["height"]) == (321, 241) and s["encoded_size"] == [322, 242]
    assert "padded to 322x242" in r.stderr
    assert cv2.imread(str(label_pngs(tmp_path / "l")[0]), cv2.IMREAD_UNCHANGED).shape == (241, 321)


def test_rotated_input_comes_out_upright(small_ckpt, tmp_path):
    src = make_video(tmp_path / "rot.mp4", 64, 32, 3, fps=10, rotate=90)
    r = run(str(src), "-o", str(tmp_path / "o.mp4"), "-c", str(small_ckpt))
    assert r.exit_code == 0, r.output
    info = probe(tmp_path / "o.mp4")
    assert (info.width, info.height) == (32, 64) and info.rotation == 0


def test_image_folder_and_stride(small_ckpt, tmp_path):
    folder = tmp_path / "frames"
    make_images(folder, [f"f{i}.png" for i in range(1, 12)], width=48, height=32)
    r = run(str(folder), "--no-video", "--labels-dir", str(tmp_path / "l"), "-c", str(small_ckpt), "--stride", "3", "--start", "1")
    assert r.exit_code == 0, r.output
    assert [p.name for p in label_pngs(tmp_path / "l")] == ["000001.png", "000004.png", "000007.png", "000010.png"]


def test_several_inputs_get_their_own_outputs(small_ckpt, tmp_path, tiny_video):
    other = make_video(tmp_path / "second.mp4", 48, 32, 3, fps=10)
    outdir = tmp_path / "out"
    r = run(str(tiny_video), str(other), "-o", str(outdir), "--labels-dir", str(tmp_path / "l"), "-c", str(small_ckpt), "--json")
    assert r.exit_code == 0, r.output
    assert count_packets(outdir / "tiny_seg.mp4") == 10 and count_packets(outdir / "second_seg.mp4") == 3
    assert len(label_pngs(tmp_path / "l" / "tiny")) == 10 and len(label_pngs(tmp_path / "l" / "second")) == 3
    assert len(json.loads(r.stdout)["runs"]) == 2


def test_existing_output_is_kept_without_overwrite(small_ckpt, tmp_path, tiny_video):
    out = tmp_path / "o.mp4"
    out.write_bytes(b"precious")
    line = one_line_error(run(str(tiny_video), "-o", str(out), "-c", str(small_ckpt)))
    assert "exists" in line and out.read_bytes() == b"precious"
    r = run(str(tiny_video), "-o", str(out), "-c", str(small_ckpt), "--overwrite")
    assert r.exit_code == 0 and count_packets(out) == 10


def test_input_is_never_overwritten(small_ckpt, tmp_path):
    src = make_video(tmp_path / "in.mp4", 32, 32, 2, fps=10)
    before = src.read_bytes()
    one_line_error(run(str(src), "-o", str(src), "-c", str(small_ckpt), "--overwrite"))
    assert src.read_bytes() == before


@pytest.mark.parametrize("case", ["missing", "text", "empty", "truncated", "empty-folder"])
def test_bad_inputs_fail_in_one_line_and_write_nothing(small_ckpt, tmp_path, tiny_video, case):
    src = tmp_path / "bad.mp4"
    if case == "text":
        src.write_text("this is not a video\n" * 20)
    elif case == "empty":
        src.write_bytes(b"")
    elif case == "truncated":
        data = tiny_video.read_bytes()
        src.write_bytes(data[: len(data) // 3])
    elif case == "empty-folder":
        src = tmp_path / "nothing"
        src.mkdir()
    out = tmp_path / "out" / "o.mp4"
    one_line_error(run(str(src), "-o", str(out), "--labels-dir", str(tmp_path / "out" / "l"), "-c", str(small_ckpt)))
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_bad_checkpoints(tmp_path, tiny_video, small_ckpt):
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    assert "not a checkpoint" in one_line_error(run(str(tiny_video), "-o", str(tmp_path / "o.mp4"), "-c", str(junk)))
    # label-count mismatch: metadata names 19 classes for an 11-class model
    model = build_model("segformer-b0", 11)
    meta = CheckpointMeta.from_model(model, label_set=get_label_set("camvid"))
    bad = save_checkpoint(model, meta, tmp_path / "bad.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(bad), "pt") as f:
        header = json.loads(f.metadata()["vseg"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    header["classes"] = list(get_label_set("cityscapes").classes)
    header["palette"] = [list(c) for c in get_label_set("cityscapes").palette]
    save_file(tensors, str(bad), metadata={"vseg": json.dumps(header)})
    line = one_line_error(run(str(tiny_video), "-o", str(tmp_path / "o.mp4"), "-c", str(bad)))
    assert "19" in line and "11" in line
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error; this machine has CUDA")
def test_cuda_requested_but_absent(tiny_video, tmp_path, small_ckpt):
    for args in (["--device", "cuda:0"], ["--gpu", "0"]):
        line = one_line_error(run(str(tiny_video), "-o", str(tmp_path / "o.mp4"), "-c", str(small_ckpt), *args))
        assert "CUDA" in line
    assert not (tmp_path / "o.mp4").exists()


def test_interrupted_run_leaves_nothing(small_ckpt, tmp_path, tiny_video):
    class CtrlC:
        def write(self, index, frame, labels, blended):
            if index == 4:
                raise KeyboardInterrupt

        def close(self):
            return None

        def abort(self):
            pass

    seg = api.load(small_ckpt, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        seg.run(tiny_video, output=tmp_path / "o.mp4", labels_dir=tmp_path / "l", extra_sinks=[CtrlC()])
    assert list(tmp_path.iterdir()) == []  # no output, no labels folder, no temporary files


def test_random_init_model_warns(tmp_path, tiny_video):
    r = run(str(tiny_video), "--no-video", "--labels-dir", str(tmp_path / "l"), "--model", "effl0", "--size", "64",
            "--quiet", "--json")
    assert r.exit_code == 0, r.output
    assert "random weights" in r.stderr and "effl0" in r.stderr  # said even with --quiet
    assert json.loads(r.stdout)["model"]["random_init"] is True
    assert len(label_pngs(tmp_path / "l")) == 10


def test_no_default_weights_is_a_clear_error_not_random_output(tmp_path, tiny_video, monkeypatch):
    monkeypatch.setenv("VSEG_WEIGHTS_DIR", str(tmp_path / "empty"))
    r = run(str(tiny_video), "-o", str(tmp_path / "o.mp4"))
    assert r.exit_code == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--checkpoint" in r.stderr and "--model" in r.stderr
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("variant", ["b0", "b1"])
def test_official_mrcfa_checkpoint_runs_20_frames(variant, tmp_path):
    """Issue 3 acceptance: an official-layout MRCFA checkpoint loads strictly and streams a clip."""
    ckpt = tmp_path / f"mrcfa_{variant}.pth"
    torch.save({"meta": {"CLASSES": [f"c{i}" for i in range(124)]}, "state_dict": mrcfa_state_dict(variant),
                "optimizer": {"state": {}, "param_groups": []}}, ckpt)
    src = make_video(tmp_path / "clip.mp4", 96, 64, 20, fps=10)
    r = run(str(src), "-o", str(tmp_path / "o.mp4"), "--labels-dir", str(tmp_path / "l"), "-c", str(ckpt), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["model"]["architecture"] == f"mrcfa-{variant}" and s["model"]["temporal"]
    assert s["model"]["source_format"] == "mrcfa"
    assert s["model"]["ignored_keys"] == []  # training-only conv_seg/deco1..3 load too: nothing dropped
    assert s["runs"][0]["frames"] == 20 and count_packets(tmp_path / "o.mp4") == 20
    assert len(label_pngs(tmp_path / "l")) == 20
    loaded = load_checkpoint(ckpt)
    assert loaded.meta.classes[5] == "c5"


def test_convert_official_mrcfa_to_native(tmp_path):
    src = tmp_path / "mrcfa_b0.pth"
    torch.save({"state_dict": mrcfa_state_dict("b0")}, src)
    dst = tmp_path / "mrcfa.safetensors"
    r = CliRunner().invoke(cli, ["convert", str(src), str(dst), "--half", "--label-set", "vspw", "--input-size", "480"])
    assert r.exit_code == 0, r.output
    native, official = load_checkpoint(dst), load_checkpoint(src)
    assert native.meta.architecture == "mrcfa-b0" and native.meta.label_set == "vspw" and native.meta.input_size == 480
    assert native.meta.classes[0] == "wall"
    for k, v in official.model.state_dict().items():
        assert torch.allclose(native.model.state_dict()[k].float(), v.float(), atol=1e-3, rtol=1e-3), k
    assert dst.stat().st_size < src.stat().st_size * 0.6  # fp16
    line = one_line_error(CliRunner().invoke(cli, ["convert", str(src), str(dst)]))
    assert "already exists" in line


def test_report_option_writes_html_and_json(small_ckpt, tmp_path, tiny_video):
    r = run(str(tiny_video), "--no-video", "--report", str(tmp_path / "r.html"), "-c", str(small_ckpt), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["runs"][0]
    assert s["report"] == str(tmp_path / "r.html") and 0 <= s["consistency"]["tc"] <= 100
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["vseg_report"] == 1 and rep["context"]["frames"] == 10
    assert rep["context"]["architecture"] == "segformer-b0"
    assert rep["metrics"]["tc"] == pytest.approx(s["consistency"]["tc"])
    html = (tmp_path / "r.html").read_text()
    assert "tiny.mp4" in html and 'src="http' not in html
    # the same report path again is refused, and nothing else is left behind
    line = one_line_error(run(str(tiny_video), "--no-video", "--report", str(tmp_path / "r.html"), "-c", str(small_ckpt)))
    assert "exists" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


@pytest.mark.parametrize("flag", [["-o", "out.avi"], ["--stats", "shares.txt"]])
def test_output_name_refused_before_the_model_loads(tmp_path, monkeypatch, flag):
    """A video or stats name the writers cannot write is one line, exit 2, before the model loads."""
    from videogen import make_video

    from vsegcli import api

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(api, "load", no_load)
    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "in.mp4", 64, 48, 2, fps=10)
    r = CliRunner().invoke(cli, ["run", "in.mp4", *flag, "-m", "segformer-b0"])
    assert r.exit_code == 2, r.output
    assert flag[1] in r.stderr and len(r.stderr.strip().splitlines()) == 1
