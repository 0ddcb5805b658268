"""`vseg run`: segment videos or image folders into overlay videos, label PNGs and reports."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from vsegcli import __version__
from vsegcli.cli._options import (
    CONTEXT, device_for, device_option, echo_json, fast_math_option, gpu_option, json_flag, precision_option,
    quiet_option, runtime_option, threads_option,
)
from vsegcli.errors import VsegError
from vsegcli.io.outputs import STATS_SUFFIXES, VIDEO_SUFFIXES, check_file_output, plan_outputs
from vsegcli.runtime.batch import Inputs, JobEvents
from vsegcli.runtime.progress import FrameProgress


def _console(quiet: bool) -> tuple[Any, bool]:
    """A stderr console, and whether to show progress on it (a terminal, not --quiet)."""
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True)  # one line per message, also in logs
    return console, (not quiet and console.is_terminal)


def _free_name(path: Path) -> Path:
    """`path`, or the first of path-2, path-3, ... that does not exist: the default output name
    never collides, so the quickstart can be run twice (an -o the user names is never replaced
    without --overwrite)."""
    if not path.exists():
        return path
    stem = path.stem[:-4] if path.stem.endswith("_seg") else path.stem
    k = 2
    while (candidate := path.with_name(f"{stem}_seg-{k}{path.suffix}")).exists():
        k += 1
    return candidate


def _refuse_outputs_in_batch_folders(jobs: list[Any], expanded: Inputs) -> None:
    """A batch folder's inputs are its videos and its sub-folders of images (runtime.batch): an
    overlay video or a labels folder written directly into it would be taken for a new input by a
    rerun. Deeper (videos/out/) is fine: sub-folders of sub-folders are not looked into. Likewise
    an output that a glob input matches ('videos/*.mp4' -o videos/). `expanded` is what
    `expand_inputs` returned (the folders and patterns it expanded)."""
    from pathlib import PurePath

    real = {Path(os.path.realpath(f)): f for f in expanded.folders}
    cwd = os.path.realpath(os.getcwd())
    patterns = [(spec, os.path.join(cwd, spec)) for spec in expanded.patterns]
    for job in jobs:
        for what, path in (("output video", job.video), ("labels folder", job.labels_dir)):
            if path is None:
                continue
            out = Path(os.path.realpath(path))
            folder = real.get(out.parent)
            if folder is not None:
                raise VsegError(f"{what} {path} lies inside the input folder {folder} (a rerun would take it "
                                "for an input); choose a path outside it, e.g. a sub-folder")
            for spec, pattern in patterns:
                if PurePath(out).match(os.path.normpath(pattern)):
                    raise VsegError(f"{what} {path} matches the input pattern {spec} (a rerun would take it "
                                    "for an input); choose a path outside it")


def _plan(inputs: tuple[str, ...], output: Path | None, labels_dir: Path | None, report: Path | None,
          stats: Path | None, no_video: bool, overwrite: bool) -> tuple[list[Any], Inputs]:
    """The jobs of this run (one per input) and what `expand_inputs` made of the inputs (whether it
    is a batch, the folders and patterns it expanded; see runtime.batch)."""
    from vsegcli.runtime.batch import Job, expand_inputs, plan_jobs

    expanded = expand_inputs(inputs)
    if not expanded.batch:
        if no_video and output is not None:  # (a batch's -o is its folder: manifest, outputs)
            raise VsegError("-o/--output and --no-video contradict each other")
        src = expanded.sources[0]
        video = None
        if not no_video:
            if output is not None and not output.is_dir():
                video = output
            else:
                default = (output or Path.cwd()) / f"{src.name}_seg.mp4"
                video = default if overwrite else _free_name(default)
        return [Job(0, src, src.name, video, labels_dir, report, stats)], expanded
    if output is not None and output.suffix.lower() in VIDEO_SUFFIXES:
        raise VsegError("with several inputs, -o must be a folder (outputs are named <input>_seg.mp4)")
    if stats is not None and stats.suffix.lower() in STATS_SUFFIXES:
        raise VsegError("with several inputs, --stats must be a folder (files are named <input>.csv)")
    return plan_jobs(expanded.sources, output, labels_dir, report, stats, no_video), expanded


@click.command(context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Overlay video (.mp4). Batch: a folder (outputs <input>_seg.mp4 + vseg-manifest.jsonl). "
                   "Default: ./<input>_seg.mp4, or <input>_seg-2.mp4, ... if that exists.")
@click.option("--checkpoint", "-c", metavar="FILE|hf://REPO",
              help="Checkpoint: vseg .safetensors, Hugging Face SegFormer (folder or hf://owner/repo), "
                   "NVlabs/mmseg SegFormer or official MRCFA .pth.")
@click.option("--model", "-m", help="Architecture name (see `vseg models`). Alone: random weights, for testing the pipeline.")
@device_option()
@gpu_option()
@precision_option()
@runtime_option()
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
@click.option("--shot-reset/--no-shot-reset", default=True, show_default=True,
              help="Temporal models forget their cached frames at a detected shot cut (attending to another "
                   "shot is wrong). The report leaves pairs across a cut out either way.")
@click.option("--hwaccel", type=click.Choice(["auto", "cuda", "none"]), default="auto", show_default=True,
              help="Video decoding on the GPU (ffmpeg -hwaccel cuda). auto: when inference runs on CUDA, "
                   "falling back to software decoding; cuda: GPU or an error; none: software.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--skip-existing", is_flag=True,
              help="Batch: skip inputs whose outputs are all complete (resume an interrupted batch).")
@click.option("--no-legend", is_flag=True, help="No legend (class colours and names) in the overlay's corner.")
@click.option("--classes", metavar="NAMES", help="Colour only these classes, e.g. --classes road,car.")
@click.option("--palette", metavar="NAME|FILE.json",
              help="Overlay colours: cityscapes, camvid, vspw or a JSON file ([[r,g,b], ...] by class index, "
                   "or {\"class\": [r,g,b]}). Default: the checkpoint's.")
@click.option("--stats", type=click.Path(path_type=Path), metavar="FILE.csv|FILE.jsonl",
              help="Per-frame class pixel shares with the frame's time. Batch: a folder (<input>.csv).")
@click.option("--duration", type=click.FloatRange(min=0.001), metavar="SECONDS",
              help="Process at most this many seconds of the source (ends a live stream).")
@click.option("--read-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="A stream that sends nothing for this long ends (outputs kept).")
@click.option("--reconnect", is_flag=True, help="Reopen a dropped network stream (up to 5 tries, same size).")
@threads_option()
@fast_math_option()
@quiet_option("No progress or summary on stderr.")
@json_flag("Print a machine-readable summary on stdout.")
def run(inputs: tuple[str, ...], output: Path | None, checkpoint: str | None, model: str | None, device: str,
        gpu: int | None, precision: str, runtime: str, size: int | None, labels_dir: Path | None, color_labels: bool,
        report: Path | None, opacity: float, no_video: bool, start: int, max_frames: int | None, stride: int,
        frame_batch: int, shot_reset: bool, hwaccel: str, overwrite: bool, skip_existing: bool, no_legend: bool, classes: str | None,
        palette: str | None, stats: Path | None, duration: float | None, read_timeout: float, reconnect: bool, threads: int | None, fast_math: bool, quiet: bool,
        as_json: bool) -> None:
    """Segment videos, streams or image folders: overlay video, label PNGs, report, class statistics.

    INPUTS: video files, folders of images (frames in name order), URLs (rtsp://, http(s)://,
    udp://, tcp://, srt://, ...), capture devices (/dev/video0 or 0), - (a video on stdin), and for
    batches: folders of videos/image folders, quoted globs, @list.txt (one input per line).

    Live sources end with --max-frames/--duration, the stream's end, a stall (--read-timeout) or
    Ctrl-C/SIGTERM, which KEEPS what was written (a file source's interrupted outputs are removed).

    A batch goes on past a bad input; exit status 0: all written, 1: some inputs failed (see
    vseg-manifest.jsonl beside the outputs), 2: nothing ran (a usage error).
    Under torchrun the inputs are split across the processes.

    \b
    Examples:
      vseg run examples/bikes.mp4                      # -> bikes_seg.mp4 (then bikes_seg-2.mp4)
      vseg run drive.mp4 --checkpoint mrcfa_b1.pth --labels-dir labels/ --size 480
      vseg run videos/ -o out/ --skip-existing         # a batch; rerun to resume
      vseg run rtsp://192.168.1.20:8554/cam -o cam.mp4 --duration 60
      vseg run 0 -o webcam.mp4 --max-frames 300 --classes person,car
      ffmpeg -i in.mkv -f mpegts - | vseg run - -o out.mp4
      vseg run clip.mp4 --stats shares.csv --palette cityscapes
      torchrun --nproc_per_node 4 -m vsegcli run videos/ -o out/
    """
    from vsegcli import api

    if no_video and labels_dir is None and report is None and stats is None:
        raise VsegError("--no-video needs --labels-dir, --report or --stats: otherwise nothing would be written")
    device = device_for(device, gpu, precision)
    console, show = _console(quiet)
    jobs, expanded = _plan(inputs, output, labels_dir, report, stats, no_video, overwrite)
    batch = expanded.batch
    from vsegcli.distributed import Dist, finish, init_distributed
    from vsegcli.runtime.batch import EXIT_SOME_FAILED, manifest_path, run_jobs, shard

    dist = init_distributed(device) if batch else Dist()
    if dist.enabled:
        device = str(dist.device)
    skipped = [j for j in jobs if skip_existing and j.finished()]
    todo = [j for j in jobs if j not in skipped]
    mine = shard(todo, dist.rank, dist.world)
    ckpt_in = [Path(checkpoint)] if checkpoint and "://" not in checkpoint else []
    # All outputs of all inputs checked before the model loads or a frame is decoded (io.outputs).
    if batch:
        _refuse_outputs_in_batch_folders(mine, expanded)
    plan = plan_outputs([*(j.source.path for j in mine if j.source.kind in ("file", "folder")), *ckpt_in],
                        video=[j.video for j in mine], labels_dir=[j.labels_dir for j in mine],
                        report=[j.report for j in mine], stats=[j.stats for j in mine], overwrite=overwrite)
    if batch and dist.main:  # the manifest written at the end: a folder in its place fails now, not then
        check_file_output(manifest_path(output or Path.cwd()), "batch manifest", overwrite=True,
                          inputs=[j.source.path for j in jobs if j.source.kind in ("file", "folder")])
    if plan.removed:
        click.echo(f"note: removed {len(plan.removed)} temporary file(s) left by an interrupted run "
                   f"({', '.join(p.name for p in plan.removed)})", err=True)
    from vsegcli.runtime.device import cuda_math_state, set_cuda_math
    from vsegcli.runtime.threads import set_threads, thread_report

    set_threads(threads)
    seg = api.load(checkpoint=checkpoint, model=model, device=device, precision=precision, size=size,
                   frame_batch=frame_batch, shot_reset=shot_reset, runtime=runtime)
    if palette is not None:
        seg.set_palette(palette)
    cuda = seg.predictor.device.type == "cuda"
    if cuda:
        set_cuda_math(fast_math)
    if seg.info.random_init and dist.main:  # said even with --quiet: these labels mean nothing
        click.echo(f"warning: --model {seg.info.architecture} without --checkpoint: random weights, "
                   "the labels are not meaningful", err=True)
    if seg.info.ignored_keys and not quiet and dist.main:
        console.print(f"note: {len(seg.info.ignored_keys)} unused upstream keys ignored "
                      f"({', '.join(sorted({k.rsplit('.', 2)[0] for k in seg.info.ignored_keys}))})")
    if skipped and not quiet and dist.main:
        console.print(f"skipping {len(skipped)} input(s) whose outputs are complete (--skip-existing)")
    run_options = dict(color_labels=color_labels, opacity=opacity, start=start, max_frames=max_frames, stride=stride,
                       overwrite=overwrite, hwaccel=hwaccel, legend=not no_legend, classes=classes,
                       duration=duration, read_timeout=read_timeout, reconnect=reconnect)
    try:
        outcome = run_jobs(seg, mine, skipped, batch=batch, dist=dist, out_dir=output or Path.cwd(),
                           run_options=run_options, events=_Events(console, show, quiet))
    except KeyboardInterrupt as exc:
        if batch:
            click.echo(f"Interrupted: the finished inputs are kept ({getattr(exc, 'manifest', None)}); rerun "
                       "with --skip-existing to resume.", err=True)
        raise
    results, failed, manifest = outcome.results, outcome.failed, outcome.manifest
    if as_json and dist.main:
        echo_json({
            "version": __version__,
            "model": seg.info.to_dict(),
            "device": str(seg.predictor.device),
            "precision": precision,
            "runtime": seg.predictor.runtime,
            "frame_batch": frame_batch,
            "shot_reset": shot_reset,
            "threads": thread_report(),
            "cuda_math": cuda_math_state() if cuda else None,
            "runs": results,
            **({"batch": {"inputs": len(jobs), "failed": len(failed), "skipped": len(skipped),
                          "processes": dist.world, "manifest": str(manifest) if manifest else None}}
               if batch else {}),
        })
    if batch and dist.main and not quiet:
        console.print(f"batch: {len(jobs) - len(failed) - len(skipped)} written, {len(skipped)} skipped, "
                      f"{len(failed)} failed -> {manifest}")
    finish(dist)
    if failed:
        click.get_current_context().exit(EXIT_SOME_FAILED)


class _Events(JobEvents):
    """What `vseg run` shows per input: progress on a terminal, decoder damage (even with
    --quiet), a batch input's error, the one-line summary."""

    def __init__(self, console: Any, show: bool, quiet: bool) -> None:
        self.console, self.show, self.quiet = console, show, quiet
        self.progress = FrameProgress(False, console)

    def started(self, job: Any, total: int | None) -> None:
        self.progress = FrameProgress(self.show, self.console)
        self.progress.start(job.source.name, total)

    def frame(self, done: int) -> None:
        self.progress.update(done)

    def stopped(self, job: Any) -> None:
        self.progress.stop()

    def failed(self, job: Any, message: str) -> None:
        click.echo(f"Error: {job.source}: {message}" if str(job.source) not in message else f"Error: {message}",
                   err=True)

    def written(self, job: Any, summary: dict[str, Any]) -> None:
        _warn_damaged(job.source, summary)  # even with --quiet: these outputs miss frames
        if not self.quiet:
            _print_summary(self.console, job.source, summary)


def _warn_damaged(src: object, summary: dict[str, Any]) -> None:
    """Decoder errors (corrupted bytes) and frames lost: one line on stderr, never silent."""
    if not (summary.get("decode_errors") or summary.get("frames_lost")):
        return
    lost = summary.get("frames_lost")
    sample = (summary.get("decode_error_samples") or [""])[0]
    click.echo(f"warning: {src}: the decoder reported {summary['decode_errors']} error(s)"
               f"{f', {lost} frame(s) lost' if lost else ''}{f' (first: {sample})' if sample else ''}; "
               "the input is damaged", err=True)


def _print_summary(console: Any, src: object, summary: dict[str, Any]) -> None:
    """One line per input on stderr: frames, time, speed, where the outputs went."""
    outs = [str(p) for p in (summary["output"], summary["labels_dir"], summary.get("report"), summary.get("stats")) if p]
    note = ""
    if "encoded_size" in summary:
        w, h = summary["encoded_size"]
        note = f" (video padded to {w}x{h}: H.264 yuv420p needs even sizes)"
    if summary.get("hwaccel_fallback"):
        console.print(f"note: GPU video decoding unavailable ({summary['hwaccel_fallback']}); decoded in software")
    if summary.get("ended"):
        console.print(f"note: {src}: stream ended: {summary['ended']}; outputs kept")
    if summary.get("live"):
        note += f" (live source: written at the measured {summary['video_fps']:.2f} fps)"
    console.print(f"{src}: {summary['frames']} frames in {summary['seconds']:.1f} s "
                  f"({summary['fps']:.1f} fps) -> {', '.join(outs)}{note}")
