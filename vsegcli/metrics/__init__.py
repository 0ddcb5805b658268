"""Segmentation metrics: confusion-matrix scores (mIoU, FWIoU, accuracy), label temporal
consistency on any video (flow-warped TC, flicker) and VSPW video consistency (mVC_k).

Units: `ConfusionMatrix` scores are fractions in [0, 1]; TC and mVC are percent, as the papers
print them; flicker rates and class shares are fractions.
"""
from __future__ import annotations

from vsegcli.metrics.confusion import ConfusionMatrix, all_reduce_, all_reduce_sum
from vsegcli.metrics.temporal_consistency import (
    TemporalConsistency,
    TemporalConsistencyResult,
    temporal_consistency,
)
from vsegcli.metrics.video_consistency import OFFICIAL_SKIP_THRESHOLD, VideoConsistency

__all__ = [
    "ConfusionMatrix",
    "all_reduce_",
    "all_reduce_sum",
    "TemporalConsistency",
    "TemporalConsistencyResult",
    "temporal_consistency",
    "VideoConsistency",
    "OFFICIAL_SKIP_THRESHOLD",
]
