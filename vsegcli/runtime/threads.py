"""Thread policy: how many threads the model gets and how idle worker threads wait.

Two decisions, both measured with `benchmarks/thread_load.py` (docs/PERFORMANCE.md, "Thread policy"):

* **Idle OpenMP workers spin briefly, then sleep.** torch's intra-op pool is GNU OpenMP; by
  default each worker spins ~300,000 rounds after every parallel region before it sleeps. Alone on
  the machine that saves a wake-up; beside any other busy process the spinning workers take the
  cores the working thread needs, and `vseg run` collapsed (0.9–4 fps beside 2 busy processes, from
  16.6 idle). Sleeping at once (OMP_WAIT_POLICY=PASSIVE) holds up under load but costs a third of
  the idle speed (many short parallel regions, each waking its workers). GOMP_SPINCOUNT=10000 keeps
  both: idle -1 %, 45 % of the idle speed beside 2 busy processes (benchmarks/thread_load.py).
  libgomp reads it once, when torch is loaded, so `prefer_short_spin()` sets it in this process's
  environment before torch is imported (vsegcli/__init__.py calls it; it lives in
  vsegcli/_omp.py, free of torch) unless the user chose a policy (OMP_WAIT_POLICY or
  GOMP_SPINCOUNT set) or torch was already imported.
* **Intra-op threads**: torch's default (one per core) unless `--threads N` says otherwise
  (`set_threads`). ffmpeg's decoder and encoder keep their own defaults.

`thread_report()` is what `run`, `eval` and `bench` put in their JSON.
"""
from __future__ import annotations

import os
from typing import Any

from vsegcli import _omp
from vsegcli._omp import DEFAULT_SPINCOUNT, prefer_short_spin

__all__ = ["DEFAULT_SPINCOUNT", "prefer_short_spin", "set_threads", "thread_report"]


def set_threads(threads: int | None) -> int:
    """`--threads N`: the model's intra-op threads (None: torch's default, one per core). Returns the
    number in effect."""
    import torch

    from vsegcli.errors import VsegError

    if threads is not None:
        if threads < 1:
            raise VsegError(f"--threads {threads}: give 1 or more")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def thread_report() -> dict[str, Any]:
    """The thread settings in effect, for a command's JSON."""
    import torch

    return {
        "intra_op": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gomp_spincount": os.environ.get("GOMP_SPINCOUNT"),
        "wait_policy_set_by": ("vseg" if _omp.set_by_vseg else
                               "user" if any(v in os.environ for v in _omp.USER_VARS) else None),
        "cpu_count": os.cpu_count(),
    }
