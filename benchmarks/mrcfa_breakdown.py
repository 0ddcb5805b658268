"""Where a streaming MRCFA step spends its time: per-frame part vs temporal head, by input size.

One steady-state session step of MRCFA is split into the calls `MRCFASession.step` makes:

* ``encode``      - MiT backbone + SegFormer fuse of the new frame (what the naive path runs 4x),
* ``references``  - the stride-32 keys/values this frame leaves in the cache for later frames,
* ``temporal``    - cross-frame affinities against the 3 cached references + hypercorrelation
                    decoder + classifier (the part streaming cannot share, paid once per frame).

Times are medians of ``--repeats`` runs after a 10-frame warm-up, on random weights. On CPU the
process CPU time is used (robust on a busy machine; pass ``--threads 1`` so OpenMP workers do not
spin); on CUDA, synchronised wall time.

    python benchmarks/mrcfa_breakdown.py --threads 1 --sizes 256x448,480x864
    python benchmarks/mrcfa_breakdown.py --device cuda --sizes 480x864,1024x2048 --model mrcfa-b1
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from vsegcli.bench import build_bench_model, parse_list, parse_size
from vsegcli.io.hostmem import configure_host_allocator
from vsegcli.models.mrcfa import mrcfa_reference_indices, stack_references


def _timer(device: torch.device) -> Callable[[], float]:
    if device.type == "cuda":
        def now() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return now
    return time.process_time


def breakdown(model_name: str, size: tuple[int, int], device: torch.device, repeats: int) -> dict[str, float]:
    model = build_bench_model(model_name).to(device)
    head = model.decode_head
    now = _timer(device)
    x = torch.randn(1, 3, *size, device=device)
    parts: dict[str, list[float]] = {"encode": [], "references": [], "temporal": []}
    with torch.inference_mode():
        session = model.new_session()
        for _ in range(10):  # past frame 9: the references are t-9, t-6, t-3
            session.step(x)
        refs = stack_references([session.cache[i] for i in mrcfa_reference_indices(session.frame_index)])
        for _ in range(repeats):
            t0 = now()
            target = model.encode(x)
            t1 = now()
            head.reference_features(target)
            t2 = now()
            head.temporal(target, refs)
            t3 = now()
            parts["encode"].append(t1 - t0)
            parts["references"].append(t2 - t1)
            parts["temporal"].append(t3 - t2)
    return {k: 1000.0 * statistics.median(v) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mrcfa-b0")
    ap.add_argument("--sizes", default="256x448,480x864", help="HxW list, comma-separated")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    configure_host_allocator()  # as vseg run / bench: steady steps without page faults
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"{args.model} on {device} ({'process CPU' if device.type == 'cpu' else 'synchronised wall'} time, "
          f"median of {args.repeats}), ms per frame")
    print(f"{'size':>10} {'encode':>9} {'references':>11} {'temporal':>9} {'temporal/encode':>16}")
    for text in parse_list(args.sizes):
        size = parse_size(text)
        r = breakdown(args.model, size, device, args.repeats)
        print(f"{size[0]:>4}x{size[1]:<5} {r['encode']:>9.1f} {r['references']:>11.1f} {r['temporal']:>9.1f} "
              f"{r['temporal'] / r['encode']:>15.2f}x")


if __name__ == "__main__":
    main()
