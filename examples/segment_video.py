"""Segment a video with the vseg Python API and print the class share of a few frames.

    python examples/segment_video.py examples/bikes.mp4 --max-frames 50
"""
from __future__ import annotations

import argparse

import numpy as np

from vsegcli import api


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--checkpoint", help="a vseg/HF/mmseg/MRCFA checkpoint; default: the shipped model")
    parser.add_argument("--max-frames", type=int, default=50)
    parser.add_argument("--output", default="segmented.mp4")
    args = parser.parse_args()

    seg = api.load(checkpoint=args.checkpoint, device="auto")  # an api.VideoSegmenter
    print(f"model: {seg.info.architecture} ({seg.info.source_format}) on {seg.predictor.device}")

    # 1. The whole pipeline: overlay video + label PNGs, decode/infer/encode on separate threads.
    summary = seg.run(args.video, output=args.output, labels_dir="segmented_labels",
                      max_frames=args.max_frames, overwrite=True)
    print(f"wrote {summary['output']} and {summary['labels_dir']}: {summary['frames']} frames, {summary['fps']} fps")

    # 2. Labels as arrays, frame by frame (a temporal model keeps its state across frames).
    classes = seg.predictor.classes
    for index, labels in seg.iter_labels(args.video, max_frames=5):
        counts = np.bincount(labels.ravel(), minlength=len(classes))
        top = counts.argsort()[::-1][:3]
        share = ", ".join(f"{classes[c]} {100 * counts[c] / labels.size:.0f}%" for c in top)
        print(f"frame {index}: {share}")


if __name__ == "__main__":
    main()
