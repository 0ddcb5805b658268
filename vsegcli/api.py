"""The Python API: load a model once, then segment videos, image folders or single frames.

    from vsegcli import api
    seg = api.load("weights/stt-effl0-camvid.safetensors", device="auto")   # a VideoSegmenter
    summary = seg.run("street.mp4", output="street_seg.mp4", labels_dir="street_labels")
    for index, labels in seg.iter_labels("street.mp4"):   # (H, W) uint8 class indices
        ...

The `vseg run` command is this module plus argument parsing and progress display.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from vsegcli.errors import VsegError
from vsegcli.runtime import LabelPngSink, Predictor, Sink, VideoSink, select_device, stream
from vsegcli.runtime.render import Palette

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
                         hwaccel=self.decode_accel(hwaccel)) as reader:
            for index, frame in reader:
                yield index, self.predictor.step(session, self.predictor.upload(frame)).cpu().numpy()

    def segment_frames(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Labels for a list of RGB uint8 frames, treated as consecutive frames of one video."""
        session = self.predictor.new_session()
        return [self.predictor.step(session, self.predictor.upload(f)).cpu().numpy() for f in frames]

    def run(
        self,
        source: str | Path,
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
    ) -> dict[str, Any]:
        """Segment one video or image folder: overlay video, label PNGs and/or a consistency report
        (`report`: r.html -> r.html + r.json). `hwaccel`: video decoding on the GPU (auto: NVDEC
        when inference runs on CUDA and ffmpeg can use it, else software; cuda: NVDEC or an
        error; none: software). Returns a summary dict."""
        from vsegcli.io.video import FrameReader, VideoWriter, output_fps, start_time

        if output is None and labels_dir is None and report is None and not extra_sinks:
            raise VsegError("nothing to write: give an output video, a labels folder or a report")
        if not 0.0 <= opacity <= 1.0:
            raise VsegError(f"opacity must be between 0 and 1, got {opacity}")
        reader = FrameReader(source, start=start, max_frames=max_frames, stride=stride,
                             hwaccel=self.decode_accel(hwaccel))
        info = reader.info
        sinks: list[Sink] = []
        try:
            if output is not None:
                writer = VideoWriter(
                    output, info.width, info.height, output_fps(info, stride),
                    audio_source=Path(source) if info.has_audio else None,
                    audio_start=start_time(info, start), overwrite=overwrite, source=Path(source),
                )
                sinks.append(VideoSink(writer))
            if labels_dir is not None:
                sinks.append(LabelPngSink(Path(labels_dir), self.predictor.palette, color_labels, overwrite))
            report_sink = None
            if report is not None:
                from vsegcli.report import ConsistencySink, make_context

                context = make_context(self.info, info, start=start, stride=stride, video_fps=output_fps(info, stride),
                                       device=str(self.predictor.device), precision=self.predictor.precision)
                report_sink = ConsistencySink(Path(report), self.predictor.num_classes, self.predictor.classes,
                                              self.predictor.palette, context, overwrite=overwrite)
                sinks.append(report_sink)
            sinks.extend(extra_sinks or [])
        except BaseException:
            for s in sinks:
                s.abort()
            reader.close()
            raise
        if on_start is not None:
            on_start(info.num_frames)
        stats = stream(self.predictor, iter(reader), sinks, opacity=opacity, on_frame=on_frame)
        if stats.frames == 0:
            raise VsegError(f"{source}: no frames decoded (is --start beyond the end?)")
        net_h, net_w = self.predictor.input_size(info.height, info.width)
        summary: dict[str, Any] = {
            "input": str(source),
            "output": str(output) if output is not None else None,
            "labels_dir": str(labels_dir) if labels_dir is not None else None,
            "frames": stats.frames,
            "seconds": round(stats.seconds, 3),
            "fps": round(stats.fps, 2),
            "width": info.width,
            "height": info.height,
            "inference_size": [net_w, net_h],
            "video_fps": output_fps(info, stride),
            "audio": bool(info.has_audio and output is not None),
            "decoder": reader.decoder,
            "stage_seconds": {
                "decode_wait": round(stats.times.decode_wait, 3),
                "inference": round(stats.times.inference, 3),
                **{k: round(v, 3) for k, v in stats.times.sinks.items()},
            },
        }
        if reader.hwaccel_fallback:
            summary["hwaccel_fallback"] = reader.hwaccel_fallback
        if output is not None:
            padded = sinks[0].writer.padded_size  # type: ignore[attr-defined]
            if tuple(padded) != (info.width, info.height):
                summary["encoded_size"] = list(padded)
        if report_sink is not None:
            result = stats.sink_results[sinks.index(report_sink)]
            summary["report"] = result["report_html"] if result else None
            summary["consistency"] = {k: result[k] for k in ("tc", "flicker_rate", "flow_flicker_rate")} if result else None
            report_sink.update_context(summary)  # the page shows the whole run's frames and fps
        return summary


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
) -> VideoSegmenter:
    """Load a checkpoint (any supported layout), or build `model` with random weights, onto a device.

    With neither, the shipped default checkpoint is used; if this installation has none, a
    `VsegError` says so (random weights only when asked for: `model` without `checkpoint`, for
    pipeline tests — their labels mean nothing). Random weights predict the classes of
    `label_set` (default Cityscapes). `frame_batch`: frames per model call
    when streaming a video (micro-batching: backbones batched, temporal steps in frame order).
    `fold_bn`: merge each BatchNorm into the convolution before it (same outputs up to float
    rounding, fewer kernels; `seg.model` then has no BatchNorm layers: load with False to train it).
    The first load in a process also keeps freed host memory in the process (`vsegcli.io.hostmem`;
    set VSEG_HOST_ALLOCATOR=system before it to keep the C library's behaviour).
    """
    from vsegcli.checkpoints import CheckpointMeta, load_checkpoint
    from vsegcli.checkpoints.hub import resolve_checkpoint
    from vsegcli.data.labels import get_label_set
    from vsegcli.models import build_model, get_architecture
    from vsegcli.models.fold import fold_batchnorm

    if int(frame_batch) < 1:
        raise VsegError(f"frame_batch must be at least 1, got {frame_batch}")
    dev = select_device(device)
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
    predictor = Predictor(
        net, meta.mean, meta.std, Palette.from_list(meta.palette), dev, precision,
        size=size if size is not None else meta.input_size, classes=list(meta.classes),
    )
    predictor.frame_batch = int(frame_batch)
    return VideoSegmenter(predictor, info)


# Deprecated: the former name of `VideoSegmenter` (too close to `models.base.Segmentor`); kept so
# existing scripts and isinstance checks work. New code: `VideoSegmenter`.
Segmenter = VideoSegmenter

