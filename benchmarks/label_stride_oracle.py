"""What logits at output stride s can draw at best: CamVid val ground truth, one-hot, area-averaged
to 1/s of the size, upsampled bilinearly and arg-maxed (a decoder that predicts perfect class
shares per stride-s cell), scored against the full-size ground truth.

    python benchmarks/label_stride_oracle.py --data-root ../shared/data/camvid --strides 4,8

A guide, not a bound (a model's logits can be sharper than area averages), but it shows which
classes a stride-8 head loses by construction: thin ones (poles are 2-4 px wide at 480x360).
"""
from __future__ import annotations

import argparse

import cv2
import numpy as np

from vsegcli.data.datasets import list_sequences, read_label
from vsegcli.data.labels import get_label_set
from vsegcli.metrics import ConfusionMatrix


def oracle_scores(labels: list[np.ndarray], k: int, stride: int, ignore_index: int) -> ConfusionMatrix:
    cm = ConfusionMatrix(k, ignore_index)
    for lb in labels:
        h, w = lb.shape
        size = (max(1, round(w / stride)), max(1, round(h / stride)))
        up = np.stack([cv2.resize(cv2.resize((lb == c).astype(np.float32), size, interpolation=cv2.INTER_AREA),
                                  (w, h), interpolation=cv2.INTER_LINEAR) for c in range(k)], -1)
        cm.update(up.argmax(-1), lb)
    return cm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--strides", default="4,8")
    a = ap.parse_args()
    ls = get_label_set("camvid")
    labels = [read_label(p, s.label_format) for s in list_sequences("camvid", a.data_root, a.split)
              for p in s.labels.values()]
    print("| stride | mIoU | " + " | ".join(ls.classes) + " |")
    print("|---" * (len(ls.classes) + 2) + "|")
    for stride in (int(s) for s in a.strides.split(",")):
        cm = oracle_scores(labels, ls.num_classes, stride, ls.ignore_index)
        print(f"| {stride} | {100 * cm.miou:.2f} | " + " | ".join(f"{100 * v:.1f}" for v in cm.iou) + " |")


if __name__ == "__main__":
    main()
