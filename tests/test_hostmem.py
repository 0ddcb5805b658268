"""Host allocator tuning: "retain" must stop the per-frame page faults, "system" must leave them.

Page faults are counted by the kernel (getrusage), so this checks the mechanism itself, not a
timing. Each case runs in a fresh interpreter: the setting is process-wide and one-way.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from vsegcli.io import hostmem
from vsegcli.errors import VsegError

# Steady-state steps of a real model (EfficientNet-Lite0 at 256x448: activations up to 11 MiB,
# which the default glibc allocator unmaps or trims after use) and the page faults they take.
PROBE = r"""
import json, resource, sys
from vsegcli.io.hostmem import configure_host_allocator
state = configure_host_allocator(sys.argv[1])
import torch
from vsegcli.bench import build_bench_model
torch.set_num_threads(1)
model = build_bench_model("effl0").eval()
frame = torch.rand(1, 3, 256, 448)
with torch.inference_mode():
    for _ in range(3):  # warm-up: the first steps always fault their pages in
        model(frame)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        model(frame)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"state": state, "faults_per_step": faults / 5}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the tuning is glibc's mallopt (Linux with glibc)")
def test_retain_stops_repeated_page_faults_and_system_keeps_them():
    system = _probe("system")
    retain = _probe("retain")
    assert retain["state"].startswith("retain"), retain  # glibc takes at least one of the thresholds
    assert system["state"].startswith("system")
    # Measured here: ~9,500 faults per step with the defaults (37 MiB of fresh 4 KiB pages), 0 retained.
    assert system["faults_per_step"] > 1000, system
    assert retain["faults_per_step"] < system["faults_per_step"] / 10, (retain, system)


def test_mode_from_environment_and_bad_values(monkeypatch):
    monkeypatch.delenv(hostmem.ENV_VAR, raising=False)
    assert hostmem.requested_mode() == "retain"
    monkeypatch.setenv(hostmem.ENV_VAR, "System")
    assert hostmem.requested_mode() == "system"
    assert hostmem.requested_mode("retain") == "retain"  # an explicit option wins over the variable
    monkeypatch.setenv(hostmem.ENV_VAR, "huge")
    with pytest.raises(VsegError, match="VSEG_HOST_ALLOCATOR"):
        hostmem.requested_mode()
    hostmem.configure_host_allocator("retain")  # however this process was configured already ...
    with pytest.raises(VsegError, match="VSEG_HOST_ALLOCATOR"):  # ... a bad value is still reported
        hostmem.configure_host_allocator()
