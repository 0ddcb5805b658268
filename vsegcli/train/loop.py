"""The training loop: `train(cfg)` sets a run up, steps it, validates and checkpoints, and
returns a summary. Each stage is a named step of `TrainingRun` (package docstring for the
protocol: data, loss, optimisation, validation, resume, DDP)."""
from __future__ import annotations

import contextlib
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from vsegcli.distributed import (
    Dist,
    all_gather_object,
    all_reduce_mean,
    barrier,
    finish,
    init_distributed,
    parameter_checksum,
    sync_buffers,
)
from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write
from vsegcli.io.jsonio import finite
from vsegcli.models.base import Segmentor
from vsegcli.runtime import channel_stat, normalise_pixels
from vsegcli.runtime.progress import FrameProgress
from vsegcli.train.clips import AugmentParams, clip_spec_for
from vsegcli.train.config import TrainConfig, model_options, resolve_config
from vsegcli.train.dataset import ClipDataset, RunBatches, _data_api, _worker_init, default_workers
from vsegcli.train.losses import SegLoss, class_weights_for, compute_loss
from vsegcli.train.optim import build_optimizer, freeze_modules, lr_factor, set_train_mode
from vsegcli.train.state import (
    STATE_VERSION,
    RunLog,
    config_diff,
    load_state,
    rng_state,
    seed_everything,
    set_rng_state,
)
from vsegcli.train.validation import validate
from vsegcli.train.weights import initialise, input_norm


class TrainForward(nn.Module):
    """A model's training forward (`Segmentor.forward_train`) as one module, so DDP can wrap it.

    frames (B, T, 3, H, W) normalised, target last -> {"logits", "aux", "frame_logits", "frame_weight"}."""

    def __init__(self, model: Segmentor) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> dict[str, Any]:
        return self.model.forward_train(frames)


def train(cfg: TrainConfig, note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns a summary dict. Rank 0 writes RUN_DIR."""
    from vsegcli.io.hostmem import configure_host_allocator

    configure_host_allocator()  # each iteration reuses the last one's freed host memory (no page faults)
    d = init_distributed(cfg.device)
    say = (note or (lambda m: print(m, file=sys.stderr, flush=True))) if (d.main and not cfg.quiet) else (lambda m: None)
    cfg, state = _resolve_run(cfg, d)
    run = TrainingRun(cfg, d, state, say)
    run.announce()
    run.loop()
    return run.finish()


def _resolve_run(cfg: TrainConfig, d: Dist) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The resolved config and, for --resume, the saved state it must agree with."""
    state: dict[str, Any] | None = None
    out = Path(cfg.out)
    if cfg.resume:
        state = load_state(out)
        cfg = resolve_config(cfg)
        changed = config_diff(state["config"], cfg)
        if changed:
            raise VsegError(f"--resume cannot change {', '.join(changed)}; use the run's options "
                            "(`vseg train --out RUN_DIR --resume` alone reuses them) or start a new --out")
        if state.get("world_size", 1) != d.world:
            raise VsegError(f"the run was trained on {state.get('world_size', 1)} process(es), this resume has "
                            f"{d.world}; resume with the same --nproc_per_node for identical results")
    else:
        cfg = resolve_config(cfg)
        if (out / "state.pt").exists():
            raise VsegError(f"{out} already holds a training run; add --resume to continue it or choose another --out")
    if cfg.precision == "fp16" and d.device.type != "cuda":
        raise VsegError("fp16 training needs a GPU; on CPU use --precision fp32 or bf16")
    assert cfg.crop is not None and cfg.iters is not None and cfg.lr is not None
    return cfg, state


def _progress(enabled: bool, total: int, start: int) -> FrameProgress:
    """Iterations / loss / lr on stderr while training, when it is a terminal."""
    from rich.console import Console

    console = Console(stderr=True)
    progress = FrameProgress(enabled and console.is_terminal, console, unit="it/s")
    progress.start("train", total, completed=start)
    return progress


def _log_record(it: int, sums: dict[str, torch.Tensor], n: int, lrs: dict[str, float], d: Dist,
                interval_s: float, data_wait: float, train_s: float, start: int, iters: int) -> dict[str, Any]:
    """One 'train' record: mean loss parts over the interval (and over ranks), the step's learning
    rates, speed (validation / checkpoint time excluded) and ETA."""
    names = sorted(sums)
    # The mean over ranks, what the gradient saw (all_reduce_mean moves it to the group's device).
    vec = torch.stack([torch.as_tensor(sums[k]).to("cpu", torch.float64).reshape(()) for k in names]) / max(1, n)
    vec = all_reduce_mean(vec, d)
    rate = (it - start) / max(train_s, 1e-9)
    rec: dict[str, Any] = {"event": "train", "iter": it}
    for k, v in zip(names, vec.tolist()):
        rec["loss" if k == "loss" else f"loss_{k}"] = v
    rec["lr"] = lrs.get("backbone", next(iter(lrs.values())))
    rec["lr_head"] = lrs.get("head", rec["lr"])
    rec.update({"it_s": round(n / max(interval_s, 1e-9), 4), "data_wait_s": round(data_wait, 4),
                "elapsed_s": round(train_s, 3), "eta_s": round((iters - it) / max(rate, 1e-9), 1)})
    return rec


class TrainingRun:
    """One run, set up: data, model (initialised or resumed), optimiser, schedule, log."""

    def __init__(self, cfg: TrainConfig, d: Dist, state: dict[str, Any] | None, say: Callable[[str], None]) -> None:
        from vsegcli.data.labels import get_label_set

        self.cfg, self.d, self.device, self.say = cfg, d, d.device, say
        self.out = Path(cfg.out)
        self.resumed = state is not None
        data = _data_api()
        self.label_set = get_label_set(cfg.dataset)
        train_seqs = data.list_sequences(cfg.dataset, cfg.data_root, "train")
        if not train_seqs:
            raise VsegError(f"no training sequences for {cfg.dataset} under {cfg.data_root}; check --data-root")
        val_seqs = data.list_sequences(cfg.dataset, cfg.data_root, "val") if cfg.val_every else []
        if cfg.val_every and not val_seqs:
            raise VsegError(f"no val split for {cfg.dataset} under {cfg.data_root}; add it or pass --val-every 0")
        self._build_model(state)
        # The normalisation the initial weights expect; the checkpoints record it.
        self.norm = input_norm(self.provenance_init)
        self.mean, self.std = channel_stat(self.norm[0], self.device), channel_stat(self.norm[1], self.device)
        if d.main:  # only once data, model and options check out: a failed start leaves no empty run folder
            self.out.mkdir(parents=True, exist_ok=True)
        barrier(d)
        self.model.to(self.device)
        self.spec = clip_spec_for(self.model, cfg.dataset, cfg.max_gap)
        weights_np = class_weights_for(cfg, train_seqs, self.label_set.num_classes, self.out, d, say)
        self.criterion = SegLoss(torch.tensor(weights_np, dtype=torch.float32, device=self.device)
                                 if weights_np is not None else None, ohem=cfg.ohem)
        self.net = self._wrap_for_ddp(TrainForward(self.model))
        self._build_optimiser(state)
        self.run_log = RunLog(self.out / "log.jsonl", cfg.json_log, d.main)
        if state is not None:
            self.run_log.truncate_after(self.start)
        self.workers = cfg.workers if cfg.workers is not None else default_workers(d.world)
        self.stop = min(cfg.iters, cfg.stop_after) if cfg.stop_after else cfg.iters
        self._build_loader(train_seqs)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.command = cfg.command or "vseg train"

    # -- set-up steps ----------------------------------------------------------------------------

    def _build_model(self, state: dict[str, Any] | None) -> None:
        from vsegcli.models import build_model

        cfg = self.cfg
        # Same initial weights everywhere (DDP also broadcasts rank 0's); then a per-rank stream for
        # dropout / drop-path.
        seed_everything(cfg.seed)
        self.model: Segmentor = build_model(cfg.arch, self.label_set.num_classes, **model_options(cfg))
        if state is None:
            self.provenance_init = initialise(self.model, cfg, self.say)
        else:
            self.model.load_state_dict(state["model"], strict=True)
            self.provenance_init = dict(state.get("provenance_init", {}))
        self.frozen = freeze_modules(self.model, cfg.freeze)
        set_train_mode(self.model, cfg.freeze, True)

    def _wrap_for_ddp(self, net: nn.Module) -> nn.Module:
        if not self.d.enabled:
            return net
        # Depthwise-conv grads on CPU come back with permuted strides of a size-1 dim: a copy into
        # the bucket, not a problem worth a warning per process.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        cuda = self.device.type == "cuda"
        if cuda:  # CPU gloo has no SyncBatchNorm kernel
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        return nn.parallel.DistributedDataParallel(net, device_ids=[self.device.index] if cuda else None,
                                                   gradient_as_bucket_view=True)

    def _build_optimiser(self, state: dict[str, Any] | None) -> None:
        cfg = self.cfg
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda it: lr_factor(it, cfg.iters, cfg.power, cfg.warmup))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.precision == "fp16")
        self.start, self.best, self.best_iter = 0, None, None
        if state is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.start, self.best, self.best_iter = int(state["iteration"]), state.get("best_miou"), state.get("best_iter")
            set_rng_state(state["rng"][self.d.rank], self.device)
        else:
            seed_everything(cfg.seed * 1000 + self.d.rank)

    def _build_loader(self, train_seqs: list[Any]) -> None:
        cfg, d = self.cfg, self.d
        aug = AugmentParams(cfg.crop, cfg.base_short, cfg.scale_range, cfg.flip, cfg.photometric,
                            pad_rgb=tuple(self.norm[0]))  # pads normalise to 0
        self.dataset = ClipDataset(train_seqs, cfg.dataset, self.spec, aug, cfg.seed,
                                   frame_labels=self.model.trains_on_clip_labels,
                                   synthetic_motion=cfg.synthetic_motion)
        self.loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=RunBatches(cfg.batch, cfg.accum, d.world, d.rank, self.start, self.stop),
            num_workers=self.workers, pin_memory=self.device.type == "cuda", worker_init_fn=_worker_init,
            generator=torch.Generator().manual_seed(cfg.seed),  # keeps the global RNG untouched
            persistent_workers=False, prefetch_factor=4 if self.workers else None,
        )

    def announce(self) -> None:
        """The run's first log record and its one-line description."""
        cfg, d, spec = self.cfg, self.d, self.spec
        if not d.main:
            return
        self.run_log.write({"event": "resume" if self.resumed else "start", "iter": self.start,
                            "world_size": d.world, "device": str(self.device), "workers": self.workers,
                            "clip_frames": spec.length, "effective_batch": cfg.batch * cfg.accum * d.world,
                            "train_targets": len(self.dataset.targets), "trainable_parameters": self.frozen,
                            "config": cfg.to_dict(), "init": self.provenance_init})
        if cfg.freeze:
            self.say(f"frozen: {', '.join(cfg.freeze)}; {self.frozen:,} of "
                     f"{sum(p.numel() for p in self.model.parameters()):,} parameters train")
        self.say(f"{cfg.arch} on {cfg.dataset} ({len(self.dataset.targets)} labelled targets, clips of {spec.length} "
                 f"frame{'s' if spec.length > 1 else ''}): {cfg.iters} iterations x batch "
                 f"{cfg.batch * cfg.accum * d.world} on {self.device}{f' x {d.world} processes' if d.enabled else ''}, "
                 f"{cfg.optimizer} lr {cfg.lr:g}{f', resuming at {self.start}' if self.start else ''}")

    # -- the loop --------------------------------------------------------------------------------

    def step(self, batches: Any) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        """One optimiser step over `accum` micro-batches: the mean loss parts and the learning
        rates the step used. Sets `updating` while the parameters change (not interruptible)."""
        cfg, d, device = self.cfg, self.d, self.device
        self.optimizer.zero_grad(set_to_none=True)
        step_parts: dict[str, torch.Tensor] = {}
        for micro in range(cfg.accum):
            t_wait = time.perf_counter()
            frames, labels = next(batches)
            self.data_wait += time.perf_counter() - t_wait
            # (B, T, h, w, 3) uint8 -> (B, T, 3, h, w) float, normalised as the initial weights expect
            x = normalise_pixels(frames.to(device, non_blocking=True).permute(0, 1, 4, 2, 3), self.mean, self.std)
            y = labels.to(device, non_blocking=True).long()
            # Gradients are all-reduced on the last micro-batch only.
            sync = micro == cfg.accum - 1 or not d.enabled
            with self.net.no_sync() if not sync else contextlib.nullcontext():
                with torch.autocast(device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
                    outputs = self.net(x)
                parts = compute_loss(outputs, y, self.criterion)
                self.scaler.scale(parts["loss"] / cfg.accum).backward()
            for k, v in parts.items():
                step_parts[k] = step_parts.get(k, 0) + v.detach() / cfg.accum
        lrs = {g["name"]: g["lr"] for g in self.optimizer.param_groups}  # the rates this step used
        self.updating = True
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.it += 1
        self.updating = False
        return step_parts, lrs

    def log_interval(self, lrs: dict[str, float]) -> None:
        """Every `log_every` steps (and at the stop): one 'train' record and the progress line."""
        it = self.it
        if not (it % self.cfg.log_every == 0 or it == self.stop):
            self.progress.update(it)
            return
        rec = _log_record(it, self.sums, self.n_in_interval, lrs, self.d, time.perf_counter() - self.t_interval,
                          self.data_wait, time.perf_counter() - self.t_start - self.paused, self.start, self.cfg.iters)
        if not math.isfinite(rec["loss"]):
            raise VsegError(f"the loss became {rec['loss']} at iteration {it}; lower --lr, or train in "
                            "--precision fp32 / bf16")
        self.run_log.write(rec)
        self.progress.update(it, f"loss {rec['loss']:.4f}  lr {rec['lr']:.2e}")
        self.sums, self.n_in_interval, self.data_wait, self.t_interval = {}, 0, 0.0, time.perf_counter()

    def validate_and_save(self) -> None:
        """At `val_every` / `save_every` / the stop: validation (best.safetensors follows its mIoU),
        then last.safetensors + state.pt. Its time is not counted as training speed."""
        cfg, it = self.cfg, self.it
        do_val = bool(cfg.val_every) and (it % cfg.val_every == 0 or it == cfg.iters)
        if not (do_val or it % cfg.save_every == 0 or it == self.stop):
            return
        t_pause = time.perf_counter()
        sync_buffers(self.model, self.d)
        val, best_now = None, False
        if do_val:
            self.progress.stop()
            val = validate(self.model, cfg, self.device, self.d, self.norm)
            best_now = self.best is None or val["miou"] > self.best
            if best_now:
                self.best, self.best_iter = val["miou"], it
            self.run_log.write({"event": "val", "iter": it, **val, "best_miou": self.best})
            mvc = f", mVC8 {val['mvc8']:.1f}" if val.get("mvc8") is not None else ""
            self.say(f"val @ {it}: mIoU {100 * val['miou']:.2f}%{mvc} ({val['frames']} frames, {val['seconds']:.1f} s)"
                     f"{'  [best]' if best_now else f'  (best {100 * self.best:.2f}% @ {self.best_iter})'}")
            self.progress = self._new_progress(it)
        self.save(it, val, best_now)
        dt = time.perf_counter() - t_pause
        self.paused += dt
        self.t_interval += dt

    def save(self, it: int, val: dict[str, Any] | None, best_now: bool, rngs: list[Any] | None = None) -> None:
        """Checkpoints (last, and best when `best_now`) and the resumable state.pt (rank 0)."""
        from vsegcli.checkpoints import CheckpointMeta, save_checkpoint

        cfg, d, model = self.cfg, self.d, self.model
        rngs = rngs or all_gather_object(rng_state(self.device), d)
        if not d.main:
            return
        prov = {"command": self.command, "iterations": it, "dataset": cfg.dataset, "seed": cfg.seed,
                "crop": list(cfg.crop), "effective_batch": cfg.batch * cfg.accum * d.world,
                "val_miou": finite(val["miou"]) if val else None,
                **{k: v for k, v in self.provenance_init.items() if not k.startswith("input_")}}
        meta = CheckpointMeta.from_model(model, label_set=self.label_set, input_size=cfg.base_short, provenance=prov)
        meta.mean, meta.std = list(self.norm[0]), list(self.norm[1])
        if best_now:
            save_checkpoint(model, meta, self.out / "best.safetensors")
        save_checkpoint(model, meta, self.out / "last.safetensors")
        state = {
            "version": STATE_VERSION, "iteration": it, "best_miou": self.best, "best_iter": self.best_iter,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rngs, "world_size": d.world,
            "config": cfg.to_dict(), "provenance_init": self.provenance_init,
        }
        atomic_write(self.out / "state.pt", lambda f: torch.save(state, f), durable=True)

    def _new_progress(self, completed: int) -> FrameProgress:
        cfg = self.cfg
        return _progress(self.d.main and not cfg.quiet and not cfg.json_log, cfg.iters, completed)

    def loop(self) -> None:
        """Step from `start` to the stop; Ctrl-C leaves a resumable state at the last finished step."""
        d = self.d
        self.progress = self._new_progress(self.start)
        self.t_start = self.t_interval = time.perf_counter()
        self.paused = 0.0  # seconds in validation / checkpointing: not training speed
        self.data_wait = 0.0
        self.sums: dict[str, torch.Tensor] = {}
        self.n_in_interval = 0
        self.it = self.start
        self.updating = False
        batches = iter(self.loader)
        rng_at_step = rng_state(self.device)  # for a Ctrl-C save: the RNG as the interrupted step found it
        try:
            while self.it < self.stop:
                rng_at_step = rng_state(self.device) if not d.enabled else rng_at_step
                step_parts, lrs = self.step(batches)
                for k, v in step_parts.items():
                    self.sums[k] = self.sums.get(k, 0) + v
                self.n_in_interval += 1
                self.log_interval(lrs)
                self.validate_and_save()
        except KeyboardInterrupt:
            # Keep the work done (single process only: other ranks may be inside a collective; not
            # in the middle of a parameter update).
            self.progress.stop()
            if not d.enabled and self.it > self.start and not self.updating:
                self.save(self.it, None, False, rngs=[rng_at_step])
                self.say(f"interrupted: state saved at iteration {self.it}; continue with --resume")
            raise
        finally:
            self.progress.stop()
            del batches
        self.seconds = time.perf_counter() - self.t_start

    def finish(self) -> dict[str, Any]:
        """The 'end' record (with every rank's parameter checksum: replicas must agree) and the
        summary line; leaves the process group."""
        d, it, out, best, paused = self.d, self.it, self.out, self.best, self.paused
        seconds = self.seconds
        sync_buffers(self.model, d)
        checksums = all_gather_object(parameter_checksum(self.model), d)
        summary = {
            "event": "end", "iter": it, "finished": it >= self.cfg.iters, "seconds": round(seconds, 3),
            "s_per_iter": round((seconds - paused) / max(1, it - self.start), 4),
            "val_and_save_seconds": round(paused, 3), "best_miou": best, "best_iter": self.best_iter,
            "last": str(out / "last.safetensors"),
            "best": str(out / "best.safetensors") if best is not None else None,
            "rank_checksums": checksums,
        }
        if d.main:
            self.run_log.write(summary)
            if len(set(checksums)) > 1:  # a bug, not a user error: replicas must never diverge
                raise RuntimeError(f"DDP replicas diverged: parameter checksums {checksums}")
            done = "finished" if summary["finished"] else f"stopped at iteration {it} (continue with --resume)"
            self.say(f"{done} in {seconds:.1f} s ({summary['s_per_iter']:.3f} s/iter training, {paused:.1f} s "
                     "validating and saving); "
                     f"best val mIoU {'-' if best is None else f'{100 * best:.2f}% @ {self.best_iter}'}; -> {out}")
        finish(d)
        return summary
