"""CUDA device targeting without a GPU: a `torch.cuda` shim records the device every call acts on.

`vseg bench --gpu 1` and a Predictor on cuda:1 must never act on GPU 0 (the implicit current
device): events are recorded on the timed device's stream, synchronize/memory stats name it, and
whatever takes no device runs inside `device_scope`. The shim answers is_available -> True and
device_count -> 2; calls that take no device are charged to the shim's current device, which only
`torch.cuda.device(...)` / `set_device` change, as in CUDA. Tensors stay on the CPU.
"""
from __future__ import annotations

import threading
import types

import numpy as np
import pytest
import torch

from vsegcli.bench import timing
from vsegcli.runtime import transfer
from vsegcli.runtime.device import bf16_supported, device_scope, set_cuda_math

GPU = torch.device("cuda", 1)


class CudaShim:
    """Replaces the torch.cuda calls vseg makes; `calls` holds (name, device index) per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.current = 0
        self.calls: list[tuple[str, int]] = []
        shim = self

        def index(device=None) -> int:
            if device is None:
                return shim.current  # implicit: the current device
            if isinstance(device, int):
                return device
            d = torch.device(device)
            return shim.current if d.index is None else d.index

        def recorder(name: str, result=None):
            def call(device=None, *args, **kwargs):
                shim.calls.append((name, index(device)))
                return result(device) if callable(result) else result
            return call

        class Stream:
            def __init__(self, device: int) -> None:
                self.device = torch.device("cuda", device)

        class Event:
            def __init__(self, enable_timing: bool = False, **_kw) -> None:
                self.device: int | None = None
                self.synchronized_on: str | None = None

            def record(self, stream: Stream | None = None) -> None:
                self.device = index(None if stream is None else stream.device)
                shim.calls.append(("Event.record", self.device))

            def synchronize(self) -> None:
                self.synchronized_on = threading.current_thread().name

            def elapsed_time(self, end: "Event") -> float:
                return 1.0

        class device:  # noqa: N801 - torch.cuda.device's name
            def __init__(self, dev) -> None:
                self.idx = index(dev)

            def __enter__(self):
                self.prev, shim.current = shim.current, self.idx
                shim.calls.append(("device.__enter__", self.idx))

            def __exit__(self, *exc) -> None:
                shim.current = self.prev

        def set_device(dev) -> None:
            shim.current = index(dev)

        def current_stream(device=None) -> Stream:
            shim.calls.append(("current_stream", index(device)))
            return Stream(index(device))

        cuda = torch.cuda
        for name, value in {
            "is_available": lambda: True, "device_count": lambda: 2, "current_device": lambda: shim.current,
            "set_device": set_device, "device": device, "Event": Event, "current_stream": current_stream,
            "synchronize": recorder("synchronize"), "empty_cache": recorder("empty_cache"),
            "reset_peak_memory_stats": recorder("reset_peak_memory_stats"),
            "memory_allocated": recorder("memory_allocated", 0),
            "max_memory_allocated": recorder("max_memory_allocated", 2**20),
            "get_device_capability": recorder("get_device_capability", (9, 0)),
            "is_bf16_supported": recorder("is_bf16_supported", True),
            "get_device_name": recorder("get_device_name", "shim"),
        }.items():
            monkeypatch.setattr(cuda, name, value)
        self.Event = Event

    def devices(self) -> set[int]:
        return {dev for _, dev in self.calls}


@pytest.fixture
def shim(monkeypatch):
    return CudaShim(monkeypatch)


def fake_video_sink():
    """An in-memory sink the pipeline treats as a video sink (so overlays are made and copied)."""
    from test_engine import ListSink
    from vsegcli.runtime.sinks import VideoSink

    class FakeVideo(ListSink, VideoSink):
        def __init__(self) -> None:
            ListSink.__init__(self)

        def finish(self) -> None:  # nothing to flush: ListSink keeps frames in memory
            pass

    return FakeVideo()


class FakeStepper:
    """A bench step on the CPU (the shim cannot run kernels): what matters is the calls around it."""

    offsets = (0,)

    def __init__(self) -> None:
        self.steps = 0

    def prime(self, frames) -> None:
        pass

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        self.steps += 1
        return frames.float().mean(-1).to(torch.uint8)


@pytest.mark.parametrize("protocol,precision", [("vseg", "bf16"), ("upstream", "fp32")])
def test_bench_timing_on_gpu1_never_touches_gpu0(shim, monkeypatch, protocol, precision):
    model = types.SimpleNamespace(temporal=False, parameters=lambda: [], buffers=lambda: [], priming_frames=0)
    steppers: list[FakeStepper] = []

    def set_up(model, mode, row, s):
        steppers.append(FakeStepper())
        row["primed"] = 0
        return timing._Active(model, row, steppers[-1], [])

    monkeypatch.setattr(timing, "_set_up", set_up)
    monkeypatch.setattr(timing, "frame_pool", lambda size, batch, device, seed: [torch.zeros(batch, *size, 3, dtype=torch.uint8)])
    old = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    s = timing.TimingSettings(size=(8, 12), precision=precision, device=GPU, frames=4, warmup=2, protocol=protocol,
                              count_backbone=False)
    row = timing.measure_many([(model, "fake", "frame")], s)[0]
    assert row["status"] == "ok", row
    assert steppers[0].steps == 6  # warm-up + timed: the loop really ran
    names = {name for name, _ in shim.calls}
    expected = {"Event.record", "current_stream"} if protocol == "vseg" else {"synchronize"}
    assert expected <= names and "empty_cache" in names and "max_memory_allocated" in names
    if precision == "bf16":
        assert names & {"get_device_capability", "is_bf16_supported"}
    assert shim.devices() == {1}, [c for c in shim.calls if c[1] != 1]
    assert shim.current == 0  # the scope is left as found
    # CUDA math per protocol, recorded in the row, and restored afterwards
    assert row["cudnn_benchmark"] is (protocol == "vseg") and row["tf32_matmul"] is (protocol == "vseg")
    assert row["tf32_cudnn"] is True
    assert (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32) == old


def test_device_helpers_name_the_device(shim):
    assert bf16_supported(GPU) and bf16_supported("cpu")
    with device_scope(GPU):
        assert shim.current == 1
        with device_scope("cpu"):
            assert shim.current == 1  # the CPU changes nothing
    assert shim.current == 0
    assert shim.devices() == {1}


def test_to_host_records_its_event_on_the_devices_stream(shim, monkeypatch):
    monkeypatch.setattr(transfer, "_pinned_empty", lambda like: torch.empty(like.shape, dtype=like.dtype))
    labels = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    copy = transfer.to_host(labels, GPU)
    assert isinstance(copy, transfer.HostCopy)
    assert [c for c in shim.calls if c[0] == "Event.record"] == [("Event.record", 1)]
    np.testing.assert_array_equal(copy.result(), labels.numpy())
    assert copy._event.synchronized_on == threading.current_thread().name
    # the CPU path is the plain numpy view, as before
    out = transfer.to_host(labels, torch.device("cpu"))
    assert isinstance(out, np.ndarray) and np.shares_memory(out, labels.numpy())


def test_stream_on_gpu1_runs_in_its_scope_and_sinks_wait_for_the_copies(shim, monkeypatch):
    """A Predictor on cuda:1 (CPU tensors underneath): the inference thread works inside
    device_scope(cuda:1), every copy's event is recorded on GPU 1's stream and waited for on a sink
    thread, never on the inference thread; labels equal the CPU run's byte for byte."""
    from test_engine import ListSink, frames, make_predictor
    from vsegcli.runtime import stream

    cpu_sink = ListSink()
    stream(make_predictor(), frames(4), [cpu_sink])

    monkeypatch.setattr(transfer, "_pinned_empty", lambda like: torch.empty(like.shape, dtype=like.dtype))
    pred = make_predictor()
    pred.device = GPU
    pred.upload = lambda frame: torch.from_numpy(frame)  # no copy engine in the shim
    events: list = []
    real_event = shim.Event

    def event(*a, **kw):
        events.append(real_event(*a, **kw))
        return events[-1]

    monkeypatch.setattr(torch.cuda, "Event", event)
    sink = ListSink()
    video = fake_video_sink()
    stream(pred, frames(4), [sink, video])
    assert ("device.__enter__", 1) in shim.calls and shim.devices() == {1}
    assert len(events) == 8  # labels + overlay per frame
    assert all(e.device == 1 for e in events)
    waited = {e.synchronized_on for e in events}
    assert waited and all(name.startswith("sink-") for name in waited), waited
    for (i, a, _), (j, b, _) in zip(cpu_sink.items, sink.items):
        assert i == j and a.tobytes() == b.tobytes()
    assert all(blended is not None for _, _, blended in video.items)


def test_set_cuda_math_switches_and_reports():
    old = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        assert set_cuda_math(True) == {"cudnn_benchmark": True, "tf32_matmul": True, "tf32_cudnn": True}
        assert set_cuda_math(False) == {"cudnn_benchmark": False, "tf32_matmul": False, "tf32_cudnn": False}
    finally:
        (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = old


# ------------------------------------------------------------------------------------------------
# On a real GPU (`pytest -m gpu`; skipped without one): the same promises, measured.
# ------------------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
def test_gpu_stream_on_the_last_gpu_matches_cpu_and_leaves_gpu0_alone():
    from test_engine import ListSink, frames, make_predictor
    from vsegcli.runtime import Predictor, stream

    n = torch.cuda.device_count()
    dev = torch.device("cuda", n - 1)
    cpu_sink = ListSink()
    stream(make_predictor(), frames(6), [cpu_sink])
    ref = make_predictor()
    old = set_cuda_math(False)  # exact fp32 for the comparison with the CPU
    try:
        before0 = torch.cuda.memory_allocated(0) if n > 1 else None
        gpu = Predictor(ref.model, list(ref.mean.flatten().tolist()), list(ref.std.flatten().tolist()),
                        ref.palette, dev)
        sink, video = ListSink(), fake_video_sink()
        stream(gpu, frames(6), [sink, video])
        if n > 1:
            assert torch.cuda.memory_allocated(0) == before0  # nothing of this run landed on GPU 0
    finally:
        torch.backends.cudnn.benchmark = old["cudnn_benchmark"]
        torch.backends.cuda.matmul.allow_tf32 = old["tf32_matmul"]
        torch.backends.cudnn.allow_tf32 = old["tf32_cudnn"]
    assert [i for i, _, _ in sink.items] == list(range(6))
    for (_, a, _), (_, b, _) in zip(cpu_sink.items, sink.items):
        assert (a == b).mean() >= 0.99  # different kernels round differently; argmax ties rarely flip
    assert all(blended is not None and blended.dtype == np.uint8 for _, _, blended in video.items)


@pytest.mark.gpu
@needs_cuda
def test_gpu_to_host_copies_arrive_complete():
    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    with device_scope(dev):
        big = torch.randint(0, 255, (1080, 1920, 3), dtype=torch.uint8, device=dev)
        copies = [transfer.to_host(big + k, dev) for k in range(4)]  # queued, not yet waited for
        for k, c in enumerate(copies):
            np.testing.assert_array_equal(c.result(), (big + k).cpu().numpy())


@pytest.mark.gpu
@needs_cuda
def test_gpu_bench_times_the_asked_gpu():
    from vsegcli.bench.timing import bench_model

    dev = torch.device("cuda", torch.cuda.device_count() - 1)
    row = bench_model("segformer-b0", size=(64, 96), device=dev, frames=5, warmup=2)
    assert row["status"] == "ok" and row["device"] == str(dev) and row["latency_ms"]["median"] > 0
    assert row["cudnn_benchmark"] is True and row["tf32_matmul"] is True


def test_int8_alone_picks_the_cpu_on_a_machine_with_a_gpu(monkeypatch, tmp_path):
    """--precision int8 exists only as an ONNX Runtime CPU graph: with --device auto it runs on the
    CPU even where CUDA is available (seen on the H200: auto chose cuda:0 and int8 was refused);
    an explicit device is kept (and then refused by make_backend with its one-line error)."""
    from vsegcli.cli._options import device_for
    from vsegcli.runtime.device import select_device, spec_for_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert select_device(spec_for_precision("auto", "fp32")) == torch.device("cuda:0")
    assert select_device(spec_for_precision(None, "int8")) == torch.device("cpu")
    assert device_for("auto", None, "int8") == "cpu" and device_for("auto", 0, "int8") == "cuda:0"
    assert spec_for_precision("cuda:0", "int8") == "cuda:0"
    # and through the library's entry point: the shipped effl0 in int8 lands on the CPU
    pytest.importorskip("onnxruntime", reason="int8 needs onnxruntime (the `onnx` extra)")
    from pathlib import Path

    from vsegcli import api

    monkeypatch.delenv("VSEG_CALIBRATION_FRAMES", raising=False)
    monkeypatch.setenv("VSEG_CACHE_DIR", str(tmp_path))
    seg = api.load(Path(__file__).resolve().parents[1] / "weights" / "effl0-camvid.safetensors", precision="int8")
    assert seg.predictor.device == torch.device("cpu") and seg.predictor.runtime == "onnxruntime"
