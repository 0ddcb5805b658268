"""The model-card table of shipped checkpoints: CamVid val accuracy and consistency, flicker on
examples/bikes.mp4, and the whole-process speed of `vseg run examples/bikes.mp4`.

Every number comes from the user-facing commands, run as subprocesses:

    vseg eval --dataset camvid --data-root DATA --split val -c CKPT --tc --json E.json
    vseg run examples/bikes.mp4 -c CKPT --no-video --report R.html            (flicker, TC)
    vseg run examples/bikes.mp4 -c CKPT -o out.mp4 --overwrite                (wall time, --rounds x)

Usage:
    python benchmarks/shipped_weights.py weights/*.safetensors --data-root ../shared/data/camvid \
        --rounds 3 --out benchmarks/results/shipped_weights.json

The speed rounds go round-robin over the checkpoints (A B C A B C ...) so a noisy machine
affects them alike; the table quotes medians.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VSEG = [sys.executable, "-m", "vsegcli"]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    res = subprocess.run(VSEG + args, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"failed: vseg {' '.join(args)}\n{res.stderr[-2000:]}")
    return res


def score(ckpt: Path, data_root: Path, work: Path, video: Path) -> dict:
    work = Path(tempfile.mkdtemp(dir=work))  # checkpoints of the same name from different folders
    ev = work / f"{ckpt.stem}_eval.json"
    _run(["eval", "--dataset", "camvid", "--data-root", str(data_root), "--split", "val", "-c", str(ckpt),
          "--tc", "--json", str(ev), "-q"])
    e = json.loads(ev.read_text())
    rep = work / f"{ckpt.stem}_bikes.html"
    _run(["run", str(video), "-c", str(ckpt), "--no-video", "--report", str(rep), "-q"])
    r = json.loads(rep.with_suffix(".json").read_text())
    m = r["metrics"]
    pct = lambda v: None if v is None else 100 * v  # noqa: E731
    mvc = e.get("mvc") or {}
    return {
        "checkpoint": str(ckpt), "frames": len(r["frames"]["indices"]),
        "miou": pct(e["miou"]), "fwiou": pct(e["fwiou"]), "pixel_accuracy": pct(e["pixel_accuracy"]),
        "tc": (e.get("tc") or {}).get("tc"), "mvc8": mvc.get("mVC8"), "mvc16": mvc.get("mVC16"),
        "per_class_iou": {k: 100 * v["iou"] for k, v in (e.get("per_class") or {}).items() if v.get("iou") is not None},
        "bikes_flicker": m.get("flicker_rate"), "bikes_flow_flicker": m.get("flow_flicker_rate"),
        "bikes_tc": m.get("tc"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data-root", type=Path, required=True)
    ap.add_argument("--video", type=Path, default=ROOT / "examples" / "bikes.mp4")
    ap.add_argument("--rounds", type=int, default=3, help="whole-process speed runs per checkpoint (0: none)")
    ap.add_argument("--no-scores", action="store_true", help="speed rounds only (no eval / report)")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [{"checkpoint": str(c.resolve())} if a.no_scores else
                score(c.resolve(), a.data_root.resolve(), work, a.video.resolve()) for c in a.checkpoints]
        for _ in range(a.rounds):
            for r in rows:
                t0 = time.perf_counter()
                res = _run(["run", str(a.video.resolve()), "-c", r["checkpoint"], "-o", str(work / "out.mp4"),
                            "--overwrite", "-q", "--json"])
                r.setdefault("run_seconds", []).append(time.perf_counter() - t0)
                run = json.loads(res.stdout)["runs"][0]
                r["frames"] = run["frames"]
                r.setdefault("loop_fps", []).append(run["fps"])
    for r in rows:
        t = r.get("run_seconds", [])
        r["run_fps"] = r["frames"] / statistics.median(t) if t else None
        r["loop_fps_median"] = statistics.median(r["loop_fps"]) if t else None
    pct = lambda v, k=1.0: "-" if v is None else f"{v * k:.2f}"  # noqa: E731
    print("| checkpoint | mIoU | TC | mVC8 | mVC16 | bikes flicker % | bikes flow-comp. flicker % | run fps (whole process) "
          "| loop fps |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {Path(r['checkpoint']).name} | {pct(r.get('miou'))} | {pct(r.get('tc'))} | {pct(r.get('mvc8'))} | "
              f"{pct(r.get('mvc16'))} | "
              f"{pct(r.get('bikes_flicker'), 100)} | {pct(r.get('bikes_flow_flicker'), 100)} | {pct(r['run_fps'])} | "
              f"{pct(r.get('loop_fps_median'))} |")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
