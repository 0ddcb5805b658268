"""Honest speed measurements: model-only latency, streaming vs naive recompute, end-to-end pipeline.

Three questions, each answered in one run on one machine:

* **Model-only** (`bench_model`, `timing`): one step = uint8 frame(s) already on the device ->
  normalise -> model -> resize logits to the frame size -> argmax (a `Stepper`, built on the
  runtime's `Predictor`), in mode `session` (streaming), `naive` (the clip recomputed for every
  frame, as the official MRCFA test code does) or `frame` (per-frame path); median / p95 latency,
  throughput, peak memory. `protocol="upstream"` follows mmseg's `tools/benchmark.py`.
* **Streaming vs naive** (`bench_temporal`, `temporal`): a temporal model's session, its naive
  recompute and its per-frame baseline in the same run, as ratios.
* **End-to-end** (`bench_pipeline`, `pipeline`): decode -> infer -> encode (+ label PNGs) through
  the runtime's `stream()` on a real video, and each stage alone, so the bottleneck has a name.

`run_benchmarks(BenchConfig(...))` (`runner`) does a whole `vseg bench` run; `machine` describes
where the numbers come from; `settings` holds defaults and option parsing; `table` formats cells.
Everything returns plain dicts (JSON-serialisable); the `vseg bench` command prints them.
"""
from __future__ import annotations

from vsegcli.bench.machine import machine_info, run_metadata
from vsegcli.bench.pipeline import bench_pipeline, cleanup_io_cache, measure_io_stages, prepare_source
from vsegcli.bench.runner import BenchConfig, run_benchmarks
from vsegcli.bench.settings import (CPU_FRAMES, CPU_WARMUP, DEFAULT_INPUT, DEFAULT_MODELS, DEFAULT_SIZE, GPU_FRAMES,
                                    GPU_WARMUP, MODES, PROTOCOLS, default_counts, parse_list, parse_size)
from vsegcli.bench.stepper import COMPILE_MODES, Stepper, apply_compile, build_bench_model, frame_pool, naive_offsets
from vsegcli.bench.table import fmt_number
from vsegcli.bench.temporal import bench_temporal, compare_rows
from vsegcli.bench.timing import TimingSettings, bench_model

__all__ = [
    "BenchConfig", "COMPILE_MODES", "CPU_FRAMES", "CPU_WARMUP", "DEFAULT_INPUT", "DEFAULT_MODELS", "DEFAULT_SIZE",
    "GPU_FRAMES", "GPU_WARMUP", "MODES", "PROTOCOLS", "Stepper", "TimingSettings", "apply_compile", "bench_model",
    "bench_pipeline", "bench_temporal", "build_bench_model", "cleanup_io_cache", "compare_rows",
    "default_counts", "fmt_number", "frame_pool", "naive_offsets", "machine_info", "measure_io_stages", "parse_list",
    "parse_size", "prepare_source", "run_benchmarks", "run_metadata",
]
