"""`vseg train`: clip sampling and augmentation, losses and schedule, a learnable toy, exact resume,
checkpoints that `vseg run` uses, weight transfer into a temporal model, and 2-process DDP (gloo).

Everything runs on a generated CamVid-layout dataset (SegNet layout: train/, trainannot/, val/,
valannot/) of colour-coded regions, 64x96 crops, one thread."""
from __future__ import annotations

import json
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

from vsegcli.cli import cli
from vsegcli.errors import VsegError
from vsegcli.train import (
    AugmentParams,
    ClipDataset,
    ClipSpec,
    RunBatches,
    SegLoss,
    TrainForward,
    augment_clip,
    clip_positions,
    clip_spec_for,
    lr_factor,
    median_frequency_weights,
    param_groups,
    read_class_weights,
    resolve_config,
    TrainConfig,
)

# Class -> colour of the toy data (CamVid ids: sky, road, car); 11 = void.
COLOURS = {0: (220, 40, 40), 3: (40, 200, 40), 8: (40, 60, 220)}
CROP = ["--crop", "64x96"]
# --device cpu: the exact-resume comparisons need deterministic kernels (on CUDA, two identical runs
# differ from the second step: cuDNN/atomic backward kernels; measured on an H200).
FAST = ["--batch", "2", "--workers", "0", "--backbone-weights", "none", "--device", "cpu", "--quiet", *CROP]


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_frame(k: int, h: int = 96, w: int = 128, x0: int = 20, y0: int = 15,
              rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Frame k of a toy video: a moving 'road' box on 'sky', a 'car' band at the bottom, a void
    corner; the image is the label's colour code plus noise."""
    lab = np.zeros((h, w), np.uint8)
    lab[y0 + 2 * k: y0 + 2 * k + 40, x0 + 3 * k: x0 + 3 * k + 50] = 3
    lab[h - 25:, :] = 8
    lab[:4, :4] = 11
    img = np.zeros((h, w, 3), np.uint8)
    for c, col in COLOURS.items():
        img[lab == c] = col
    if rng is not None:
        img = np.clip(img.astype(int) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
    return img, lab


def make_camvid(root: Path, n: int = 6, static: bool = False) -> Path:
    """Two train sequences and one val sequence of n frames each, SegNet CamVid layout."""
    rng = np.random.default_rng(0)
    for name, split, x0, y0 in (("0001TP", "train", 20, 15), ("0006R0", "train", 50, 30), ("0016E5", "val", 35, 20)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
        for k in range(n):
            img, lab = toy_frame(0 if static else k, x0=x0, y0=y0, rng=None if static else rng)
            stem = f"{name}_{30 * k:06d}"
            cv2.imwrite(str(root / split / f"{stem}.png"), np.ascontiguousarray(img[..., ::-1]))
            Image.fromarray(lab).save(root / f"{split}annot" / f"{stem}.png")
    return root


@pytest.fixture(scope="module")
def camvid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_camvid(tmp_path_factory.mktemp("camvid"))


def invoke(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def train_records(run: Path, event: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["event"] == event]


@pytest.fixture(scope="module")
def effl0_run(camvid: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 SGD steps of effl0 from random init on the toy (validated at 15 and 30)."""
    run = tmp_path_factory.mktemp("runs") / "effl0"
    code, _, err = invoke(["train", "--arch", "effl0", "--dataset", "camvid", "--data-root", str(camvid),
                           "--out", str(run), "--iters", "30", "--val-every", "15", "--log-every", "1", *FAST])
    assert code == 0, err
    return run


# ------------------------------------------------------------------------------------------------
# Clips and augmentation


def test_clip_positions_target_last_and_earliest_repeated() -> None:
    rng = np.random.default_rng(0)
    spec = ClipSpec(num_prev=3, max_gap=2)
    for target in range(12):
        pos = clip_positions(target, spec, rng)
        assert len(pos) == 4 and pos[-1] == target
        assert all(0 <= a <= b for a, b in zip(pos, pos[1:]))  # oldest first, never after the target
        gaps = [b - a for a, b in zip(pos, pos[1:])]
        assert all(1 <= g <= 2 for g, p in zip(gaps, pos) if p > 0)  # unclipped gaps are 1..max_gap
    assert clip_positions(0, spec, rng) == [0, 0, 0, 0]  # no earlier frame: the earliest repeats
    mrcfa = ClipSpec(offsets=(-9, -6, -3))
    assert clip_positions(20, mrcfa, rng) == [11, 14, 17, 20]
    assert clip_positions(4, mrcfa, rng) == [0, 0, 1, 4]
    assert clip_positions(5, ClipSpec(), rng) == [5]


def test_same_augmentation_for_every_frame_of_a_clip() -> None:
    img, lab = toy_frame(2)
    for seed in range(8):  # scales below and above 1, flips, padding, colour jitter
        p = AugmentParams(crop=(64, 96), photometric=seed % 2 == 0)
        frames, labels = augment_clip([img] * 4, [lab, None, lab, lab], p, np.random.default_rng(seed))
        assert frames.shape == (4, 64, 96, 3) and labels.shape == (4, 64, 96)
        assert all(np.array_equal(frames[0], f) for f in frames[1:])
        assert np.array_equal(labels[0], labels[3]) and np.all(labels[1] == 255)
        if not p.photometric:
            # Labels stay aligned with the pixels: labelled pixels show their class colour (nearest
            # vs bilinear differ only at region borders, so compare away from them).
            for c, col in COLOURS.items():
                m = cv2.erode((labels[0] == c).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
                if m.any():
                    assert np.abs(frames[0][m].astype(int) - col).max() <= 1


def test_clip_dataset_targets_last_with_identical_frames(tmp_path: Path) -> None:
    from vsegcli.data.datasets import list_sequences

    root = make_camvid(tmp_path / "static", n=5, static=True)
    seqs = list_sequences("camvid", root, "train")
    ds = ClipDataset(seqs, "camvid", ClipSpec(num_prev=3, max_gap=2), AugmentParams(crop=(64, 96)), seed=3,
                     frame_labels=False)
    assert len(ds) == 10
    for s in range(12):  # into the second epoch
        frames, labels = ds[s]
        assert frames.shape == (4, 64, 96, 3) and frames.dtype == torch.uint8
        assert all(torch.equal(frames[0], f) for f in frames[1:])
        assert (labels[-1] != 255).any() and bool((labels[:-1] == 255).all())  # only the target's GT
    a, b = ds[7], ds[7]  # a sample is a function of its index: workers and resume can't change it
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Each rank takes its own slice of every global batch; together they cover it once.
    r0 = RunBatches(2, 2, 2, 0, 0, 3)
    r1 = RunBatches(2, 2, 2, 1, 0, 3)
    flat = [i for b in list(r0) + list(r1) for i in b]
    assert sorted(flat) == list(range(3 * 2 * 2 * 2))


# ------------------------------------------------------------------------------------------------
# Losses, schedule, config


def test_losses_weights_and_ohem(tmp_path: Path) -> None:
    counts = np.array([100.0, 10.0, 0.0, 50.0])
    pixels = np.array([200.0, 100.0, 0.0, 100.0])  # freq 0.5, 0.1, -, 0.5
    np.testing.assert_allclose(median_frequency_weights(counts, pixels), [1.0, 5.0, 1.0, 1.0])
    segnet = tmp_path / "segnet.txt"
    segnet.write_text("0.2595 0.1826 4.5640 0.1417 0.9051 0.3826 9.6446 1.8418 0.6823 6.2478 7.3614\n")
    assert read_class_weights(segnet, 11)[6] == pytest.approx(9.6446)
    with pytest.raises(VsegError, match="11"):
        read_class_weights(segnet, 19)

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8) * 3
    target = torch.randint(0, 3, (2, 16, 16))
    target[0, :4] = 255
    plain = SegLoss()(logits, target)  # logits are upsampled to the labels
    up = torch.nn.functional.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    assert plain.item() == pytest.approx(torch.nn.functional.cross_entropy(up, target, ignore_index=255).item())
    ohem = SegLoss(ohem=True)(logits, target)
    assert ohem.item() > plain.item()  # only hard pixels (p < 0.7) count
    assert SegLoss(ohem=True)(logits, torch.full_like(target, 255)).item() == 0.0  # all-ignore crop


def test_schedule_and_param_groups() -> None:
    assert lr_factor(0, 100, 1.0, 10) == pytest.approx(1e-6, abs=1e-6)
    assert lr_factor(5, 100, 1.0, 10) == pytest.approx(0.95 * 0.5, rel=1e-4)
    assert lr_factor(10, 100, 1.0, 10) == pytest.approx(0.9)
    assert lr_factor(50, 100, 0.9, 0) == pytest.approx(0.5 ** 0.9)
    cfg = resolve_config(TrainConfig("stt-segformer-b0", "camvid", Path("."), Path("."), iters=200))
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.power, cfg.warmup) == ("adamw", 6e-5, 0.01, 1.0, 20)
    cnn = resolve_config(TrainConfig("pspnet-r18", "camvid", Path("."), Path(".")))
    assert (cnn.optimizer, cnn.lr, cnn.weight_decay, cnn.power, cnn.warmup, cnn.iters) == ("sgd", 1e-2, 1e-4, 0.9, 1000, 40000)
    from vsegcli.models import build_model

    with torch.device("meta"):
        model = build_model("stt-segformer-b0", 11)
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert groups["head"]["lr"] == pytest.approx(6e-4) and groups["backbone"]["lr"] == pytest.approx(6e-5)
    stt_ids = {id(p) for p in model.stt.parameters()}
    assert stt_ids <= {id(p) for p in groups["head"]["params"]}  # STT learns at the head rate
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0  # norms: no decay (mmseg)
    with pytest.raises(VsegError, match="divisible by 32"):
        resolve_config(TrainConfig("effl0", "camvid", Path("."), Path("."), crop=(60, 96)))
    with pytest.raises(VsegError, match="per-frame"):
        resolve_config(TrainConfig("effl0", "camvid", Path("."), Path("."), num_frames=2))


def test_mrcfa_training_forward_matches_the_model() -> None:
    """One batched encode gives MRCFA's own clip output plus every frame's SegFormer logits."""
    from vsegcli.models import build_model

    torch.manual_seed(0)
    model = build_model("mrcfa-b0", 11).eval()
    frames = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        out = TrainForward(model)(frames)
        ref = model.forward_clip(frames)
        per_frame = model.forward_frame(frames[0])
    torch.testing.assert_close(out["logits"], ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["frame_logits"], per_frame, rtol=1e-4, atol=1e-4)
    # The official objective: deco1..3 (one reference each) as aux terms, all four at 1/4.
    assert out["frame_weight"] == 0.5 and out["main_weight"] == 0.25 and len(out["aux"]) == 3
    assert all(w == 0.25 and a.shape == ref.shape for a, w in out["aux"])


def test_clip_specs_come_from_the_models() -> None:
    """Training clips follow what each model says about time: MRCFA its fixed reference offsets,
    STT T earlier frames with random gaps, a per-frame model the target alone."""
    from vsegcli.models import build_model

    with torch.device("meta"):
        mrcfa = build_model("mrcfa-effl0", 11, dilation=[-3, -2, -1])
        stt = build_model("stt-effl0", 11, num_frames=2)
        per_frame = build_model("effl0", 11)
    assert clip_spec_for(mrcfa, "camvid", 2) == ClipSpec(offsets=(-3, -2, -1), reverse_prob=0.5)
    assert (mrcfa.history, mrcfa.priming_frames, mrcfa.trains_on_clip_labels) == (3, 1, True)
    assert clip_spec_for(stt, "camvid", 3) == ClipSpec(num_prev=2, max_gap=3)
    assert (stt.clip_offsets(), stt.history, stt.trains_on_clip_labels) == ((-2, -1), 2, False)
    assert clip_spec_for(per_frame, "camvid", 2) == ClipSpec() and per_frame.history == 0


def test_backbone_weights_load_through_the_backbone(tmp_path: Path) -> None:
    """--backbone-weights FILE goes to the backbone's own loader: a MiT file by names (a prefix
    dropped), a file of another MiT size is refused; provenance records the file."""
    from safetensors.torch import save_file

    from vsegcli.models import build_model
    from vsegcli.train import initialise

    torch.manual_seed(0)
    source = build_model("segformer-b0", 11).backbone
    path = tmp_path / "mit_b0.safetensors"
    save_file({f"backbone.{k}": v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model = build_model("segformer-b0", 11)
    cfg = TrainConfig("segformer-b0", "camvid", tmp_path, tmp_path, backbone_weights=str(path))
    notes: list[str] = []
    from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD

    assert initialise(model, cfg, notes.append) == {"init": f"imagenet:{path}", "input_mean": IMAGENET_MEAN,
                                                    "input_std": IMAGENET_STD}  # MiT: ImageNet mean/std
    for k, v in source.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v)
    with pytest.raises(VsegError, match="MiT-B1 encoder"):
        initialise(build_model("segformer-b1", 11), cfg, notes.append)


# ------------------------------------------------------------------------------------------------
# Training runs


def test_loss_falls_and_outputs_run(effl0_run: Path, tiny_video: Path, tmp_path: Path) -> None:
    losses = [r["loss"] for r in train_records(effl0_run)]
    assert len(losses) == 30
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5]), losses
    vals = train_records(effl0_run, "val")
    assert [v["iter"] for v in vals] == [15, 30] and all(0 <= v["miou"] <= 1 for v in vals)
    assert {"lr", "lr_head", "it_s", "eta_s"} <= set(train_records(effl0_run)[0])

    from vsegcli.checkpoints import load_checkpoint

    for name in ("best.safetensors", "last.safetensors"):
        loaded = load_checkpoint(effl0_run / name)
        assert loaded.meta.architecture == "effl0" and loaded.meta.label_set == "camvid"
        prov = loaded.meta.provenance
        assert prov["dataset"] == "camvid" and prov["command"].startswith("vseg train --arch effl0")
    best = load_checkpoint(effl0_run / "best.safetensors").meta.provenance
    assert best["val_miou"] == pytest.approx(max(v["miou"] for v in vals))
    state = torch.load(effl0_run / "state.pt", weights_only=True)  # tensors and plain containers only
    assert state["iteration"] == 30

    code, out, err = invoke(["run", str(tiny_video), "--checkpoint", str(effl0_run / "best.safetensors"),
                             "-o", str(tmp_path / "seg.mp4"), "--labels-dir", str(tmp_path / "labels"), "-q"])
    assert code == 0, err
    assert len(list((tmp_path / "labels").glob("*.png"))) == 10


def test_stt_init_from_per_frame_and_exact_resume(effl0_run: Path, camvid: Path, tmp_path: Path) -> None:
    """stt-effl0 (T=2) from the effl0 checkpoint: 6 steps straight == 3 steps, stop, resume 3."""
    common = ["train", "--arch", "stt-effl0", "--num-frames", "2", "--dataset", "camvid", "--data-root", str(camvid),
              "--init", str(effl0_run / "last.safetensors"), "--iters", "6", "--val-every", "0", "--log-every", "1",
              *FAST]
    straight, split = tmp_path / "straight", tmp_path / "split"
    code, _, err = invoke([*common, "--out", str(straight)])
    assert code == 0, err
    code, _, err = invoke([*[a for a in common if a != "--quiet"], "--out", str(split), "--stop-after", "3"])
    assert code == 0, err
    assert "new: stt.query.* (2), stt.key.* (2), stt.value.* (2), stt.out.* (2); dropped: none" in err
    assert "stopped at iteration 3" in err
    code, _, err = invoke(["train", "--out", str(split), "--resume", "--workers", "1", "--quiet"])  # own options
    assert code == 0, err

    a = [(r["iter"], r["loss"]) for r in train_records(straight)]
    b = [(r["iter"], r["loss"]) for r in train_records(split)]
    assert [i for i, _ in a] == [1, 2, 3, 4, 5, 6]
    assert a == b  # bit-identical losses after resuming (another worker count, too)
    assert json.loads((split / "log.jsonl").read_text().splitlines()[-1])["finished"] is True
    sa = torch.load(straight / "state.pt", weights_only=True)["model"]
    sb = torch.load(split / "state.pt", weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)

    code, _, err = invoke(["train", "--out", str(split), "--resume", "--lr", "0.5"])
    assert code == 2 and "cannot change lr" in err
    code, _, err = invoke([*common, "--out", str(straight)])
    assert code == 2 and "already holds a training run" in err


def test_ddp_two_processes_gloo(camvid: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "vsegcli", "train", "--arch", "effl0", "--dataset", "camvid", "--data-root", str(camvid),
           "--out", str(run), "--iters", "4", "--val-every", "4", "--log-every", "2", "--device", "cpu", *FAST]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    start = train_records(run, "start")[0]
    assert start["world_size"] == 2 and start["effective_batch"] == 4
    end = train_records(run, "end")[0]
    assert len(end["rank_checksums"]) == 2 and end["rank_checksums"][0] == end["rank_checksums"][1]
    assert len(train_records(run, "val")) == 1 and (run / "best.safetensors").is_file()


def test_frozen_base_trains_only_the_temporal_module(effl0_run: Path, camvid: Path, tmp_path: Path) -> None:
    """--freeze backbone --freeze decode_head: only stt.* changes; the base's BatchNorm statistics
    stay as they were; an unknown module is a one-line error naming the real ones."""
    from vsegcli.checkpoints import load_checkpoint

    run = tmp_path / "frozen"
    code, _, err = invoke(["train", "--arch", "stt-effl0", "--num-frames", "2", "--dataset", "camvid",
                           "--data-root", str(camvid), "--init", str(effl0_run / "last.safetensors"),
                           "--freeze", "backbone", "--freeze", "decode_head", "--lr", "0.05",
                           "--iters", "4", "--val-every", "0", "--out", str(run),
                           *[a for a in FAST if a != "--quiet"]])
    assert code == 0, err
    assert "frozen: backbone, decode_head; 49,536 of" in err
    base = load_checkpoint(effl0_run / "last.safetensors").model.state_dict()
    trained = load_checkpoint(run / "last.safetensors").model.state_dict()
    for k, v in base.items():  # parameters and BN buffers alike, bit for bit (the fp16 save is shared)
        assert torch.equal(trained[k], v), k
    changed = [k for k in trained if k.startswith("stt.") and k not in base]
    assert changed and any(not torch.equal(trained[k], torch.zeros_like(trained[k])) for k in changed
                           if k.startswith("stt.out"))
    assert train_records(run, "start")[0]["trainable_parameters"] == 49_536
    assert "--freeze backbone --freeze decode_head" in load_checkpoint(run / "last.safetensors").meta.provenance["command"]

    code, _, err = invoke(["train", "--arch", "stt-effl0", "--dataset", "camvid", "--data-root", str(camvid),
                           "--freeze", "encoder", "--iters", "1", "--out", str(tmp_path / "bad"), *FAST])
    assert code == 2 and "no such module" in err and "backbone, decode_head, stt" in err
    assert not (tmp_path / "bad").exists()


def test_mrcfa_effl0_from_per_frame_starts_at_its_output_and_learns(effl0_run: Path, camvid: Path,
                                                                    tmp_path: Path) -> None:
    """mrcfa-effl0 initialised from effl0: deco4 = classifier, zero values -> identical logits at
    step 0; trained on CamVid with the default offsets (-3, -2, -1) stored in the checkpoint."""
    from vsegcli.checkpoints import load_checkpoint
    from vsegcli.models import build_model
    from vsegcli.train import initialise

    base = load_checkpoint(effl0_run / "last.safetensors").model.eval()
    model = build_model("mrcfa-effl0", 11, dilation=[-3, -2, -1])
    notes: list[str] = []
    cfg = resolve_config(TrainConfig("mrcfa-effl0", "camvid", camvid, tmp_path, init=effl0_run / "last.safetensors"))
    initialise(model, cfg, notes.append)
    assert any("starts at the per-frame output" in n for n in notes)
    frames = torch.rand(1, 4, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().forward_clip(frames), base.forward_frame(frames[:, -1]),
                                   rtol=0, atol=1e-5)

    run = tmp_path / "mrcfa"
    code, _, err = invoke(["train", "--arch", "mrcfa-effl0", "--dataset", "camvid", "--data-root", str(camvid),
                           "--init", str(effl0_run / "last.safetensors"), "--freeze", "backbone",
                           "--iters", "3", "--val-every", "3", "--out", str(run), *FAST])
    assert code == 0, err
    start = train_records(run, "start")[0]
    assert start["clip_frames"] == 4 and start["config"]["freeze"] == ["backbone"]
    loaded = load_checkpoint(run / "best.safetensors")
    assert loaded.meta.architecture == "mrcfa-effl0" and tuple(loaded.model.dilation) == (-3, -2, -1)
    assert not torch.equal(loaded.model.decode_head.sr1_feat.weight, torch.zeros_like(loaded.model.decode_head.sr1_feat.weight))

    with pytest.raises(VsegError, match="not an MRCFA model"):
        resolve_config(TrainConfig("effl0", "camvid", Path("."), Path("."), dilation=(-3, -2, -1)))
    with pytest.raises(VsegError, match="three distinct negative"):
        resolve_config(TrainConfig("mrcfa-effl0", "camvid", Path("."), Path("."), dilation=(-3, -3, -1)))


def test_bad_data_root_leaves_no_run_folder(tmp_path: Path) -> None:
    code, _, err = invoke(["train", "--arch", "effl0", "--dataset", "camvid", "--data-root", str(tmp_path / "nope"),
                           "--out", str(tmp_path / "run"), "--iters", "1", *FAST])
    assert code == 2 and "no such folder" in err
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------
# MRCFA's official sampler: reversed clips (p = 0.5), targets whose references all exist


def test_mrcfa_clips_reverse_with_p_half_and_references_exist() -> None:
    from vsegcli.train.clips import draw_reverse, references_exist

    spec = ClipSpec(offsets=(-9, -6, -3), reverse_prob=0.5)
    rng = np.random.default_rng(0)
    assert clip_positions(20, spec, rng, reverse=True, length=40) == [29, 26, 23, 20]  # newest first
    assert clip_positions(20, spec, rng, reverse=False, length=40) == [11, 14, 17, 20]
    n = 30
    draws = {t: [draw_reverse(t, spec, n, np.random.default_rng([1, i])) for i in range(400)] for t in range(n)}
    for t, d in draws.items():
        fwd, bwd = references_exist(t, spec, n), references_exist(t, spec, n, reverse=True)
        assert fwd == (t >= 9) and bwd == (t <= n - 10)
        if fwd and bwd:
            assert 0.4 < np.mean(d) < 0.6, t  # p = 0.5
        elif fwd or bwd:
            assert all(x == bwd for x in d)  # the direction whose references exist
        for rev in set(d):  # every drawn clip has all its references inside the sequence
            assert all(0 <= p < n for p in clip_positions(t, spec, rng, rev, n))
    assert not any(draw_reverse(t, ClipSpec(offsets=(-9, -6, -3)), n, rng) for t in range(n))  # p = 0: forward


def test_mrcfa_targets_need_their_references(tmp_path: Path) -> None:
    from vsegcli.data.datasets import list_sequences

    root = make_camvid(tmp_path / "c", n=5, static=True)
    seqs = list_sequences("camvid", root, "train")
    lengths = [len(s.frames) for s in seqs]
    fwd = ClipDataset(seqs, "camvid", ClipSpec(offsets=(-3, -2, -1)), AugmentParams(crop=(64, 96)), seed=0,
                      frame_labels=True)
    assert all(pos >= 3 for _, pos in fwd.targets)
    both = ClipDataset(seqs, "camvid", ClipSpec(offsets=(-3, -2, -1), reverse_prob=0.5), AugmentParams(crop=(64, 96)),
                       seed=0, frame_labels=True)
    # Either direction will do: t >= 3 forwards, t <= n - 4 backwards; a frame with neither is no target.
    want = sorted((i, p) for i, s in enumerate(seqs) for p in s.labels if p >= 3 or p <= len(s.frames) - 4)
    assert sorted(both.targets) == want and len(want) > len(fwd.targets)
    assert len(fwd.targets) == sum(max(0, n - 3) for n in lengths)


# ------------------------------------------------------------------------------------------------
# Collectives run on the process group's device (NCCL has no CPU tensors)


class _Collective(Exception):
    def __init__(self, device: torch.device) -> None:
        super().__init__(str(device))
        self.device = device


def test_log_record_collective_runs_on_the_group_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """The "cuda:gloo" constraint without a GPU: a group bound to a non-CPU device ("meta" here)
    refuses CPU tensors. The recorder stops at the first collective and reports its device."""
    import torch.distributed as dist

    from vsegcli.distributed import Dist
    from vsegcli.train.loop import _log_record

    def bound_all_reduce(t: torch.Tensor, *args: object, **kwargs: object) -> None:
        raise _Collective(t.device)

    monkeypatch.setattr(dist, "all_reduce", bound_all_reduce)
    d = Dist(rank=0, world=2, local_rank=0, device=torch.device("meta"))
    sums = {"loss": torch.tensor(2.0), "main": 1.5}
    with pytest.raises(_Collective) as caught:
        _log_record(10, sums, 5, {"backbone": 0.01}, d, 1.0, 0.0, 1.0, 0, 100)
    assert caught.value.device == d.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for a cuda-bound process group")
def test_log_record_in_a_cuda_only_group(tmp_path: Path) -> None:
    """Issue 16: with a backend bound to CUDA devices only (what NCCL is), the log record's
    all-reduce works (a CPU tensor there fails with 'No backend type associated with device type cpu')."""
    import torch.distributed as dist

    from vsegcli.distributed import Dist, all_reduce_mean
    from vsegcli.train.loop import _log_record

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("cuda:gloo", store=store, rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="cpu"):
            dist.all_reduce(torch.ones(2, dtype=torch.float64))  # the binding is real
        d = Dist(rank=0, world=1, local_rank=0, device=torch.device("cuda", 0))
        d2 = Dist(rank=0, world=2, local_rank=0, device=d.device)  # take the collective path; the group has 1 rank
        assert torch.equal(all_reduce_mean(torch.full((3,), 4.0, dtype=torch.float64), d2),
                           torch.full((3,), 2.0, dtype=torch.float64))
        rec = _log_record(10, {"loss": torch.tensor(2.0, device="cuda"), "main": 1.0}, 2, {"backbone": 0.01}, d2,
                          1.0, 0.0, 1.0, 0, 100)
        assert rec["loss"] == pytest.approx(0.5) and rec["loss_main"] == pytest.approx(0.25)
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_training_bf16_stops_resumes_and_runs(effl0_run: Path, camvid: Path, tiny_video: Path,
                                                  tmp_path: Path) -> None:
    """On CUDA with bf16 autocast: stop at 3, resume to 6, every loss finite, val at 3 and 6, and
    the checkpoint streams on the GPU (on CUDA the losses are not bit-exact between runs, see FAST)."""
    run = tmp_path / "gpu"
    common = ["--arch", "stt-effl0", "--num-frames", "2", "--dataset", "camvid", "--data-root", str(camvid),
              "--init", str(effl0_run / "last.safetensors"), "--iters", "6", "--val-every", "3", "--log-every", "1",
              "--batch", "2", "--workers", "0", "--precision", "bf16", "--device", "cuda:0", "--quiet", *CROP]
    code, _, err = invoke(["train", *common, "--out", str(run), "--stop-after", "3"])
    assert code == 0, err
    code, _, err = invoke(["train", "--out", str(run), "--resume", "--quiet"])
    assert code == 0, err
    losses = [(r["iter"], r["loss"]) for r in train_records(run)]
    assert [i for i, _ in losses] == [1, 2, 3, 4, 5, 6] and all(np.isfinite(v) for _, v in losses)
    assert [v["iter"] for v in train_records(run, "val")] == [3, 6]
    code, _, err = invoke(["run", str(tiny_video), "-c", str(run / "last.safetensors"), "--gpu", "0", "--no-video",
                           "--labels-dir", str(tmp_path / "labels"), "-q"])
    assert code == 0, err
    assert len(list((tmp_path / "labels").glob("*.png"))) == 10
