"""Measure a checkpoint's int8 activation ranges on training frames and write them beside it.

    python benchmarks/write_int8_ranges.py weights/effl0-camvid.safetensors \\
        --frames ../shared/data/camvid/train --size 384x480 --recipe stem-and-head

The file (X.int8-ranges.json) holds the MinMax range of every activation over the 32 frames
`calibration_images` picks, the recipe (which nodes stay fp32: `INT8_RECIPES`) and the hash of the
BatchNorm-folded weights; `vseg run/eval --precision int8` uses it when no calibration folder is
given, and refuses it for other weights. Choose the recipe by measurement (benchmarks/
int8_sensitivity.py on train frames, then benchmarks/precision_accuracy.py on val): "stem-and-head"
only where it keeps CamVid val mIoU within 0.5 of fp32, else "conservative" (docs/PERFORMANCE.md 8.2b).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vsegcli.bench.settings import parse_size
from vsegcli.errors import VsegError
from vsegcli.runtime.onnx_backend import INT8_RECIPES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--frames", required=True, type=Path, help="a folder of training frames")
    ap.add_argument("--size", default="384x480", help="network input HxW to measure at")
    ap.add_argument("--recipe", default="conservative", choices=list(INT8_RECIPES))
    ap.add_argument("--out", type=Path, default=None, help="default: beside the checkpoint")
    args = ap.parse_args()
    try:
        write(args.checkpoint, args.frames, parse_size(args.size), args.recipe, args.out)
    except VsegError as exc:
        sys.exit(f"Error: {exc}")


def write(checkpoint: Path, frames: Path, size: tuple[int, int], recipe: str, out: Path | None) -> None:
    from vsegcli import api
    from vsegcli.data.datasets.base import read_image
    from vsegcli.runtime.onnx_backend import (Int8Ranges, OrtBackend, calibrate_ranges, calibration_digest,
                                              calibration_images, ranges_path, weights_hash)

    seg = api.load(checkpoint, device="cpu")
    p = seg.predictor
    backend = OrtBackend(p.model, "fp32", p.mean.flatten().tolist(), p.std.flatten().tolist())
    files = calibration_images(frames)
    ranges = calibrate_ranges(backend.graph_path(size), [backend.prepare(read_image(f), size) for f in files])
    doc = Int8Ranges(ranges, INT8_RECIPES[recipe], weights_hash(p.model), seg.info.architecture, size)
    out = doc.save(out or ranges_path(checkpoint), f"{len(files)} of {frames.name}/ (sha256 {calibration_digest(files)})")
    print(f"{out}: {len(ranges)} activations, recipe {recipe}")


if __name__ == "__main__":
    main()
