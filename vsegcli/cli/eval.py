"""`vseg eval`: score a checkpoint on CamVid, Cityscapes or VSPW with the papers' protocols."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import click

from vsegcli.cli._options import (
    CONTEXT, device_for, device_option, echo_json, emit_json, fast_math_option, gpu_option, invoked_command_line,
    precision_option, quiet_option, runtime_option, threads_option,
)
from vsegcli.data.datasets import DATASETS
from vsegcli.errors import VsegError


def _pct(v: float | None, scale: float = 100.0) -> str:
    return "-" if v is None else f"{v * scale:.2f}"


def _table(result: dict[str, Any]) -> Any:
    from rich.table import Table

    sp = result["speed"]
    n = result["sequences"]
    caption = f"{n} sequence{'s' if n != 1 else ''}, {result['frames_scored']} frames scored, " \
              f"{result['frames_streamed']} streamed; IoU/acc/TC/mVC in %"
    if result["tc"] is None:
        caption += "; TC: add --tc"
    table = Table(title=f"vseg eval: {result['dataset']} {result['split']}", caption=caption)
    table.add_column("class", no_wrap=True)
    table.add_column("IoU %", justify="right", no_wrap=True)
    table.add_column("acc %", justify="right", no_wrap=True)
    table.add_column("GT share %", justify="right", no_wrap=True)
    gt_total = sum(c["gt_pixels"] for c in result["per_class"].values()) or 1
    for name, c in result["per_class"].items():
        table.add_row(name, _pct(c["iou"]), _pct(c["accuracy"]), f"{100 * c['gt_pixels'] / gt_total:.2f}")
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{_pct(result['miou'])}", "", "")
    table.add_row("FWIoU", _pct(result["fwiou"]), "", "")
    table.add_row("pixel acc", _pct(result["pixel_accuracy"]), "", "")
    tc = result["tc"]
    table.add_row("TC", "-" if tc is None else _pct(tc["tc"], 1.0), "", "")
    mvc = result["mvc"]
    for k in ("mVC8", "mVC16"):
        table.add_row(k, "-" if mvc is None else _pct(mvc[k], 1.0), "", "")
    fps_i, fps_w = sp["fps_inference"], sp["fps_wall"]
    table.add_row("fps (inference)", "-" if fps_i is None else f"{fps_i:.2f}", "", "")
    table.add_row("fps (wall)", "-" if fps_w is None else f"{fps_w:.2f}", "", "")
    return table


def _check_data(dataset: str, data_root: Path | None, split: str) -> None:
    """The dataset's layout first, with what to download and where it goes when it is not there."""
    from vsegcli.data.datasets import GET_DATA, list_sequences

    key = dataset.lower()
    if data_root is None:
        raise VsegError(f"give --data-root: the folder holding the {key} dataset; {GET_DATA[key]}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # evaluate() lists again and reports the readers' notes
        list_sequences(key, data_root, split)


@click.command("eval", context_settings=CONTEXT)
@click.option("--dataset", required=True, type=click.Choice(DATASETS, case_sensitive=False),
              help="Dataset layout and classes: camvid (11), cityscapes (19), vspw (124).")
@click.option("--data-root", type=click.Path(path_type=Path),  # checked in the body: a missing one says what to get
              help="Dataset folder (CamVid SegNet layout; Cityscapes with gtFine/ and leftImg8bit_sequence/; "
                   "VSPW with VSPW_480p/).")
@click.option("--split", type=click.Choice(["val", "test", "train"]), default="val", show_default=True)
@click.option("--checkpoint", "-c", metavar="FILE|hf://REPO", help="Checkpoint to evaluate (any format vseg reads).")
@click.option("--model", "-m", help="Architecture name. Alone: random weights with the dataset's classes (pipeline check).")
@device_option("auto, cpu, cuda or cuda:N (torchrun: cuda:LOCAL_RANK).")
@gpu_option()
@precision_option()
@runtime_option()
@click.option("--size", type=click.IntRange(min=32),
              help="Inference short side. Default: the checkpoint's; VSPW: the official fit-into-853x480 rule.")
@click.option("--tc", is_flag=True, help="Also measure temporal consistency (optical-flow warped, per sequence).")
@click.option("--shot-reset/--no-shot-reset", default=True, show_default=True,
              help="Temporal models forget their cached frames at a detected shot cut; --tc leaves pairs "
                   "across a cut out either way.")
@click.option("--mvc/--no-mvc", default=None, help="mVC8/mVC16 (default: on for VSPW and CamVid, off for Cityscapes).")
@click.option("--save-predictions", type=click.Path(path_type=Path),
              help="Write predictions: Cityscapes label-id PNGs for cityscapesscripts, else train-id PNGs per sequence.")
@click.option("--max-sequences", type=click.IntRange(min=1), help="Evaluate only the first N sequences.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Stream at most N frames per sequence (quick checks).")
@click.option("--json", "json_path", type=click.Path(path_type=Path),
              help="Write every number (+ model, dataset, command) as JSON to this file; '-' for stdout.")
@threads_option()
@fast_math_option()
@quiet_option("No progress bar or notes on stderr.")
def eval_cmd(dataset: str, data_root: Path, split: str, checkpoint: str | None, model: str | None, device: str,
             gpu: int | None, precision: str, runtime: str, size: int | None, tc: bool, shot_reset: bool, mvc: bool | None,
             save_predictions: Path | None, max_sequences: int | None, max_frames: int | None,
             json_path: Path | None, threads: int | None, fast_math: bool, quiet: bool) -> None:
    """Score a model on CamVid, Cityscapes or VSPW the way the papers do.

    Each sequence streams through one session in time order, so temporal models see their real
    context (Cityscapes: the 19 frames before each annotated one); only annotated frames are
    scored. Prints per-class IoU, mIoU, FWIoU, pixel accuracy, TC (--tc), mVC8/16 and fps.

    \b
    Examples:
      vseg eval --dataset camvid --data-root data/camvid --checkpoint stt-effl0-camvid.safetensors
      vseg eval --dataset cityscapes --data-root data/cityscapes -c mrcfa_b1.pth --tc --json cs.json
      vseg eval --dataset vspw --data-root data/vspw -c mrcfa_b1_vspw.pth --gpu 0 --precision bf16
      vseg eval --dataset cityscapes --data-root data/cityscapes -c m.pth --save-predictions results/
      vseg eval --dataset camvid --data-root data/camvid --model segformer-b0 --size 360   # pipeline check
    \b
    Several GPUs (sequences are split between processes; results identical to one process):
      torchrun --nproc_per_node 4 -m vsegcli eval --dataset vspw --data-root data/vspw -c m.pth
    """
    from rich.console import Console

    from vsegcli.runtime.progress import FrameProgress
    from vsegcli.evaluate import evaluate, init_distributed, load_for_dataset
    from vsegcli.runtime.device import cuda_math_state, set_cuda_math
    from vsegcli.runtime.threads import set_threads, thread_report

    set_threads(threads)
    device = device_for(device, gpu, precision)
    _check_data(dataset, data_root, split)  # before any model is loaded: no data, nothing else matters
    rank, world, device = (d := init_distributed(device)).rank, d.world, d.device
    if device.type == "cuda":
        set_cuda_math(fast_math)
    try:
        console = Console(stderr=True)
        lead = rank == 0
        show = lead and not quiet and console.is_terminal

        def note(message: Any, *args: Any, **kwargs: Any) -> None:
            if lead and not quiet:
                console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)  # one line, greppable

        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = note  # one readable line instead of Python's file:line form
            seg = load_for_dataset(dataset, checkpoint=checkpoint, model=model, device=device,
                                   precision=precision, size=size, runtime=runtime)
            seg.predictor.shot_reset = shot_reset
            if seg.info.random_init:
                note(f"random weights ({seg.info.architecture}): a pipeline check, the scores mean nothing")
            progress = FrameProgress(show, console)
            started = False

            def on_frame(done: int, total: int) -> None:
                nonlocal started
                if not started:
                    progress.start(f"eval {dataset}/{split}", total)
                    started = True
                progress.update(done)

            try:
                result = evaluate(seg, dataset, data_root, split, tc=tc, mvc=mvc, save_predictions=save_predictions,
                                  max_sequences=max_sequences, max_frames=max_frames, size=size,
                                  progress=on_frame, rank=rank, world_size=world)
            finally:
                progress.stop()
        if not lead:
            return
        result["command"] = invoked_command_line()
        result["model"] = {**(result.get("model") or {}), "precision": precision, "size": size,
                           "runtime": seg.predictor.runtime}
        result["threads"] = thread_report()
        result["cuda_math"] = cuda_math_state() if device.type == "cuda" else None
        to_stdout_json = json_path is not None and str(json_path) == "-"
        if json_path is not None and not to_stdout_json:
            emit_json(result, json_path)
        out = Console(stderr=to_stdout_json)  # the table is the result: stdout, unless JSON goes there
        if not out.is_terminal:
            out.width = max(out.width, 100)
        if not (to_stdout_json and quiet):
            out.print(_table(result))
        if to_stdout_json:
            echo_json(result)
        elif json_path is not None and not quiet:
            console.print(f"results: {json_path}")
    finally:
        if world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
