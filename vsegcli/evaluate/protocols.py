"""The papers' evaluation protocols: which frames each dataset streams and scores, test-time size,
where saved predictions go, and loading a model with a dataset's classes.

Every sequence is streamed frame by frame, in time order, through a fresh `Session`, so STT sees
its T earlier frames and MRCFA its reference frames exactly as in `vseg run`; `PROTOCOL` says in
words what that means per dataset (it is written into every result).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from vsegcli.data.datasets import Sequence, check_dataset, dataset_label_set
from vsegcli.errors import VsegError
from vsegcli.metrics import ConfusionMatrix
from vsegcli.runtime import Predictor, ResizeRule, inference_size

if TYPE_CHECKING:
    from vsegcli.api import VideoSegmenter

__all__ = [
    "MIOU_DEFINITION",
    "MVC_WINDOWS",
    "PROTOCOL",
    "TC_FLOW_SIZE",
    "VSPW_DIVISOR",
    "VSPW_SCALE",
    "frames_to_stream",
    "headline_miou",
    "load_for_dataset",
    "check_save_dir",
    "prediction_path",
    "predictions_format",
    "short_side_rule",
    "resize_for_dataset",
    "vspw_resize_rule",
]

VSPW_SCALE = (853, 480)  # official test scale: long side <= 853, short side <= 480
VSPW_DIVISOR = 32  # AlignedResize(size_divisor=32)
MVC_WINDOWS = (8, 16)  # VSPW's mVC8 / mVC16
TC_FLOW_SIZE = 256  # analysis grid short side of the TC accumulator (its default)

PROTOCOL = {
    "camvid": "every labelled frame of each sequence, in time order, through one fresh session per "
              "sequence; every frame scored",
    "cityscapes": "one fresh session per 30-frame snippet (annotated frame = 20th, frames n-19..n+10): the 19 "
                  "frames before the annotated one are streamed as context, the 10 after it only with TC; "
                  "only the annotated frame is scored",
    "vspw": "every frame of each video, in time order, through one fresh session per video; every frame scored",
}

# Each dataset's official headline mIoU (the per-class IoUs are the same; only which classes are
# averaged differs, and only when a class is predicted somewhere but absent from the ground truth):
# Cityscapes (cityscapesscripts' averageScoreClasses) and CamVid (mmseg's IoUMetric): every class
# with a non-empty union (`miou_nanmean`); VSPW (the MRCFA/VSPW `Evaluator`): classes present in
# the ground truth (`miou`).
MIOU_DEFINITION = {"cityscapes": "nonempty-union", "camvid": "nonempty-union", "vspw": "gt-present"}
MIOU_WORDS = {
    "nonempty-union": "mean IoU over classes with a non-empty union (GT or prediction), as cityscapesscripts "
                      "and mmseg; miou_gt_present: over classes present in the ground truth",
    "gt-present": "mean IoU over classes present in the ground truth, as VSPW's/MRCFA's Evaluator; "
                  "miou_nanmean: over classes with a non-empty union",
}


def headline_miou(dataset: str, cm: ConfusionMatrix) -> float:
    """`cm`'s mIoU under `dataset`'s official definition (`MIOU_DEFINITION`)."""
    rule = MIOU_DEFINITION[check_dataset(dataset)]
    return cm.miou_nanmean if rule == "nonempty-union" else cm.miou


# --------------------------------------------------------------------------------------------
# Which frames


def frames_to_stream(seq: Sequence, tc: bool, max_frames: int | None) -> int:
    """How many of `seq`'s frames go through the model (from its first)."""
    # Frames after the last annotated one give no score; only TC (pairs of predictions) needs them.
    n = len(seq.frames) if tc else (max(seq.labels) + 1 if seq.labels else 0)
    return min(n, max_frames) if max_frames else n


# --------------------------------------------------------------------------------------------
# Test-time size


def vspw_resize_rule(height: int, width: int, divisor: int = VSPW_DIVISOR) -> tuple[int, int]:
    """VSPW's official test size: rescale to fit in 853x480 (long <= 853, short <= 480, up or down,
    mmcv `imrescale` rounding), then resize each side up to a multiple of 32 (AlignedResize)."""
    scale = min(max(VSPW_SCALE) / max(height, width), min(VSPW_SCALE) / min(height, width))
    h, w = int(height * scale + 0.5), int(width * scale + 0.5)
    d = math.lcm(VSPW_DIVISOR, int(divisor))  # a model needing a coarser grid still gets one
    return math.ceil(h / d) * d, math.ceil(w / d) * d


def short_side_rule(size: int | None) -> ResizeRule:
    """The Predictor's rule as a function: short side `size` (None: native), aligned to the divisor."""

    def rule(height: int, width: int, divisor: int) -> tuple[int, int]:
        return inference_size(height, width, size, divisor)

    return rule


def resize_for_dataset(
    dataset: str, predictor: Predictor, size: int | None, resize_rule: ResizeRule | None
) -> tuple[ResizeRule | None, str]:
    """(rule, description): explicit size > custom rule > VSPW's official rule > the predictor's
    own (None: keep it)."""
    divisor = predictor.model.size_divisor
    if size is not None:
        return short_side_rule(size), f"short side {size}, sides rounded up to a multiple of {divisor}"
    if resize_rule is not None:
        return resize_rule, "custom rule"
    if dataset == "vspw":
        return vspw_resize_rule, "VSPW official: fit into 853x480 keeping aspect, then sides up to a multiple of 32"
    own = f"short side {predictor.size}" if predictor.size else "native size"
    return None, f"{own}, sides rounded up to a multiple of {divisor}"


# --------------------------------------------------------------------------------------------
# Saved predictions


def prediction_path(save_dir: Path, dataset: str, seq: Sequence, position: int) -> Path:
    """Where the prediction of frame `position` of `seq` is saved, in the layout the dataset's
    official tools read."""
    if dataset == "cityscapes":
        # cityscapesscripts finds `<city>_<seq>_<frame>*.png` anywhere under CITYSCAPES_RESULTS.
        city = seq.name.rsplit("_", 2)[0]
        return save_dir / city / f"{seq.name}_pred.png"
    return save_dir / seq.name / f"{seq.frames[position].stem}.png"


def predictions_format(dataset: str) -> str:
    if dataset == "cityscapes":
        return "Cityscapes label ids, <city>/<city>_<seq>_<frame>_pred.png (cityscapesscripts)"
    return "train ids (uint8), <sequence>/<frame>.png"


def check_save_dir(save_dir: Path, root: Path) -> Path:
    """`--save-predictions` must be a folder outside the dataset (never write into an input)."""
    save_dir = Path(save_dir)
    resolved, data = save_dir.resolve(), root.resolve()
    if resolved == data or data in resolved.parents:
        raise VsegError(f"--save-predictions {save_dir} lies inside the dataset folder {root}; choose a folder outside it")
    if save_dir.exists() and not save_dir.is_dir():
        raise VsegError(f"--save-predictions {save_dir} is a file; give a folder")
    return save_dir


# --------------------------------------------------------------------------------------------
# A model for a dataset


def load_for_dataset(
    dataset: str,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    device: str | int | None = "auto",
    precision: str = "fp32",
    size: int | None = None,
    seed: int = 0,
    runtime: str = "torch",
) -> VideoSegmenter:
    """`api.load` for evaluation: with `model` alone (random weights, a pipeline check) the model is
    built with the dataset's classes (`api.load` would build Cityscapes' 19)."""
    from vsegcli import api

    key = check_dataset(dataset)
    if checkpoint is None and model is None:
        checkpoint = api.default_checkpoint()
        if checkpoint is None:
            raise VsegError("give --checkpoint FILE to evaluate (or --model NAME for random weights, a pipeline check)")
    if checkpoint is not None:
        return api.load(checkpoint=checkpoint, model=model, device=device, precision=precision, size=size,
                        runtime=runtime)
    return api.load(model=model, device=device, precision=precision, size=size, seed=seed,
                    label_set=dataset_label_set(key).name, runtime=runtime)
