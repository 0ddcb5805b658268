"""Validation during training: the val split scored by `vsegcli.evaluate`, the same streaming
sessions and protocol as `vseg eval`."""
from __future__ import annotations

import time
import warnings
from typing import Any, Sequence

import torch
from torch import nn

from vsegcli.distributed import Dist
from vsegcli.train.config import TrainConfig
from vsegcli.train.optim import set_train_mode


def validate(model: nn.Module, cfg: TrainConfig, device: torch.device, d: Dist,
             norm: tuple[Sequence[float], Sequence[float]]) -> dict[str, Any]:
    """Score the model on the val split with `vsegcli.evaluate` — the papers' protocol through the
    streaming inference path (`vseg eval` / `vseg run` numbers): mIoU, plus mVC_8/16 where the
    dataset has ground truth on consecutive frames (CamVid, VSPW). Sequences are sharded over ranks.
    `norm`: the RGB mean/std the run trains with."""
    from vsegcli.runtime import Predictor
    from vsegcli.evaluate import evaluate
    from vsegcli.data.labels import get_label_set
    from vsegcli.runtime.render import Palette

    ls = get_label_set(cfg.dataset)
    was_training = model.training
    predictor = Predictor(model, list(norm[0]), list(norm[1]), Palette.from_list([list(c) for c in ls.palette]),
                          device, cfg.precision if device.type == "cuda" else "fp32", size=cfg.base_short,
                          channels_last=False)  # the training model's layout stays as it is
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dataset notes were shown when the run started
            res = evaluate(predictor, cfg.dataset, cfg.data_root, "val", rank=d.rank, world_size=d.world)
    finally:
        set_train_mode(model, cfg.freeze, was_training)
    mvc = res.get("mvc") or {}
    return {
        "miou": float(res["miou"]),
        "fwiou": res.get("fwiou"),
        "pixel_accuracy": res.get("pixel_accuracy"),
        "mvc8": mvc.get("mVC8"),
        "mvc16": mvc.get("mVC16"),
        "frames": res.get("frames_scored"),
        "seconds": round(time.perf_counter() - t0, 3),
        "iou": {name: c.get("iou") for name, c in (res.get("per_class") or {}).items()},
    }
