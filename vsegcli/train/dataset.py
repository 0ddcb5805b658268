"""The training data: sample s of the run -> an augmented clip, and this rank's batches.

The s-th sample of the run is target `permutation(seed, epoch)[s mod N]`, augmented with a
generator seeded by (seed, s): an iteration's data depends only on the seed and the iteration
number, not on `--workers` or on when a run was interrupted (package docstring).
"""
from __future__ import annotations

import os
import random
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from vsegcli.errors import VsegError
from vsegcli.train.clips import AugmentParams, ClipSpec, augment_clip, clip_positions, draw_reverse, references_exist
from vsegcli.train.motion import synthetic_clip


def _data_api() -> Any:
    import vsegcli.data.datasets as data  # lazily: `vseg --help` should not pay for it

    return data


class ClipDataset(torch.utils.data.Dataset):
    """Sample s of the run -> (frames (T, h, w, 3) uint8, labels (T, h, w) uint8); see module doc."""

    def __init__(self, sequences: Sequence[Any], dataset: str, spec: ClipSpec, aug: AugmentParams, seed: int,
                 frame_labels: bool, synthetic_motion: float = 0.0) -> None:
        self.sequences = list(sequences)
        self.dataset = dataset
        self.spec = spec
        self.aug = aug
        self.seed = seed
        self.frame_labels = frame_labels  # also load the earlier frames' labels (MRCFA's per-frame loss)
        self.synthetic_motion = synthetic_motion  # share of clips made by train/motion.py
        self.targets = [(i, pos) for i, seq in enumerate(self.sequences) for pos in _targets(seq, spec)]
        if not self.targets:
            raise VsegError(f"no labelled frames found for the {dataset} training split; check --data-root")
        self._perm_epoch = -1
        self._perm = np.arange(0)

    def __len__(self) -> int:  # samples per epoch (indices beyond wrap into later epochs)
        return len(self.targets)

    def target_of(self, s: int) -> tuple[int, int]:
        epoch, k = divmod(s, len(self.targets))
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 7, epoch]).permutation(len(self.targets))
            self._perm_epoch = epoch
        return self.targets[int(self._perm[k])]

    def __getitem__(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = _data_api()
        seq_i, target = self.target_of(s)
        seq = self.sequences[seq_i]
        rng = np.random.default_rng([self.seed, 11, s])
        # drawn only when enabled: runs without it keep the data they always had
        if self.synthetic_motion > 0 and self.spec.length > 1 and rng.random() < self.synthetic_motion:
            return self._synthetic(seq, target, rng)
        reverse = draw_reverse(target, self.spec, len(seq.frames), rng)
        positions = clip_positions(target, self.spec, rng, reverse, len(seq.frames))
        cache: dict[int, np.ndarray] = {}  # clips near a sequence start repeat frames: decode once
        for p in positions:
            if p not in cache:
                cache[p] = data.read_image(seq.frames[p])
        images = [cache[p] for p in positions]
        labels: list[np.ndarray | None] = []
        for i, p in enumerate(positions):
            last = i == len(positions) - 1
            if p in seq.labels and (last or self.frame_labels):
                labels.append(data.read_label(seq.labels[p], seq.label_format))
            else:
                labels.append(None)
        frames, targets = augment_clip(images, labels, self.aug, rng)
        return torch.from_numpy(frames), torch.from_numpy(targets)

    def _synthetic(self, seq: Any, target: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A clip of the target frame moved along a random camera path, at the time offsets a real
        clip of this spec has (reversed like one with the spec's probability)."""
        data = _data_api()
        reverse = self.spec.offsets is not None and bool(rng.random() < self.spec.reverse_prob)
        far = 1 << 30  # no sequence ends here: offsets are what the spec draws, never clamped
        deltas = [p - far for p in clip_positions(far, self.spec, rng, reverse)]
        label = data.read_label(seq.labels[target], seq.label_format)
        images, labels = synthetic_clip(data.read_image(seq.frames[target]), label if self.frame_labels else None,
                                        deltas, rng)
        labels[-1] = label  # the target's own labels, always
        frames, targets = augment_clip(images, labels, self.aug, rng)
        return torch.from_numpy(frames), torch.from_numpy(targets)


def _targets(seq: Any, spec: ClipSpec) -> list[int]:
    """A sequence's labelled frames that can be targets. Fixed-offset clips (MRCFA) draw only
    targets whose references all exist in some allowed direction (the official sampler: t in
    [9, len-1]); a sequence too short for any keeps all its targets, their missing references
    repeating the nearest end frame (e.g. Cityscapes without `leftImg8bit_sequence`)."""
    labelled = sorted(seq.labels)
    if spec.offsets is None:
        return labelled
    n = len(seq.frames)
    full = [t for t in labelled if references_exist(t, spec, n)
            or (spec.reverse_prob > 0 and references_exist(t, spec, n, reverse=True))]
    return full or labelled


class RunBatches(torch.utils.data.Sampler):
    """Sample indices of this rank's micro-batches, iteration `start` onwards (module docstring)."""

    def __init__(self, batch: int, accum: int, world: int, rank: int, start: int, stop: int) -> None:
        self.batch, self.accum, self.world, self.rank = batch, accum, world, rank
        self.start, self.stop = start, stop

    def indices(self, it: int, micro: int) -> list[int]:
        base = ((it * self.accum + micro) * self.world + self.rank) * self.batch
        return list(range(base, base + self.batch))

    def __iter__(self) -> Iterator[list[int]]:
        for it in range(self.start, self.stop):
            for a in range(self.accum):
                yield self.indices(it, a)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.accum


def _worker_init(worker_id: int) -> None:
    # Augmentation draws from per-sample generators; seed the global RNGs too, per worker, for any
    # library code that uses them (OpenCV does not; PIL's decoders do not).
    info = torch.utils.data.get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    np.random.seed(seed)
    random.seed(seed)


def default_workers(world: int) -> int:
    """Data-loader processes per rank: up to 4, sharing the CPU cores between ranks."""
    return max(0, min(4, (os.cpu_count() or 1) // world))
