"""Which device to run on: the one parser of device specs ('auto', 'cpu', 'cuda', 'cuda:N', N).

`select_device` serves `vseg run/eval/train` and the API; `resolve_device` adds the bench's
`--gpu N` form and a note when 'auto' found no GPU.

CUDA calls that take no device (`torch.cuda.Event().record()`, `empty_cache()`, `current_stream()`,
`is_bf16_supported()`, pinned allocations) act on the thread's *current* device, which is GPU 0
unless set: work on `cuda:N` runs inside `device_scope(device)` and passes the device explicitly
where the call takes one, so nothing lands on GPU 0 by accident (tests/test_cuda_shim.py).
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

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


def merge_gpu(device: str | int | None, gpu: int | None) -> str:
    """The device spec that `--device` and `--gpu N` ask for together (they must agree when both
    are given): 'cuda:N' for --gpu N, else --device (None -> 'auto')."""
    if gpu is not None:
        if device not in (None, "auto") and str(device).lower() not in (f"cuda:{gpu}", str(gpu)):
            raise VsegError(f"--gpu {gpu} and --device {device} disagree; give one of them")
        device = f"cuda:{gpu}"
    return "auto" if device is None else str(device).strip().lower()


def spec_for_precision(spec: str | int | None, precision: str | None) -> str:
    """'auto' with int8 means the CPU: int8 exists only as an ONNX Runtime CPU graph, so
    `--precision int8` alone works on a machine with a GPU too. Other specs pass unchanged."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    return "cpu" if spec == "auto" and (precision or "").lower() == "int8" else spec


def resolve_device(device: str | int | None = "auto", gpu: int | None = None) -> tuple[torch.device, str | None]:
    """`--device` and `--gpu N` (which must agree when both are given) -> the device and, for
    'auto' on a machine without CUDA, a note saying the CPU is what gets measured."""
    spec = merge_gpu(device, gpu)
    dev = select_device(spec)
    note = None
    if spec == "auto" and dev.type == "cpu":
        note = "--device auto: no CUDA device here, so the CPU is benchmarked"
    return dev, note


def device_scope(device: torch.device | str) -> ContextManager[object]:
    """`with device_scope(dev):` makes `dev` the current CUDA device of this thread for the block
    (a no-op for the CPU), so implicit-device CUDA calls inside it target `dev`, not GPU 0."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return contextlib.nullcontext()
    return torch.cuda.device(dev)


def bf16_supported(device: torch.device | str) -> bool:
    """Native bf16 on this device: any CPU (emulated where it lacks AVX512-BF16/AMX), a GPU of
    compute capability 8.0 or newer (asked of *that* GPU, not the current one)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return True
    return torch.cuda.get_device_capability(dev) >= (8, 0)


def cuda_math_state() -> dict[str, bool]:
    """The global CUDA math switches in effect (for a command's JSON)."""
    return {
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
    }


def set_cuda_math(fast: bool) -> dict[str, bool]:
    """`fast`: cuDNN autotuning (`cudnn.benchmark`: each input size picks its fastest convolution
    once; a video keeps one size) and TF32 for fp32 matmuls and convolutions on Ampere and newer
    (10-bit mantissa products, fp32 accumulation). Off: torch's exact-fp32 settings with
    deterministic algorithm choice. Process-wide; returns `cuda_math_state()`."""
    torch.backends.cudnn.benchmark = bool(fast)
    torch.backends.cuda.matmul.allow_tf32 = bool(fast)
    torch.backends.cudnn.allow_tf32 = bool(fast)
    return cuda_math_state()
