"""Post-processing alone: logits (B, C, H/4, W/4) -> uint8 labels at the frame size.

Times the NCHW path (`F.interpolate` + `argmax(1)`, what vseg did before) against
`engine.logits_to_labels` (channels-last on CPU) at the sizes the models produce, and checks the
labels agree. Median of --repeats after --warmup, process CPU time with one thread by default.

    python benchmarks/postprocess.py
    python benchmarks/postprocess.py --sizes 288x640,480x864 --classes 11,19,124 --threads 2
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vsegcli.runtime import logits_to_labels
from vsegcli.io.hostmem import configure_host_allocator


def nchw_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    up = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return up.argmax(1).to(torch.uint8)


def median_ms(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append((time.process_time() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256x448,288x640,480x864", help="frame sizes HxW (comma list)")
    ap.add_argument("--classes", default="11,19", help="class counts (comma list)")
    ap.add_argument("--stride", type=int, default=4, help="logit stride (SegFormer/effl0 heads: 4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    configure_host_allocator()
    torch.set_num_threads(args.threads)
    print(f"post-processing on CPU, {args.threads} thread(s), median process CPU ms of {args.repeats}")
    print(f"{'size':>9} {'classes':>7} {'NCHW':>8} {'vseg':>8} {'speed-up':>8} {'labels equal':>13}")
    for text in args.sizes.split(","):
        h, w = (int(v) for v in text.split("x"))
        for c in (int(v) for v in args.classes.split(",")):
            torch.manual_seed(c)
            logits = torch.randn(1, c, h // args.stride, w // args.stride)
            old = median_ms(lambda: nchw_labels(logits, (h, w)), args.warmup, args.repeats)
            new = median_ms(lambda: logits_to_labels(logits, (h, w)), args.warmup, args.repeats)
            same = (nchw_labels(logits, (h, w)) == logits_to_labels(logits, (h, w))).float().mean().item()
            print(f"{text:>9} {c:>7} {old:8.1f} {new:8.1f} {old / new:7.1f}x {100 * same:12.3f}%")


if __name__ == "__main__":
    main()
