"""Where `vseg run` spends its time on the CPU: each stage of one frame's path timed alone.

    python benchmarks/profile_run.py                      # shipped default on examples/bikes.mp4
    python benchmarks/profile_run.py -c weights/effl0-camvid.safetensors --frames 60
    python benchmarks/profile_run.py --nchw              # the model's layout before channels-last

Stages, in the order a frame meets them (docs/ARCHITECTURE.md, "One frame's path"): decode
(ffmpeg -> RGB), shot-cut test, upload + resize + normalise (`Predictor.prepare`), the model's
session step, logits -> labels, overlay blend, legend, H.264 encode (ffmpeg libx264), label PNG.
Each is timed in its own loop over the same frames (medians, ms per frame) so the numbers add up
to what one thread would spend; `vseg run` overlaps decode, encode and PNGs with the model on
other threads, so its wall time is lower than the sum on a machine with spare cores.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable

import cv2
import torch

from vsegcli import api
from vsegcli.io.video import FrameReader, VideoWriter, probe
from vsegcli.metrics.shots import ShotCutDetector
from vsegcli.runtime.predictor import logits_to_labels
from vsegcli.runtime.render import draw_legend, legend_entries, overlay

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn: Callable[[int], object], n: int, warmup: int = 3) -> float:
    for i in range(min(warmup, n)):
        fn(i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default=str(ROOT / "examples" / "bikes.mp4"))
    ap.add_argument("-c", "--checkpoint", default=None, help="default: the shipped default model")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--nchw", action="store_true", help="the layout before channels-last (A/B)")
    ap.add_argument("--precision", default="fp32", help="fp32, bf16 or int8 (as vseg run)")
    ap.add_argument("--runtime", default="torch", help="torch, onnxruntime or auto (as vseg run)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seg = api.load(args.checkpoint, device="cpu", precision=args.precision, runtime=args.runtime)
    p = seg.predictor
    if args.nchw:
        p.channels_last = False
        p.model.to(memory_format=torch.contiguous_format)
    t0 = time.perf_counter()
    frames = [f for _, f in FrameReader(args.input, max_frames=args.frames)]
    decode_ms = 1000 * (time.perf_counter() - t0) / len(frames)  # includes ffmpeg's start
    n = len(frames)
    rows: list[tuple[str, float]] = [("decode (ffmpeg, incl. start)", decode_ms)]

    detector = ShotCutDetector()
    rows.append(("shot-cut test", _median_ms(lambda i: detector.push(frames[i]), n)))
    rows.append(("upload + resize + normalise", _median_ms(lambda i: p.prepare(p.upload(frames[i])), n)))
    xs = [p.prepare(p.upload(f)) for f in frames]
    session = p.new_session()
    logits: list[torch.Tensor] = []

    def model_step(i: int) -> None:
        with torch.inference_mode():
            out = session.step(xs[i])
        if len(logits) < n:
            logits.append(out)

    rows.append(("model (session step)", _median_ms(model_step, n, warmup=0)))
    from vsegcli.runtime.onnx_backend import FramePart, exported_part

    part = exported_part(p.model)
    if part is not None:  # informational: the per-frame part inside the step above (not added to the sum)
        frame_part = FramePart(p.backend.model, part)  # the model as the chosen runtime runs it
        with torch.inference_mode():
            part_ms = _median_ms(lambda i: frame_part(xs[i]), n)
        extra_rows = [(f"  of which per-frame part ({part})", part_ms)]
    else:
        extra_rows = []
    size = frames[0].shape[:2]
    labels = [logits_to_labels(lg, size)[0] for lg in logits]
    rows.append(("logits -> labels", _median_ms(lambda i: logits_to_labels(logits[i], size), n)))
    blends = [overlay(torch.from_numpy(f), lab, p.palette, 0.5) for f, lab in zip(frames, labels)]
    rows.append(("overlay blend", _median_ms(lambda i: overlay(torch.from_numpy(frames[i]), labels[i], p.palette, 0.5), n)))
    names = list(p.classes)

    def legend(i: int) -> None:
        image = blends[i].numpy().copy()
        draw_legend(image, legend_entries(labels[i].numpy(), len(names)), names, p.palette)

    rows.append(("legend", _median_ms(legend, n)))
    with tempfile.TemporaryDirectory() as tmp:
        info = probe(args.input)
        writer = VideoWriter(Path(tmp) / "o.mp4", info.width, info.height, info.fps)
        images = [b.numpy() for b in blends]
        rows.append(("H.264 encode (write)", _median_ms(lambda i: writer.write(images[i]), n, warmup=0)))
        t0 = time.perf_counter()
        writer.close()
        rows.append(("encoder flush at close, per frame", 1000 * (time.perf_counter() - t0) / n))
        lab_np = [lab.numpy() for lab in labels]
        rows.append(("label PNG", _median_ms(lambda i: cv2.imwrite(str(Path(tmp) / f"{i:06d}.png"), lab_np[i]), n)))
    total = sum(ms for _, ms in rows)
    print(f"{seg.info.architecture} on {Path(args.input).name} ({size[1]}x{size[0]}), {n} frames, "
          f"{torch.get_num_threads()} threads, channels-last {p.channels_last}, {p.runtime} {p.precision}")
    print(f"{'stage':38s} {'ms/frame':>9s} {'share':>6s}")
    for name, ms in rows:
        print(f"{name:38s} {ms:9.2f} {100 * ms / total:5.1f}%")
        if name.startswith("model"):
            for sub, sub_ms in extra_rows:
                print(f"{sub:38s} {sub_ms:9.2f}")
    print(f"{'sum (one thread doing all of it)':38s} {total:9.2f}  -> {1000 / total:.1f} fps")


if __name__ == "__main__":
    main()
