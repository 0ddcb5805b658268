"""The Python API: load a model once, then segment videos, image folders or single frames.

    from vsegcli import api
    seg = api.load("weights/stt-effl0-camvid.safetensors", device="auto")   # a VideoSegmenter
    summary = seg.run("street.mp4", output="street_seg.mp4", labels_dir="street_labels")
    for index, labels in seg.iter_labels("street.mp4"):   # (H, W) uint8 class indices
        ...

The `vseg run` command is this module plus argument parsing and progress display.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from vsegcli.errors import VsegError
from vsegcli.io.outputs import plan_outputs
from vsegcli.io.video.reader import DEFAULT_READ_TIMEOUT
from vsegcli.io.video.source import Source, parse_source
from vsegcli.runtime import LabelPngSink, Predictor, Sink, VideoSink, select_device, stream
from vsegcli.runtime.device import spec_for_precision
from vsegcli.runtime.pipeline import shot_marked
from vsegcli.runtime.signals import swapped_signals
from vsegcli.runtime.render import Palette, draw_legend, legend_entries, load_palette, select_classes
from vsegcli.runtime.stats import StatsSink

RANDOM_INIT_MODEL = "segformer-b0"


def weights_dir() -> Path:
    """Where shipped checkpoints live: $VSEG_WEIGHTS_DIR, else the copy a wheel carries
    (`vsegcli/_weights`), else the repository's `weights/` folder (a checkout or editable install)."""
    env = os.environ.get("VSEG_WEIGHTS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for candidate in (here / "_weights", here.parent / "weights"):
        if (candidate / "models.json").is_file():
            return candidate
    return here.parent / "weights"


def shipped_models() -> dict[str, Any]:
    """weights/models.json: the shipped checkpoints, their model-card scores, and the default."""
    index = weights_dir() / "models.json"
    return json.loads(index.read_text()) if index.is_file() else {"default": None, "models": {}}


def default_checkpoint() -> Path | None:
    """The shipped default model, if this installation has one."""
    name = shipped_models().get("default")
    path = weights_dir() / name if name else None
    return path if path is not None and path.is_file() else None


@dataclass
class ModelInfo:
    architecture: str
    checkpoint: str | None
    source_format: str
    num_classes: int
    label_set: str | None
    ignored_keys: list[str] = field(default_factory=list)
    random_init: bool = False
    temporal: bool = False
    int8_calibration: str | None = None  # int8: the training-frame folder or ranges file it was calibrated on
    int8_recipe: str | None = None  # int8: which nodes stay fp32 (onnx_backend.INT8_RECIPES name, or "custom")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class VideoSegmenter:
    """A loaded model, ready to segment videos: `run` (files out), `iter_labels` (arrays out),
    `segment_frames`. Made by `load()`.

    `predictor` is the `vsegcli.runtime.Predictor` underneath (model, device, precision, pre- and
    post-processing); `info` says what was loaded. Not to be confused with
    `vsegcli.models.base.Segmentor`, the network itself (`seg.predictor.model`).
    """

    def __init__(self, predictor: Predictor, info: ModelInfo) -> None:
        self.predictor = predictor
        self.info = info

    def decode_accel(self, hwaccel: str = "auto") -> str:
        """The FrameReader `hwaccel` for this segmenter: "auto" tries NVDEC only when inference
        runs on a GPU (frames then come from a GPU-equipped machine's decoder for free)."""
        if hwaccel == "auto" and self.predictor.device.type != "cuda":
            return "none"
        return hwaccel

    def iter_labels(self, source: str | Path, start: int = 0, max_frames: int | None = None,
                    stride: int = 1, hwaccel: str = "auto") -> Iterator[tuple[int, np.ndarray]]:
        """Yield (frame index, (H, W) uint8 labels) for every frame of a video or image folder."""
        from vsegcli.io.video import FrameReader

        session = self.predictor.new_session()
        with FrameReader(source, start=start, max_frames=max_frames, stride=stride,
                         hwaccel=self.decode_accel(hwaccel), hwaccel_device=self.decode_device()) as reader:
            for (index, frame), new_shot in shot_marked(self.predictor, reader, lambda it: it[1]):
                if new_shot:  # a temporal model forgets the previous shot's frames
                    session.reset()
                yield index, self.predictor.step(session, self.predictor.upload(frame)).cpu().numpy()

    def segment_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Labels for a list of RGB uint8 frames, treated as consecutive frames of one video."""
        session = self.predictor.new_session()
        out = []
        for f, new_shot in shot_marked(self.predictor, frames, lambda f: f):
            if new_shot:  # a temporal model forgets the previous shot's frames
                session.reset()
            out.append(self.predictor.step(session, self.predictor.upload(f)).cpu().numpy())
        return out

    def _input_paths(self, source: str | Path | Source) -> list[Path]:
        """What this run reads from disk (the source, unless a URL/device/stdin; the checkpoint):
        no output may touch it."""
        src = parse_source(source)
        paths = [src.path] if src.kind in ("file", "folder") else []
        if self.info.checkpoint and "://" not in self.info.checkpoint and Path(self.info.checkpoint).exists():
            paths.append(Path(self.info.checkpoint))
        return paths

    def set_palette(self, spec: str) -> None:
        """Colours for overlays and colour label PNGs: cityscapes, camvid, vspw or a JSON file
        (see `runtime.render.load_palette`)."""
        self.predictor.palette = load_palette(spec, list(self.predictor.classes))

    def run(
        self,
        source: str | Path | Source,
        output: str | Path | None = None,
        labels_dir: str | Path | None = None,
        color_labels: bool = False,
        opacity: float = 0.5,
        start: int = 0,
        max_frames: int | None = None,
        stride: int = 1,
        overwrite: bool = False,
        report: str | Path | None = None,
        hwaccel: str = "auto",
        extra_sinks: list[Sink] | None = None,
        on_start: Callable[[int | None], None] | None = None,
        on_frame: Callable[[int], None] | None = None,
        *,
        legend: bool = True,
        classes: list[str] | str | None = None,
        stats: str | Path | None = None,
        duration: float | None = None,
        read_timeout: float | None = DEFAULT_READ_TIMEOUT,
        reconnect: bool = False,
        stop_on_signal: bool = True,
    ) -> dict[str, Any]:
        """Segment one source: a video file, an image folder, a URL (rtsp://, http(s)://, udp://,
        tcp://, srt://, ...), a capture device (/dev/video0, "0") or "-" (stdin). Writes an
        overlay video, label PNGs, a consistency report (`report`: r.html -> r.html + r.json)
        and/or per-frame class shares (`stats`: .csv or .jsonl). Returns a summary dict.

        `hwaccel`: video decoding on the GPU (auto: NVDEC when inference runs on CUDA and ffmpeg
        can use it, else software; cuda: NVDEC or an error; none: software), on the inference GPU.
        `legend`: draw the classes visible in each frame (colour + name) in the overlay's corner.
        `classes`: colour only these classes (names or indices; a comma-separated string works).
        Live sources (streams without a duration, devices, stdin): `max_frames` / `duration`
        (seconds) end them; a stall of `read_timeout` seconds ends them with what was read;
        `reconnect` reopens a dropped network stream; with `stop_on_signal` (main thread only)
        Ctrl-C or SIGTERM ends the stream and *keeps* the outputs (a second one aborts). The
        output video of a live source runs at the measured frame rate.
        """
        from vsegcli.io.video import FrameReader, VideoWriter, output_fps, start_time

        if output is None and labels_dir is None and report is None and stats is None and not extra_sinks:
            raise VsegError("nothing to write: give an output video, a labels folder, a report or stats")
        if not 0.0 <= opacity <= 1.0:
            raise VsegError(f"opacity must be between 0 and 1, got {opacity}")
        src = parse_source(source)
        only = None
        if classes is not None:
            spec = classes if isinstance(classes, str) else ",".join(str(c) for c in classes)
            only = select_classes(spec, list(self.predictor.classes))
        # Every output checked (never an input, only what vseg wrote, writable) before decoding.
        plan = plan_outputs(self._input_paths(src), video=output, labels_dir=labels_dir, report=report,
                            stats=stats, overwrite=overwrite)
        reader = FrameReader(src, start=start, max_frames=max_frames, stride=stride,
                             hwaccel=self.decode_accel(hwaccel), hwaccel_device=self.decode_device(),
                             duration=duration, read_timeout=read_timeout, reconnect=reconnect)
        info = reader.info
        is_file = src.kind == "file"
        sinks: list[Sink] = []
        try:
            if output is not None:
                def make_writer(fps: float) -> Any:
                    return VideoWriter(
                        output, info.width, info.height, fps,
                        audio_source=src.path if is_file and info.has_audio else None,
                        audio_start=start_time(info, start), overwrite=overwrite,
                        source=src.path if is_file else None,
                    )
                sinks.append(_OverlaySink(make_writer, output_fps(info, stride), reader if info.live else None,
                                          self.predictor.palette, list(self.predictor.classes), legend, only))
            if labels_dir is not None:
                sinks.append(LabelPngSink(Path(labels_dir), self.predictor.palette, color_labels, overwrite,
                                          source=source if not src.is_stream else None))
            report_sink = None
            if report is not None:
                from vsegcli.report import ConsistencySink, make_context

                context = make_context(self.info, info, start=start, stride=stride, video_fps=output_fps(info, stride),
                                       device=str(self.predictor.device), precision=self.predictor.precision)
                report_sink = ConsistencySink(Path(report), self.predictor.num_classes, self.predictor.classes,
                                              self.predictor.palette, context, overwrite=overwrite)
                sinks.append(report_sink)
            if stats is not None:
                sinks.append(StatsSink(stats, list(self.predictor.classes),
                                       fps=None if info.live else output_fps(info, 1)))
            sinks.extend(extra_sinks or [])
            if on_start is not None:
                on_start(info.num_frames)
        except BaseException:  # Ctrl-C included: no temporary of an opened sink is left
            for s in sinks:
                s.abort()
            reader.close()
            raise
        guard = _LiveSignals(reader) if (info.live and stop_on_signal) else contextlib.nullcontext()
        with guard:
            stats_run = stream(self.predictor, iter(reader), sinks, opacity=opacity, on_frame=on_frame)
        if stats_run.frames == 0:
            why = f" ({reader.end_reason})" if reader.end_reason else " (is --start beyond the end?)"
            raise VsegError(f"{src}: no frames decoded{why}")
        net_h, net_w = self.predictor.input_size(info.height, info.width)
        video_fps = output_fps(info, stride)
        if output is not None:
            video_fps = sinks[0].fps  # type: ignore[attr-defined]  # a live source's: measured
        summary: dict[str, Any] = {
            "input": str(src),
            "output": str(output) if output is not None else None,
            "labels_dir": str(labels_dir) if labels_dir is not None else None,
            "frames": stats_run.frames,
            "seconds": round(stats_run.seconds, 3),
            "fps": round(stats_run.fps, 2),
            "width": info.width,
            "height": info.height,
            "inference_size": [net_w, net_h],
            "video_fps": round(video_fps, 3),
            "audio": bool(info.has_audio and output is not None and is_file),
            "decoder": reader.decoder,
            "live": bool(info.live),
            "decode_errors": reader.decode_errors,
            "stage_seconds": {
                "decode_wait": round(stats_run.times.decode_wait, 3),
                "inference": round(stats_run.times.inference, 3),
                **{k: round(v, 3) for k, v in stats_run.times.sinks.items()},
            },
        }
        lost = _frames_lost(reader, stats_run.frames)
        if reader.decode_errors or lost:
            summary["frames_lost"] = lost
            summary["decode_error_samples"] = reader.decode_error_samples
        if info.live:
            measured = reader.measured_fps()
            summary["measured_fps"] = round(measured, 3) if measured else None
        if reader.end_reason:
            summary["ended"] = reader.end_reason
        if stats is not None:
            summary["stats"] = str(stats)
        if reader.hwaccel_fallback:
            summary["hwaccel_fallback"] = reader.hwaccel_fallback
        if plan.removed:  # temporaries a killed run left beside these outputs
            summary["stale_removed"] = [str(p) for p in plan.removed]
        if output is not None:
            padded = sinks[0].writer.padded_size  # type: ignore[attr-defined]
            if tuple(padded) != (info.width, info.height):
                summary["encoded_size"] = list(padded)
        if report_sink is not None:
            result = stats_run.sink_results[sinks.index(report_sink)]
            summary["report"] = result["report_html"] if result else None
            summary["consistency"] = {k: result[k] for k in ("tc", "flicker_rate", "flow_flicker_rate")} if result else None
            report_sink.update_context(summary)  # the page shows the whole run's frames and fps
        return summary

    def decode_device(self) -> int | None:
        """The GPU NVDEC should decode on: the inference GPU (not always GPU 0)."""
        dev = self.predictor.device
        return (dev.index or 0) if dev.type == "cuda" else None


def _frames_lost(reader: Any, decoded: int) -> int:
    """Frames the decoder dropped: exact only for a whole file whose packets were counted."""
    src = reader.source_info
    if (src is None or src.live or src.is_image_folder or not src.frames_exact or reader.start
            or reader.stride != 1 or reader.max_frames is not None or reader.duration is not None
            or reader.end_reason):
        return 0
    return max(0, int(src.num_frames) - int(decoded))


class _OverlaySink(VideoSink):
    """The overlay video: `--classes` (only those coloured), the legend, and for a live source a
    writer opened once the real frame rate is measured (first frames held meanwhile)."""

    MEASURE_FRAMES = 24
    MEASURE_SECONDS = 2.0

    def __init__(self, make_writer: Callable[[float], Any], fps: float, live_reader: Any, palette: Palette,
                 names: list[str], legend: bool, only: list[int] | None) -> None:
        self.make_writer = make_writer
        self.fps = fps
        self.live_reader = live_reader
        self.palette = palette
        self.names = names
        self.legend = legend
        self.only = only
        # `--classes` as a per-label lookup table (labels are uint8), built once per run.
        self._keep: np.ndarray | None = None
        if only is not None:
            self._keep = np.zeros(256, dtype=bool)
            self._keep[[i for i in only if 0 <= i < 256]] = True
        self.writer: Any = None if live_reader is not None else make_writer(fps)
        self._held: list[np.ndarray] = []

    def _image(self, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> np.ndarray:
        image = blended if blended is not None else frame
        if self._keep is None and not self.legend:
            return image  # nothing drawn: no copy (the arrays are shared with the other sinks)
        if self._keep is not None:  # a new array: kept classes blended, the rest the plain frame
            image = np.where(self._keep[labels][..., None], image, frame)
        else:
            image = np.array(image, copy=True)  # the legend draws into it
        if self.legend:
            draw_legend(image, legend_entries(labels, len(self.names), self.only), self.names, self.palette)
        return image

    def _open(self) -> None:
        measured = self.live_reader.measured_fps()
        if measured and math.isfinite(measured) and measured > 0:
            self.fps = float(measured)
        self.writer = self.make_writer(self.fps)
        for image in self._held:
            self.writer.write(image)
        self._held = []

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        image = self._image(frame, labels, blended)
        if self.writer is not None:
            self.writer.write(image)
            return
        self._held.append(image)
        t = self.live_reader.arrivals
        if len(t) >= self.MEASURE_FRAMES or (len(t) > 1 and t[-1] - t[0] >= self.MEASURE_SECONDS):
            self._open()

    def finish(self) -> None:
        if self.writer is None:
            self._open()
        self.writer.finish()

    def close(self) -> Path:
        self.finish()
        return self.writer.close()

    def abort(self) -> None:
        self._held = []
        if self.writer is not None:
            self.writer.abort()


class _LiveSignals:
    """While a live source runs: the first Ctrl-C / SIGTERM / SIGHUP ends the stream (outputs
    kept: a live run has no other end); a second one goes to the previous handler (abort)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.previous: dict[int, Any] = {}
        self.fired = False
        self._swap: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        # The first signal keeps the outputs, even when the stream already ended on its own
        # (--duration, --max-frames: the reader is closed while the outputs are finalised).
        if not self.fired:
            self.fired = True
            if not self.reader._stop.is_set():
                self.reader.finish(f"stopped by {signal.Signals(signum).name}")
            return
        prev = self.previous.get(signum)
        if callable(prev):
            prev(signum, frame)
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> "_LiveSignals":
        self._swap = swapped_signals(self._handler)
        self.previous = self._swap.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._swap.__exit__(*exc)


def load(
    checkpoint: str | Path | None = None,  # a file/folder, or hf://owner/repo[@rev][/file]
    model: str | None = None,
    device: str | int | None = "auto",
    precision: str = "fp32",
    size: int | None = None,
    seed: int = 0,
    label_set: str | None = None,
    frame_batch: int = 1,
    fold_bn: bool = True,
    shot_reset: bool = True,
    runtime: str = "torch",
    calibration: str | Path | None = None,
) -> VideoSegmenter:
    """Load a checkpoint (any supported layout), or build `model` with random weights, onto a device.

    With neither, the shipped default checkpoint is used; if this installation has none, a
    `VsegError` says so (random weights only when asked for: `model` without `checkpoint`, for
    pipeline tests — their labels mean nothing). Random weights predict the classes of
    `label_set` (default Cityscapes). `frame_batch`: frames per model call
    when streaming a video (micro-batching: backbones batched, temporal steps in frame order).
    `fold_bn`: merge each BatchNorm into the convolution before it (same outputs up to float
    rounding, fewer kernels; `seg.model` then has no BatchNorm layers: load with False to train it).
    `shot_reset`: a temporal model forgets its cached frames where a shot cut starts a new shot
    (`vsegcli.metrics.shots`; attending to another shot's features is wrong); False keeps them.
    The first load in a process also keeps freed host memory in the process (`vsegcli.io.hostmem`;
    set VSEG_HOST_ALLOCATOR=system before it to keep the C library's behaviour).
    `runtime`: who runs the per-frame part on CPU — "torch", "onnxruntime" (the `vseg[onnx]`
    extra) or "auto" (ONNX Runtime when installed and the model is supported);
    `precision` "int8" (ONNX Runtime on the CPU, also when `device` is "auto" on a GPU machine;
    calibrated on `calibration` or $VSEG_CALIBRATION_FRAMES — a folder of training frames or an
    X.int8-ranges.json — else on the ranges file shipped beside the checkpoint) and CPU "bf16"
    are offered only for architectures whose accuracy was measured to hold
    (`vsegcli.runtime.onnx_backend.check_precision`).
    """
    from vsegcli.checkpoints import CheckpointMeta, load_checkpoint
    from vsegcli.checkpoints.hub import resolve_checkpoint
    from vsegcli.data.labels import get_label_set
    from vsegcli.models import build_model, get_architecture
    from vsegcli.models.fold import fold_batchnorm

    if int(frame_batch) < 1:
        raise VsegError(f"frame_batch must be at least 1, got {frame_batch}")
    dev = select_device(spec_for_precision(device, precision))
    if checkpoint is None and model is None:
        checkpoint = default_checkpoint()
        if checkpoint is None:
            raise VsegError(
                f"no shipped default model in {weights_dir()} (models.json and its checkpoint); pass "
                f"--checkpoint FILE, or --model NAME for random weights (e.g. -m {RANDOM_INIT_MODEL})")
    if checkpoint is not None:
        loaded = load_checkpoint(resolve_checkpoint(checkpoint), architecture=model)
        net, meta = loaded.model, loaded.meta
        info = ModelInfo(meta.architecture, str(loaded.path), loaded.source_format, meta.num_classes,
                         meta.label_set, list(loaded.ignored_keys))
    else:
        assert model is not None
        labels = get_label_set(label_set or "cityscapes")
        torch.manual_seed(seed)  # same random weights every time (and in every torchrun process)
        net = build_model(model, labels.num_classes).eval()
        meta = CheckpointMeta.from_model(net, label_set=labels)
        info = ModelInfo(model, None, "random-init", net.num_classes, labels.name, random_init=True)
    info.temporal = get_architecture(info.architecture).temporal
    if fold_bn:
        fold_batchnorm(net.eval())
    from vsegcli.runtime.onnx_backend import calibration_source, check_precision, ranges_beside

    check_precision(info.architecture, precision, dev)
    if precision == "int8":  # a shipped model's int8 ranges come with it: no frames needed
        calibration = calibration_source(calibration, default=ranges_beside(info.checkpoint))
    predictor = Predictor(
        net, meta.mean, meta.std, Palette.from_list(meta.palette), dev, precision,
        size=size if size is not None else meta.input_size, classes=list(meta.classes),
        runtime=runtime, calibration=None if calibration is None else str(calibration),
    )
    predictor.frame_batch = int(frame_batch)
    predictor.shot_reset = bool(shot_reset)
    if predictor.precision == "int8":  # int8 runs only in an OrtBackend
        info.int8_calibration, info.int8_recipe = str(predictor.backend.calibration), predictor.backend.recipe_name
    return VideoSegmenter(predictor, info)


# Deprecated: the former name of `VideoSegmenter` (too close to `models.base.Segmentor`); kept so
# existing scripts and isinstance checks work. New code: `VideoSegmenter`.
Segmenter = VideoSegmenter

