"""OMP_WAIT_POLICY before torch loads (see vsegcli/runtime/threads.py for the policy and its numbers).

Kept free of torch imports: vsegcli/__init__.py calls `prefer_passive_wait()` before anything
imports torch, because libgomp reads its variables once, when torch's library is loaded.
"""
from __future__ import annotations

import os
import sys

# What vseg sets when the user has not chosen: idle OpenMP workers wait passively (futex sleep).
DEFAULT_WAIT_POLICY = "PASSIVE"
USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
set_by_vseg = False


def prefer_passive_wait(environ: dict[str, str] | None = None, torch_loaded: bool | None = None) -> bool:
    """Set OMP_WAIT_POLICY=PASSIVE unless the user chose a wait policy (OMP_WAIT_POLICY or
    GOMP_SPINCOUNT set) or torch is already loaded (libgomp has read its variables by then).
    Returns whether it was set. Child processes inherit it."""
    global set_by_vseg
    env = os.environ if environ is None else environ
    loaded = ("torch" in sys.modules) if torch_loaded is None else torch_loaded
    if loaded or any(v in env for v in USER_VARS):
        return False
    env["OMP_WAIT_POLICY"] = DEFAULT_WAIT_POLICY
    if environ is None:
        set_by_vseg = True
    return True
