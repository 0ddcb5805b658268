"""The streaming pipeline: decode -> infer -> sinks, each stage on its own thread.

    decode thread --(bounded queue)--> inference (caller's thread) --(bounded queues)--> sinks
                                                                       video encoder
                                                                       label PNG writer
                                                                       extra sinks (report, ...)

Frames go to the device once as uint8; resize, normalisation, the model, upsampling, argmax and
overlay colouring all happen there, and only uint8 labels / overlays come back. Each queue is
bounded, so memory stays flat however long the video is, and a slow sink slows the run instead of
piling frames up. Any stage's error stops the others; outputs are written under temporary names
and only renamed into place when everything succeeded.
"""
from __future__ import annotations

import copy
import math
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vsegcli.errors import VsegError
from vsegcli.io.hostmem import configure_host_allocator
from vsegcli.models.base import Segmentor, Session
from vsegcli.runtime.render import Palette, overlay

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# (height, width, size divisor) -> network input (height, width); see `inference_size`.
ResizeRule = Callable[[int, int, int], tuple[int, int]]
QUEUE_DEPTH = 8


def select_device(spec: str | int | None) -> torch.device:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' | N  ->  a usable torch.device, or a VsegError saying why not."""
    spec = "auto" if spec is None else str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.isdigit():
        spec = f"cuda:{spec}"
    if spec == "cuda":
        spec = "cuda:0"
    if not spec.startswith("cuda:") or not spec[5:].isdigit():
        raise VsegError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise VsegError(f"{spec} was asked for but CUDA is not available here (no GPU or a CPU-only torch); use --device cpu")
    index = int(spec[5:])
    if index >= torch.cuda.device_count():
        raise VsegError(f"{spec} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(spec)


def inference_size(height: int, width: int, short_side: int | None, divisor: int) -> tuple[int, int]:
    """Network input size: scale so the short side is `short_side` (if given), then round each side
    up to a multiple of `divisor` by resizing (mmseg's AlignedResize: 480x853 -> 480x864)."""
    if short_side:
        scale = short_side / min(height, width)
        height, width = max(1, round(height * scale)), max(1, round(width * scale))
    return math.ceil(height / divisor) * divisor, math.ceil(width / divisor) * divisor


def logits_to_labels(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) logits -> (B, H, W) uint8 labels: bilinear resize to the frame size, argmax.

    On CPU both run on a channels-last copy of the (small) logits: the resize then vectorises over
    the classes and the per-pixel max reads C adjacent values, where torch's NCHW argmax over dim 1
    strides across whole planes: 40 -> 8 ms at 288x640 with 19 classes, one thread. The labels are
    those of the NCHW path up to float rounding of the resize (<= 5e-7); ties keep the first class,
    as argmax does. GPUs keep the NCHW path (not measured there yet)."""
    logits = logits.float()
    if logits.device.type == "cpu":
        logits = logits.contiguous(memory_format=torch.channels_last)
    up = F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
    return up.max(dim=1).indices.to(torch.uint8)


class Predictor:
    """A model on a device with its pre- and post-processing: uint8 frame in, uint8 labels out."""

    def __init__(
        self,
        model: Segmentor,
        mean: list[float],
        std: list[float],
        palette: Palette,
        device: torch.device,
        precision: str = "fp32",
        size: int | None = None,
        classes: list[str] | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise VsegError(f"unknown precision {precision!r}: use fp32, fp16 or bf16")
        if precision == "fp16" and device.type == "cpu":
            raise VsegError("fp16 is for GPUs; on CPU use --precision fp32 or bf16")
        configure_host_allocator()  # steady frames reuse freed host memory instead of page-faulting it
        self.model = model.to(device).eval()
        self.device = device
        self.precision = precision
        self.size = size
        self.palette = palette
        self.classes = classes or [f"class_{i}" for i in range(model.num_classes)]
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.resize_rule: ResizeRule | None = None
        # Frames per model call in `stream` (micro-batching; temporal steps stay in frame order).
        self.frame_batch = 1

    def with_resize_rule(self, rule: ResizeRule | None) -> "Predictor":
        """The same model and settings with another input-size rule (e.g. VSPW's official one)."""
        other = copy.copy(self)  # shares the model on the device: no weight copy
        other.resize_rule = rule
        return other

    def input_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for a frame: the resize rule if set, else `inference_size` with `size`."""
        if self.resize_rule is not None:
            return self.resize_rule(height, width, self.model.size_divisor)
        return inference_size(height, width, self.size, self.model.size_divisor)

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def new_session(self) -> Session:
        return self.model.new_session()

    def upload(self, frame: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(frame)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t

    def prepare(self, frame: torch.Tensor) -> torch.Tensor:
        """(H, W, 3) uint8 -> (1, 3, h, w) normalised float at the network input size."""
        h, w = frame.shape[:2]
        x = frame.permute(2, 0, 1).unsqueeze(0).float()
        size = self.input_size(h, w)
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def step(self, session: Session, frame: torch.Tensor) -> torch.Tensor:
        """One frame through the session: (H, W, 3) uint8 on device -> (H, W) uint8 labels on device."""
        x = self.prepare(frame)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = session.step(x)
        return logits_to_labels(logits, frame.shape[:2])[0]

    @torch.inference_mode()
    def step_many(self, session: Session, frames: list[torch.Tensor]) -> list[torch.Tensor]:
        """Consecutive frames of one video through the session in one batch (`Session.step_many`):
        (H, W, 3) uint8 frames on device -> (H, W) uint8 labels on device, in order."""
        if len(frames) == 1:
            return [self.step(session, frames[0])]
        x = torch.cat([self.prepare(f) for f in frames])
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = session.step_many(x)
        # One video: every frame has the same size, so the upsampling runs batched too.
        return list(logits_to_labels(logits, frames[0].shape[:2]))


class Sink(Protocol):
    """Receives every processed frame, in order, on its own thread."""

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None: ...

    def close(self) -> Any: ...

    def abort(self) -> None: ...


class _Stopped(Exception):
    pass


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped()
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped()
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue


_END = object()


class _Thread(threading.Thread):
    """A daemon thread that records its exception and sets the shared stop flag on failure."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self._stop_flag = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc
            self._stop_flag.set()


class _SinkWorker:
    def __init__(self, sink: Sink, stop: threading.Event) -> None:
        self.sink = sink
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.stop = stop
        self.thread = _Thread(f"sink-{type(sink).__name__}", self._loop, stop)
        self.result: Any = None
        self.busy_seconds = 0.0

    def _loop(self) -> None:
        while True:
            item = _get(self.queue, self.stop)
            if item is _END:
                t0 = time.perf_counter()
                self.result = self.sink.close()
                self.busy_seconds += time.perf_counter() - t0
                return
            t0 = time.perf_counter()
            self.sink.write(*item)
            self.busy_seconds += time.perf_counter() - t0


class LabelPngSink:
    """One PNG per frame, named by the frame's index in the source (000042.png).

    Grey uint8 PNGs hold the class index per pixel (what scripts and evaluators read); with
    `color=True` they are RGB colour maps instead. Written into a temporary folder beside the target
    that is renamed into place when the run completes.
    """

    def __init__(self, folder: Path, palette: Palette, color: bool = False, overwrite: bool = False) -> None:
        folder = Path(folder)
        if folder.exists() and not overwrite and (not folder.is_dir() or any(folder.iterdir())):
            raise VsegError(f"{folder} already exists and is not empty; pass --overwrite or choose another --labels-dir")
        folder.parent.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.part", dir=folder.parent))
        self.palette = palette
        self.color = color
        self.count = 0

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        if self.color:
            image = cv2.cvtColor(self.palette.colorize_np(labels), cv2.COLOR_RGB2BGR)
        else:
            image = labels
        if not cv2.imwrite(str(self.tmp / f"{index:06d}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise VsegError(f"could not write label PNGs into {self.tmp.parent}: disk full or no permission?")
        self.count += 1

    def close(self) -> Path:
        if self.folder.exists():
            trash = self.folder.with_name(f".{self.folder.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            self.folder.rename(trash)
            self.tmp.rename(self.folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.tmp.rename(self.folder)
        return self.folder

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


class VideoSink:
    """Feeds blended overlay frames to a `video.VideoWriter` (H.264 mp4, audio muxed on close)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        self.writer.write(blended if blended is not None else frame)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


@dataclass
class StageTimes:
    decode_wait: float = 0.0  # time inference waited for decoded frames
    inference: float = 0.0
    sinks: dict[str, float] = field(default_factory=dict)


@dataclass
class RunStats:
    frames: int
    seconds: float
    fps: float
    times: StageTimes
    sink_results: list[Any]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["sink_results"] = [str(r) if isinstance(r, Path) else r for r in self.sink_results]
        return d


def stream(
    predictor: Predictor,
    frames: Iterator[tuple[int, np.ndarray]],
    sinks: list[Sink],
    opacity: float = 0.5,
    on_frame: Callable[[int], None] | None = None,
) -> RunStats:
    """Run every frame of `frames` through one session and hand the results to `sinks`.

    With `predictor.frame_batch` = m > 1, m decoded frames go through the model together
    (`Predictor.step_many`); sinks still get every frame in order.

    On success every sink is closed (outputs renamed into place) and their results returned; on any
    error or Ctrl-C every sink is aborted (temporary outputs removed) and the error re-raised.
    """
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)

    def decode() -> None:
        for item in frames:
            _put(decoded, item, stop)
        _put(decoded, _END, stop)

    decoder = _Thread("decode", decode, stop)
    workers = [_SinkWorker(s, stop) for s in sinks]
    need_overlay = any(isinstance(s, VideoSink) for s in sinks)
    session = predictor.new_session()
    times = StageTimes()
    count = 0
    t_start = time.perf_counter()
    try:
        decoder.start()
        for w in workers:
            w.thread.start()
        pending: list[tuple[int, np.ndarray]] = []
        ended = False
        while not ended:
            t0 = time.perf_counter()
            item = _get(decoded, stop)
            times.decode_wait += time.perf_counter() - t0
            if item is _END:
                ended = True
            else:
                pending.append(item)
            if not pending or (len(pending) < predictor.frame_batch and not ended):
                continue
            t0 = time.perf_counter()
            frames_dev = [predictor.upload(frame) for _, frame in pending]
            labels_dev = predictor.step_many(session, frames_dev)
            results = []
            for (index, frame), frame_dev, labels in zip(pending, frames_dev, labels_dev):
                blended = overlay(frame_dev, labels, predictor.palette, opacity).cpu().numpy() if need_overlay else None
                results.append((index, frame, labels.cpu().numpy(), blended))
            times.inference += time.perf_counter() - t0
            pending = []
            for result in results:
                for w in workers:
                    _put(w.queue, result, stop)
                count += 1
                if on_frame is not None:
                    on_frame(count)
        for w in workers:
            _put(w.queue, _END, stop)
        for w in workers:
            w.thread.join()
        if stop.is_set():
            raise _Stopped()
    except BaseException as exc:
        stop.set()
        threads = [decoder] + [w.thread for w in workers]
        for t in threads:
            if t.is_alive():
                t.join(timeout=5)
        for w in workers:
            try:
                w.sink.abort()
            except Exception:  # noqa: BLE001 - keep aborting the others, report the first error
                pass
        if isinstance(exc, _Stopped):  # another stage failed: raise its error, not ours
            for t in threads:
                if t.error is not None:
                    raise t.error from None
            raise RuntimeError("pipeline stopped without an error being recorded") from None
        raise
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    seconds = time.perf_counter() - t_start
    times.sinks = {type(w.sink).__name__: w.busy_seconds for w in workers}
    return RunStats(count, seconds, count / seconds if seconds > 0 else 0.0, times, [w.result for w in workers])
