"""How `vseg run` holds up beside a CPU-bound load, per thread policy (issue 15 item 3).

For each policy, the same `vseg run` command runs idle and then beside a load generator (N busy
Python processes, each bounded in time), as a pair; pairs of all policies are interleaved and
repeated, so a change in the machine's background load hits every policy alike. Prints, per
policy, the loop's fps (the run's own `--json` "fps") idle and loaded (medians) and the ratio.

    python benchmarks/thread_load.py                       # default policies, 3 repetitions
    python benchmarks/thread_load.py --reps 5 --policies spin,passive,threads1 --json out.json

Policies are environment settings for the vseg process (libgomp reads OMP_WAIT_POLICY and
GOMP_SPINCOUNT when torch is loaded) and/or extra `vseg run` arguments:
    vseg       what vseg does by itself (no variables set: vseg sets GOMP_SPINCOUNT=10000)
    spin       libgomp's own default: worker threads spin 300,000 rounds before sleeping
    passive    OMP_WAIT_POLICY=PASSIVE: idle OpenMP workers sleep at once
    spin1k, spin10k, spin30k, spin100k   GOMP_SPINCOUNT=N: spin N rounds, then sleep
    threads1   --threads 1
    omp1       OMP_NUM_THREADS=1 (what the issue measured)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

POLICIES: dict[str, tuple[dict[str, str], list[str]]] = {
    "vseg": ({}, []),
    "spin": ({"GOMP_SPINCOUNT": "300000"}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "spin1k": ({"GOMP_SPINCOUNT": "1000"}, []),
    "spin10k": ({"GOMP_SPINCOUNT": "10000"}, []),
    "spin30k": ({"GOMP_SPINCOUNT": "30000"}, []),
    "spin100k": ({"GOMP_SPINCOUNT": "100000"}, []),
    "threads1": ({}, ["--threads", "1"]),
    "omp1": ({"OMP_NUM_THREADS": "1"}, []),
    # the fast CPU paths: ONNX Runtime sessions, which never spin (shipped int8 ranges; fp32)
    "int8": ({}, ["--precision", "int8"]),
    "ort": ({}, ["--runtime", "onnxruntime"]),
}
# Variables that decide the policy: removed from the inherited environment, then set per policy.
POLICY_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

BUSY = "import time, sys\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end:\n    pass\n"


def start_load(busy: int, seconds: float) -> list[subprocess.Popen]:
    """`busy` processes spinning a Python loop; each exits by itself after `seconds`."""
    return [subprocess.Popen([sys.executable, "-c", BUSY, str(seconds)]) for _ in range(busy)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()


def run_once(video: str, start: int, frames: int, env_add: dict[str, str], extra: list[str],
             timeout: float) -> dict:
    """One `vseg run ... --json` in a fresh process: the loop's fps, the process wall time, its JSON."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARS}
    env.update(env_add)
    with tempfile.TemporaryDirectory(prefix="thread_load_") as tmp:
        cmd = [sys.executable, "-m", "vsegcli", "run", video, "--start", str(start), "--max-frames", str(frames),
               "--no-video", "--labels-dir", str(Path(tmp) / "lab"), "--json", "--quiet", *extra]
        t0 = time.perf_counter()
        try:
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:  # a collapse: count it as at most `frames` in `timeout` seconds
            return {"fps": frames / timeout, "process_seconds": timeout, "timed_out": True}
        wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"vseg run failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    data = json.loads(out.stdout)
    return {"fps": data["runs"][0]["fps"], "process_seconds": wall, "timed_out": False, "threads": data.get("threads")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(ROOT / "examples" / "bikes.mp4"))
    ap.add_argument("--start", type=int, default=100)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--policies", default="vseg,spin,passive,threads1", help="comma-separated: " + ", ".join(POLICIES))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="busy processes in the load")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="bound on each run (a run that takes longer counts as frames/max-seconds fps) and on the load")
    ap.add_argument("--json", dest="json_out", help="write every measurement here")
    args = ap.parse_args()
    # A SIGTERM unwinds like Ctrl-C, so the load and the run in progress are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    names = [p.strip() for p in args.policies.split(",") if p.strip()]
    for n in names:
        if n not in POLICIES:
            raise SystemExit(f"unknown policy {n!r}: use {', '.join(POLICIES)}")
    runs: dict[str, dict[str, list[dict]]] = {n: {"idle": [], "loaded": []} for n in names}
    for n in names:  # one untimed run each: builds what is built once (the ONNX graphs of int8/ort)
        run_once(args.video, args.start, 2, *POLICIES[n], args.max_seconds)
    for rep in range(args.reps):
        for n in names:  # interleaved: idle then loaded, policy after policy, repetition after repetition
            env_add, extra = POLICIES[n]
            idle = run_once(args.video, args.start, args.frames, env_add, extra, args.max_seconds)
            load = start_load(args.busy, args.max_seconds)
            try:
                time.sleep(0.3)  # let the load reach the cores first
                loaded = run_once(args.video, args.start, args.frames, env_add, extra, args.max_seconds)
            finally:
                stop_load(load)
            runs[n]["idle"].append(idle)
            runs[n]["loaded"].append(loaded)
            late = " (timed out: fps is an upper bound)" if idle["timed_out"] or loaded["timed_out"] else ""
            print(f"rep {rep + 1} {n:9s} idle {idle['fps']:6.2f} fps  loaded {loaded['fps']:6.2f} fps  "
                  f"ratio {loaded['fps'] / idle['fps']:.2f}{late}", flush=True)
    print(f"\n{'policy':9s} {'idle fps':>9s} {'loaded fps':>11s} {'ratio':>6s} {'pair ratios':s}")
    summary = {}
    for n in names:
        idle = statistics.median(r["fps"] for r in runs[n]["idle"])
        loaded = statistics.median(r["fps"] for r in runs[n]["loaded"])
        pairs = [b["fps"] / a["fps"] for a, b in zip(runs[n]["idle"], runs[n]["loaded"])]
        summary[n] = {"idle_fps": idle, "loaded_fps": loaded, "ratio": loaded / idle, "pair_ratios": pairs}
        print(f"{n:9s} {idle:9.2f} {loaded:11.2f} {loaded / idle:6.2f} {' '.join(f'{p:.2f}' for p in pairs)}")
    print("(medians over repetitions; the machine may be shared, so read ratios of the same repetition)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "command": sys.argv, "busy": args.busy, "reps": args.reps, "cpu_count": os.cpu_count(),
            "load_average_start": os.getloadavg(), "summary": summary, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
