"""The sections of `evaluate()`'s result dict that are more than a copied number: TC from the
summed confusion, per-class scores, the protocol in words, speed."""
from __future__ import annotations

from typing import Any

import numpy as np

from vsegcli.evaluate.merge import Totals
from vsegcli.evaluate.protocols import MIOU_DEFINITION, MIOU_WORDS, PROTOCOL, TC_FLOW_SIZE
from vsegcli.io.jsonio import finite

__all__ = ["per_class_section", "protocol_section", "speed_section", "tc_section"]


def tc_section(totals: Totals, class_names: list[str]) -> dict[str, Any]:
    """TC and flicker over all sequences' pairs (pairs never cross sequences)."""
    # Same definition as metrics.TemporalConsistency.result, on the summed integer confusion.
    conf = totals.tc_confusion
    diag = np.diag(conf).astype(np.float64)
    union = conf.sum(axis=1) + conf.sum(axis=0) - diag
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, diag / np.where(union > 0, union, 1), np.nan)
    flow_total = conf.sum()
    return {
        "units": {"tc": "percent", "flicker": "fraction"},
        "tc": float(np.nanmean(iou) * 100) if (union > 0).any() else None,
        "per_class_tc": {n: finite(v * 100) for n, v in zip(class_names, iou)},
        "pairs": totals.tc_pairs,
        "flicker_rate": totals.flicker_changed / totals.flicker_pixels if totals.flicker_pixels else None,
        "flow_flicker_rate": float(1 - diag.sum() / flow_total) if flow_total else None,
        "flow_method": ", ".join(sorted(totals.flow_methods)) or None,
        "flow_size": TC_FLOW_SIZE,
        "note": "labels of frame t+1 warped onto t with OpenCV DIS flow (nearest); ETC's TC uses FlowNet2 "
                "at full resolution, so compare TC between vseg runs, not with published numbers",
    }


def per_class_section(summary: dict[str, Any], class_names: list[str]) -> dict[str, dict[str, Any]]:
    """class name -> IoU, accuracy and pixel counts, from `ConfusionMatrix.summary`."""
    return {
        n: {"iou": summary["iou"][c], "accuracy": summary["class_accuracy"][c],
            "gt_pixels": summary["gt_pixels"][c], "pred_pixels": summary["pred_pixels"][c]}
        for c, n in enumerate(class_names)
    }


def protocol_section(
    dataset: str, resize: str, mvc: bool, max_frames: int | None, max_sequences: int | None
) -> dict[str, Any]:
    """The protocol in words, so a result file says how its numbers were made."""
    return {
        "streaming": PROTOCOL[dataset],
        "resize": resize,
        "miou": MIOU_WORDS[MIOU_DEFINITION[dataset]],
        "mvc": "VSPW VC_perclip rules: windows of 8/16 consecutive annotated frames, range(N-k), videos "
               "with <= 16 frames skipped, pooled nanmean" if mvc else None,
        "max_frames_per_sequence": max_frames,
        "max_sequences": max_sequences,
    }


def speed_section(rank_stats: list[dict[str, Any]], world_size: int, device: Any, precision: str) -> dict[str, Any]:
    """Frames per second of inference alone (summed over processes) and of the whole run."""
    frames = sum(s["frames"] for s in rank_stats)
    inf_total = sum(s["inference_seconds"] for s in rank_stats)
    wall_max = max(s["wall_seconds"] for s in rank_stats)
    return {
        "frames": frames,
        "inference_seconds": inf_total,
        "wall_seconds": wall_max,
        "fps_inference": frames / inf_total if inf_total > 0 else None,
        "fps_wall": frames / wall_max if wall_max > 0 else None,
        "processes": world_size,
        "device": str(device),
        "precision": precision,
        "note": "inference = upload, resize, model, upsampling and argmax per frame (CUDA synchronised), "
                "per process; wall = the whole run incl. decoding, metrics and writing, all processes",
    }
