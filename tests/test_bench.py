"""`vseg bench` and `vsegcli.bench`: structures, honesty checks (naive really recomputes), CLI behaviour.

Tiny sizes and 2-3 frames: these check what is measured and reported, not how fast anything is.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vsegcli import bench as B
from vsegcli.cli import cli
from vsegcli.checkpoints import IMAGENET_MEAN, IMAGENET_STD
from vsegcli.runtime import Predictor
from vsegcli.errors import VsegError
from vsegcli.data.labels import label_set_for
from vsegcli.runtime.render import Palette

SIZE = (64, 96)
CPU = torch.device("cpu")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _frames(n: int, size: tuple[int, int] = SIZE, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (1, *size, 3), generator=g, dtype=torch.uint8) for _ in range(n)]


def test_parse_size_and_lists():
    assert B.parse_size("480x864") == (480, 864)
    assert B.parse_size("64X96") == (64, 96)
    for bad in ("480", "480x850", "axb", "0x64"):
        with pytest.raises(VsegError):
            B.parse_size(bad)
    assert B.parse_list(("fp32,bf16", "fp32", " fp16 ")) == ["fp32", "bf16", "fp16"]


def test_default_counts_cpu_are_small_and_said():
    frames, warmup, note = B.default_counts(CPU, None, None)
    assert (frames, warmup) == (B.CPU_FRAMES, B.CPU_WARMUP) and "CPU defaults" in note
    assert B.default_counts(CPU, 7, 1)[:2] == (7, 1)
    assert B.default_counts(torch.device("cuda:0"), None, None) == (200, 5, None)
    assert B.default_counts(torch.device("cuda:0"), None, None, "upstream") == (195, 5, None)  # 200 iterations


def test_bench_model_session_structure():
    row = B.bench_model("segformer-b0", SIZE, "fp32", "cpu", frames=3, warmup=1)
    assert row["status"] == "ok" and row["mode"] == "session"
    lat = row["latency_ms"]
    assert 0 < lat["min"] <= lat["median"] <= lat["p95"] <= lat["max"]
    assert row["fps"] > 0 and row["ms_per_frame"] == pytest.approx(lat["median"])
    assert row["backbone_frames_per_frame"] == 1.0
    assert row["cpu_time_ms"]["median"] > 0  # CPU rows also report process CPU time per step
    assert row["page_faults_per_step"] >= 0  # ... and the kernel's minor page faults per step
    assert row["weights_mib"] > 0
    assert row["peak_memory_mib"] is None or row["peak_memory_mib"] >= 0
    assert "RSS" in row["memory_method"]
    json.dumps(row)


def test_bench_model_batch_and_repeat():
    row = B.bench_model("effl0", SIZE, "fp32", "cpu", frames=2, warmup=0, batch=2, repeat=2)
    assert row["batch"] == 2 and len(row["runs_median_ms"]) == 2
    assert row["ms_per_frame"] == pytest.approx(row["latency_ms"]["median"] / 2)
    assert row["latency_ms"]["median"] == min(row["runs_median_ms"])
    # Temporal sessions and naive clips take a batch as independent streams.
    naive = B.bench_model("mrcfa-b0", SIZE, "fp32", "cpu", frames=1, warmup=0, batch=2, mode="naive")
    assert naive["status"] == "ok" and naive["backbone_frames_per_frame"] == 4.0


def test_precisions_on_cpu():
    skipped = B.bench_model("segformer-b0", SIZE, "fp16", "cpu", frames=2, warmup=0)
    assert skipped["status"] == "skipped" and "fp16" in skipped["note"]
    bf16 = B.bench_model("segformer-b0", SIZE, "bf16", "cpu", frames=2, warmup=0)
    assert bf16["status"] == "ok"


def test_naive_runs_the_backbone_once_per_clip_frame():
    """The naive mode must really recompute: count backbone frames with an independent hook."""
    model = B.build_bench_model("mrcfa-b0")
    seen = [0]
    handle = model.backbone.register_forward_pre_hook(lambda m, args: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    frames = _frames(4)
    counts = {}
    for mode in ("session", "naive"):
        stepper = B.Stepper(model, mode, CPU)
        stepper.prime(_frames(9, seed=5))  # session: fills its cache; naive: its 10-frame window
        seen[0] = 0
        for f in frames:
            stepper(f)
        counts[mode] = seen[0]
    handle.remove()
    assert counts["session"] == 4  # one backbone pass per frame
    assert counts["naive"] == 16  # the whole 4-frame clip for every frame (official MRCFA test code)
    # The built-in counter agrees.
    s = B.bench_model(model, SIZE, "fp32", "cpu", frames=2, warmup=0, mode="session")
    n = B.bench_model(model, SIZE, "fp32", "cpu", frames=2, warmup=0, mode="naive")
    assert s["backbone_frames_per_frame"] == 1.0 and n["backbone_frames_per_frame"] == 4.0


def test_naive_mode_is_rejected_for_per_frame_models():
    with pytest.raises(VsegError, match="per-frame"):
        B.bench_model("segformer-b0", SIZE, "fp32", "cpu", frames=1, warmup=0, mode="naive")


@pytest.mark.parametrize("arch, first_steady", [("mrcfa-b0", 9), ("stt-effl0", 3)])
def test_naive_computes_what_the_session_computes(arch, first_steady):
    """Same frames, same model: the naive clip window is the session's window (t-9, t-6, t-3 / last T)."""
    model = B.build_bench_model(arch)
    frames = _frames(first_steady + 2, seed=1)
    session = B.Stepper(model, "session", CPU)
    streamed = [session(f) for f in frames]
    naive = B.Stepper(model, "naive", CPU)
    naive.prime(frames[:first_steady])
    for t in range(first_steady, len(frames)):
        labels = naive(frames[t])
        agree = (labels == streamed[t]).float().mean().item()
        assert agree > 0.99, (t, agree)  # batched vs per-frame convs may round a near-tie differently


def test_stepper_matches_the_engine_predictor():
    """Model-only pre/post-processing is the engine's: same labels as Predictor.step."""
    model = B.build_bench_model("mrcfa-b0")
    palette = Palette.from_label_set(label_set_for(model.num_classes))
    predictor = Predictor(model, IMAGENET_MEAN, IMAGENET_STD, palette, CPU)
    p_session = predictor.new_session()
    stepper = B.Stepper(model, "session", CPU)
    for f in _frames(5, seed=2):
        expected = predictor.step(p_session, predictor.upload(f[0].numpy()))
        assert torch.equal(stepper(f)[0], expected)


def test_bench_temporal_ratios():
    out = B.bench_temporal("stt-effl0", SIZE, "fp32", "cpu", frames=2, warmup=0)
    assert out["baseline"] == "effl0"
    assert out["naive_over_streaming"] > 0 and out["streaming_over_baseline"] > 0
    assert out["naive_over_streaming_cpu_time"] > 0 and out["streaming_over_baseline_cpu_time"] > 0
    assert set(out["rows"]) == {"streaming", "naive", "baseline"}
    # the clip window the model reads (T key frames + the target: 8 since STT's default T = 7)
    from vsegcli.bench.stepper import build_bench_model, naive_offsets

    window = len(naive_offsets(build_bench_model("stt-effl0")))
    assert window >= 2 and out["rows"]["naive"]["backbone_frames_per_frame"] == float(window)
    json.dumps(out)


def test_bench_temporal_paired():
    """Paired: one step-interleaved loop; ratios are medians of per-step ratios of the same loop."""
    out = B.bench_temporal("mrcfa-b0", SIZE, "fp32", "cpu", frames=3, warmup=0, paired=True)
    assert "paired" in out["ratio_method"]
    rows = out["rows"]
    assert all(r["paired"] and len(r["step_ms"]) == 3 and r["peak_memory_mib"] is None for r in rows.values())
    per_step = [n / s for n, s in zip(rows["naive"]["step_ms"], rows["streaming"]["step_ms"])]
    assert out["naive_over_streaming"] == pytest.approx(float(np.median(per_step)))
    assert out["naive_over_streaming_cpu_time"] > 0
    json.dumps(out)


def test_compile_failure_is_a_skipped_row(monkeypatch):
    def broken(model, mode="default"):
        def fail(*args, **kwargs):
            raise RuntimeError("inductor says no\nmore detail")

        model.backbone.forward = fail
        return "torch.compile (broken on purpose)"

    monkeypatch.setattr("vsegcli.bench.timing.apply_compile", broken)  # where the timing loop looks it up
    row = B.bench_model("segformer-b0", SIZE, "fp32", "cpu", frames=2, warmup=1, compile=True)
    assert row["status"] == "skipped" and "inductor says no" in row["note"] and "more detail" not in row["note"]


def test_compile_modes_reach_torch_compile():
    """--compile MODE: the backbone is compiled once with that mode (reduce-overhead = CUDA graphs)."""
    from vsegcli.cli.bench import _canonical_command

    model = B.build_bench_model("effl0", 11)
    calls = []
    model.backbone.compile = lambda **kw: calls.append(kw)
    assert "mode reduce-overhead" in B.apply_compile(model, "reduce-overhead")
    B.apply_compile(model, "reduce-overhead")  # already compiled: not again
    assert calls == [{"mode": "reduce-overhead"}]
    other = B.build_bench_model("effl0", 11)
    other.backbone.compile = lambda **kw: calls.append(kw)
    B.apply_compile(other, True)
    assert calls[-1] == {"mode": None}  # torch's default mode
    with pytest.raises(VsegError, match="unknown compile mode"):
        B.apply_compile(B.build_bench_model("effl0", 11), "fastest")
    opts = {"device": "cuda:0", "protocol": "vseg", "models": ["mrcfa-b0"], "sizes": [(480, 864)],
            "precisions": ["bf16"], "batch": 1, "frames": 200, "warmup": 5, "classes": 19, "repeat": 1,
            "compile": "reduce-overhead", "channels_last": False, "e2e": True, "frame_batch": 4, "hwaccel": "none"}
    cmd = _canonical_command(opts)
    assert "--compile reduce-overhead" in cmd and "--frame-batch 4" in cmd and "--hwaccel none" in cmd


def test_bench_pipeline_stages(tiny_video, tmp_path):
    before = set(tmp_path.iterdir())
    out = B.bench_pipeline("segformer-b0", SIZE, "fp32", "cpu", input=tiny_video, frames=3, warmup=1, repeat=2)
    assert out["status"] == "ok" and out["frames"] == 3
    assert len(out["rounds_percent"]) == 2 and len(out["end_to_end"]["runs_fps"]) == 2
    assert out["stages"]["inference"]["cpu_ms_per_frame"] > 0
    assert set(out["stages"]) == {"decode", "inference", "encode", "label_png"}
    assert all(s["fps"] > 0 for s in out["stages"].values())
    assert out["bottleneck"] == min(out["stages"], key=lambda k: out["stages"][k]["fps"])
    assert out["end_to_end"]["fps"] > 0 and out["e2e_percent_of_slowest"] > 0
    assert "resized to 96x64" in out["source"]
    assert out["stages"]["decode"]["decoder"] == "software"  # auto + CPU inference: no NVDEC attempt
    assert set(tmp_path.iterdir()) == before
    json.dumps(out)


@pytest.mark.parametrize("fold_bn", [True, False])
def test_checkpoint_models_are_folded_like_built_ones(fold_bn):
    from torch import nn

    given = B.build_bench_model("effl0", fold_bn=False)  # as `vseg bench -c` loads a checkpoint
    config = B.BenchConfig(models=["effl0"], sizes=[(64, 96)], precisions=["fp32"], device=torch.device("cpu"),
                           frames=1, warmup=0, e2e=False, checkpoint_models={"effl0": given}, fold_bn=fold_bn)
    out = B.run_benchmarks(config)
    assert out["model_only"][0]["status"] == "ok"
    assert any(isinstance(m, nn.BatchNorm2d) for m in given.modules()) is not fold_bn


def test_machine_info_is_json():
    info = B.machine_info("cpu")
    for key in ("vseg_version", "cpu_model", "cpu_count", "torch", "torch_cuda", "device", "python"):
        assert key in info
    json.dumps(info)


def test_cli_json_to_stdout():
    result = CliRunner().invoke(cli, ["bench", "--device", "cpu", "--frames", "2", "--warmup", "1",
                                      "--size", "64x96", "--json", "-"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # tables went to stderr: stdout is pure JSON
    assert data["settings"]["device"] == "cpu" and data["settings"]["models"] == ["mrcfa-b0"]
    assert data["command"].startswith("vseg bench --device cpu")
    assert data["machine"]["cpu_model"]
    modes = {(r["model"], r["mode"]) for r in data["model_only"]}
    assert modes == {("segformer-b0", "session"), ("mrcfa-b0", "session"), ("mrcfa-b0", "naive")}
    (comp,) = data["temporal"]
    assert comp["naive_over_streaming"] > 0 and comp["streaming_over_baseline"] > 0
    (pipe,) = data["pipeline"]
    assert pipe["bottleneck"] in pipe["stages"] and "bikes.mp4" in pipe["input"]


def test_cli_records_the_host_allocator_and_says_when_it_cannot_change_it():
    from vsegcli.io.hostmem import configure_host_allocator

    applied = configure_host_allocator()  # this process's setting (process-wide, first call decides)
    other = "system" if applied.startswith("retain") else "retain"
    result = CliRunner().invoke(cli, ["bench", "--device", "cpu", "-m", "effl0", "--frames", "1", "--warmup", "0",
                                      "--size", "64x96", "--no-e2e", "--host-allocator", other, "--no-fold-bn", "--json", "-", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["machine"]["host_allocator"] == applied
    assert data["settings"]["host_allocator"] == other
    assert ("--host-allocator system" in data["command"]) == (other == "system")  # retain is the default
    assert any(f"not the requested {other}" in n for n in data["notes"])
    assert data["settings"]["fold_bn"] is False and "--no-fold-bn" in data["command"]


def test_cli_tables_and_json_file(tmp_path):
    target = tmp_path / "out" / "bench.json"
    result = CliRunner().invoke(cli, ["bench", "--device", "cpu", "-m", "segformer-b0,effl0", "--frames", "2",
                                      "--warmup", "0", "--size", "64x96", "--precision", "fp32,fp16",
                                      "--no-e2e", "--json", str(target)])
    assert result.exit_code == 0, result.output
    assert "Model only" in result.stdout and "skipped" in result.stdout
    data = json.loads(target.read_text())
    assert [r["status"] for r in data["model_only"]] == ["ok", "ok", "skipped", "skipped"]
    assert data["pipeline"] == [] and [p.name for p in target.parent.iterdir()] == ["bench.json"]  # no temporary left


def test_cli_paired_ratios():
    result = CliRunner().invoke(cli, ["bench", "--device", "cpu", "-m", "stt-effl0", "--frames", "2", "--warmup", "0",
                                      "--size", "64x96", "--paired", "--no-e2e", "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["paired"] and "--paired" in data["command"]
    (comp,) = data["temporal"]
    assert "paired" in comp["ratio_method"] and comp["streaming_over_baseline"] > 0


@no_cuda
@pytest.mark.parametrize("args", [["--gpu", "0"], ["--device", "cuda:0"]])
def test_cli_gpu_without_cuda_is_one_line_exit_2(args):
    result = CliRunner().invoke(cli, ["bench", *args, "--frames", "1", "--size", "64x96"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "CUDA" in lines[0]
    assert "Traceback" not in result.output


@no_cuda
def test_cli_auto_without_cuda_says_cpu():
    result = CliRunner().invoke(cli, ["bench", "-m", "segformer-b0", "--frames", "1", "--warmup", "0",
                                      "--size", "64x96", "--no-e2e", "--json", "-", "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["settings"]["device"] == "cpu"
    assert any("no CUDA device" in n for n in data["notes"])


def test_cli_user_errors_exit_2():
    runner = CliRunner()
    for args in (["--size", "64x90"], ["-m", "no-such-model"], ["--protocol", "upstream", "--batch", "2"],
                 ["--precision", "fp64"], ["--input", "missing.mp4"]):
        result = runner.invoke(cli, ["bench", "--device", "cpu", "--frames", "1", *args])
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("Error:")


def test_fmt_number_is_the_library_cell_format():
    from vsegcli.bench.table import fmt_number

    assert (fmt_number(None), fmt_number(1.23456), fmt_number(2.5, 0), fmt_number(7)) == ("-", "1.23", "2", "7")
