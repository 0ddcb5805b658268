"""Which device to run on: the one parser of device specs ('auto', 'cpu', 'cuda', 'cuda:N', N).

`select_device` serves `vseg run/eval/train` and the API; `resolve_device` adds the bench's
`--gpu N` form and a note when 'auto' found no GPU.
"""
from __future__ import annotations

import torch

from vsegcli.errors import VsegError


def select_device(spec: str | int | None) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | N  ->  a usable torch.device, or a VsegError saying why not."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.isdigit():
        spec = f"cuda:{spec}"
    if spec == "cuda":
        spec = "cuda:0"
    if not spec.startswith("cuda:") or not spec[5:].isdigit():
        raise VsegError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise VsegError(f"{spec} was asked for but CUDA is not available here (no GPU or a CPU-only torch); use --device cpu")
    index = int(spec[5:])
    if index >= torch.cuda.device_count():
        raise VsegError(f"{spec} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(spec)


def resolve_device(device: str | int | None = "auto", gpu: int | None = None) -> tuple[torch.device, str | None]:
    """`--device` and `--gpu N` (which must agree when both are given) -> the device and, for
    'auto' on a machine without CUDA, a note saying the CPU is what gets measured."""
    if gpu is not None:
        if device not in (None, "auto") and str(device).lower() not in (f"cuda:{gpu}", str(gpu)):
            raise VsegError(f"--gpu {gpu} and --device {device} disagree; give one of them")
        device = f"cuda:{gpu}"
    spec = "auto" if device is None else str(device).strip().lower()
    dev = select_device(spec)
    note = None
    if spec == "auto" and dev.type == "cpu":
        note = "--device auto: no CUDA device here, so the CPU is benchmarked"
    return dev, note
