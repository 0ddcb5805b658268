"""CamVid val accuracy of each runtime/precision against fp32 torch, per shipped model.

    VSEG_CALIBRATION_FRAMES=/work/shared/data/camvid/train \\
    python benchmarks/precision_accuracy.py --data-root /work/shared/data/camvid \\
        -c weights/effl0-camvid.safetensors --out /tmp/prec

For each configuration it runs the very command a user would (`vseg eval --dataset camvid --split
val --save-predictions DIR --runtime R --precision P --json FILE`), then compares every saved label
PNG with the fp32 torch run's: the table gives mIoU, its change from fp32 torch, the share of pixels
with the same label ("agreement"), and eval fps (whole model step, this machine's load included).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CONFIGS = [("torch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("torch", "bf16")]


def agreement(a: Path, b: Path) -> float:
    import cv2

    same = total = 0
    for pa in sorted(a.rglob("*.png")):
        pb = b / pa.relative_to(a)
        la = cv2.imread(str(pa), cv2.IMREAD_UNCHANGED)
        lb = cv2.imread(str(pb), cv2.IMREAD_UNCHANGED)
        same += int(np.count_nonzero(la == lb))
        total += la.size
    return same / max(total, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-c", "--checkpoint", action="append", required=True)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--configs", default=",".join(f"{r}:{p}" for r, p in CONFIGS))
    ap.add_argument("--reuse", action="store_true", help="keep configurations already measured in --out")
    args = ap.parse_args()
    configs = [tuple(c.split(":")) for c in args.configs.split(",")]
    rows = []
    for ckpt in args.checkpoint:
        name = Path(ckpt).stem
        results: dict[tuple[str, str], dict] = {}
        for runtime, precision in configs:
            out = args.out / name / f"{runtime}-{precision}"
            if args.reuse and (out / "eval.json").is_file():  # measured before: keep it
                results[(runtime, precision)] = json.loads((out / "eval.json").read_text())
                continue
            shutil.rmtree(out, ignore_errors=True)  # eval refuses to write into an existing folder
            out.mkdir(parents=True)
            cmd = [sys.executable, "-m", "vsegcli", "eval", "--dataset", "camvid", "--data-root", args.data_root,
                   "--split", "val", "-c", ckpt, "--runtime", runtime, "--precision", precision, "-q",
                   "--save-predictions", str(out / "pred"), "--json", str(out / "eval.json")]
            print("$", " ".join(cmd[1:]), flush=True)
            env = {**os.environ, "VSEG_MEASURE_PRECISION": "1"}  # measure even what is not offered (yet)
            if runtime != "torch":  # build the ONNX graph first, so the fps column times inference only
                warm = out.parent / f".warm-{runtime}-{precision}"
                shutil.rmtree(warm, ignore_errors=True)
                subprocess.run([*cmd[:cmd.index("--save-predictions")], "--max-frames", "1", "--save-predictions",
                                str(warm)], capture_output=True, env=env)
                shutil.rmtree(warm, ignore_errors=True)
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                print(f"  exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            results[(runtime, precision)] = json.loads((out / "eval.json").read_text())
        base = results.get(("torch", "fp32"))
        for (runtime, precision), r in results.items():
            miou = 100 * r["miou"]
            agree = agreement(args.out / name / "torch-fp32" / "pred",
                              args.out / name / f"{runtime}-{precision}" / "pred") if base else float("nan")
            fps = round((r.get("speed") or {}).get("fps_inference") or float("nan"), 2)
            rows.append((name, runtime, precision, miou, miou - 100 * base["miou"] if base else float("nan"),
                         100 * agree, fps))
            print(f"  {name} {runtime} {precision}: mIoU {miou:.2f} agreement {100 * agree:.2f}% fps {fps}",
                  flush=True)
    print("\n| model | runtime | precision | CamVid val mIoU | vs fp32 torch | label agreement | eval fps (inference) |")
    print("|---|---|---|---|---|---|---|")
    for name, runtime, precision, miou, delta, agree, fps in rows:
        print(f"| {name} | {runtime} | {precision} | {miou:.2f} | {delta:+.2f} | {agree:.2f} % | {fps} |")


if __name__ == "__main__":
    main()
