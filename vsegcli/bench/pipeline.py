"""End to end: decode -> infer -> encode (+ label PNGs) through the runtime's `stream`, and each
stage alone, so the bottleneck has a name.

Stages alone: decode (FrameReader), inference (upload + session step + overlay + copy back, on the
decoded frames: exactly the runtime's inference thread), encode (VideoWriter on the decoded
frames), label PNGs (LabelPngSink on the inference labels). Decode and encode depend only on the
source and size, so several models share them through an `io_cache`.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from vsegcli.errors import VsegError
from vsegcli.models.base import Segmentor
from vsegcli.runtime import Predictor
from vsegcli.bench.machine import load_average, sync
from vsegcli.bench.settings import (DEFAULT_INPUT, DEFAULT_SIZE, GPU_FRAMES, GPU_WARMUP, Log, as_device, as_size,
                                    quiet)
from vsegcli.bench.stepper import build_bench_model, model_name, palette_for

# One stage's timed runs: (wall seconds, process CPU seconds) per round.
Runs = list[tuple[float, float]]


# --------------------------------------------------------------------------------------------
# Decode and encode alone (shared by every model at one source and size)
# --------------------------------------------------------------------------------------------


def prepare_source(src: Path, size: tuple[int, int], frames: int, workdir: Path) -> tuple[Path, int, str]:
    """The input video at exactly `size` (HxW), at most `frames` frames. A video already at that
    size is used as is; otherwise it is resized (bilinear) and re-encoded once, outside any timing,
    so decode, inference and encode all work at the benchmark size."""
    import cv2

    from vsegcli.io.video import FrameReader, VideoWriter, probe

    info = probe(src)
    h, w = size
    if (info.height, info.width) == (h, w):
        return src, frames, f"{src.name} ({w}x{h}) as is"
    out = workdir / f"source_{h}x{w}.mp4"
    n = 0
    with FrameReader(src, max_frames=frames) as reader, VideoWriter(out, w, h, info.fps) as writer:
        for _, frame in reader:
            writer.write(cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR))
            n += 1
    return out, n, f"{src.name} ({info.width}x{info.height}) resized to {w}x{h} and re-encoded (libx264 crf 15) before timing"


def measure_io_stages(source: Path, frames: int, workdir: Path, repeat: int = 1,
                      hwaccel: str = "none") -> dict[str, Any]:
    """Decode-only and encode-only throughput of a video (shared by every model at this size), best
    of `repeat` runs each. Returns the stage dicts and the decoded frames (for the other stages)."""
    from vsegcli.io.video import FrameReader, VideoWriter

    decode_runs: list[float] = []
    decoded: list[np.ndarray] = []
    fps_source = 25.0
    decoder, fallback = "software", None
    for _ in range(max(1, repeat)):
        reader = FrameReader(source, max_frames=frames, hwaccel=hwaccel)
        decoder, fallback = reader.decoder, reader.hwaccel_fallback
        fps_source = reader.info.fps
        decoded = []
        t0 = time.perf_counter()  # after opening: the pipeline opens its reader before its clock starts too
        with reader:
            for _, frame in reader:
                decoded.append(frame)
        decode_runs.append(time.perf_counter() - t0)
    if not decoded:
        raise VsegError(f"{source}: no frames decoded")
    h, w = decoded[0].shape[:2]
    encode_runs: list[float] = []
    for _ in range(max(1, repeat)):
        writer = VideoWriter(workdir / "encode_only.mp4", w, h, fps_source, overwrite=True)
        t0 = time.perf_counter()
        try:
            for frame in decoded:
                writer.write(frame)
            writer.close()  # includes flushing the encoder: a finished file is what counts
        except BaseException:
            writer.abort()
            raise
        encode_runs.append(time.perf_counter() - t0)
    n = len(decoded)
    return {
        "frames": decoded,
        "fps_source": fps_source,
        "decode": {"fps": n / min(decode_runs), "seconds": min(decode_runs), "frames": n,
                   "runs_fps": [n / t for t in decode_runs], "decoder": decoder, "hwaccel_fallback": fallback,
                   "what": f"FrameReader iteration (ffmpeg {'NVDEC' if decoder == 'cuda' else 'software'} decode "
                           "+ pipe + numpy frame)"},
        "encode": {"fps": n / min(encode_runs), "seconds": min(encode_runs), "frames": n,
                   "runs_fps": [n / t for t in encode_runs],
                   "what": "VideoWriter.write of the decoded frames + close (libx264 veryfast, crf 15)"},
    }


def _io_entry(cache: dict[Any, Any], src: Path, size: tuple[int, int], frames: int, repeat: int, hwaccel: str,
              log: Log) -> dict[str, Any]:
    """The prepared source and its decode/encode measurements, measured once per cache key."""
    key = (str(src.resolve()), size, frames, hwaccel)
    if key not in cache:
        workdir = Path(tempfile.mkdtemp(prefix="vseg-bench-"))
        log(f"preparing {src.name} at {size[0]}x{size[1]}; timing decode and encode alone")
        prepared, n, how = prepare_source(src, size, frames, workdir)
        io = measure_io_stages(prepared, n, workdir, repeat, hwaccel)
        cache[key] = {"workdir": workdir, "source": prepared, "source_note": how, **io}
    return cache[key]


def cleanup_io_cache(cache: dict[Any, Any]) -> None:
    """Remove the temporary videos of an `io_cache` and empty it."""
    for entry in cache.values():
        shutil.rmtree(entry.get("workdir", ""), ignore_errors=True)
    cache.clear()


# --------------------------------------------------------------------------------------------
# Inference, label PNGs and the whole pipeline
# --------------------------------------------------------------------------------------------


def _infer_all(predictor: Predictor, decoded: list[np.ndarray], count: int,
               video: bool) -> tuple[list[np.ndarray], float, float]:
    """The runtime's inference-thread body on frames already in memory: labels, wall and CPU seconds."""
    from vsegcli.runtime.render import overlay

    n, frame_batch = len(decoded), predictor.frame_batch
    session = predictor.new_session()
    out: list[np.ndarray] = []
    sync(predictor.device)
    c0, t0 = time.process_time(), time.perf_counter()
    for k0 in range(0, count, frame_batch):
        frames_dev = [predictor.upload(decoded[k % n]) for k in range(k0, min(count, k0 + frame_batch))]
        for frame_dev, lab in zip(frames_dev, predictor.step_many(session, frames_dev)):
            if video:
                overlay(frame_dev, lab, predictor.palette, 0.5).cpu().numpy()
            out.append(lab.cpu().numpy())
    sync(predictor.device)
    return out, time.perf_counter() - t0, time.process_time() - c0


def _write_label_pngs(predictor: Predictor, decoded: list[np.ndarray], label_maps: list[np.ndarray],
                      folder: Path) -> tuple[float, float]:
    """LabelPngSink alone on the inference labels: wall and CPU seconds."""
    from vsegcli.runtime import LabelPngSink

    sink = LabelPngSink(folder, predictor.palette)
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        for k, lab in enumerate(label_maps):
            sink.write(k, decoded[k], lab, None)
        sink.close()
    except BaseException:
        sink.abort()
        raise
    return time.perf_counter() - t0, time.process_time() - c0


def _end_to_end(predictor: Predictor, source: Path, n: int, hwaccel: str, workdir: Path, video: bool,
                labels: bool) -> tuple[Any, float]:
    """The runtime's `stream` from the video file to finished outputs: its stats and CPU seconds."""
    from vsegcli.io.video import FrameReader, VideoWriter
    from vsegcli.runtime import LabelPngSink, VideoSink, stream

    reader = FrameReader(source, max_frames=n, hwaccel=hwaccel)
    sinks: list[Any] = []
    if video:
        sinks.append(VideoSink(VideoWriter(workdir / "e2e.mp4", reader.info.width, reader.info.height,
                                           reader.info.fps)))
    if labels:
        sinks.append(LabelPngSink(workdir / "e2e_labels", predictor.palette))
    c0 = time.process_time()
    stats = stream(predictor, iter(reader), sinks, opacity=0.5)
    return stats, time.process_time() - c0


def _stage(runs: Runs, n: int, what: str, device: torch.device) -> dict[str, Any]:
    """One stage's result: its best round, every round's fps, and on CPU its CPU time per frame."""
    best = min(runs)
    out = {"fps": n / best[0], "seconds": best[0], "frames": n, "runs_fps": [n / t for t, _ in runs], "what": what}
    if device.type == "cpu":  # the least CPU time of the rounds: its cost with the least interference
        out["cpu_ms_per_frame"] = 1000.0 * min(c for _, c in runs) / n
    return out


def _summarise(io: dict[str, Any], runs: dict[str, Runs], e2e_stats: list[Any], n: int, device: torch.device,
               video: bool, labels: bool) -> dict[str, Any]:
    """Stages, end to end, the bottleneck and how close the overlapped pipeline gets to it."""
    stages: dict[str, dict[str, Any]] = {
        "decode": dict(io["decode"]),
        "inference": _stage(runs["inference"], n, "upload + session step + post-processing"
                            + (" + overlay" if video else "") + " + copy to host, frames in memory", device),
    }
    if video:
        stages["encode"] = dict(io["encode"])
    if labels:
        stages["label_png"] = _stage(runs["label_png"], n,
                                     "LabelPngSink (cv2.imwrite, PNG level 1) of the inference labels", device)
    slowest = min(stages, key=lambda s: stages[s]["fps"])
    e2e = _stage(runs["end_to_end"], n, "engine.stream: decode thread -> inference -> sink threads, outputs finished",
                 device)
    best_stats = min(e2e_stats, key=lambda st: st.seconds)
    e2e["stage_seconds"] = {"decode_wait": best_stats.times.decode_wait, "inference": best_stats.times.inference,
                            **best_stats.times.sinks}
    # Every round's e2e against the same round's own inference (the other stages are far faster on
    # any machine we measured; they come from the shared decode/encode runs).
    rounds_percent = []
    for i, (t_e2e, _) in enumerate(runs["end_to_end"]):
        slowest_fps = min([n / runs["inference"][i][0]] + [stages[s]["fps"] for s in stages if s != "inference"])
        rounds_percent.append(100.0 * (n / t_e2e) / slowest_fps)
    return {"stages": stages, "end_to_end": e2e, "bottleneck": slowest,
            "e2e_percent_of_slowest": 100.0 * e2e["fps"] / stages[slowest]["fps"], "rounds_percent": rounds_percent}


def bench_pipeline(
    model: str | Segmentor,
    size: tuple[int, int] | str = DEFAULT_SIZE,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    input: str | Path | None = None,
    frames: int = GPU_FRAMES,
    warmup: int = GPU_WARMUP,
    num_classes: int = 19,
    labels: bool = True,
    video: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    seed: int = 0,
    io_cache: dict[Any, Any] | None = None,
    log: Log = quiet,
    repeat: int = 1,
    hwaccel: str = "auto",
    frame_batch: int = 1,
) -> dict[str, Any]:
    """End-to-end decode -> infer -> encode (+ label PNGs) through the runtime's `stream`, and each stage alone.

    The bottleneck is the slowest stage; `e2e_percent_of_slowest` says how close the overlapped
    pipeline gets to it. With `repeat` > 1, inference alone, PNGs alone and end to end run that
    many rounds back to back and each keeps its best; `rounds_percent` gives every round's own e2e /
    slowest. `io_cache` lets several models share the decode/encode measurements of one source and
    size. On CPU, `cpu_ms_per_frame` is this process's CPU time per frame (ffmpeg subprocesses not
    included).
    """
    if not (labels or video):
        raise VsegError("the pipeline needs at least one sink: video and/or labels")
    dev, size = as_device(device), as_size(size)
    src = Path(input) if input is not None else DEFAULT_INPUT
    if not src.exists():
        raise VsegError(f"{src}: no such video; pass --input VIDEO")
    net = build_bench_model(model, num_classes, seed) if isinstance(model, str) else model
    name = model if isinstance(model, str) else model_name(model)
    if precision == "fp16" and dev.type == "cpu":
        return {"model": name, "size": list(size), "precision": precision, "status": "skipped",
                "note": "fp16 on CPU: skipped"}
    if io_cache is None:  # a one-off call: clean up its temporary videos afterwards
        own: dict[Any, Any] = {}
        try:
            return bench_pipeline(net, size, precision, dev, input=src, frames=frames, warmup=warmup,
                                  num_classes=num_classes, labels=labels, video=video, mean=mean, std=std, seed=seed,
                                  io_cache=own, log=log, repeat=repeat, hwaccel=hwaccel, frame_batch=frame_batch)
        finally:
            cleanup_io_cache(own)
    if hwaccel == "auto" and dev.type != "cuda":  # as `vseg run`: NVDEC only next to CUDA inference
        hwaccel = "none"
    io = _io_entry(io_cache, src, size, frames, repeat, hwaccel, log)
    decoded: list[np.ndarray] = io["frames"]
    n = len(decoded)
    predictor = Predictor(net, list(mean), list(std), palette_for(net), dev, precision)
    predictor.frame_batch = frame_batch

    load_start = load_average()
    log(f"{name} {precision}: warm-up")
    _infer_all(predictor, decoded, max(1, warmup), video)  # allocator, cuDNN plans, lazy init
    runs: dict[str, Runs] = {"inference": [], "label_png": [], "end_to_end": []}
    e2e_stats: list[Any] = []
    for r in range(max(1, repeat)):
        rnd = f" (round {r + 1}/{repeat})" if repeat > 1 else ""
        workdir = Path(tempfile.mkdtemp(prefix="run-", dir=io["workdir"]))
        try:
            log(f"{name} {precision}: inference alone{rnd}")
            label_maps, t_infer, c_infer = _infer_all(predictor, decoded, n, video)
            runs["inference"].append((t_infer, c_infer))
            if labels:
                runs["label_png"].append(_write_label_pngs(predictor, decoded, label_maps, workdir / "labels_only"))
            log(f"{name} {precision}: end to end{rnd}")
            stats, c_e2e = _end_to_end(predictor, io["source"], n, hwaccel, workdir, video, labels)
            runs["end_to_end"].append((stats.seconds, c_e2e))
            e2e_stats.append(stats)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return {
        "model": name, "size": list(size), "precision": precision, "device": str(dev), "status": "ok",
        "input": str(src), "source": io["source_note"], "frames": n, "repeat": max(1, repeat),
        "frame_batch": frame_batch, "load_average": {"start": load_start, "end": load_average()},
        "sinks": [s for s, on in (("video", video), ("labels", labels)) if on],
        **_summarise(io, runs, e2e_stats, n, dev, video, labels),
    }
