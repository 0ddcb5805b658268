"""EfficientNet-Lite's TF "SAME" stride-2 padding: padded input copy vs padding inside the conv.

Builds each model twice in one process, once with the old `SameConv2d.forward` (F.pad of the
whole input, then an unpadded convolution) patched back in, and times `vseg bench`'s step for both,
interleaved step by step so machine load hits both alike. Labels must be identical.

    python benchmarks/same_padding.py
    python benchmarks/same_padding.py --size 480x864 --models effl0 --steps 20
"""
from __future__ import annotations

import argparse
import statistics
import time
import types

import torch
import torch.nn.functional as F

from vsegcli import bench as B
from vsegcli.io.hostmem import configure_host_allocator
from vsegcli.models.backbones.efficientnet_lite import SameConv2d


def padded_copy_forward(self: SameConv2d, x: torch.Tensor) -> torch.Tensor:
    """The previous implementation: an explicitly padded copy of the input."""
    if self.stride[0] == 1:
        return torch.nn.Conv2d.forward(self, x)
    pads = []
    for size, k, s in zip((x.shape[-1], x.shape[-2]), self.kernel_size[::-1], self.stride[::-1]):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads += [total // 2, total - total // 2]
    return torch.nn.Conv2d.forward(self, F.pad(x, pads))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="effl0,stt-effl0,mrcfa-effl0")
    ap.add_argument("--size", default="288x640")
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    configure_host_allocator()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    size = B.parse_size(args.size)
    pool = B.frame_pool(size, 1, device)
    steppers = {}
    for name in B.parse_list(args.models):
        for variant in ("padded copy", "in-conv"):
            model = B.build_bench_model(name)
            if variant == "padded copy":
                for m in model.modules():
                    if isinstance(m, SameConv2d):
                        m.forward = types.MethodType(padded_copy_forward, m)
            step = B.Stepper(model, "session", device)
            step.prime([pool[i % len(pool)] for i in range(model.priming_frames + 3)])
            steppers[(name, variant)] = step
    times = {k: [] for k in steppers}
    labels = {}
    for i in range(args.steps):
        for key, step in steppers.items():
            t0 = time.process_time()
            labels[key] = step(pool[i % len(pool)])
            times[key].append((time.process_time() - t0) * 1e3)
    print(f"SAME padding, {args.size}, {args.threads} thread(s), median process CPU ms of {args.steps} interleaved steps")
    for name in B.parse_list(args.models):
        old, new = (statistics.median(times[(name, v)]) for v in ("padded copy", "in-conv"))
        same = bool((labels[(name, "padded copy")] == labels[(name, "in-conv")]).all())
        print(f"{name:>12}: padded copy {old:7.1f}  in-conv {new:7.1f}  saved {old - new:5.1f} ms  labels identical: {same}")


if __name__ == "__main__":
    main()
