"""A whole `vseg bench` run: every model x size x precision, model-only rows, comparisons, pipelines."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from vsegcli.models.base import Segmentor
from vsegcli.bench.pipeline import bench_pipeline, cleanup_io_cache
from vsegcli.bench.settings import Log, quiet
from vsegcli.bench.stepper import build_bench_model
from vsegcli.bench.temporal import compare_rows, temporal_jobs
from vsegcli.bench.timing import Job, TimingSettings, measure_group


@dataclass
class BenchConfig:
    """Everything one `vseg bench` run measures and how (build it with keywords).

    `checkpoint_models` maps architecture names to already loaded models (measured instead of
    random-weight ones); `mean`/`std` are the pixel normalisation (a checkpoint's own, else ImageNet).
    """

    models: Sequence[str]
    sizes: Sequence[tuple[int, int]]
    precisions: Sequence[str]
    device: torch.device
    frames: int
    warmup: int
    batch: int = 1
    protocol: str = "vseg"
    num_classes: int = 19
    compile: bool | str | None = False
    channels_last: bool = False
    repeat: int = 1
    e2e: bool = True
    model_only: bool = True
    paired: bool = False
    input: str | Path | None = None
    checkpoint_models: dict[str, Segmentor] = field(default_factory=dict)
    mean: Sequence[float] = tuple(IMAGENET_MEAN)
    std: Sequence[float] = tuple(IMAGENET_STD)
    hwaccel: str = "auto"
    frame_batch: int = 1
    fold_bn: bool = True

    def timing(self, size: tuple[int, int], precision: str) -> TimingSettings:
        """How the model-only rows at this size and precision are timed."""
        return TimingSettings(size=size, precision=precision, device=self.device, frames=self.frames,
                              warmup=self.warmup, batch=self.batch, protocol=self.protocol, compile=self.compile,
                              channels_last=self.channels_last, mean=self.mean, std=self.std)


class _Models:
    """Each named model built once per run: a given checkpoint model, else seeded random weights."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        self.given = dict(config.checkpoint_models or {})
        if config.fold_bn:  # checkpoint models get what build_bench_model gives the others
            from vsegcli.models.fold import fold_batchnorm

            for m in self.given.values():
                fold_batchnorm(m.eval())
        self.built: dict[str, Segmentor] = {}

    def __call__(self, name: str) -> Segmentor:
        if name not in self.built:
            self.built[name] = self.given[name] if name in self.given else self.fresh(name)
        return self.built[name]

    def fresh(self, name: str) -> Segmentor:
        return build_bench_model(name, self.config.num_classes, fold_bn=self.config.fold_bn)

    def for_pipeline(self, name: str) -> Segmentor:
        """A fresh, uncompiled model in default layout: what `vseg run` executes."""
        c = self.config
        return self.given[name] if name in self.given and not (c.compile or c.channels_last) else self.fresh(name)


def _model_only(config: BenchConfig, net: _Models, log: Log) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Model-only rows and temporal comparisons for every size x precision x model.

    Each per-frame model is one row; each temporal model gets streaming, naive and baseline rows,
    round-robin (a baseline already measured is reused) or, with `paired`, in one step-interleaved
    loop per round (the baseline is then measured again inside each group; the table keeps its
    first row)."""
    from vsegcli.models import get_architecture

    archs = {m: get_architecture(m) for m in config.models}
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    done: dict[tuple, dict[str, Any]] = {}
    for size in config.sizes:
        for precision in config.precisions:
            settings = config.timing(size, precision)
            for m in config.models:
                arch = archs[m]
                paired = config.paired and arch.temporal
                jobs: list[Job] = temporal_jobs(m, net) if arch.temporal else [("row", net(m), m, "session")]
                if not paired:
                    jobs = [j for j in jobs if (j[2], j[3], size, precision) not in done]
                group, step_ratios = measure_group(jobs, config.repeat, paired, settings, log)
                by_key = {(j[2], j[3]): group[j[0]] for j in jobs}
                for (name, mode), row in by_key.items():
                    key = (name, mode, size, precision)
                    if key not in done:
                        done[key] = row
                        rows.append(row)
                if arch.temporal:
                    # This group's own rows first (paired: the same loop), else the run's earlier ones.
                    picked = [by_key.get((n, mo)) or done.get((n, mo, size, precision)) if n else None
                              for n, mo in ((m, "session"), (m, "naive"), (arch.baseline, "session"))]
                    comparisons.append(compare_rows(m, arch.baseline, *picked, step_ratios if paired else None))
    return rows, comparisons


def _pipelines(config: BenchConfig, net: _Models, log: Log) -> list[dict[str, Any]]:
    """The end-to-end pipeline per size x precision x model (decode/encode timed once per size)."""
    pipelines: list[dict[str, Any]] = []
    cache: dict[Any, Any] = {}
    try:
        for size in config.sizes:
            for precision in config.precisions:
                for m in config.models:
                    pipelines.append(bench_pipeline(
                        net.for_pipeline(m), size, precision, config.device, input=config.input,
                        frames=config.frames, warmup=config.warmup, mean=config.mean, std=config.std,
                        io_cache=cache, log=log, repeat=config.repeat, hwaccel=config.hwaccel,
                        frame_batch=config.frame_batch,
                    ))
    finally:
        cleanup_io_cache(cache)
    return pipelines


def run_benchmarks(config: BenchConfig, log: Log = quiet) -> dict[str, Any]:
    """Everything `vseg bench` measures, as one JSON-ready dict (without machine/command fields).

    For every size x precision: each per-frame model; each temporal model's streaming, naive and
    baseline rows. Then, unless `config.e2e` is off, the end-to-end pipeline per model.
    `config.model_only=False` skips the model-only part.
    """
    net = _Models(config)
    rows, comparisons = _model_only(config, net, log) if config.model_only else ([], [])
    pipelines = _pipelines(config, net, log) if config.e2e else []
    return {"model_only": rows, "temporal": comparisons, "pipeline": pipelines}
