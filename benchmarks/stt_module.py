"""Micro-benchmark of the Sparse Temporal Transformer module alone (CPU or CUDA).

Times, per frame, the pieces of one streaming STT step at the sizes the models use:

* ``nsm``    - D_NSM scores of the query map (+ top-k query selection),
* ``attend`` - windowed attention of the selected queries over the T cached key frames,
* ``total``  - everything a session pays per frame: Q projection, NSM, selection, attention,
  Wo fusion (``stt(x, memory)``) plus the K/V projection of the new frame (``keys_values``).

Each number is the median of ``--repeats`` runs after ``--warmup`` runs. With ``--with-base``
the per-frame base model whose STT map has that size is timed too (stt-segformer-b0's
``forward_frame``: 480x864 -> 60x108 and 1024x2048 -> 128x256 at stride 8), for the overhead
ratio STT / base.

On a shared machine use ``--threads 1 --clock cpu`` (process CPU time): wall time with several
OpenMP threads on oversubscribed cores swings by 10x and more, for any model.

    python benchmarks/stt_module.py --threads 2
    python benchmarks/stt_module.py --sizes 60x108 --repeats 9 --with-base
    python benchmarks/stt_module.py --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from vsegcli.models.temporal.sparse_attention import SparseTemporalTransformer

# STT map size -> input image size of stt-segformer-b0 (attention at stride 8).
BASE_INPUT = {(60, 108): (480, 864), (128, 256): (1024, 2048)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int,
              clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of `fn` in milliseconds by `clock` (warm-up runs discarded)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        _sync(device)
        times.append((clock() - t0) * 1e3)
    return statistics.median(times)


def bench_size(h: int, w: int, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    c, t = args.channels, args.frames
    stt = SparseTemporalTransformer(c, num_frames=t, key_dim=args.key_dim, radius=args.radius,
                                    query_ratio=args.ratio, zero_init=False).to(device).eval()
    x = torch.randn(1, c, h, w, device=device)
    with torch.no_grad():
        memory = [stt.keys_values(torch.randn(1, c, h, w, device=device)) for _ in range(t)]
        q = stt.query(x).contiguous(memory_format=torch.channels_last)  # the layout forward uses
        index = stt.select_queries(stt.nsm_scores(q))
        q_sel = q.flatten(2).gather(2, index.unsqueeze(1).expand(1, q.shape[1], -1)).transpose(1, 2)

        def nsm() -> object:
            return stt.select_queries(stt.nsm_scores(q))

        def attend() -> object:
            return stt.attend(q_sel, index, memory, (h, w))

        def total() -> object:
            y = stt(x, memory)
            return y, stt.keys_values(x)  # a session projects the new frame once, for later frames

        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        out = {name: median_ms(fn, device, args.warmup, args.repeats, clock)
               for name, fn in (("nsm", nsm), ("attend", attend), ("total", total))}
        if args.with_base and (h, w) in BASE_INPUT:
            from vsegcli.models import build_model

            model = build_model(args.base, 19).to(device).eval()
            images = torch.randn(1, 3, *BASE_INPUT[(h, w)], device=device)
            out["base"] = median_ms(lambda: model.forward_frame(images), device, 1, max(3, args.repeats // 2), clock)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="60x108,128x256", help="comma-separated HxW feature sizes")
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--frames", type=int, default=3, help="T, cached key frames")
    parser.add_argument("--key-dim", type=int, default=64)
    parser.add_argument("--radius", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: process CPU time, steadier on a shared machine (sums all threads)")
    parser.add_argument("--with-base", action="store_true", help="also time the base model per frame")
    parser.add_argument("--base", default="segformer-b0", help="base architecture for --with-base")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(f"STT C={args.channels} T={args.frames} d_k={args.key_dim} r={args.radius} ratio={args.ratio} "
          f"device={device} threads={args.threads}, median {args.clock} ms of {args.repeats} per frame"
          + (f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""))
    header = f"{'size':>9} {'nsm':>9} {'attend':>9} {'total':>9}"
    if args.with_base:
        header += f" {'base':>9} {'stt/base':>9}"
    print(header)
    for size in args.sizes.split(","):
        h, w = (int(v) for v in size.lower().split("x"))
        r = bench_size(h, w, args, device)
        line = f"{size:>9} {r['nsm']:9.2f} {r['attend']:9.2f} {r['total']:9.2f}"
        if "base" in r:
            line += f" {r['base']:9.2f} {r['total'] / r['base']:9.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
