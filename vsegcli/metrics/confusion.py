"""Confusion-matrix segmentation scores: per-class IoU, mIoU, FWIoU, pixel and class accuracy.

Rows are ground truth, columns are predictions. Pixels whose ground truth lies outside
[0, num_classes) are ignored (ignore index, void ids, anything unmapped). A prediction outside
[0, num_classes) on a valid pixel is kept as a miss: it counts in that pixel's ground-truth row
(a false negative) but in no class's column — the same as mmseg's histograms and as
cityscapesscripts, which counts predictions of non-evaluated ids as false negatives.

Definitions (all scores are fractions in [0, 1]):

* ``IoU_c = TP_c / (GT_c + Pred_c - TP_c)``; NaN where the class is absent from both.
* ``miou`` = mean of IoU over classes present in the ground truth (GT_c > 0): the definition of
  the MRCFA/VSPW ``Evaluator``. ``miou_nanmean`` = NaN-mean over every class with a nonzero
  union: mmseg's table and cityscapesscripts' average. They differ only when a class is
  predicted somewhere but never occurs in the ground truth (its IoU is 0 and counts only in the
  nan-mean). `vseg eval` reports each dataset's official one as its headline
  (`evaluate.protocols.MIOU_DEFINITION`: Cityscapes/CamVid the nan-mean, VSPW `miou`).
* ``fwiou`` = sum over classes with GT_c > 0 of (GT_c / sum GT) * IoU_c.
* ``pixel_accuracy`` = sum TP / sum GT; ``class_accuracy`` = TP_c / GT_c (NaN where GT_c = 0).

Counts are int64. Torch tensors accumulate on their own device (no host sync per frame) and
are moved to the CPU only when a result is read.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.jsonio import finite

__all__ = ["ConfusionMatrix", "all_reduce_", "all_reduce_sum"]


def _is_tensor(x: Any) -> bool:
    # Only look for torch if it is already imported: a tensor cannot exist otherwise, and this
    # keeps the metrics importable (and fast to import) without torch.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _none_to_nan(x: float | None) -> float:
    return float("nan") if x is None else float(x)


class ConfusionMatrix:
    """Streaming K x K confusion matrix (int64) with the usual segmentation scores.

    >>> cm = ConfusionMatrix(19)
    >>> cm.update(pred, gt)        # numpy or torch, any integer dtype, same shape
    >>> cm.miou, cm.summary()
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if not 1 <= int(num_classes) <= 65535:
            raise VsegError(f"num_classes must be in 1..65535, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        # Column K holds predictions outside [0, K) on valid pixels (misses with no class).
        self._counts = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        self._device_counts: dict[str, Any] = {}  # str(device) -> torch int64 tensor (K, K+1)
        self._luts: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ accumulation
    def update(self, pred: Any, gt: Any) -> ConfusionMatrix:
        """Add one prediction / ground-truth pair (any shape, the same for both)."""
        if tuple(pred.shape) != tuple(gt.shape):
            raise VsegError(
                f"prediction shape {tuple(pred.shape)} does not match ground truth "
                f"{tuple(gt.shape)}; resize predictions to the label size before scoring"
            )
        if _is_tensor(pred) or _is_tensor(gt):
            self._update_torch(pred, gt)
        else:
            self._counts += self._bincount_numpy(np.asarray(pred), np.asarray(gt))
        return self

    def _row_col(self, pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map gt to row 0..K (K = ignored) and pred to column 0..K (K = no class)."""
        k = self.num_classes
        if pred.dtype == np.uint8 and gt.dtype == np.uint8:
            # uint8 fast path: one table lookup each instead of compares + where.
            lut = self._luts.get("u8")
            if lut is None:
                lut = np.minimum(np.arange(256), k).astype(np.uint8 if k <= 255 else np.uint16)
                self._luts["u8"] = lut
            return lut[gt], lut[pred]
        g = gt.astype(np.int64, copy=False)
        p = pred.astype(np.int64, copy=False)
        row = np.where((g >= 0) & (g < k), g, k)
        col = np.where((p >= 0) & (p < k), p, k)
        return row, col

    def _bincount_numpy(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        k1 = self.num_classes + 1
        row, col = self._row_col(pred.reshape(-1), gt.reshape(-1))
        dtype = np.int32 if k1 * k1 < 2**31 else np.int64
        idx = row.astype(dtype) * dtype(k1) + col
        counts = np.bincount(idx, minlength=k1 * k1).reshape(k1, k1)
        return counts[: self.num_classes].astype(np.int64, copy=False)  # drop the ignored row

    def _update_torch(self, pred: Any, gt: Any) -> None:
        import torch

        if not isinstance(pred, torch.Tensor):
            pred = torch.from_numpy(np.asarray(pred)).to(gt.device)
        if not isinstance(gt, torch.Tensor):
            gt = torch.from_numpy(np.asarray(gt)).to(pred.device)
        if pred.device != gt.device:
            raise VsegError(f"prediction on {pred.device} but ground truth on {gt.device}")
        k = self.num_classes
        k1 = k + 1
        g = gt.reshape(-1).long()
        p = pred.reshape(-1).long()
        row = torch.where((g >= 0) & (g < k), g, k)
        col = torch.where((p >= 0) & (p < k), p, k)
        counts = torch.bincount(row * k1 + col, minlength=k1 * k1).reshape(k1, k1)[:k]
        key = str(g.device)
        if key in self._device_counts:
            self._device_counts[key] += counts
        else:
            self._device_counts[key] = counts.clone()

    def _sync(self) -> None:
        """Fold device-side counts into the host array (the only device -> host copy)."""
        for counts in self._device_counts.values():
            self._counts += counts.cpu().numpy().astype(np.int64)
        self._device_counts.clear()

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (same class count)."""
        if other.num_classes != self.num_classes:
            raise VsegError(
                f"cannot merge confusion matrices with {self.num_classes} and "
                f"{other.num_classes} classes"
            )
        self._sync()
        self._counts += other.counts_with_misses
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        return self.merge(other)

    def reset(self) -> None:
        self._counts[:] = 0
        self._device_counts.clear()

    # ------------------------------------------------------------------ raw counts
    @property
    def counts_with_misses(self) -> np.ndarray:
        """(K, K+1) int64 copy: the matrix plus a last column of out-of-range predictions."""
        self._sync()
        return self._counts.copy()

    @property
    def matrix(self) -> np.ndarray:
        """(K, K) int64 copy: rows ground truth, columns prediction."""
        self._sync()
        return self._counts[:, : self.num_classes].copy()

    @property
    def total(self) -> int:
        """Number of scored (non-ignored) pixels."""
        self._sync()
        return int(self._counts.sum())

    def _tp_gt_pred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._sync()
        k = self.num_classes
        tp = np.diag(self._counts[:, :k]).astype(np.float64)
        gt = self._counts.sum(axis=1).astype(np.float64)  # includes out-of-range predictions
        pred = self._counts[:, :k].sum(axis=0).astype(np.float64)
        return tp, gt, pred

    # ------------------------------------------------------------------ scores
    @property
    def iou(self) -> np.ndarray:
        """Per-class IoU (K,), NaN where the class is absent from both GT and prediction."""
        tp, gt, pred = self._tp_gt_pred()
        union = gt + pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)

    @property
    def present(self) -> np.ndarray:
        """(K,) bool: classes that occur in the ground truth."""
        return self._tp_gt_pred()[1] > 0

    @property
    def miou(self) -> float:
        """Mean IoU over classes present in the ground truth (MRCFA/VSPW); NaN if none."""
        present = self.present
        if not present.any():
            return float("nan")
        return float(self.iou[present].mean())

    @property
    def miou_nanmean(self) -> float:
        """NaN-mean of per-class IoU (mmseg / cityscapesscripts style); NaN if all NaN."""
        iou = self.iou
        valid = ~np.isnan(iou)
        return float(iou[valid].mean()) if valid.any() else float("nan")

    @property
    def fwiou(self) -> float:
        """Frequency-weighted IoU: sum over GT-present classes of (GT_c / sum GT) * IoU_c."""
        _, gt, _ = self._tp_gt_pred()
        total = gt.sum()
        if total == 0:
            return float("nan")
        present = gt > 0
        return float((gt[present] / total * self.iou[present]).sum())

    @property
    def pixel_accuracy(self) -> float:
        tp, gt, _ = self._tp_gt_pred()
        total = gt.sum()
        return float(tp.sum() / total) if total > 0 else float("nan")

    @property
    def class_accuracy(self) -> np.ndarray:
        """Per-class recall TP_c / GT_c (K,), NaN where the class is absent from GT."""
        tp, gt, _ = self._tp_gt_pred()
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(gt > 0, tp / np.where(gt > 0, gt, 1), np.nan)

    @property
    def mean_class_accuracy(self) -> float:
        acc = self.class_accuracy
        valid = ~np.isnan(acc)
        return float(acc[valid].mean()) if valid.any() else float("nan")

    def summary(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """All scores as a JSON-ready dict (fractions in [0, 1]; NaN written as None)."""
        _, gt, pred = self._tp_gt_pred()
        out: dict[str, Any] = {
            "num_classes": self.num_classes,
            "pixels": int(gt.sum()),
            "miou": self.miou,
            "miou_nanmean": self.miou_nanmean,
            "fwiou": self.fwiou,
            "pixel_accuracy": self.pixel_accuracy,
            "mean_class_accuracy": self.mean_class_accuracy,
            "classes_present": int((gt > 0).sum()),
            "iou": [finite(v) for v in np.asarray(self.iou, dtype=np.float64)],
            "class_accuracy": [finite(v) for v in np.asarray(self.class_accuracy, dtype=np.float64)],
            "gt_pixels": [int(v) for v in gt],
            "pred_pixels": [int(v) for v in pred],
        }
        for key in ("miou", "miou_nanmean", "fwiou", "pixel_accuracy", "mean_class_accuracy"):
            out[key] = finite(out[key])
        if class_names is not None:
            if len(class_names) != self.num_classes:
                raise VsegError(
                    f"{len(class_names)} class names given for {self.num_classes} classes"
                )
            out["class_names"] = list(class_names)
        return out

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Lossless JSON-ready form (for result files and merging across processes)."""
        counts = self.counts_with_misses
        return {
            "num_classes": self.num_classes,
            "ignore_index": self.ignore_index,
            "matrix": counts[:, : self.num_classes].tolist(),
            "pred_out_of_range": counts[:, self.num_classes].tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfusionMatrix:
        try:
            cm = cls(int(data["num_classes"]), int(data.get("ignore_index", 255)))
            k = cm.num_classes
            matrix = np.asarray(data["matrix"], dtype=np.int64)
            misses = np.asarray(data.get("pred_out_of_range", [0] * k), dtype=np.int64)
        except (KeyError, TypeError, ValueError) as exc:
            raise VsegError(f"not a saved confusion matrix: {exc}") from exc
        if matrix.shape != (k, k) or misses.shape != (k,) or (matrix < 0).any():
            raise VsegError(
                f"saved confusion matrix has shape {matrix.shape}, expected ({k}, {k})"
            )
        cm._counts[:, :k] = matrix
        cm._counts[:, k] = misses
        return cm

    def __repr__(self) -> str:
        return f"ConfusionMatrix(num_classes={self.num_classes}, pixels={self.total})"


def all_reduce_(cm: ConfusionMatrix, group: Any = None) -> ConfusionMatrix:
    """Sum `cm`'s counts over all ranks of the default (or given) process group, in place.

    Works with gloo (CPU tensor) and NCCL (the counts travel on the current CUDA device).
    Every rank must call it. Returns `cm` for chaining.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise VsegError("all_reduce_ needs an initialised torch.distributed process group")
    cm._counts[:] = all_reduce_sum(cm.counts_with_misses, group)
    return cm


def all_reduce_sum(counts: np.ndarray, group: Any = None) -> np.ndarray:
    """The sum of a numpy array of counts over the ranks of the default (or given) group; every
    rank must call it. NCCL has no CPU tensors: there the sum travels on the current CUDA device,
    which `distributed.init_distributed` sets to cuda:LOCAL_RANK."""
    import torch
    import torch.distributed as dist

    t = torch.from_numpy(np.ascontiguousarray(counts))
    if dist.get_backend(group) == "nccl":
        t = t.cuda()
    else:
        t = t.clone()  # gloo sums in place: leave the caller's array alone
    dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t.cpu().numpy()
