"""Per-frame model compute on CPU: torch variants vs ONNX Runtime, measured interleaved.

    python benchmarks/cpu_runtimes.py -c weights/effl0-camvid.safetensors --size 288x640 --threads 2

Each round times every variant for --steps frames (after --warmup), one variant after the other,
so a change in machine load hits all of them alike; the table gives the median over rounds of
each round's median ms/frame. Variants: torch eager (BatchNorms folded, as `api.load` does),
channels-last, torch.jit.freeze + optimize_for_inference, torch.compile (inductor; --compile),
torch bf16 autocast (when the CPU has native bf16), ORT fp32 and ORT int8 (--calibration DIR).
Only the per-frame part the ORT backend exports is timed (`forward_frame` for a per-frame model,
`features` for STT, `encode` for MRCFA), on the same random input for all.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--checkpoint", default="weights/effl0-camvid.safetensors")
    ap.add_argument("--size", default="288x640", help="network input HxW")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--compile", action="store_true", help="include torch.compile (inductor; slow to build)")
    ap.add_argument("--calibration", default=os.environ.get("VSEG_CALIBRATION_FRAMES"),
                    help="training frames for ORT int8 (omit to skip int8)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))

    from vsegcli import api
    from vsegcli.runtime.onnx_backend import OrtBackend, FramePart, cpu_has_bf16, exported_part, ort_available

    seg = api.load(args.checkpoint, device="cpu")
    model = seg.predictor.model
    part = exported_part(model)
    x = torch.randn(1, 3, h, w)
    fn = FramePart(model, part).eval()
    variants: dict[str, Callable[[], object]] = {"torch eager": lambda: fn(x)}

    x_cl = x.contiguous(memory_format=torch.channels_last)
    fn_cl = copy_channels_last(fn)
    variants["torch channels-last"] = lambda: fn_cl(x_cl)
    try:
        with torch.no_grad():
            traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(fn, (x,), strict=False).eval()))
        variants["torch jit freeze+optimize_for_inference"] = lambda: traced(x)
    except Exception as e:  # noqa: BLE001 - a benchmark reports what fails
        print(f"jit: {type(e).__name__}: {e}")
    if args.compile:
        t0 = time.perf_counter()
        compiled = torch.compile(fn)
        with torch.no_grad():
            compiled(x)
        print(f"torch.compile build: {time.perf_counter() - t0:.1f} s")
        variants["torch.compile (inductor)"] = lambda: compiled(x)
    if cpu_has_bf16():
        def bf16() -> object:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x)
        variants["torch bf16 autocast"] = bf16
    if ort_available():
        p = seg.predictor
        ort32 = OrtBackend(model, "fp32", p.mean.flatten().tolist(), p.std.flatten().tolist(), threads=args.threads)
        f32 = ort32.model
        variants["onnxruntime fp32"] = lambda: FramePart(f32, part)(x)
        if args.calibration:
            ort8 = OrtBackend(model, "int8", p.mean.flatten().tolist(), p.std.flatten().tolist(),
                              calibration=args.calibration, threads=args.threads)
            f8 = ort8.model
            variants["onnxruntime int8"] = lambda: FramePart(f8, part)(x)

    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        for k, f in variants.items():  # warm-up (graph builds, first-touch allocations)
            for _ in range(args.warmup):
                f()
        for _ in range(args.rounds):
            for k, f in variants.items():
                per = []
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    f()
                    per.append(time.perf_counter() - t0)
                times[k].append(statistics.median(per) * 1000)
    load = os.getloadavg()[0]
    print(f"\n{args.checkpoint} part={part} input {h}x{w}, {args.threads} threads, torch {torch.__version__}, "
          f"{args.rounds} rounds x {args.steps} steps, load average {load:.2f}")
    base = statistics.median(times["torch eager"])
    print(f"{'variant':44s} {'ms/frame':>9s} {'vs eager':>9s}   rounds")
    for k, v in times.items():
        m = statistics.median(v)
        print(f"{k:44s} {m:9.2f} {base / m:8.2f}x   {' '.join(f'{t:.1f}' for t in v)}")


def copy_channels_last(fn: torch.nn.Module) -> torch.nn.Module:
    import copy

    other = copy.deepcopy(fn)
    return other.to(memory_format=torch.channels_last)


if __name__ == "__main__":
    main()
