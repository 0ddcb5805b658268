"""The run directory: log.jsonl, state.pt (resume), RNG states, and what a resume may change.

`state.pt` holds tensors and plain containers only (read back with weights_only=True): the model,
optimizer, LR scheduler, GradScaler, iteration, best score, resolved config and every rank's RNG
states (torch, CUDA, numpy, random).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write_text
from vsegcli.io.jsonio import dumps
from vsegcli.train.config import RESUME_MUTABLE, TrainConfig

STATE_VERSION = 1


class RunLog:
    """RUN_DIR/log.jsonl (rank 0): one JSON object per line; optionally echoed to stdout."""

    def __init__(self, path: Path, echo: bool, enabled: bool) -> None:
        self.path = path
        self.echo = echo
        self.enabled = enabled

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop records a crashed run wrote after the state it resumes from."""
        if not (self.enabled and self.path.is_file()):
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a half-written last line
            if rec.get("iter", 0) <= iteration:
                keep.append(line)
        atomic_write_text(self.path, "".join(f"{line}\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = dumps(record, indent=None)  # strict JSON: NaN / inf -> null
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            print(line, flush=True)


def load_state(out: Path) -> dict[str, Any]:
    path = out / "state.pt"
    if not path.is_file():
        raise VsegError(f"--resume: {path} does not exist; start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt / foreign file is a user-facing problem
        raise VsegError(f"{path} cannot be read ({e}); resume from a complete run directory") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise VsegError(f"{path} is not a vseg {STATE_VERSION} training state; start a new run")
    return state


def config_diff(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """Fields (outside RESUME_MUTABLE) where `cfg` differs from a saved config, as 'name (old -> new)'."""
    base = TrainConfig.from_dict(saved).to_dict()
    now = cfg.to_dict()
    return [f"{k} ({base[k]} -> {now[k]})" for k in now if k not in RESUME_MUTABLE and base.get(k) != now[k]]


def resume_config(out: Path, overrides: dict[str, Any]) -> TrainConfig:
    """The config saved in OUT/state.pt with `overrides` (the options given explicitly) on top;
    raises VsegError when an override would change what the run computes."""
    saved = load_state(out)["config"]
    # Run-control options apply to one invocation only: a saved --stop-after must not stop it again.
    merged = TrainConfig.from_dict({**saved, "stop_after": None, **overrides, "resume": True, "out": str(out)})
    changed = config_diff(saved, merged)
    if changed:
        raise VsegError(f"--resume cannot change {', '.join(changed)}; drop those options or start a new --out")
    return merged


def rng_state(device: torch.device) -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "random": random.getstate(),
    }


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    v, internal, gauss = state["random"]
    random.setstate((v, tuple(internal), gauss))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
