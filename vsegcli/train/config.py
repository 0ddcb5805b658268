"""What a training run is: the family recipes, the run config, its defaults and checks."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vsegcli.errors import VsegError

DATASETS = ("camvid", "cityscapes", "vspw")
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
    synthetic_motion: float = 0.0  # share of clips made from one labelled frame by a camera path (train/motion.py)
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
        (0.0 <= out.synthetic_motion <= 1.0, "--synthetic-motion is a probability: 0 to 1"),
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
    if out.synthetic_motion > 0 and not arch.temporal:
        raise VsegError(f"--synthetic-motion makes clips for temporal models; {cfg.arch} is per-frame")
    if cfg.dilation is not None:
        from vsegcli.models.mrcfa import check_dilation

        if arch.family != "mrcfa":
            raise VsegError(f"--dilation sets MRCFA's reference frames; {cfg.arch} is not an MRCFA model")
        out = dataclasses.replace(out, dilation=check_dilation(cfg.dilation))
    return out


def model_options(cfg: TrainConfig) -> dict[str, Any]:
    """Architecture options the training config sets: STT's T, MRCFA's reference offsets."""
    from vsegcli.models import get_architecture

    from vsegcli.models.mrcfa import MRCFA_DILATION

    family = get_architecture(cfg.arch).family
    if family == "stt" and cfg.num_frames:
        return {"num_frames": cfg.num_frames}
    if family == "mrcfa":
        return {"dilation": list(cfg.dilation or MRCFA_DATASET_DILATION.get(cfg.dataset, MRCFA_DILATION))}
    return {}


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
