"""`evaluate()`: stream a dataset's sequences through a model and score them.

The steps, in order: check the request (`_check_request`), list the sequences (`_list_sequences`),
choose the test-time size (`protocols.resize_for_dataset`), run this rank's share of sequences one
`_SequenceRun` each (decode ahead on a small pool, one fresh session, score annotated frames,
track TC / mVC, save predictions), merge across ranks (`merge`), and assemble the result.
"""
from __future__ import annotations

import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import cv2
import numpy as np
import torch

from vsegcli.data.datasets import Sequence, check_dataset, dataset_label_set, list_sequences, read_image, read_label_checked
from vsegcli.data.labels import LabelSet
from vsegcli.errors import VsegError
from vsegcli.evaluate.merge import SequenceRecord, Totals, merge_across_ranks, pooled_video_consistency, shard_by_frames
from vsegcli.evaluate.protocols import (
    MVC_WINDOWS,
    TC_FLOW_SIZE,
    check_save_dir,
    MIOU_DEFINITION,
    frames_to_stream,
    headline_miou,
    prediction_path,
    predictions_format,
    resize_for_dataset,
)
from vsegcli.evaluate.summary import per_class_section, protocol_section, speed_section, tc_section
from vsegcli.io.fsutil import atomic_path
from vsegcli.io.jsonio import finite
from vsegcli.metrics import ConfusionMatrix, TemporalConsistency, VideoConsistency
from vsegcli.metrics.shots import mark_shot_cuts
from vsegcli.runtime import Predictor, ResizeRule

if TYPE_CHECKING:
    from vsegcli.api import VideoSegmenter

__all__ = ["evaluate"]

PREFETCH = 4  # frames decoded ahead of the model
MAX_NAMED_FILES = 5  # label files named one by one in warnings (all are counted)


def evaluate(
    segmenter_or_predictor: VideoSegmenter | Predictor,
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
    base, model_info = _predictor_and_info(segmenter_or_predictor)
    sequences, notes = _list_sequences(key, root, split, max_sequences)  # the data first: its absence says what to get
    mvc = _check_request(base, key, label_set, mvc, rank, world_size)
    rule, resize_desc = resize_for_dataset(key, base, size, resize_rule)
    predictor = base.with_resize_rule(rule) if rule is not None else base
    save_dir = check_save_dir(Path(save_predictions), root) if save_predictions is not None else None

    # ---- this rank's share of the sequences
    counts = [frames_to_stream(seq, tc, max_frames) for seq in sequences]
    plan = [(i, sequences[i], counts[i]) for i in shard_by_frames(counts, world_size)[rank]]
    total_frames = sum(n for _, _, n in plan)
    options = _RunOptions(
        dataset=key, label_set=label_set, tc=tc, mvc=mvc, save_dir=save_dir,
        to_raw=label_set.train_to_raw_lut() if key == "cityscapes" else None,
    )
    k = label_set.num_classes
    cm = ConfusionMatrix(k, label_set.ignore_index)
    totals = Totals(np.zeros((k, k), dtype=np.int64))
    records: list[SequenceRecord] = []
    done = 0

    def frame_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total_frames)

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="vseg-eval-io") as pool:
        for index, seq, count in plan:
            run = _SequenceRun(predictor, seq, options, totals, pool)
            frames = _prefetch(pool, seq, count, key)
            # Shot cuts (2 frames ahead): pairs across one leave TC out, temporal sessions reset.
            marked = (mark_shot_cuts(frames, frame_of=lambda it: it[1]) if run.find_cuts
                      else ((it, False) for it in frames))
            for (i, image, gt, outside), new_shot in marked:
                if outside:
                    run.outside_label_set[str(seq.labels[i])] = outside
                run.frame(i, image, gt, new_shot)
                frame_done()
            records.append(run.finish(index, count))
            cm.merge(run.cm)
    rank_stats = [{"wall_seconds": time.perf_counter() - t_wall,
                   "inference_seconds": sum(r.inference_seconds for r in records), "frames": done}]

    # ---- merge across ranks: integer sums, then per-sequence records in global order
    if world_size > 1:
        records, rank_stats = merge_across_ranks(cm, totals, records, rank_stats[0], world_size)
    records.sort(key=lambda r: r.index)
    if cm.total == 0:
        raise VsegError(f"no annotated frame was scored in {key}/{split}; raise --max-frames "
                        "(Cityscapes' annotated frame is the 20th of its snippet)")

    outside, outside_notes = _outside_label_set(records, key)
    names = list(label_set.classes)
    summary = cm.summary(names)
    result: dict[str, Any] = {
        "dataset": key,
        "split": split,
        "data_root": str(root),
        "label_set": label_set.name,
        "num_classes": k,
        "sequences": len(sequences),
        "frames_streamed": sum(r.streamed for r in records),
        "frames_scored": sum(r.scored for r in records),
        "miou": finite(headline_miou(key, cm)),  # the dataset's official definition
        "miou_definition": MIOU_DEFINITION[key],
        "fwiou": summary["fwiou"],
        "pixel_accuracy": summary["pixel_accuracy"],
        "mean_class_accuracy": summary["mean_class_accuracy"],
        "miou_nanmean": summary["miou_nanmean"],
        "miou_gt_present": summary["miou"],
        "per_class": per_class_section(summary, names),
        "confusion": cm.to_dict(),
        "tc": ({**tc_section(totals, names),
                "pairs_excluded": sum(len(r.shot_cuts or []) for r in records),
                "pairs_excluded_note": "pairs across a shot cut (metrics.shots) are not counted"} if tc else None),
        "mvc": pooled_video_consistency(records, MVC_WINDOWS).to_dict() if mvc else None,
        "protocol": protocol_section(key, resize_desc, mvc, max_frames, max_sequences),
        "speed": speed_section(rank_stats, world_size, predictor.device, predictor.precision),
        "per_sequence": [r.to_dict() for r in records],
        "model": model_info,
        "label_values_outside_set": outside,
        "notes": notes + outside_notes,
    }
    if save_dir is not None:
        result["predictions_dir"] = str(save_dir)
        result["predictions_format"] = predictions_format(key)
    return result


# --------------------------------------------------------------------------------------------
# Steps before the loop


def _predictor_and_info(model: VideoSegmenter | Predictor) -> tuple[Predictor, dict[str, Any] | None]:
    """The Predictor to stream through, and the model description when a VideoSegmenter was given."""
    if isinstance(model, Predictor):
        return model, None
    predictor = getattr(model, "predictor", None)
    if not isinstance(predictor, Predictor):
        raise TypeError("evaluate() needs an api.VideoSegmenter (vsegcli.api.load) or a vsegcli.runtime.Predictor")
    info = getattr(model, "info", None)
    return predictor, (info.to_dict() if hasattr(info, "to_dict") else None)


def _check_request(
    predictor: Predictor, dataset: str, label_set: LabelSet, mvc: bool | None, rank: int, world_size: int
) -> bool:
    """Raise on a request that cannot be honoured; returns whether mVC is measured."""
    k = label_set.num_classes
    if predictor.num_classes != k:
        raise VsegError(
            f"the model predicts {predictor.num_classes} classes but {dataset} has {k} ({label_set.name} label set); "
            f"use a checkpoint trained on {dataset}"
        )
    if mvc is None:
        mvc = dataset in ("vspw", "camvid")
    if mvc and dataset == "cityscapes":
        raise VsegError("mVC needs ground truth on consecutive frames; Cityscapes annotates one frame per snippet: drop --mvc")
    if world_size > 1:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise VsegError("world_size > 1 needs an initialised torch.distributed group (start with torchrun)")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
    return mvc


def _list_sequences(dataset: str, root: Path, split: str, max_sequences: int | None) -> tuple[list[Sequence], list[str]]:
    """The split's sequences (the first `max_sequences`), and the dataset reader's warnings as notes."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sequences = list_sequences(dataset, root, split)
    notes = [str(w.message) for w in caught]
    for note in notes:  # still a warning for library users; also recorded in the result
        warnings.warn(note, stacklevel=3)
    if max_sequences is not None:
        sequences = sequences[:max_sequences]
    if not any(seq.labels for seq in sequences):
        raise VsegError(f"{root}: the {split} split of {dataset} has no annotations to score (test split?); use --split val")
    return sequences, notes


def _outside_label_set(records: list[SequenceRecord], dataset: str) -> tuple[dict[str, Any], list[str]]:
    """Label values outside the dataset's label set (e.g. 200 in a CamVid annotation): scored as
    ignored, never silently: counted in the result and warned about, naming the files."""
    files = {f: v for r in records for f, v in r.outside_label_set.items()}
    values: dict[int, int] = {}
    for counts in files.values():
        for value, n in counts.items():
            values[value] = values.get(value, 0) + n
    pixels = sum(values.values())
    section = {
        "pixels": pixels, "files": len(files),
        "values": {str(v): values[v] for v in sorted(values)},
        "per_file": {f: {str(v): n for v, n in sorted(c.items())} for f, c in list(files.items())[:MAX_NAMED_FILES * 20]},
    }
    notes = [f"{f}: {sum(c.values())} pixels with values outside the {dataset} label set "
             f"({', '.join(str(v) for v in sorted(c))}); scored as ignored"
             for f, c in list(files.items())[:MAX_NAMED_FILES]]
    if len(files) > MAX_NAMED_FILES:
        notes.append(f"... and {len(files) - MAX_NAMED_FILES} more label files with values outside the {dataset} "
                     f"label set: {pixels} pixels in all, values {', '.join(map(str, sorted(values)))} "
                     "(label_values_outside_set in the JSON)")
    for note in notes:
        warnings.warn(note, stacklevel=3)
    return section, notes


# --------------------------------------------------------------------------------------------
# One sequence


@dataclass(frozen=True)
class _RunOptions:
    dataset: str
    label_set: LabelSet
    tc: bool
    mvc: bool
    save_dir: Path | None
    to_raw: np.ndarray | None  # train id -> raw id, for saved Cityscapes predictions


def _prefetch(
    pool: ThreadPoolExecutor, seq: Sequence, count: int, dataset: str,
) -> Iterator[tuple[int, np.ndarray, np.ndarray | None, dict[int, int]]]:
    """(position, RGB frame, train-id labels or None, {raw value: pixels} outside the label set)
    for the first `count` frames, decoded ahead."""

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None, dict[int, int]]:
        image = read_image(seq.frames[i])
        gt, outside = read_label_checked(seq.labels[i], dataset) if i in seq.labels else (None, {})
        return image, gt, outside

    pending: deque[Future] = deque()
    nxt = 0
    for i in range(count):
        while nxt < count and len(pending) < PREFETCH:
            pending.append(pool.submit(load, nxt))
            nxt += 1
        image, gt, outside = pending.popleft().result()
        yield i, image, gt, outside


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:  # an interrupted run leaves no complete-looking file
        if not cv2.imwrite(str(tmp), image):
            raise VsegError(f"could not write {path}: disk full or no permission?")


class _SequenceRun:
    """One sequence through a fresh session: its scores, and its share of TC / flicker / mVC."""

    def __init__(
        self, predictor: Predictor, seq: Sequence, options: _RunOptions, totals: Totals, pool: ThreadPoolExecutor
    ) -> None:
        k, ignore = options.label_set.num_classes, options.label_set.ignore_index
        self.predictor, self.seq, self.options, self.totals, self.pool = predictor, seq, options, totals, pool
        self.session = predictor.new_session()
        self.cm = ConfusionMatrix(k, ignore)
        self.tc_acc = TemporalConsistency(k, flow_size=TC_FLOW_SIZE, keep_heatmap=False) if options.tc else None
        self.vc = VideoConsistency(MVC_WINDOWS) if options.mvc else None
        self.need_host = options.tc or options.mvc or options.save_dir is not None
        self.reset_at_cuts = bool(getattr(predictor, "shot_reset", True) and predictor.model.temporal)
        self.find_cuts = options.tc or self.reset_at_cuts
        self.shot_cuts: list[int] = []
        self.writes: list[Future] = []
        self.prev: np.ndarray | None = None
        self.frame_size: tuple[int, int] | None = None
        self.scored = 0
        self.inference_seconds = 0.0
        self.outside_label_set: dict[str, dict[int, int]] = {}

    def frame(self, i: int, image: np.ndarray, gt: np.ndarray | None, new_shot: bool = False) -> None:
        self._check_frame_size(i, image)
        if new_shot:
            self.shot_cuts.append(i)
            if self.reset_at_cuts:  # attending to another shot's frames is wrong
                self.session.reset()
        pred = self._infer(image)
        pred_np = pred.cpu().numpy() if self.need_host else None
        if gt is not None:
            self._score(i, pred, pred_np, gt)
        if self.tc_acc is not None:
            assert pred_np is not None
            self._track_consistency(image, pred_np, new_shot)

    def _check_frame_size(self, i: int, image: np.ndarray) -> None:
        hw = (int(image.shape[0]), int(image.shape[1]))
        if self.frame_size is None:
            self.frame_size = hw
        elif hw != self.frame_size:
            raise VsegError(f"{self.seq.frames[i]}: frame size {hw} differs from {self.frame_size} earlier in "
                            f"{self.seq.name}; a video's frames must all have one size")

    def _infer(self, image: np.ndarray) -> torch.Tensor:
        """Labels on the device; the time covers upload to argmax (CUDA synchronised)."""
        predictor = self.predictor
        t0 = time.perf_counter()
        pred = predictor.step(self.session, predictor.upload(image))
        if predictor.device.type == "cuda":
            torch.cuda.synchronize(predictor.device)  # honest per-frame inference time
        self.inference_seconds += time.perf_counter() - t0
        return pred

    def _score(self, i: int, pred: torch.Tensor, pred_np: np.ndarray | None, gt: np.ndarray) -> None:
        if gt.shape != self.frame_size:
            raise VsegError(f"{self.seq.labels[i]}: label size {gt.shape} differs from its image "
                            f"{self.frame_size}; labels must match their frames pixel for pixel")
        self.cm.update(pred, torch.from_numpy(gt).to(pred.device))
        self.scored += 1
        if self.vc is not None:
            self.vc.update(pred_np, gt)
        save_dir = self.options.save_dir
        if save_dir is not None:
            assert pred_np is not None
            to_raw = self.options.to_raw
            out = to_raw[pred_np] if to_raw is not None else pred_np
            path = prediction_path(save_dir, self.options.dataset, self.seq, i)
            self.writes.append(self.pool.submit(_write_png, path, out))

    def _track_consistency(self, image: np.ndarray, pred_np: np.ndarray, new_shot: bool = False) -> None:
        assert self.tc_acc is not None
        self.tc_acc.update(image, pred_np, new_shot=new_shot)
        if self.prev is not None and not new_shot:  # flow-free flicker at full resolution
            self.totals.flicker_changed += int(np.count_nonzero(self.prev != pred_np))
            self.totals.flicker_pixels += pred_np.size
        self.prev = pred_np

    def finish(self, index: int, streamed: int) -> SequenceRecord:
        """Wait for the saved predictions, add TC counts to the totals, and describe the sequence."""
        for w in self.writes:
            w.result()  # surface write errors
        seq_tc = None
        if self.tc_acc is not None and self.tc_acc.num_frames:
            res = self.tc_acc.result()
            assert res.tc_confusion is not None
            self.totals.tc_confusion += res.tc_confusion
            self.totals.tc_pairs += res.num_pairs
            if res.num_pairs:
                self.totals.flow_methods.add(res.flow_method)
            seq_tc = finite(res.tc)
        if self.vc is not None:
            self.vc.end_video()
        fs = self.frame_size or (0, 0)
        return SequenceRecord(
            index=index, name=self.seq.name, streamed=streamed, scored=self.scored, frame_size=fs,
            input_size=tuple(self.predictor.input_size(*fs)) if self.frame_size else (0, 0),  # type: ignore[arg-type]
            miou=finite(headline_miou(self.options.dataset, self.cm)), pixel_accuracy=finite(self.cm.pixel_accuracy),
            tc=seq_tc, vc=self.vc, inference_seconds=self.inference_seconds,
            shot_cuts=list(self.shot_cuts) if self.find_cuts else None,
            outside_label_set=self.outside_label_set,
        )
