"""The loop a user would write instead of vseg: transformers SegFormer-B0 per frame with OpenCV.

    python benchmarks/transformers_loop.py examples/bikes.mp4 -o /tmp/loop.mp4          # the loop alone
    python benchmarks/transformers_loop.py examples/bikes.mp4 --compare --rounds 3      # vs vseg run

The loop: cv2.VideoCapture read -> resize to the network size (short side kept, sides rounded up to
32 like vseg's) -> ImageNet normalisation -> `SegformerForSemanticSegmentation` (B0, random init
from a config: no download; speed does not depend on the weights) -> bilinear upsample to the
frame -> argmax -> palette overlay -> cv2.VideoWriter (mp4v). `--compare` times whole processes,
paired and interleaved: `vseg run VIDEO -m segformer-b0 -o OUT [--runtime R]` and this loop, and
prints the medians and their ratio (the issue's target: vseg >= 3x the loop).
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_loop(video: str, output: str, threads: int) -> tuple[int, float]:
    import cv2
    import numpy as np
    import torch
    import torch.nn.functional as F
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = SegformerConfig(num_labels=19)  # the B0 defaults: hidden sizes 32/64/160/256, decoder 256
    model = SegformerForSemanticSegmentation(config).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    palette = np.random.default_rng(0).integers(0, 255, (19, 3), dtype=np.uint8)
    cap = cv2.VideoCapture(video)
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    n = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            h, w = bgr.shape[:2]
            nh, nw = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
            rgb = cv2.cvtColor(cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
            x = (torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).float() - mean) / std
            logits = model(pixel_values=x).logits
            up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            labels = up.argmax(1)[0].numpy().astype(np.uint8)
            overlay = cv2.addWeighted(bgr, 0.5, palette[labels][:, :, ::-1], 0.5, 0)
            if writer is None:
                writer = cv2.VideoWriter(output, cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
            writer.write(overlay)
            n += 1
    if writer is not None:
        writer.release()
    cap.release()
    return n, time.perf_counter() - t0


def _timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", nargs="?", default="examples/bikes.mp4")
    ap.add_argument("-o", "--output", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare", action="store_true", help="time `vseg run -m segformer-b0` against this loop")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runtime", default="torch", help="vseg's --runtime in --compare")
    args = ap.parse_args()
    if not args.compare:
        out = args.output or os.path.join(tempfile.mkdtemp(), "loop.mp4")
        n, seconds = run_loop(args.video, out, args.threads)
        print(f"{n} frames in {seconds:.2f} s ({n / seconds:.2f} fps) -> {out}")
        return
    tmp = Path(tempfile.mkdtemp())
    env = {**os.environ}
    vseg = [sys.executable, "-m", "vsegcli", "run", args.video, "-m", "segformer-b0", "-o", str(tmp / "vseg.mp4"),
            "--overwrite", "-q", "--runtime", args.runtime]
    loop = [sys.executable, __file__, args.video, "-o", str(tmp / "loop.mp4"), "--threads", str(args.threads)]
    times: dict[str, list[float]] = {"vseg": [], "loop": []}
    for r in range(args.rounds):
        times["vseg"].append(_timed(vseg, env))
        times["loop"].append(_timed(loop, env))
        print(f"round {r + 1}: vseg {times['vseg'][-1]:.2f} s, loop {times['loop'][-1]:.2f} s", flush=True)
    v, lp = statistics.median(times["vseg"]), statistics.median(times["loop"])
    print(f"whole process, median of {args.rounds}: vseg run -m segformer-b0 --runtime {args.runtime} {v:.2f} s, "
          f"transformers loop {lp:.2f} s: vseg {lp / v:.2f}x faster (load average {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
