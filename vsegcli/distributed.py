"""Multi-process runs (torchrun): joining the process group and the few collectives vseg uses.

`init_distributed(device)` reads torchrun's WORLD_SIZE / RANK / LOCAL_RANK and returns a `Dist`
(rank, world size, local rank, and the torch.device this process runs on): one GPU per process
(cuda:LOCAL_RANK, NCCL) when CUDA is asked for or `auto` finds it, else the CPU with gloo.
Outside torchrun it is the single-process `Dist` on the selected device, and every helper below is
then a no-op that returns what a one-process group would (so callers never branch on it).
`vseg train` and `vseg eval` both start this way. Merging metric counts across ranks is the
metrics' own business (`metrics.all_reduce_`, `metrics.all_reduce_sum`).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
from torch import nn

from vsegcli.errors import VsegError


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | int | torch.device | None = "auto") -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); see the module doc.
    Raises VsegError for a device that is not there (`select_device`)."""
    from vsegcli.runtime import select_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = select_device(None if device is None else str(device))
    if world <= 1:
        return Dist(device=dev)
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if dev.type == "cuda":  # one GPU per process, whatever index was asked for
        check_local_rank(local, torch.cuda.device_count())
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=dist_timeout())
    return Dist(dist.get_rank(), dist.get_world_size(), local, dev)


# How long a collective waits for the other ranks. Ranks of eval and train meet rarely (eval only at
# the end), so a rank that finishes early waits long; NCCL's default watchdog (10 min) would abort
# a run after all its work. VSEG_DIST_TIMEOUT_S overrides.
DIST_TIMEOUT_S = 4 * 3600


def dist_timeout() -> timedelta:
    raw = os.environ.get("VSEG_DIST_TIMEOUT_S")
    try:
        seconds = float(raw) if raw else DIST_TIMEOUT_S
    except ValueError:
        raise VsegError(f"VSEG_DIST_TIMEOUT_S={raw!r} is not a number of seconds") from None
    return timedelta(seconds=seconds)


def check_local_rank(local_rank: int, visible_gpus: int) -> None:
    """Fail before any work when this process has no GPU of its own (two ranks on one GPU would
    run, slowly, and share its memory)."""
    if local_rank >= visible_gpus:
        raise VsegError(
            f"LOCAL_RANK {local_rank} but only {visible_gpus} GPU(s) visible; start torchrun with "
            f"--nproc_per_node {max(visible_gpus, 1)} or fewer (or --device cpu), or check CUDA_VISIBLE_DEVICES"
        )


def finish(d: Dist) -> None:
    """Wait for every rank, then leave the process group (no-op in a single process)."""
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_gather_object(obj: Any, d: Dist) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] in a single process)."""
    if not d.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every rank."""
    if not d.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """The mean of `t` over ranks, on `t`'s device (`t` itself in a single process). The collective
    itself runs on the group's device `d.device`: NCCL has no CPU tensors."""
    if d.enabled:
        import torch.distributed as dist

        work = t.to(d.device)
        dist.all_reduce(work)
        work /= d.world
        t = work.to(t.device)
    return t


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them at
    the start of each forward, so after the last forward they differ by rank; validation and the
    saved checkpoints must all use rank 0's."""
    if not d.enabled:
        return
    import torch.distributed as dist

    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def parameter_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal across ranks iff the replicas are identical."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
