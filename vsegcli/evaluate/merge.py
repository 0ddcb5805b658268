"""What one process measures, and how processes under torchrun combine it.

Sequences are split between ranks by frame count (`shard_by_frames`). Confusion matrices (scores
and TC) and flicker counts are integer sums (all_reduce); per-sequence records, mVC accumulators
included, are gathered and merged in the global sequence order, so every number but the timings is bit-identical to a
single-process run.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vsegcli.metrics import ConfusionMatrix, VideoConsistency, all_reduce_, all_reduce_sum

__all__ = ["SequenceRecord", "Totals", "merge_across_ranks", "pooled_video_consistency", "shard_by_frames"]


def shard_by_frames(frames: list[int], world_size: int) -> list[list[int]]:
    """Sequence indices per rank, balanced by frames streamed (not by sequence count: one long
    VSPW video weighs as much as many short ones, and ranks only meet at the end, so an uneven
    split leaves ranks waiting, up to the process group's timeout). Longest first, each to the
    least-loaded rank (ties: the lower rank); each rank's list ascending. Deterministic."""
    loads = [0] * world_size
    shards: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(frames)), key=lambda j: (-frames[j], j)):
        r = min(range(world_size), key=lambda q: (loads[q], q))
        shards[r].append(i)
        loads[r] += frames[i]
    return [sorted(s) for s in shards]


@dataclass
class SequenceRecord:
    """One sequence's results: small, picklable, gathered across ranks."""

    index: int  # position in the (global) sequence list
    name: str
    streamed: int  # frames through the model
    scored: int  # annotated frames scored
    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    miou: float | None
    pixel_accuracy: float | None
    tc: float | None = None
    vc: VideoConsistency | None = None
    inference_seconds: float = 0.0
    # label PNG -> {raw value: pixels} for values outside the dataset's label set (scored as ignored)
    outside_label_set: dict[str, dict[int, int]] = field(default_factory=dict)
    # Positions of frames that start a new camera shot (None: not looked for; metrics.shots).
    shot_cuts: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "frames_streamed": self.streamed,
            "frames_scored": self.scored,
            "frame_size": list(self.frame_size),
            "input_size": list(self.input_size),
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "tc": self.tc,
            "shot_cuts": self.shot_cuts,
            "label_pixels_outside_set": sum(sum(v.values()) for v in self.outside_label_set.values()),
        }


@dataclass
class Totals:
    """Integer sums over this rank's sequences (all_reduce'd across ranks)."""

    tc_confusion: np.ndarray
    flicker_changed: int = 0
    flicker_pixels: int = 0
    tc_pairs: int = 0
    flow_methods: set[str] = field(default_factory=set)


def merge_across_ranks(
    cm: ConfusionMatrix,
    totals: Totals,
    records: list[SequenceRecord],
    stats: dict[str, Any],
    world_size: int,
) -> tuple[list[SequenceRecord], list[dict[str, Any]]]:
    """Sum `cm` and `totals` over all ranks in place; return every rank's records and stats.

    Every rank must call it (collective operations)."""
    import torch.distributed as dist

    all_reduce_(cm)
    counts_np = all_reduce_sum(np.concatenate([
        totals.tc_confusion.reshape(-1),
        np.array([totals.flicker_changed, totals.flicker_pixels, totals.tc_pairs], dtype=np.int64),
    ]))
    n = totals.tc_confusion.size
    totals.tc_confusion[:] = counts_np[:n].reshape(totals.tc_confusion.shape)
    totals.flicker_changed, totals.flicker_pixels, totals.tc_pairs = (int(v) for v in counts_np[n:])
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, (records, stats, sorted(totals.flow_methods)))
    merged: list[SequenceRecord] = []
    all_stats: list[dict[str, Any]] = []
    for recs, st, methods in gathered:
        merged.extend(recs)
        all_stats.append(st)
        totals.flow_methods.update(methods)
    return merged, all_stats


def pooled_video_consistency(records: list[SequenceRecord], windows: tuple[int, ...]) -> VideoConsistency:
    """The sequences' mVC accumulators merged in `records`' order (the global sequence order:
    the same float sums as one process)."""
    pooled = VideoConsistency(windows)
    for r in records:
        if r.vc is not None:
            pooled.merge(r.vc)
    return pooled
