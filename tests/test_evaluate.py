"""`evaluate` and `vseg eval`: protocol (streaming order, context, sessions), every metric checked
against an independent brute-force computation, an oracle, saved predictions, distributed runs."""
from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from datasetgen import make_camvid, make_cityscapes, make_vspw
from vsegcli.cli import cli
from vsegcli.runtime import Predictor
from vsegcli.errors import VsegError
from vsegcli.evaluate import evaluate, load_for_dataset, vspw_resize_rule
from vsegcli.data.labels import LabelSet, get_label_set
from vsegcli.metrics import temporal_consistency
from vsegcli.models.base import Segmentor, Session
from vsegcli.runtime.render import Palette

REPO = Path(__file__).resolve().parents[1]
REAL_CAMVID = REPO.parent / "shared" / "data" / "camvid"
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


# ------------------------------------------------------------------ fake models


class PaletteModel(Segmentor):
    """Labels each pixel with the nearest palette colour: the ground truth on palette-painted PNGs.

    With `blend` > 0 its session mixes each frame with the previous one first, so it is a
    temporal model whose errors (trails behind moving shapes) depend on the frame order. Every
    step records (session number, frame index in the session, SHA-1 of the RGB frame it saw).
    """

    output_stride = 1
    size_divisor = 1

    def __init__(self, label_set: LabelSet, blend: float = 0.0) -> None:
        super().__init__(label_set.num_classes)
        self.register_buffer("palette", torch.tensor(label_set.palette, dtype=torch.float32))
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))
        self.blend = blend
        self.calls: list[tuple[int, int, str]] = []
        self.sessions = 0

    def rgb(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def logits(self, rgb: torch.Tensor) -> torch.Tensor:
        return -((rgb[:, None] - self.palette[None, :, :, None, None]) ** 2).sum(2)

    def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(self.rgb(images))

    def new_session(self) -> Session:
        self.sessions += 1
        return _BlendSession(self, self.sessions)


class _BlendSession(Session):
    def __init__(self, model: PaletteModel, number: int) -> None:
        super().__init__(model)
        self.number = number
        self.prev: torch.Tensor | None = None

    def step(self, frame: torch.Tensor) -> torch.Tensor:
        m = self.model
        rgb = m.rgb(frame)
        m.calls.append((self.number, self.frame_index, _sha(rgb.round().clamp(0, 255).to(torch.uint8)[0].numpy())))
        mix = rgb if self.prev is None or not m.blend else (1 - m.blend) * rgb + m.blend * self.prev
        self.prev = rgb
        self.frame_index += 1
        return m.logits(mix)


def _sha(chw: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(chw).tobytes()).hexdigest()


def _predictor(model: Segmentor, label_set: LabelSet, size: int | None = None) -> Predictor:
    return Predictor(model, MEAN, STD, Palette.from_label_set(label_set), torch.device("cpu"),
                     size=size, classes=list(label_set.classes))


# ------------------------------------------------------------------ independent reference


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _gt(path: Path, dataset: str) -> np.ndarray:
    raw = np.asarray(Image.open(path)).astype(np.int32)
    if dataset == "camvid":
        return np.where(raw < 11, raw, 255).astype(np.uint8)
    if dataset == "vspw":
        return np.where((raw >= 1) & (raw <= 124), raw - 1, 255).astype(np.uint8)
    ids = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    out = np.full(raw.shape, 255, np.uint8)
    for train, lid in enumerate(ids):
        out[raw == lid] = train
    return out


def _stream(predictor: Predictor, frames: list[Path]) -> list[np.ndarray]:
    """The model over one video by hand: one session, frames in order."""
    session = predictor.new_session()
    return [predictor.step(session, torch.from_numpy(_rgb(f))).numpy() for f in frames]


def _brute_force(videos: list[tuple[list[np.ndarray], list[np.ndarray | None]]], k: int,
                 frames: list[list[Path]] | None = None) -> dict:
    """Scores by definition: confusion by per-class masks, mIoU over GT-present classes and over
    classes with a non-empty union, FWIoU,
    pixel accuracy; mVC_k by its formula (range(N-k), videos <= 16 frames skipped, pooled mean);
    TC on each video's consecutive predictions (confusions summed); flicker by counting."""
    conf = np.zeros((k, k), np.int64)
    for preds, gts in videos:
        for p, g in zip(preds, gts):
            if g is None:
                continue
            for a in range(k):
                for b in range(k):
                    conf[a, b] += int(np.sum((g == a) & (p == b)))
    tp, gt_c, pr_c = np.diag(conf).astype(float), conf.sum(1).astype(float), conf.sum(0).astype(float)
    present = gt_c > 0
    union = gt_c + pr_c - tp
    iou = tp[present] / union[present]
    out = {"miou_gt_present": iou.mean(), "miou_nanmean": (tp[union > 0] / union[union > 0]).mean(),
           "fwiou": float((gt_c[present] / gt_c.sum() * iou).sum()),
           "pixel_accuracy": tp.sum() / gt_c.sum(), "matrix": conf}
    for win in (8, 16):
        vals = []
        for preds, gts in videos:
            if len(gts) <= 16:
                continue
            for i in range(len(gts) - win):
                g_same = np.logical_and.reduce([gts[i] == gts[i + j] for j in range(1, win)])
                p_same = np.logical_and.reduce([preds[i] == preds[i + j] for j in range(1, win)])
                if g_same.sum():
                    vals.append((g_same & p_same).sum() / g_same.sum())
        out[f"mVC{win}"] = float(np.mean(vals) * 100) if vals else None
    if frames is not None:
        tc_conf = np.zeros((k, k), np.int64)
        changed = total = 0
        for (preds, _), fr in zip(videos, frames):
            tc_conf += temporal_consistency([_rgb(f) for f in fr], preds, k, keep_heatmap=False).tc_confusion
            for a, b in zip(preds, preds[1:]):
                changed += int((a != b).sum())
                total += a.size
        d = np.diag(tc_conf).astype(float)
        union = tc_conf.sum(0) + tc_conf.sum(1) - d
        out["tc"] = float(np.mean(d[union > 0] / union[union > 0]) * 100)
        out["tc_matrix"] = tc_conf
        out["flicker"] = changed / total
    return out


def _close(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


# ------------------------------------------------------------------ resize rules


def test_vspw_resize_rule():
    assert vspw_resize_rule(480, 853, 32) == (480, 864)  # the official example
    assert vspw_resize_rule(720, 1280, 32) == (480, 864)  # 16:9 down to 480x853 first
    assert vspw_resize_rule(1080, 1440, 32) == (480, 640)  # 4:3 limited by the short side
    assert vspw_resize_rule(240, 320, 32) == (480, 640)  # small frames are scaled up
    assert vspw_resize_rule(400, 1600, 32) == (224, 864)  # wide: long side 853 -> 213 x 853
    assert vspw_resize_rule(480, 853, 64) == (512, 896)  # a model with a coarser grid


def test_vspw_official_size_unless_size_given(tmp_path: Path):
    make_vspw(tmp_path, videos={"v": 2})

    class Constant(Segmentor):
        def forward_frame(self, images: torch.Tensor) -> torch.Tensor:
            self.seen = tuple(images.shape[-2:])
            return torch.zeros(1, self.num_classes, images.shape[-2] // 4, images.shape[-1] // 4)

    ls = get_label_set("vspw")
    model = Constant(124)
    res = evaluate(_predictor(model, ls, size=96), "vspw", tmp_path, "val")
    assert res["per_sequence"][0]["input_size"] == [480, 736] == list(model.seen)  # 64x96 -> 480x720 -> x32
    assert "853x480" in res["protocol"]["resize"]
    res = evaluate(_predictor(model, ls), "vspw", tmp_path, "val", size=64)
    assert res["per_sequence"][0]["input_size"] == [64, 96] == list(model.seen)


# ------------------------------------------------------------------ oracle and brute force


@pytest.mark.parametrize("dataset", ["camvid", "cityscapes"])
def test_oracle_scores_one(tmp_path: Path, dataset: str):
    (make_camvid if dataset == "camvid" else make_cityscapes)(tmp_path)
    ls = get_label_set(dataset)
    res = evaluate(_predictor(PaletteModel(ls), ls), dataset, tmp_path, "val", tc=dataset == "camvid")
    assert res["miou"] == 1.0 and res["fwiou"] == 1.0 and res["pixel_accuracy"] == 1.0
    assert res["num_classes"] == ls.num_classes and res["label_set"] == dataset
    present = [n for n, c in res["per_class"].items() if c["gt_pixels"]]
    assert len(present) >= 5 and all(res["per_class"][n]["iou"] == 1.0 for n in present)
    if dataset == "camvid":
        assert res["tc"]["tc"] > 50 and res["tc"]["pairs"] == 5 + 3


def test_metrics_match_brute_force_camvid(tmp_path: Path):
    """Every number of evaluate() against the same model streamed by hand and scored by definition."""
    manifest = make_camvid(tmp_path, sequences={"0016E5": 18, "0001TP": 5, "Seq05VD": 3})
    ls = get_label_set("camvid")
    model = PaletteModel(ls, blend=0.5)  # temporal, with errors that depend on frame order
    predictor = _predictor(model, ls)
    res = evaluate(predictor, "camvid", tmp_path, "val", tc=True)
    names = sorted(manifest)  # CamVid sequences in name order
    frames = [[f for f, _ in manifest[n]] for n in names]
    videos = [(_stream(predictor, fr), [_gt(g, "camvid") for _, g in manifest[n]]) for n, fr in zip(names, frames)]
    ref = _brute_force(videos, 11, frames)
    ref["miou"] = ref["miou_nanmean"]  # CamVid's official mIoU: classes with a non-empty union (mmseg)
    assert 0.3 < ref["miou"] < 0.999  # the blend makes real mistakes
    assert np.array_equal(np.asarray(res["confusion"]["matrix"]), ref["matrix"])
    assert res["miou_definition"] == "nonempty-union"
    for key in ("miou", "fwiou", "pixel_accuracy", "miou_gt_present", "miou_nanmean"):
        assert _close(res[key], ref[key]), key
    for key in ("mVC8", "mVC16"):
        assert _close(res["mvc"][key], ref[key]), key
    assert res["mvc"]["videos_used"] == 1 and res["mvc"]["videos_skipped"] == 2
    assert _close(res["tc"]["tc"], ref["tc"]) and _close(res["tc"]["flicker_rate"], ref["flicker"])
    assert res["tc"]["pairs"] == 17 + 4 + 2
    assert [s["name"] for s in res["per_sequence"]] == names
    assert res["frames_streamed"] == res["frames_scored"] == 26 == res["speed"]["frames"]
    assert res["speed"]["fps_inference"] > 0 and res["speed"]["fps_wall"] > 0
    # A fresh session per sequence, frames in time order (frame numbers, not names).
    expected = [_sha(_rgb(f).transpose(2, 0, 1)) for fr in frames for f in fr]
    assert [c[2] for c in model.calls[:26]] == expected
    assert [(c[0], c[1]) for c in model.calls[:26]] == [(s + 1, i) for s, fr in enumerate(frames) for i in range(len(fr))]


def test_metrics_match_brute_force_vspw(tmp_path: Path):
    manifest = make_vspw(tmp_path, videos={"127_-hIVCYO4C90": 18, "13_aBcD": 4})
    ls = get_label_set("vspw")
    predictor = _predictor(PaletteModel(ls, blend=0.5), ls)
    res = evaluate(predictor, "vspw", tmp_path, "val", size=64)  # 64: native size, no upscaling
    videos = [(_stream(predictor, [f for f, _ in items]), [_gt(m, "vspw") for _, m in items])
              for items in manifest.values()]
    ref = _brute_force(videos, 124)
    ref["miou"] = ref["miou_gt_present"]  # VSPW's official mIoU (its Evaluator): GT-present classes
    assert ref["miou_gt_present"] != ref["miou_nanmean"]  # the two definitions differ here
    assert np.array_equal(np.asarray(res["confusion"]["matrix"]), ref["matrix"])
    assert res["miou_definition"] == "gt-present"
    for key in ("miou", "fwiou", "pixel_accuracy", "miou_nanmean"):
        assert _close(res[key], ref[key]), key
    for key in ("mVC8", "mVC16"):
        assert _close(res["mvc"][key], ref[key]), key
    assert res["tc"] is None and res["frames_scored"] == 22


def test_real_model_matches_manual_session(tmp_path: Path):
    """A real temporal architecture (MRCFA: references t-9, t-6, t-3 from its session)."""
    manifest = make_camvid(tmp_path, sequences={"0016E5": 11, "0001TP": 3})
    seg = load_for_dataset("camvid", model="mrcfa-b0", device="cpu")
    assert seg.predictor.num_classes == 11 and seg.info.random_init and seg.info.temporal
    res = evaluate(seg, "camvid", tmp_path, "val")
    names = sorted(manifest)
    videos = [(_stream(seg.predictor, [f for f, _ in manifest[n]]), [_gt(g, "camvid") for _, g in manifest[n]])
              for n in names]
    ref = _brute_force(videos, 11)
    assert np.array_equal(np.asarray(res["confusion"]["matrix"]), ref["matrix"])
    assert _close(res["miou"], ref["miou_nanmean"])  # CamVid: classes with a non-empty union
    assert res["model"]["architecture"] == "mrcfa-b0" and res["mvc"]["videos_skipped"] == 2


# ------------------------------------------------------------------ Cityscapes protocol


@pytest.mark.parametrize("tc", [False, True])
def test_cityscapes_snippet_streaming(tmp_path: Path, tc: bool):
    manifest = make_cityscapes(tmp_path)
    ls = get_label_set("cityscapes")
    model = PaletteModel(ls, blend=0.5)
    res = evaluate(_predictor(model, ls), "cityscapes", tmp_path, "val", tc=tc)
    n = 30 if tc else 20  # context up to the annotated (20th) frame; the 10 after only for TC
    expected = []
    for s, name in enumerate(sorted(manifest)):
        for i, (frame, _) in enumerate(manifest[name][:n]):
            expected.append((s + 1, i, _sha(_rgb(frame).transpose(2, 0, 1))))
    assert model.calls == expected
    assert res["frames_streamed"] == 3 * n and res["frames_scored"] == 3
    assert res["mvc"] is None
    if tc:
        assert res["tc"]["pairs"] == 3 * 29 and res["tc"]["tc"] is not None
    # The score is that of the annotated frame's prediction after its 19 context frames.
    videos = []
    for name in sorted(manifest):
        preds = _stream(_predictor(PaletteModel(ls, blend=0.5), ls), [f for f, _ in manifest[name][:20]])
        videos.append(([preds[19]], [_gt(manifest[name][19][1], "cityscapes")]))
    ref = _brute_force(videos, 19)
    assert np.array_equal(np.asarray(res["confusion"]["matrix"]), ref["matrix"])


def test_cityscapes_per_frame_layout_notes(tmp_path: Path):
    make_cityscapes(tmp_path, sequence_package=False)
    ls = get_label_set("cityscapes")
    model = PaletteModel(ls)
    with pytest.warns(UserWarning, match="no earlier frames"):
        res = evaluate(_predictor(model, ls), "cityscapes", tmp_path, "val")
    assert res["miou"] == 1.0 and res["frames_streamed"] == 3
    assert len(res["notes"]) == 1 and "leftImg8bit_sequence" in res["notes"][0]


def test_save_predictions_cityscapes(tmp_path: Path):
    manifest = make_cityscapes(tmp_path / "cs")
    ls = get_label_set("cityscapes")
    out = tmp_path / "results"
    res = evaluate(_predictor(PaletteModel(ls, blend=0.5), ls), "cityscapes", tmp_path / "cs", "val",
                   save_predictions=out)
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert files == [f"{n.split('_')[0]}/{n}_pred.png" for n in sorted(manifest)]
    lut = ls.raw_lut()
    for name in sorted(manifest):
        saved = np.asarray(Image.open(out / name.split("_")[0] / f"{name}_pred.png"))
        assert set(np.unique(saved)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
        preds = _stream(_predictor(PaletteModel(ls, blend=0.5), ls), [f for f, _ in manifest[name][:20]])
        assert np.array_equal(lut[saved], preds[19])  # label ids back to train ids: the prediction
    # cityscapesscripts on the written files gives our nan-mean mIoU (skips without it).
    from test_metrics_cityscapes import TESTS, _need_reference

    python = _need_reference()
    job = [{"pred": [str(out / n.split("_")[0] / f"{n}_pred.png") for n in sorted(manifest)],
            "gt": [str(manifest[n][19][1]) for n in sorted(manifest)]}]
    (tmp_path / "jobs.json").write_text(json.dumps(job))
    proc = subprocess.run([python, str(TESTS / "cityscapes_ref.py"), str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])[0]
    assert math.isclose(theirs["averageScoreClasses"], res["miou"], rel_tol=1e-9)  # the headline mIoU


def test_save_predictions_camvid(tmp_path: Path):
    manifest = make_camvid(tmp_path / "cv", sequences={"0016E5": 4, "0001TP": 2})
    ls = get_label_set("camvid")
    predictor = _predictor(PaletteModel(ls, blend=0.5), ls)
    evaluate(predictor, "camvid", tmp_path / "cv", "val", save_predictions=tmp_path / "pred")
    for name, items in manifest.items():
        preds = _stream(predictor, [f for f, _ in items])
        for (frame, _), p in zip(items, preds):
            assert np.array_equal(np.asarray(Image.open(tmp_path / "pred" / name / f"{frame.stem}.png")), p)
    assert not list((tmp_path / "pred").rglob(".*"))  # no temporary files left
    with pytest.raises(VsegError, match="inside the dataset folder"):
        evaluate(predictor, "camvid", tmp_path / "cv", "val", save_predictions=tmp_path / "cv" / "out")


# ------------------------------------------------------------------ user errors


def test_user_errors(tmp_path: Path):
    make_camvid(tmp_path / "cv", sequences={"0016E5": 3})
    make_cityscapes(tmp_path / "cs", snippets=(("munster", 100, 19),))
    make_vspw(tmp_path / "vs", split="test", videos={"a": 2}, masks=False)
    cs, cv = get_label_set("cityscapes"), get_label_set("camvid")
    with pytest.raises(VsegError, match="model predicts 19 classes but camvid has 11"):
        evaluate(_predictor(PaletteModel(cs), cs), "camvid", tmp_path / "cv", "val")
    with pytest.raises(VsegError, match="mVC needs ground truth on consecutive frames"):
        evaluate(_predictor(PaletteModel(cs), cs), "cityscapes", tmp_path / "cs", "val", mvc=True)
    with pytest.raises(VsegError, match="no annotations to score"):
        evaluate(_predictor(PaletteModel(get_label_set("vspw")), get_label_set("vspw")), "vspw",
                 tmp_path / "vs", "test", size=64)
    with pytest.raises(VsegError, match="no annotated frame was scored.*--max-frames"):
        evaluate(_predictor(PaletteModel(cs), cs), "cityscapes", tmp_path / "cs", "val", max_frames=10)
    res = evaluate(_predictor(PaletteModel(cv), cv), "camvid", tmp_path / "cv", "val", max_frames=2)
    assert res["frames_scored"] == 2


# ------------------------------------------------------------------ distributed (gloo, 2 processes)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def test_distributed_two_processes_equal_one(tmp_path: Path):
    make_camvid(tmp_path / "cv", sequences={"0016E5": 18, "0001TP": 5, "Seq05VD": 3})
    args = ["eval", "--dataset", "camvid", "--data-root", str(tmp_path / "cv"), "--model", "segformer-b0",
            "--device", "cpu", "--tc", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "vsegcli", *args, "--json", str(tmp_path / "one.json"),
                          "--save-predictions", str(tmp_path / "p1")],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "vsegcli", *args, "--json", str(tmp_path / "two.json"),
                          "--save-predictions", str(tmp_path / "p2")],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert a["speed"]["processes"] == 1 and b["speed"]["processes"] == 2
    assert a["speed"]["frames"] == b["speed"]["frames"] == 26
    for d in (a, b):
        for key in ("speed", "command", "predictions_dir"):
            d.pop(key)
    assert a == b  # every score bit-identical: integer sums and an order-fixed mVC merge
    assert a["mvc"]["mVC8"] is not None and a["tc"]["tc"] is not None
    files = sorted(p.relative_to(tmp_path / "p1") for p in (tmp_path / "p1").rglob("*.png"))
    assert len(files) == 26
    for f in files:
        assert (tmp_path / "p1" / f).read_bytes() == (tmp_path / "p2" / f).read_bytes()


# ------------------------------------------------------------------ CLI


def test_cli_eval_end_to_end(tmp_path: Path):
    make_camvid(tmp_path / "cv", sequences={"0016E5": 4, "0001TP": 2})
    out = tmp_path / "r.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["eval", "--dataset", "CamVid", "--data-root", str(tmp_path / "cv"),
                                 "--model", "segformer-b0", "--device", "cpu", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for row in ("sky", "bicyclist", "mIoU", "FWIoU", "pixel acc", "TC", "mVC8", "mVC16", "fps (inference)"):
        assert row in result.stdout
    assert "random weights" in result.stderr
    data = json.loads(out.read_text())
    assert data["dataset"] == "camvid" and data["split"] == "val" and data["num_classes"] == 11
    assert data["model"]["architecture"] == "segformer-b0" and data["model"]["random_init"]
    assert data["frames_scored"] == 6 and data["command"] and len(data["per_class"]) == 11
    assert 0.0 <= data["miou"] <= 1.0 and data["tc"] is None and data["mvc"]["videos_skipped"] == 2

    result = runner.invoke(cli, ["eval", "--dataset", "camvid", "--data-root", str(tmp_path / "cv"),
                                 "--model", "segformer-b0", "--device", "cpu", "--json", "-", "--max-sequences", "1"])
    assert result.exit_code == 0, result.output
    data2 = json.loads(result.stdout)  # stdout holds only the JSON; the table went to stderr
    assert data2["sequences"] == 1 and "mIoU" in result.stderr


def test_cli_eval_user_errors(tmp_path: Path):
    from vsegcli.checkpoints import CheckpointMeta, save_checkpoint
    from vsegcli.models import build_model

    make_camvid(tmp_path / "cv", sequences={"0016E5": 2})
    net = build_model("segformer-b0", 19)
    ckpt = save_checkpoint(net, CheckpointMeta.from_model(net), tmp_path / "cs19.safetensors", half=True)
    runner = CliRunner()
    base = ["eval", "--dataset", "camvid", "--device", "cpu"]
    r = runner.invoke(cli, [*base, "--data-root", str(tmp_path / "cv"), "--checkpoint", str(ckpt)])
    assert r.exit_code == 2 and "predicts 19 classes but camvid has 11" in r.stderr
    r = runner.invoke(cli, [*base, "--data-root", str(tmp_path), "--model", "segformer-b0"])
    assert r.exit_code == 2 and "(SegNet CamVid layout)" in r.stderr and "Traceback" not in r.output
    r = runner.invoke(cli, [*base, "--data-root", str(tmp_path / "nope"), "--model", "segformer-b0"])
    assert r.exit_code == 2 and "no such folder" in r.stderr
    r = runner.invoke(cli, ["eval", "--help"])
    assert r.exit_code == 0 and "Examples:" in r.output and "torchrun" in r.output


@pytest.mark.parametrize("dataset,package", [("cityscapes", "leftImg8bit_sequence_trainvaltest.zip"),
                                             ("camvid", "SegNet"), ("vspw", "VSPW_480p")])
def test_cli_eval_without_data_says_what_to_get_first(tmp_path: Path, dataset: str, package: str):
    """No --data-root, or an empty folder: one line naming the official packages and where they
    go, before any model is loaded (a 3-class checkpoint would otherwise speak first)."""
    from vsegcli.checkpoints import CheckpointMeta, save_checkpoint
    from vsegcli.models import build_model

    net = build_model("segformer-b0", 3)
    wrong = save_checkpoint(net, CheckpointMeta.from_model(net, label_set=LabelSet("x", ("a", "b", "c"),
                            ((0, 0, 0), (1, 1, 1), (2, 2, 2)))), tmp_path / "k3.safetensors", half=True)
    (tmp_path / "empty").mkdir()
    for root in ([], ["--data-root", str(tmp_path / "empty")]):
        r = CliRunner().invoke(cli, ["eval", "--dataset", dataset, *root, "-c", str(wrong), "--device", "cpu"])
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.output, r.output
        assert package in lines[0] and "classes" not in lines[0], lines[0]
        if dataset == "cityscapes":
            assert "gtFine_trainvaltest.zip" in lines[0]
        assert ("--data-root" in lines[0]) == (not root)


def test_label_values_outside_the_label_set_are_counted_and_named(tmp_path: Path):
    """A CamVid annotation with value 200 (not a class, not void 11): scored as ignored as before,
    but warned about with the file named, and counted in the result (and the CLI's JSON)."""
    manifest = make_camvid(tmp_path / "cv", sequences={"0016E5": 3, "0001TP": 2})
    bad = manifest["0016E5"][1][1]
    raw = np.asarray(Image.open(bad)).copy()
    raw[:5, :7] = 200
    raw[-2:, -3:] = 12
    Image.fromarray(raw).save(bad)
    ls = get_label_set("camvid")
    with pytest.warns(UserWarning, match=f"{bad.name}: 41 pixels with values outside the camvid label set \\(12, 200\\)"):
        res = evaluate(_predictor(PaletteModel(ls), ls), "camvid", tmp_path / "cv", "val")
    section = res["label_values_outside_set"]
    assert section["pixels"] == 41 and section["files"] == 1 and section["values"] == {"12": 6, "200": 35}
    assert section["per_file"] == {str(bad): {"12": 6, "200": 35}}
    assert [s["label_pixels_outside_set"] for s in res["per_sequence"]] == [0, 41]
    assert res["miou"] == 1.0  # those pixels are ignored, like void ones
    assert any(bad.name in n for n in res["notes"])

    out = tmp_path / "r.json"
    r = CliRunner().invoke(cli, ["eval", "--dataset", "camvid", "--data-root", str(tmp_path / "cv"), "-m", "effl0",
                                 "--device", "cpu", "--max-frames", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert bad.name not in r.stderr  # --max-frames 1: the second frame's labels are never read
    r = CliRunner().invoke(cli, ["eval", "--dataset", "camvid", "--data-root", str(tmp_path / "cv"), "-m", "effl0",
                                 "--device", "cpu", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert f"{bad.name}: 41 pixels with values outside" in r.stderr
    assert json.loads(out.read_text())["label_values_outside_set"]["pixels"] == 41


# ------------------------------------------------------------------ real CamVid


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"real CamVid not found at {REAL_CAMVID}")
def test_real_camvid_first_frames():
    seg = load_for_dataset("camvid", model="segformer-b0", device="cpu", size=96)
    res = evaluate(seg, "camvid", REAL_CAMVID, "val", max_frames=5, tc=True)
    assert res["sequences"] == 1 and res["frames_scored"] == 5
    (seq,) = res["per_sequence"]
    assert seq["name"] == "0016E5" and seq["frame_size"] == [360, 480] and seq["input_size"] == [96, 128]
    assert 0.0 <= res["miou"] <= 1.0 and res["tc"]["pairs"] == 4
    assert sum(c["gt_pixels"] for c in res["per_class"].values()) > 0.9 * 5 * 360 * 480


# ------------------------------------------------------------------ distributed: shards, timeout, GPUs


def test_shards_are_balanced_by_frames_not_sequences():
    from vsegcli.evaluate.merge import shard_by_frames

    frames = [300, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 120]  # one long video, many short ones
    for world in (1, 2, 3, 5):
        shards = shard_by_frames(frames, world)
        assert sorted(i for s in shards for i in s) == list(range(len(frames)))  # each sequence once
        assert all(s == sorted(s) for s in shards)
        loads = [sum(frames[i] for i in s) for s in shards]
        assert max(loads) - min(loads) <= max(frames)  # greedy bound
        assert shard_by_frames(frames, world) == shards  # the same split in every process
    loads = [sum(frames[i] for i in s) for s in shard_by_frames(frames, 2)]
    round_robin = [sum(frames[0::2]), sum(frames[1::2])]
    assert max(loads) == 360 < max(round_robin) == 450  # the split by count left one rank 90 frames late
    assert shard_by_frames([5, 5], 4) == [[0], [1], [], []]  # more ranks than sequences: some idle


def test_init_distributed_fails_fast_without_a_gpu_per_rank_and_sets_a_timeout(monkeypatch):
    import datetime

    import torch.distributed as dist

    import vsegcli.runtime
    from vsegcli.distributed import DIST_TIMEOUT_S, init_distributed

    calls = []
    monkeypatch.setattr(vsegcli.runtime, "select_device", lambda d: torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.append((backend, kw)))
    monkeypatch.setattr(dist, "get_rank", lambda: 1)
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(VsegError, match="LOCAL_RANK 2 but only 2 GPU"):
        init_distributed("cuda")
    assert calls == []  # nothing started: no device chosen, no process group joined

    monkeypatch.setenv("LOCAL_RANK", "1")
    d = init_distributed("cuda")
    assert d.device == torch.device("cuda", 1) and d.rank == 1 and d.world == 3
    assert calls == [("set_device", torch.device("cuda", 1)),
                     ("nccl", {"timeout": datetime.timedelta(seconds=DIST_TIMEOUT_S)})]
    monkeypatch.setenv("VSEG_DIST_TIMEOUT_S", "90")
    calls.clear()
    init_distributed("cuda")
    assert calls[-1] == ("nccl", {"timeout": datetime.timedelta(seconds=90)})


# ------------------------------------------------------------------ shot cuts in eval
BIKES = Path(__file__).resolve().parents[1] / "examples" / "bikes.mp4"


def _bikes_frames(first: int, n: int) -> list[np.ndarray]:
    from vsegcli.io.video import FrameReader

    with FrameReader(BIKES, start=first, max_frames=n) as reader:
        return [cv2.resize(f, (160, 68), interpolation=cv2.INTER_AREA) for _, f in reader]


def _camvid_from(root: Path, frames: list[np.ndarray]) -> None:
    """A one-sequence CamVid layout from real frames (annotations: one class; only TC and the
    predictions matter here)."""
    (root / "val").mkdir(parents=True)
    (root / "valannot").mkdir()
    for i, f in enumerate(frames):
        num = 90 + 30 * i
        cv2.imwrite(str(root / "val" / f"0016E5_{num}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "valannot" / f"0016E5_{num}.png"), np.full(f.shape[:2], 3, np.uint8))  # "road" everywhere


STT_CKPT = Path(__file__).resolve().parents[1] / "weights" / "stt-effl0-camvid.safetensors"


def _saved(folder: Path) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.png"), key=lambda p: int(p.stem.split("_")[1]))
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in paths]


@pytest.mark.skipif(not (BIKES.is_file() and STT_CKPT.is_file()), reason="needs examples/bikes.mp4 and the shipped STT")
def test_eval_resets_temporal_sessions_and_leaves_cut_pairs_out(tmp_path: Path):
    """bikes.mp4 cuts between frames 29 and 30: a sequence of 4 frames of each shot scores TC on
    the 6 pairs within shots, lists the cut, and predicts the second shot exactly as a sequence
    that starts there (the trained STT's session was reset); without the reset it does not."""
    from vsegcli import api

    first, second = _bikes_frames(26, 4), _bikes_frames(30, 4)
    _camvid_from(tmp_path / "two", first + second)
    _camvid_from(tmp_path / "one", second)
    seg = api.load(STT_CKPT, device="cpu", size=64)
    res = evaluate(seg, "camvid", tmp_path / "two", "val", tc=True, save_predictions=tmp_path / "p2")
    evaluate(seg, "camvid", tmp_path / "one", "val", save_predictions=tmp_path / "p1")
    assert res["per_sequence"][0]["shot_cuts"] == [4]
    assert res["tc"]["pairs"] == 6 and res["tc"]["pairs_excluded"] == 1
    two, one = _saved(tmp_path / "p2" / "0016E5"), _saved(tmp_path / "p1" / "0016E5")
    assert len(two) == 8 and len(one) == 4
    assert all(np.array_equal(a, b) for a, b in zip(two[4:], one))
    seg.predictor.shot_reset = False  # the same run without the reset attends across the cut
    evaluate(seg, "camvid", tmp_path / "two", "val", save_predictions=tmp_path / "p3")
    assert not np.array_equal(_saved(tmp_path / "p3" / "0016E5")[4], one[0])
