"""Thread policy: idle OpenMP workers spin briefly, then sleep (GOMP_SPINCOUNT=10000 set before torch
loads, unless the user chose), `--threads N` reaches torch, and both are reported in the run's JSON."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vsegcli._omp import prefer_short_spin

ROOT = Path(__file__).resolve().parent.parent


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS", "OMP_DISPLAY_ENV")}
    env.update(extra)
    return env


def test_prefer_short_spin_respects_the_user_and_a_loaded_torch():
    env: dict[str, str] = {}
    assert prefer_short_spin(env, torch_loaded=False) and env == {"GOMP_SPINCOUNT": "10000"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(chosen)
        assert not prefer_short_spin(env, torch_loaded=False) and env == chosen
    env = {}
    assert not prefer_short_spin(env, torch_loaded=True) and env == {}  # too late: libgomp read it


def _libgomp_spincount(code: str, **extra: str) -> str:
    """GOMP_SPINCOUNT as libgomp itself reports it (OMP_DISPLAY_ENV) in a fresh process."""
    out = subprocess.run([sys.executable, "-c", code], env=_clean_env(OMP_DISPLAY_ENV="VERBOSE", **extra),
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if "GOMP_SPINCOUNT" in ln]
    if not lines:
        pytest.skip("torch's OpenMP runtime does not report GOMP_SPINCOUNT (not libgomp)")
    return lines[0].split("=", 1)[1].strip().strip("'")


def test_libgomp_sees_the_short_spin_when_vseg_is_imported_first():
    # vseg's default: a 10,000-round spin; libgomp's own default spins 300,000
    assert _libgomp_spincount("import vsegcli, torch; torch.ones(64).sum()") == "10000"
    assert _libgomp_spincount("import torch, vsegcli; torch.ones(64).sum()") != "10000"  # torch first: too late
    # a user's choice wins
    assert _libgomp_spincount("import vsegcli, torch; torch.ones(64).sum()", GOMP_SPINCOUNT="12345") == "12345"


def test_run_threads_option_reaches_torch_and_the_json(tmp_path):
    from tests.videogen import make_video

    video = make_video(tmp_path / "clip.mp4", width=64, height=48, n_frames=3)
    out = subprocess.run(
        [sys.executable, "-m", "vsegcli", "run", str(video), "-m", "segformer-b0", "--no-video",
         "--labels-dir", str(tmp_path / "lab"), "--threads", "1", "--device", "cpu", "--json", "--quiet"],
        env=_clean_env(), capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout)
    assert data["threads"]["intra_op"] == 1
    assert data["threads"]["gomp_spincount"] == "10000" and data["threads"]["wait_policy_set_by"] == "vseg"
    assert data["cuda_math"] is None  # CPU run
    assert len(list((tmp_path / "lab").glob("*.png"))) == 3


def test_threads_must_be_positive():
    from click.testing import CliRunner

    from vsegcli.cli.main import cli

    result = CliRunner().invoke(cli, ["run", "x.mp4", "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output
