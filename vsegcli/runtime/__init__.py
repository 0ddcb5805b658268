"""Running a model over frames: device choice, pre/post-processing, the streaming pipeline, sinks.

    device.py     `select_device` (the one device-spec parser), `resolve_device` (bench's --gpu)
    predictor.py  `Predictor` and the one pre/post-processing path: `inference_size`,
                  `normalise_pixels`, `logits_to_labels`, `PRECISIONS`
    pipeline.py   `stream`: decode thread -> inference -> one thread per sink; `RunStats`
    sinks.py      the `Sink` protocol, `LabelPngSink`, `VideoSink`
    render.py     palette, overlay, legend
    progress.py   the rich progress bar the commands and training loops share
"""
from __future__ import annotations

from vsegcli.runtime.device import resolve_device, select_device
from vsegcli.runtime.pipeline import QUEUE_DEPTH, RunStats, StageTimes, stream
from vsegcli.runtime.predictor import (
    PRECISIONS,
    Predictor,
    ResizeRule,
    channel_stat,
    inference_size,
    logits_to_labels,
    normalise_pixels,
)
from vsegcli.runtime.sinks import LabelPngSink, Sink, VideoSink

__all__ = [
    "PRECISIONS",
    "QUEUE_DEPTH",
    "LabelPngSink",
    "Predictor",
    "ResizeRule",
    "RunStats",
    "Sink",
    "StageTimes",
    "VideoSink",
    "channel_stat",
    "inference_size",
    "logits_to_labels",
    "normalise_pixels",
    "resolve_device",
    "select_device",
    "stream",
]
