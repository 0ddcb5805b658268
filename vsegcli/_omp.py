"""How idle OpenMP workers wait, set before torch loads (the policy and its numbers:
vsegcli/runtime/threads.py, docs/PERFORMANCE.md section 6).

Kept free of torch imports: vsegcli/__init__.py calls `prefer_short_spin()` before anything
imports torch, because libgomp reads its variables once, when torch's library is loaded.
"""
from __future__ import annotations

import os
import sys

# What vseg sets when the user has not chosen: idle OpenMP workers spin 10,000 rounds (tens of
# microseconds), then sleep. libgomp's default (300,000 rounds) collapses beside other busy
# processes; sleeping at once (OMP_WAIT_POLICY=PASSIVE) costs a third of the idle speed.
DEFAULT_SPINCOUNT = "10000"
USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
set_by_vseg = False


def prefer_short_spin(environ: dict[str, str] | None = None, torch_loaded: bool | None = None) -> bool:
    """Set GOMP_SPINCOUNT=10000 unless the user chose a wait policy (OMP_WAIT_POLICY or
    GOMP_SPINCOUNT set) or torch is already loaded (libgomp has read its variables by then).
    Returns whether it was set. Child processes inherit it."""
    global set_by_vseg
    env = os.environ if environ is None else environ
    loaded = ("torch" in sys.modules) if torch_loaded is None else torch_loaded
    if loaded or any(v in env for v in USER_VARS):
        return False
    env["GOMP_SPINCOUNT"] = DEFAULT_SPINCOUNT
    if environ is None:
        set_by_vseg = True
    return True
