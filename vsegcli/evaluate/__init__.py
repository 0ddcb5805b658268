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
* Metrics: one integer confusion matrix over the dataset's classes (per-class IoU, FWIoU, pixel
  accuracy; the headline mIoU by the dataset's official definition, `protocols.MIOU_DEFINITION`:
  Cityscapes/CamVid over classes with a non-empty union, VSPW over classes present in the GT);
  label values outside the label set are counted and warned about (`label_values_outside_set`); `tc=True`: flow-warped temporal
  consistency over each sequence's consecutive predictions (pairs never cross sequences);
  mVC8/mVC16 (VSPW's official rules) on VSPW and CamVid; fps of inference alone and of the whole run.

Distributed (torchrun): sequences are split between ranks balanced by frame count; confusion matrices (scores and
TC) and flicker counts are integer sums (all_reduce); per-sequence records, mVC accumulators
included, are gathered and merged in the global sequence order, so every number but the timings
is bit-identical to a single-process run.

Modules: `protocols` (what each dataset streams and scores, test-time size, saved predictions,
`load_for_dataset`), `loop` (`evaluate`), `merge` (per-process records and the torchrun merge),
`summary` (result sections).
"""
from __future__ import annotations

from vsegcli.distributed import init_distributed  # re-exported: `vseg eval` joins torchrun's group
from vsegcli.evaluate.loop import evaluate
from vsegcli.evaluate.protocols import load_for_dataset, short_side_rule, vspw_resize_rule

__all__ = [
    "evaluate",
    "load_for_dataset",
    "init_distributed",
    "vspw_resize_rule",
    "short_side_rule",
]
