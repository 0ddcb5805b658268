"""Training losses: cross-entropy with optional class weights and OHEM, plus the aux and
per-frame terms a model's `forward_train` returns."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vsegcli.data.labels import IGNORE_INDEX as IGNORE
from vsegcli.distributed import Dist, broadcast_object
from vsegcli.errors import VsegError
from vsegcli.io.jsonio import write_json
from vsegcli.train.config import TrainConfig
from vsegcli.train.dataset import _data_api

OHEM_THRESH = 0.7


def median_frequency_weights(counts: np.ndarray, image_pixels: np.ndarray) -> np.ndarray:
    """SegNet's median-frequency balancing: freq_c = pixels of c / pixels of images containing c,
    w_c = median(freq) / freq_c. Classes never seen get weight 1."""
    freq = np.where(image_pixels > 0, counts / np.maximum(image_pixels, 1), 0.0)
    seen = freq > 0
    if not seen.any():
        raise VsegError("the training labels contain no valid pixels; check --data-root and --dataset")
    med = float(np.median(freq[seen]))
    return np.where(seen, med / np.where(seen, freq, 1.0), 1.0)


def class_frequencies(sequences: Sequence[Any], dataset: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    data = _data_api()
    counts = np.zeros(num_classes, np.float64)
    image_pixels = np.zeros(num_classes, np.float64)
    for seq in sequences:
        for path in seq.labels.values():
            lb = data.read_label(path, seq.label_format)
            c = np.bincount(lb.ravel(), minlength=256)[:num_classes].astype(np.float64)
            counts += c
            image_pixels += (c > 0) * float(c.sum())
    return counts, image_pixels


def read_class_weights(path: Path, num_classes: int) -> np.ndarray:
    """K numbers from a text file (whitespace / comma separated) or a JSON list."""
    if not path.is_file():
        raise VsegError(f"class-weights file {path} does not exist; give none, median-freq or a file of "
                        f"{num_classes} numbers")
    text = path.read_text()
    try:
        values = json.loads(text) if text.lstrip().startswith("[") else [float(t) for t in text.replace(",", " ").split()]
        arr = np.asarray(values, dtype=np.float64).ravel()
    except (ValueError, TypeError):
        raise VsegError(f"{path}: class weights must be {num_classes} numbers (text or a JSON list)") from None
    if arr.size != num_classes or not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise VsegError(f"{path} holds {arr.size} weights; the {num_classes}-class label set needs {num_classes} "
                        "non-negative numbers")
    return arr


def class_weights_for(cfg: TrainConfig, seqs: Sequence[Any], k: int, out: Path, d: Dist,
                      say: Callable[[str], None]) -> np.ndarray | None:
    """`--class-weights`: none, a file, or median-frequency weights computed once by rank 0,
    shared with every rank and cached in the run directory."""
    spec = cfg.class_weights
    if spec in (None, "", "none"):
        return None
    if spec != "median-freq":
        return read_class_weights(Path(spec), k)
    cache = out / "class_weights.json"
    weights = None
    if d.main:
        if cache.is_file():
            weights = json.loads(cache.read_text())["weights"]
        else:
            say("computing median-frequency class weights from the training labels ...")
            counts, pixels = class_frequencies(seqs, cfg.dataset, k)
            weights = median_frequency_weights(counts, pixels).tolist()
            write_json(cache, {"method": "median-freq", "weights": weights}, indent=1)
    return np.asarray(broadcast_object(weights, d), dtype=np.float64)


class SegLoss:
    """Cross-entropy (ignore 255) on logits upsampled to the labels, optional class weights and OHEM."""

    def __init__(self, weight: torch.Tensor | None = None, ohem: bool = False, thresh: float = OHEM_THRESH,
                 min_kept_ratio: float = 1 / 16) -> None:
        self.weight = weight
        self.ohem = ohem
        self.thresh = thresh
        self.min_kept_ratio = min_kept_ratio

    def __call__(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.shape[-2:] != target.shape[-2:]:
            logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
        logits = logits.float()
        weight = self.weight.to(logits.device) if self.weight is not None else None
        valid = target != IGNORE
        if not bool(valid.any()):  # e.g. a crop that is all padding: contributes nothing
            return logits.sum() * 0.0
        if not self.ohem:
            return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE)
        pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE, reduction="none")
        with torch.no_grad():
            safe = target.masked_fill(~valid, 0)
            prob = logits.softmax(1).gather(1, safe.unsqueeze(1)).squeeze(1).masked_fill(~valid, 2.0)
            n_valid = int(valid.sum())
            n_min = min(n_valid, max(1, int(target.numel() * self.min_kept_ratio)))
            kept = prob < self.thresh
            if int(kept.sum()) < n_min:  # too few hard pixels: keep the n_min hardest
                kth = prob.flatten().kthvalue(n_min).values
                kept = prob <= kth
            kept &= valid
            w = weight[safe] if weight is not None else torch.ones_like(prob)
            denom = (w * kept).sum().clamp_min(1e-12)
        return (pixel * kept).sum() / denom


def compute_loss(out: dict[str, Any], labels: torch.Tensor, criterion: SegLoss) -> dict[str, torch.Tensor]:
    """`out`: a model's `forward_train` outputs; labels (B, T, h, w), the target's last. Returns
    the total and its parts."""
    target = labels[:, -1]
    parts = {"main": out.get("main_weight", 1.0) * criterion(out["logits"], target)}
    if out["aux"]:
        parts["aux"] = sum(w * criterion(a, target) for a, w in out["aux"])
    if out["frame_logits"] is not None:  # every clip frame against its own labels (MRCFA)
        parts["frame"] = out["frame_weight"] * criterion(out["frame_logits"], labels.flatten(0, 1))
    parts["loss"] = sum(parts.values())
    return parts
