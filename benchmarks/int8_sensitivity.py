"""Which layers int8 may touch: per-layer sensitivity of the ORT int8 recipe, chosen on TRAIN frames.

    python benchmarks/int8_sensitivity.py -c weights/effl0-camvid.safetensors \\
        --calibration /work/shared/data/camvid/train --size 384x480 --out /tmp/sens

The conservative recipe (`INT8_CONSERVATIVE`) keeps the stem, every depthwise conv and the decoder
in fp32: accurate, but the quantise/dequantise pairs around 16 fp32 depthwise convs cost what the
int8 1x1 convs save (docs/PERFORMANCE.md 8.1-8.2). This script starts from the fast recipe (stem + decoder
fp32, everything else int8), then gives back one depthwise conv at a time and measures how much
label agreement with fp32 ORT that buys on held-out train frames (not the calibration frames, never
val: val only judges the recipe that comes out, through benchmarks/precision_accuracy.py). It prints
the ranking and the agreement of keeping the top-k fp32 for a few k; with --time, the ms/frame of
each of those recipes, interleaved.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--checkpoint", default="weights/effl0-camvid.safetensors")
    ap.add_argument("--calibration", required=True, help="training frames (calibration + selection)")
    ap.add_argument("--size", default="384x480", help="network input HxW")
    ap.add_argument("--select", type=int, default=24, help="held-out train frames to score agreement on")
    ap.add_argument("--topk", default="0,1,2,3,4,6,8,16", help="recipes to report: keep the k worst fp32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--time", action="store_true", help="also time each top-k recipe (interleaved)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, required=True, help="cache + results folder")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["VSEG_CACHE_DIR"] = str(args.out / "cache")
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))

    from vsegcli import api
    from vsegcli.data.datasets.base import images_in, read_image
    from vsegcli.runtime.onnx_backend import INT8_CONSERVATIVE, INT8_STEM_AND_HEAD as STEM_AND_DECODER
    from vsegcli.runtime.onnx_backend import OrtBackend, calibration_images

    seg = api.load(args.checkpoint, device="cpu")
    model, p = seg.predictor.model, seg.predictor
    mean, std = p.mean.flatten().tolist(), p.std.flatten().tolist()
    calib = {f.name for f in calibration_images(args.calibration)}
    rest = [f for f in images_in(Path(args.calibration)) if f.name not in calib]
    held = rest[:: max(1, len(rest) // args.select)][: args.select]

    def backend(keep: tuple[str, ...]) -> OrtBackend:
        return OrtBackend(model, "int8", mean, std, calibration=args.calibration, threads=args.threads,
                          keep_fp32=keep)

    ref = OrtBackend(model, "fp32", mean, std, threads=args.threads)
    xs = [ref.prepare(read_image(f), (h, w)) for f in held]
    s32 = ref.session_for((h, w))
    labels32 = [s32.run(None, {"images": x})[0].argmax(1) for x in xs]

    def agreement(keep: tuple[str, ...]) -> float:
        s = backend(keep).session_for((h, w))
        same = sum(int((s.run(None, {"images": x})[0].argmax(1) == l).sum()) for x, l in zip(xs, labels32))
        return same / sum(l.size for l in labels32)

    import onnx

    graph = onnx.load(str(ref.graph_path((h, w)))).graph
    depthwise = sorted({re.sub(r"_depthwise_conv/.*$", "_depthwise_conv/", n.name) for n in graph.node if "_depthwise_conv/" in n.name},
                       key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])
    print(f"{len(depthwise)} depthwise convs; {len(held)} held-out train frames at {h}x{w}")
    base = agreement(STEM_AND_DECODER)
    print(f"fast recipe (stem + decoder fp32): agreement {base * 100:.2f} %")
    gains = {}
    for d in depthwise:
        a = agreement(STEM_AND_DECODER + ("^" + re.escape(d),))
        gains[d] = a - base
        print(f"  + {d:45s} fp32: {a * 100:.2f} % ({(a - base) * 100:+.2f})", flush=True)
    ranked = sorted(depthwise, key=lambda d: -gains[d])
    recipes = {}
    for k in (int(v) for v in args.topk.split(",")):
        keep = STEM_AND_DECODER + tuple("^" + re.escape(d) for d in ranked[:k])
        recipes[k] = keep
        print(f"top-{k:2d} depthwise fp32: agreement {agreement(keep) * 100:.2f} %", flush=True)
    all_dw = agreement(INT8_CONSERVATIVE)
    print(f"all depthwise fp32 (the conservative recipe): agreement {all_dw * 100:.2f} %")
    (args.out / "ranking.json").write_text(json.dumps({"base": base, "gains": gains, "ranked": ranked,
                                                      "all_depthwise": all_dw}, indent=1))
    if args.time:
        runs = {"fp32": s32, **{f"int8 top-{k}": backend(v).session_for((h, w)) for k, v in recipes.items()},
                "int8 conservative": backend(INT8_CONSERVATIVE).session_for((h, w))}
        x = xs[0]
        times: dict[str, list[float]] = {k: [] for k in runs}
        for s in runs.values():
            for _ in range(3):
                s.run(None, {"images": x})
        for _ in range(args.rounds):
            for k, s in runs.items():
                per = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    s.run(None, {"images": x})
                    per.append(time.perf_counter() - t0)
                times[k].append(statistics.median(per) * 1000)
        print(f"\nms/frame at {h}x{w}, {args.threads} threads, median of {args.rounds} interleaved rounds, "
              f"load average {os.getloadavg()[0]:.2f}")
        for k, v in times.items():
            print(f"  {k:28s} {statistics.median(v):7.2f}   {' '.join(f'{t:.1f}' for t in v)}")


if __name__ == "__main__":
    main()
