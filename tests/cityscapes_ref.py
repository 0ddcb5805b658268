"""Reference scores from cityscapesscripts, run as a subprocess by test_metrics_cityscapes.py.

Usage: python cityscapes_ref.py JOBS.json
JOBS.json: [{"pred": [png, ...], "gt": [png, ...]}, ...] (label-id PNGs, same sizes pairwise).
Prints one JSON line: [{"averageScoreClasses": float, "classScores": {name: float|null}}, ...].

A subprocess because cityscapesscripts may live in another interpreter (it needs NumPy < 2.4
for its default instance-level path) and because it reports errors with sys.exit.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys


def main(jobs_path: str) -> None:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev

    ev.args.evalInstLevelScore = False  # needs instanceIds PNGs and np.in1d (gone in NumPy 2.4)
    ev.args.evalPixelAccuracy = False  # also np.in1d
    ev.args.JSONOutput = False
    ev.args.quiet = True
    with open(jobs_path) as f:
        jobs = json.load(f)
    results = []
    for job in jobs:
        captured = io.StringIO()
        try:
            with contextlib.redirect_stdout(captured):  # keep stdout for the JSON line
                out = ev.evaluateImgLists(job["pred"], job["gt"], ev.args)
        except SystemExit:  # cityscapesscripts' printError: show its message, then fail
            sys.stderr.write(captured.getvalue())
            raise
        scores = {k: (None if math.isnan(v) else float(v)) for k, v in out["classScores"].items()}
        avg = out["averageScoreClasses"]
        results.append({
            "averageScoreClasses": None if math.isnan(avg) else float(avg),
            "classScores": scores,
        })
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1])
