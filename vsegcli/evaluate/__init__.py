"""Score a model on CamVid, Cityscapes or VSPW the way the papers do (`vseg eval`).

Protocol (one rule for every architecture, so temporal models get their real context):

* Every sequence is streamed frame by frame, in time order, through a fresh `Session`: STT sees
  its T earlier frames, MRCFA its reference frames (t-9/t-6/t-3, or the checkpoint's own
  offsets), exactly as in `vseg run`. Predictions are scored only on annotated frames.
  - CamVid: every labelled frame of a sequence, in order (each one is scored).
  - Cityscapes: the 30-frame snippet of each annotated frame: the 19 frames before it are streamed
    as context, the 10 after it only when TC is measured; only the annotated frame is scored.
  - VSPW: every frame of every video (all are annotated and scored).
* Test-time size: `size=` (short side, like `--size`) when given; otherwise VSPW uses its official
  rule (fit into 853x480 keeping the aspect ratio, then resize each side up to a multiple of 32:
  480x853 -> 480x864) and the other datasets the predictor's own size (the checkpoint's
  `input_size`, else native, aligned to the model's divisor). Logits are upsampled to the label size.
* Metrics: one integer confusion matrix over the dataset's classes (mIoU over classes present in
  the ground truth, per-class IoU, FWIoU, pixel accuracy); `tc=True`: flow-warped temporal
  consistency over each sequence's consecutive predictions (pairs never cross sequences);
  mVC8/mVC16 (VSPW's official rules) on VSPW and CamVid; fps of inference alone and of the whole run.

Distributed (torchrun): sequences are dealt round-robin by rank; confusion matrices (scores and
TC) and flicker counts are integer sums (all_reduce); per-sequence records, mVC accumulators
included, are gathered and merged in the global sequence order, so every number but the timings
is bit-identical to a single-process run.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np
import torch

from vsegcli.data.datasets import (
    Sequence,
    check_dataset,
    dataset_label_set,
    list_sequences,
    read_image,
    read_label,
)
from vsegcli.runtime import Predictor, ResizeRule, inference_size
from vsegcli.errors import VsegError
from vsegcli.metrics import ConfusionMatrix, TemporalConsistency, VideoConsistency, all_reduce_

__all__ = [
    "evaluate",
    "load_for_dataset",
    "init_distributed",
    "vspw_resize_rule",
    "short_side_rule",
]

VSPW_SCALE = (853, 480)  # official test scale: long side <= 853, short side <= 480
VSPW_DIVISOR = 32  # AlignedResize(size_divisor=32)
MVC_WINDOWS = (8, 16)
TC_FLOW_SIZE = 256  # analysis grid short side of the TC accumulator (its default)
PREFETCH = 4  # frames decoded ahead of the model

_PROTOCOL = {
    "camvid": "every labelled frame of each sequence, in time order, through one fresh session per "
              "sequence; every frame scored",
    "cityscapes": "one fresh session per 30-frame snippet (annotated frame = 20th, frames n-19..n+10): the 19 "
                  "frames before the annotated one are streamed as context, the 10 after it only with TC; "
                  "only the annotated frame is scored",
    "vspw": "every frame of each video, in time order, through one fresh session per video; every frame scored",
}


# --------------------------------------------------------------------------------------------
# Test-time resize


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


# --------------------------------------------------------------------------------------------
# Loading a model for a dataset, and joining a torchrun group


def load_for_dataset(
    dataset: str,
    checkpoint: str | Path | None = None,
    model: str | None = None,
    device: str | int | None = "auto",
    precision: str = "fp32",
    size: int | None = None,
    seed: int = 0,
) -> Any:
    """`api.load` for evaluation: with `model` alone (random weights, a pipeline check) the model is
    built with the dataset's classes (`api.load` would build Cityscapes' 19)."""
    from vsegcli import api

    key = check_dataset(dataset)
    if checkpoint is None and model is None:
        checkpoint = api.default_checkpoint()
        if checkpoint is None:
            raise VsegError("give --checkpoint FILE to evaluate (or --model NAME for random weights, a pipeline check)")
    if checkpoint is not None:
        return api.load(checkpoint=checkpoint, model=model, device=device, precision=precision, size=size)
    return api.load(model=model, device=device, precision=precision, size=size, seed=seed,
                    label_set=dataset_label_set(key).name)


def init_distributed(device: str | int | None = "auto") -> tuple[int, int, str | int | None]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1).

    Returns (rank, world_size, device): one GPU per process (cuda:LOCAL_RANK, NCCL) when CUDA is
    asked for or `auto` finds it, else the CPU with gloo. Outside torchrun: (0, 1, device).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    spec = "auto" if device is None else str(device).strip().lower()
    use_cuda = spec.startswith("cuda") or spec.isdigit() or (spec == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise VsegError(f"--device {spec} under torchrun but CUDA is not available here; use --device cpu")
        dev: str = f"cuda:{local % torch.cuda.device_count()}"
        torch.cuda.set_device(dev)
    else:
        dev = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


# --------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class _SequenceRecord:
    """One sequence's results: small, picklable, gathered across ranks."""

    index: int  # position in the (global) sequence list
    name: str
    streamed: int  # frames through the model
    scored: int  # annotated frames scored
    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    miou: float
    pixel_accuracy: float
    tc: float | None = None
    vc: VideoConsistency | None = None
    inference_seconds: float = 0.0

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
        }


@dataclass
class _Totals:
    """Integer sums over this rank's sequences (all_reduce'd across ranks)."""

    tc_confusion: np.ndarray
    flicker_changed: int = 0
    flicker_pixels: int = 0
    tc_pairs: int = 0
    flow_methods: set[str] = field(default_factory=set)


def _unwrap(model: Any) -> tuple[Predictor, dict[str, Any] | None]:
    if isinstance(model, Predictor):
        return model, None
    predictor = getattr(model, "predictor", None)
    if not isinstance(predictor, Predictor):
        raise TypeError("evaluate() needs an api.Segmenter (vsegcli.api.load) or an engine.Predictor")
    info = getattr(model, "info", None)
    return predictor, (info.to_dict() if hasattr(info, "to_dict") else None)


def _frames_to_stream(seq: Sequence, tc: bool, max_frames: int | None) -> int:
    # Frames after the last annotated one give no score; only TC (pairs of predictions) needs them.
    n = len(seq.frames) if tc else (max(seq.labels) + 1 if seq.labels else 0)
    return min(n, max_frames) if max_frames else n


def _prefetch(
    pool: ThreadPoolExecutor, seq: Sequence, count: int, dataset: str,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
    """(position, RGB frame, train-id labels or None) for the first `count` frames, decoded ahead."""

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        image = read_image(seq.frames[i])
        gt = read_label(seq.labels[i], dataset) if i in seq.labels else None
        return image, gt

    pending: deque[Future] = deque()
    nxt = 0
    for i in range(count):
        while nxt < count and len(pending) < PREFETCH:
            pending.append(pool.submit(load, nxt))
            nxt += 1
        image, gt = pending.popleft().result()
        yield i, image, gt


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write via a temporary name + rename: an interrupted run leaves no complete-looking file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part.png")
    if not cv2.imwrite(str(tmp), image):
        raise VsegError(f"could not write {path}: disk full or no permission?")
    os.replace(tmp, path)


def _prediction_path(save_dir: Path, dataset: str, seq: Sequence, position: int) -> Path:
    if dataset == "cityscapes":
        # cityscapesscripts finds `<city>_<seq>_<frame>*.png` anywhere under CITYSCAPES_RESULTS.
        city = seq.name.rsplit("_", 2)[0]
        return save_dir / city / f"{seq.name}_pred.png"
    return save_dir / seq.name / f"{seq.frames[position].stem}.png"


def _check_save_dir(save_dir: Path, root: Path) -> Path:
    save_dir = Path(save_dir)
    resolved, data = save_dir.resolve(), root.resolve()
    if resolved == data or data in resolved.parents:
        raise VsegError(f"--save-predictions {save_dir} lies inside the dataset folder {root}; choose a folder outside it")
    if save_dir.exists() and not save_dir.is_dir():
        raise VsegError(f"--save-predictions {save_dir} is a file; give a folder")
    return save_dir


def _tc_summary(conf: np.ndarray, totals: _Totals, class_names: list[str]) -> dict[str, Any]:
    # Same definition as metrics.TemporalConsistency.result, on the summed integer confusion.
    diag = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=1) + conf.sum(axis=0) - diag
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, diag / np.where(union > 0, union, 1), np.nan)
    flow_total = conf.sum()
    return {
        "units": {"tc": "percent", "flicker": "fraction"},
        "tc": float(np.nanmean(iou) * 100) if (union > 0).any() else None,
        "per_class_tc": {n: (None if math.isnan(v) else float(v * 100)) for n, v in zip(class_names, iou)},
        "pairs": totals.tc_pairs,
        "flicker_rate": totals.flicker_changed / totals.flicker_pixels if totals.flicker_pixels else None,
        "flow_flicker_rate": float(1 - diag.sum() / flow_total) if flow_total else None,
        "flow_method": ", ".join(sorted(totals.flow_methods)) or None,
        "flow_size": TC_FLOW_SIZE,
        "note": "labels of frame t+1 warped onto t with OpenCV DIS flow (nearest); ETC's TC uses FlowNet2 "
                "at full resolution, so compare TC between vseg runs, not with published numbers",
    }


def _json_float(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def evaluate(
    segmenter_or_predictor: Any,
    dataset: str,
    root: str | Path,
    split: str,
    *,
    tc: bool = False,
    mvc: bool | None = None,
    save_predictions: str | Path | None = None,
    max_sequences: int | None = None,
    max_frames: int | None = None,
    size: int | None = None,
    resize_rule: ResizeRule | None = None,
    progress: Callable[[int, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Evaluate on `split` of `dataset` ('camvid' | 'cityscapes' | 'vspw') under `root`.

    `mvc`: None = on for VSPW and CamVid (GT on consecutive frames), off for Cityscapes.
    `size`: short side for every frame (overrides the predictor's and VSPW's rule); `resize_rule`:
    any (h, w, divisor) -> (h, w) rule instead. `max_sequences`: the first N sequences only;
    `max_frames`: at most N frames streamed per sequence (quick checks). `progress(done, total)`
    is called after each frame with this process's counts. Under torchrun pass `rank` /
    `world_size` (see `init_distributed`); every rank returns the same dict.

    Returns a JSON-ready dict: scores are fractions in [0, 1]; TC and mVC are percent.
    """
    t_wall = time.perf_counter()
    key = check_dataset(dataset)
    root = Path(root)
    label_set = dataset_label_set(key)
    base, model_info = _unwrap(segmenter_or_predictor)
    k = label_set.num_classes
    if base.num_classes != k:
        raise VsegError(
            f"the model predicts {base.num_classes} classes but {key} has {k} ({label_set.name} label set); "
            f"use a checkpoint trained on {key}"
        )
    if mvc is None:
        mvc = key in ("vspw", "camvid")
    if mvc and key == "cityscapes":
        raise VsegError("mVC needs ground truth on consecutive frames; Cityscapes annotates one frame per snippet: drop --mvc")
    if world_size > 1:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise VsegError("world_size > 1 needs an initialised torch.distributed group (start with torchrun)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sequences = list_sequences(key, root, split)
    notes = [str(w.message) for w in caught]
    for note in notes:  # still a warning for library users; also recorded in the result
        warnings.warn(note, stacklevel=2)
    if max_sequences is not None:
        sequences = sequences[:max_sequences]
    if not any(seq.labels for seq in sequences):
        raise VsegError(f"{root}: the {split} split of {key} has no annotations to score (test split?); use --split val")

    # Test-time size: explicit size > custom rule > VSPW's official rule > the predictor's own.
    if size is not None:
        rule: ResizeRule | None = short_side_rule(size)
        resize_desc = f"short side {size}, sides rounded up to a multiple of {base.model.size_divisor}"
    elif resize_rule is not None:
        rule, resize_desc = resize_rule, "custom rule"
    elif key == "vspw":
        rule = vspw_resize_rule
        resize_desc = "VSPW official: fit into 853x480 keeping aspect, then sides up to a multiple of 32"
    else:
        rule = None
        resize_desc = (f"short side {base.size}" if base.size else "native size") + \
            f", sides rounded up to a multiple of {base.model.size_divisor}"
    predictor = base.with_resize_rule(rule) if rule is not None else base

    save_dir = _check_save_dir(Path(save_predictions), root) if save_predictions is not None else None
    to_raw = label_set.train_to_raw_lut() if key == "cityscapes" else None

    mine = list(enumerate(sequences))[rank::world_size]
    plan = [(i, seq, _frames_to_stream(seq, tc, max_frames)) for i, seq in mine]
    total_frames = sum(n for _, _, n in plan)
    device = predictor.device
    cm = ConfusionMatrix(k, label_set.ignore_index)
    totals = _Totals(np.zeros((k, k), dtype=np.int64))
    records: list[_SequenceRecord] = []
    inference_s = 0.0
    done = 0

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vseg-eval-io") as pool:
        for index, seq, count in plan:
            session = predictor.new_session()
            seq_cm = ConfusionMatrix(k, label_set.ignore_index)
            tc_acc = TemporalConsistency(k, flow_size=TC_FLOW_SIZE, keep_heatmap=False) if tc else None
            vc = VideoConsistency(MVC_WINDOWS) if mvc else None
            writes: list[Future] = []
            prev: np.ndarray | None = None
            frame_size: tuple[int, int] | None = None
            scored = 0
            seq_inference = 0.0
            need_host = tc or mvc or save_dir is not None
            for i, image, gt in _prefetch(pool, seq, count, key):
                hw = (int(image.shape[0]), int(image.shape[1]))
                if frame_size is None:
                    frame_size = hw
                elif hw != frame_size:
                    raise VsegError(f"{seq.frames[i]}: frame size {hw} differs from {frame_size} earlier in "
                                    f"{seq.name}; a video's frames must all have one size")
                t0 = time.perf_counter()
                pred = predictor.step(session, predictor.upload(image))
                if device.type == "cuda":
                    torch.cuda.synchronize(device)  # honest per-frame inference time
                seq_inference += time.perf_counter() - t0
                pred_np = pred.cpu().numpy() if need_host else None
                if gt is not None:
                    if gt.shape != frame_size:
                        raise VsegError(f"{seq.labels[i]}: label size {gt.shape} differs from its image "
                                        f"{frame_size}; labels must match their frames pixel for pixel")
                    seq_cm.update(pred, torch.from_numpy(gt).to(pred.device))
                    scored += 1
                    if vc is not None:
                        vc.update(pred_np, gt)
                    if save_dir is not None:
                        assert pred_np is not None
                        out = to_raw[pred_np] if to_raw is not None else pred_np
                        writes.append(pool.submit(_write_png, _prediction_path(save_dir, key, seq, i), out))
                if tc_acc is not None:
                    assert pred_np is not None
                    tc_acc.update(image, pred_np)
                    if prev is not None:  # flow-free flicker at full resolution
                        totals.flicker_changed += int(np.count_nonzero(prev != pred_np))
                        totals.flicker_pixels += pred_np.size
                    prev = pred_np
                done += 1
                if progress is not None:
                    progress(done, total_frames)
            for w in writes:
                w.result()  # surface write errors
            seq_tc = None
            if tc_acc is not None and tc_acc.num_frames:
                res = tc_acc.result()
                assert res.tc_confusion is not None
                totals.tc_confusion += res.tc_confusion
                totals.tc_pairs += res.num_pairs
                if res.num_pairs:
                    totals.flow_methods.add(res.flow_method)
                seq_tc = _json_float(res.tc)
            if vc is not None:
                vc.end_video()
            cm.merge(seq_cm)
            inference_s += seq_inference
            fs = frame_size or (0, 0)
            records.append(_SequenceRecord(
                index=index, name=seq.name, streamed=count, scored=scored, frame_size=fs,
                input_size=tuple(predictor.input_size(*fs)) if frame_size else (0, 0),  # type: ignore[arg-type]
                miou=_json_float(seq_cm.miou), pixel_accuracy=_json_float(seq_cm.pixel_accuracy),  # type: ignore[arg-type]
                tc=seq_tc, vc=vc, inference_seconds=seq_inference,
            ))
    wall_s = time.perf_counter() - t_wall

    # ---- merge across ranks: integer sums, then per-sequence records in global order
    rank_stats = [{"wall_seconds": wall_s, "inference_seconds": inference_s, "frames": done}]
    if world_size > 1:
        records, rank_stats = _merge_distributed(cm, totals, records, rank_stats[0], world_size)
    records.sort(key=lambda r: r.index)
    if cm.total == 0:
        raise VsegError(f"no annotated frame was scored in {key}/{split}; raise --max-frames "
                        "(Cityscapes' annotated frame is the 20th of its snippet)")
    video_consistency = VideoConsistency(MVC_WINDOWS) if mvc else None
    for r in records:
        if video_consistency is not None and r.vc is not None:
            video_consistency.merge(r.vc)  # global sequence order: same float sums as one process

    names = list(label_set.classes)
    summary = cm.summary(names)
    frames = sum(s["frames"] for s in rank_stats)
    inf_total = sum(s["inference_seconds"] for s in rank_stats)
    wall_max = max(s["wall_seconds"] for s in rank_stats)
    result: dict[str, Any] = {
        "dataset": key,
        "split": split,
        "data_root": str(root),
        "label_set": label_set.name,
        "num_classes": k,
        "sequences": len(sequences),
        "frames_streamed": sum(r.streamed for r in records),
        "frames_scored": sum(r.scored for r in records),
        "miou": summary["miou"],
        "fwiou": summary["fwiou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "mean_class_accuracy": summary["mean_class_accuracy"],
        "miou_nanmean": summary["miou_nanmean"],
        "per_class": {
            n: {"iou": summary["iou"][c], "accuracy": summary["class_accuracy"][c],
                "gt_pixels": summary["gt_pixels"][c], "pred_pixels": summary["pred_pixels"][c]}
            for c, n in enumerate(names)
        },
        "confusion": cm.to_dict(),
        "tc": _tc_summary(totals.tc_confusion, totals, names) if tc else None,
        "mvc": video_consistency.to_dict() if video_consistency is not None else None,
        "protocol": {
            "streaming": _PROTOCOL[key],
            "resize": resize_desc,
            "miou": "mean IoU over classes present in the ground truth (miou_nanmean: over classes with "
                    "a nonzero union, as cityscapesscripts)",
            "mvc": "VSPW VC_perclip rules: windows of 8/16 consecutive annotated frames, range(N-k), videos "
                   "with <= 16 frames skipped, pooled nanmean" if mvc else None,
            "max_frames_per_sequence": max_frames,
            "max_sequences": max_sequences,
        },
        "speed": {
            "frames": frames,
            "inference_seconds": inf_total,
            "wall_seconds": wall_max,
            "fps_inference": frames / inf_total if inf_total > 0 else None,
            "fps_wall": frames / wall_max if wall_max > 0 else None,
            "processes": world_size,
            "device": str(device),
            "precision": predictor.precision,
            "note": "inference = upload, resize, model, upsampling and argmax per frame (CUDA synchronised), "
                    "per process; wall = the whole run incl. decoding, metrics and writing, all processes",
        },
        "per_sequence": [r.to_dict() for r in records],
        "model": model_info,
        "notes": notes,
    }
    if save_dir is not None:
        result["predictions_dir"] = str(save_dir)
        result["predictions_format"] = (
            "Cityscapes label ids, <city>/<city>_<seq>_<frame>_pred.png (cityscapesscripts)"
            if key == "cityscapes" else "train ids (uint8), <sequence>/<frame>.png"
        )
    return result


def _merge_distributed(
    cm: ConfusionMatrix,
    totals: _Totals,
    records: list[_SequenceRecord],
    stats: dict[str, Any],
    world_size: int,
) -> tuple[list[_SequenceRecord], list[dict[str, Any]]]:
    import torch.distributed as dist

    all_reduce_(cm)
    counts = torch.from_numpy(np.concatenate([
        totals.tc_confusion.reshape(-1),
        np.array([totals.flicker_changed, totals.flicker_pixels, totals.tc_pairs], dtype=np.int64),
    ]))
    if dist.get_backend() == "nccl":
        counts = counts.cuda()
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    counts_np = counts.cpu().numpy()
    n = totals.tc_confusion.size
    totals.tc_confusion[:] = counts_np[:n].reshape(totals.tc_confusion.shape)
    totals.flicker_changed, totals.flicker_pixels, totals.tc_pairs = (int(v) for v in counts_np[n:])
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, (records, stats, sorted(totals.flow_methods)))
    merged: list[_SequenceRecord] = []
    all_stats: list[dict[str, Any]] = []
    for recs, st, methods in gathered:
        merged.extend(recs)
        all_stats.append(st)
        totals.flow_methods.update(methods)
    return merged, all_stats
