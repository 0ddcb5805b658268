"""MiT's efficient self-attention: `scaled_dot_product_attention` vs the explicit softmax(q·kᵀ/√d)·v.

At the shapes MiT-B0 runs at a given input size (per stage: tokens N = (H/s)·(W/s), heads,
head dim 32, keys reduced by the stage's spatial-reduction ratio), times both forms and checks
they agree. Median of --repeats, process CPU time on CPU, synchronised wall time on CUDA.

    python benchmarks/attention.py                      # CPU, one thread, 480x864
    python benchmarks/attention.py --device cuda --precision bf16
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vsegcli.bench import parse_size
from vsegcli.models.backbones.mit import MIT_CONFIGS


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1) @ v


def median_ms(fn, device: torch.device, repeats: int) -> float:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    for _ in range(3):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        sync()
        times.append((clock() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="480x864")
    ap.add_argument("--variant", default="b0", choices=sorted(MIT_CONFIGS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    cfg = MIT_CONFIGS[args.variant]
    h, w = parse_size(args.size)
    print(f"MiT-{args.variant.upper()} attention at {args.size} on {device}, {args.precision}, median ms of {args.repeats}")
    print(f"{'stage':>5} {'tokens':>7} {'keys':>5} {'heads':>5} {'explicit':>9} {'sdpa':>8} {'speed-up':>8} {'max rel diff':>12}")
    total = [0.0, 0.0]
    stride = 4
    for stage in range(4):
        heads, sr, dim = cfg.num_heads[stage], cfg.sr_ratios[stage], cfg.embed_dims[stage]
        n = (h // stride) * (w // stride)
        m = (h // stride // sr) * (w // stride // sr)
        torch.manual_seed(stage)
        q, k, v = (torch.randn(1, heads, length, dim // heads, device=device, dtype=dtype) for length in (n, m, m))
        a = median_ms(lambda: explicit(q, k, v), device, args.repeats)
        b = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), device, args.repeats)
        ref = explicit(q.double(), k.double(), v.double())
        diff = float((F.scaled_dot_product_attention(q, k, v).double() - ref).abs().max() / ref.abs().max())
        total[0] += a
        total[1] += b
        print(f"{stage + 1:>5} {n:>7} {m:>5} {heads:>5} {a:9.2f} {b:8.2f} {a / b:7.2f}x {diff:12.1e}")
        stride *= 2
    print(f"{'all':>5} {'':>7} {'':>5} {'':>5} {total[0]:9.2f} {total[1]:8.2f} {total[0] / total[1]:7.2f}x")


if __name__ == "__main__":
    main()
