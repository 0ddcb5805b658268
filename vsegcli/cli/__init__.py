"""`vseg` command line: a thin shell over `vsegcli.api` and friends.

User errors (`VsegError`) print one line and exit 2; Ctrl-C exits 130 after removing partial
outputs; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from vsegcli import __version__
from vsegcli.errors import VsegError
from vsegcli.runtime.progress import FrameProgress

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class VsegGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except VsegError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("Interrupted: partial outputs were removed.", err=True)
            ctx.exit(130)


@click.group(cls=VsegGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vseg")
def cli() -> None:
    """Video semantic segmentation with temporal models (STT, MRCFA).

    \b
    Examples:
      vseg run street.mp4 -o street_seg.mp4
      vseg run clip.mp4 --checkpoint mrcfa_b1.pth --labels-dir labels/ --no-video
      vseg models
    """


def _console(quiet: bool):
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # one line per message, also in logs
    return console, (not quiet and console.is_terminal)


def _outputs_for(inputs: tuple[Path, ...], output: Path | None, labels_dir: Path | None, no_video: bool):
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


@cli.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Overlay video (.mp4). With several inputs: a folder. Default: ./<input>_seg.mp4")
@click.option("--checkpoint", "-c", metavar="FILE|hf://REPO",
              help="Checkpoint: vseg .safetensors, Hugging Face SegFormer (folder or hf://owner/repo), "
                   "NVlabs/mmseg SegFormer or official MRCFA .pth.")
@click.option("--model", "-m", help="Architecture name (see `vseg models`). Alone: random weights, for testing the pipeline.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--gpu", type=click.IntRange(min=0), help="Alias for --device cuda:N.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"], case_sensitive=False), default="fp32", show_default=True)
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
@click.option("--quiet", "-q", is_flag=True, help="No progress or summary on stderr.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
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
    if gpu is not None:
        device = f"cuda:{gpu}"
    for src in inputs:
        if not src.exists():
            raise VsegError(f"{src}: no such file or folder")
    console, show = _console(quiet)
    jobs = _outputs_for(inputs, output, labels_dir, no_video)
    reports = [report if len(inputs) == 1 or report is None else report / f"{src.stem}.html" for src in inputs]
    seg = api.load(checkpoint=checkpoint, model=model, device=device, precision=precision, size=size,
                   frame_batch=frame_batch)
    if seg.info.random_init and not quiet:
        console.print(f"[yellow]warning:[/] no checkpoint given and no default weights shipped: using a randomly "
                      f"initialised {seg.info.architecture}; its labels are not meaningful.")
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
            outs = [str(p) for p in (summary["output"], summary["labels_dir"], summary.get("report")) if p]
            note = ""
            if "encoded_size" in summary:
                w, h = summary["encoded_size"]
                note = f" (video padded to {w}x{h}: H.264 yuv420p needs even sizes)"
            if summary.get("hwaccel_fallback"):
                console.print(f"note: GPU video decoding unavailable ({summary['hwaccel_fallback']}); decoded in software")
            console.print(f"{src}: {summary['frames']} frames in {summary['seconds']:.1f} s "
                          f"({summary['fps']:.1f} fps) -> {', '.join(outs)}{note}")
    if as_json:
        click.echo(json.dumps({
            "version": __version__,
            "model": seg.info.to_dict(),
            "device": str(seg.predictor.device),
            "precision": precision,
            "frame_batch": frame_batch,
            "runs": results,
        }, indent=2))


@cli.command(context_settings=CONTEXT)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable list on stdout.")
def models(as_json: bool) -> None:
    """List the architectures vseg can build, with parameter counts.

    \b
    Example:
      vseg models
    """
    import torch

    from vsegcli.models import build_model, list_architectures

    rows = []
    with torch.device("meta"):  # parameter counts without allocating weights
        for arch in list_architectures():
            net = build_model(arch.name, 19)
            params = sum(p.numel() for p in net.parameters())
            rows.append({"name": arch.name, "family": arch.family, "temporal": arch.temporal,
                         "params_m": round(params / 1e6, 2), "baseline": arch.baseline,
                         "description": arch.description})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="vseg architectures (parameters with 19 classes)")
    table.add_column("name", no_wrap=True)
    table.add_column("family", no_wrap=True)
    table.add_column("temporal", no_wrap=True)
    table.add_column("params (M)", justify="right", no_wrap=True)
    table.add_column("per-frame baseline", no_wrap=True)
    table.add_column("description", overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["family"], "yes" if r["temporal"] else "", f"{r['params_m']:.2f}",
                      r["baseline"] or "", r["description"])
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # pipes/logs: don't squeeze the table
    console.print(table)


@cli.command(context_settings=CONTEXT)
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--half", is_flag=True, help="Store weights as fp16 (half the size; loads back as fp32).")
@click.option("--model", "-m", "architecture", help="Architecture, when it cannot be detected from the keys.")
@click.option("--label-set", type=click.Choice(["cityscapes", "camvid", "vspw"]), help="Class names and colours to record.")
@click.option("--input-size", type=click.IntRange(min=32), help="Default inference short side to record.")
@click.option("--overwrite", is_flag=True, help="Replace an existing DST.")
def convert(src: Path, dst: Path, half: bool, architecture: str | None, label_set: str | None,
            input_size: int | None, overwrite: bool) -> None:
    """Convert a checkpoint (HF, NVlabs/mmseg, official MRCFA, vseg) to vseg's .safetensors format.

    \b
    Examples:
      vseg convert mrcfa_b1_vspw.pth weights/mrcfa-b1-vspw.safetensors --half
      vseg convert segformer-b0-cityscapes/ segformer-b0.safetensors --input-size 1024
    """
    from vsegcli.checkpoints import convert_checkpoint, load_checkpoint

    if not src.exists():
        raise VsegError(f"{src}: no such file or folder")
    if dst.exists() and not overwrite:
        raise VsegError(f"{dst} already exists; pass --overwrite to replace it")
    out = convert_checkpoint(src, dst, half=half, architecture=architecture, label_set=label_set,
                             input_size=input_size)
    meta = load_checkpoint(out).meta  # read back: proves the written file loads
    click.echo(f"{out}: {meta.architecture}, {meta.num_classes} classes, label set {meta.label_set or 'custom'}", err=True)


from vsegcli.cli.report import report as _report; cli.add_command(_report)  # noqa: E402,E702


from vsegcli.cli.bench import bench as _bench; cli.add_command(_bench)  # noqa: E402, E702

from vsegcli.cli.train import train as _train; cli.add_command(_train)  # noqa: E402,E702


from vsegcli.cli.eval import eval_cmd as _eval; cli.add_command(_eval)  # noqa: E402,E702


def main() -> None:
    cli(prog_name="vseg")


if __name__ == "__main__":
    sys.exit(main())
