"""`vseg run`: segment videos or image folders into overlay videos, label PNGs and reports."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from vsegcli import __version__
from vsegcli.cli._options import (
    CONTEXT, device_for, device_option, echo_json, gpu_option, json_flag, precision_option, quiet_option,
)
from vsegcli.errors import VsegError
from vsegcli.io.outputs import plan_outputs
from vsegcli.runtime.progress import FrameProgress


def _console(quiet: bool) -> tuple[Any, bool]:
    """A stderr console, and whether to show progress on it (a terminal, not --quiet)."""
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # one line per message, also in logs
    return console, (not quiet and console.is_terminal)


def _outputs_for(inputs: tuple[Path, ...], output: Path | None, labels_dir: Path | None,
                 no_video: bool) -> list[tuple[Path, Path | None, Path | None]]:
    """Per-input output video and labels folder. Several inputs: -o and --labels-dir are folders."""
    if len(inputs) == 1:
        src = inputs[0]
        video = None if no_video else (output or Path.cwd() / f"{src.stem}_seg.mp4")
        if video is not None and video.is_dir():
            video = video / f"{src.stem}_seg.mp4"
        return [(src, video, labels_dir)]
    stems = [p.stem for p in inputs]
    if len(set(stems)) != len(stems):
        raise VsegError("several inputs share a file name; run them separately or rename them")
    if output is not None and output.suffix.lower() == ".mp4":
        raise VsegError("with several inputs, -o must be a folder (outputs are named <input>_seg.mp4)")
    out_dir = output or Path.cwd()
    return [
        (src, None if no_video else out_dir / f"{src.stem}_seg.mp4", labels_dir / src.stem if labels_dir else None)
        for src in inputs
    ]


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Overlay video (.mp4). With several inputs: a folder. Default: ./<input>_seg.mp4")
@click.option("--checkpoint", "-c", metavar="FILE|hf://REPO",
              help="Checkpoint: vseg .safetensors, Hugging Face SegFormer (folder or hf://owner/repo), "
                   "NVlabs/mmseg SegFormer or official MRCFA .pth.")
@click.option("--model", "-m", help="Architecture name (see `vseg models`). Alone: random weights, for testing the pipeline.")
@device_option()
@gpu_option()
@precision_option()
@click.option("--size", type=click.IntRange(min=32), help="Inference short side in pixels. Default: the checkpoint's, else native.")
@click.option("--labels-dir", type=click.Path(path_type=Path), help="Write one label PNG per frame (uint8 class index), named by frame index.")
@click.option("--color-labels", is_flag=True, help="Label PNGs as RGB colour maps instead of class indices.")
@click.option("--report", type=click.Path(path_type=Path),
              help="Temporal-consistency report: r.html + r.json (TC, flicker, worst moments, plots). "
                   "Several inputs: a folder.")
@click.option("--opacity", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True, help="Overlay opacity.")
@click.option("--no-video", is_flag=True, help="Do not write an overlay video (e.g. with --labels-dir only).")
@click.option("--start", type=click.IntRange(min=0), default=0, show_default=True, help="First frame index to process.")
@click.option("--max-frames", type=click.IntRange(min=1), help="Process at most this many frames.")
@click.option("--stride", type=click.IntRange(min=1), default=1, show_default=True, help="Process every N-th frame.")
@click.option("--frame-batch", type=click.IntRange(min=1), default=1, show_default=True,
              help="Frames per model call (micro-batching: backbones run batched, temporal steps stay in "
                   "frame order). Helps GPU throughput; labels equal batch 1 up to rounding.")
@click.option("--hwaccel", type=click.Choice(["auto", "cuda", "none"]), default="auto", show_default=True,
              help="Video decoding on the GPU (ffmpeg -hwaccel cuda). auto: when inference runs on CUDA, "
                   "falling back to software decoding; cuda: GPU or an error; none: software.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@quiet_option("No progress or summary on stderr.")
@json_flag("Print a machine-readable summary on stdout.")
def run(inputs: tuple[Path, ...], output: Path | None, checkpoint: str | None, model: str | None, device: str,
        gpu: int | None, precision: str, size: int | None, labels_dir: Path | None, color_labels: bool,
        report: Path | None, opacity: float, no_video: bool, start: int, max_frames: int | None, stride: int,
        frame_batch: int, hwaccel: str, overwrite: bool, quiet: bool, as_json: bool) -> None:
    """Segment videos or image folders: overlay video, per-frame label PNGs, consistency report.

    INPUTS are video files (anything ffmpeg decodes) or folders of images (frames in name order).

    \b
    Examples:
      vseg run examples/bikes.mp4 -o bikes_seg.mp4
      vseg run drive.mp4 --checkpoint mrcfa_b1.pth --labels-dir labels/ --size 480
      vseg run a.mp4 b.mp4 -o out/ --gpu 0 --precision bf16
      vseg run frames/ --no-video --labels-dir labels/ --color-labels
      vseg run long.mp4 --start 300 --max-frames 100 -o preview.mp4
    """
    from vsegcli import api

    if no_video and labels_dir is None and report is None:
        raise VsegError("--no-video needs --labels-dir or --report: otherwise nothing would be written")
    if no_video and output is not None:
        raise VsegError("-o/--output and --no-video contradict each other")
    device = device_for(device, gpu)
    for src in inputs:
        if not src.exists():
            raise VsegError(f"{src}: no such file or folder")
    console, show = _console(quiet)
    jobs = _outputs_for(inputs, output, labels_dir, no_video)
    reports = [report if len(inputs) == 1 or report is None else report / f"{src.stem}.html" for src in inputs]
    # All outputs of all inputs checked before the model loads or a frame is decoded (io.outputs).
    plan = plan_outputs([*inputs, *([Path(checkpoint)] if checkpoint and "://" not in checkpoint else [])],
                        video=[j[1] for j in jobs], labels_dir=[j[2] for j in jobs], report=reports,
                        overwrite=overwrite)
    if plan.removed:
        click.echo(f"note: removed {len(plan.removed)} temporary file(s) left by an interrupted run "
                   f"({', '.join(p.name for p in plan.removed)})", err=True)
    seg = api.load(checkpoint=checkpoint, model=model, device=device, precision=precision, size=size,
                   frame_batch=frame_batch)
    if seg.info.random_init:  # said even with --quiet: these labels mean nothing
        click.echo(f"warning: --model {seg.info.architecture} without --checkpoint: random weights, "
                   "the labels are not meaningful", err=True)
    if seg.info.ignored_keys and not quiet:
        console.print(f"note: {len(seg.info.ignored_keys)} unused upstream keys ignored "
                      f"({', '.join(sorted({k.rsplit('.', 2)[0] for k in seg.info.ignored_keys}))})")
    results = []
    for (src, video, labels), report_path in zip(jobs, reports):
        progress = FrameProgress(show, console)
        try:
            summary = seg.run(
                src, output=video, labels_dir=labels, color_labels=color_labels, opacity=opacity, start=start,
                max_frames=max_frames, stride=stride, overwrite=overwrite, report=report_path, hwaccel=hwaccel,
                on_start=lambda total, s=src: progress.start(s.name, total), on_frame=progress.update,
            )
        finally:
            progress.stop()
        results.append(summary)
        if not quiet:
            _print_summary(console, src, summary)
    if as_json:
        echo_json({
            "version": __version__,
            "model": seg.info.to_dict(),
            "device": str(seg.predictor.device),
            "precision": precision,
            "frame_batch": frame_batch,
            "runs": results,
        })


def _print_summary(console: Any, src: Path, summary: dict[str, Any]) -> None:
    """One line per input on stderr: frames, time, speed, where the outputs went."""
    outs = [str(p) for p in (summary["output"], summary["labels_dir"], summary.get("report")) if p]
    note = ""
    if "encoded_size" in summary:
        w, h = summary["encoded_size"]
        note = f" (video padded to {w}x{h}: H.264 yuv420p needs even sizes)"
    if summary.get("hwaccel_fallback"):
        console.print(f"note: GPU video decoding unavailable ({summary['hwaccel_fallback']}); decoded in software")
    console.print(f"{src}: {summary['frames']} frames in {summary['seconds']:.1f} s "
                  f"({summary['fps']:.1f} fps) -> {', '.join(outs)}{note}")
