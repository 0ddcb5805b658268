"""The streaming pipeline: decode -> infer -> sinks, each stage on its own thread.

    decode thread --(bounded queue)--> inference (caller's thread) --(bounded queues)--> sinks
                                                                       video encoder
                                                                       label PNG writer
                                                                       extra sinks (report, ...)

Frames go to the device once as uint8; resize, normalisation, the model, upsampling, argmax and
overlay colouring all happen there (`Predictor`), and only uint8 labels / overlays come back.
Each queue is bounded, so memory stays flat however long the video is, and a slow sink slows the
run instead of piling frames up. Any stage's error stops the others; outputs are written under
temporary names and only renamed into place when everything succeeded.
"""
from __future__ import annotations

import queue
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from vsegcli.runtime.device import device_scope
from vsegcli.metrics.shots import mark_shot_cuts
from vsegcli.models.base import Session
from vsegcli.runtime.predictor import Predictor
from vsegcli.runtime.render import overlay
from vsegcli.runtime.sinks import Sink, VideoSink
from vsegcli.runtime.transfer import resolved

QUEUE_DEPTH = 8
T = TypeVar("T")


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
        self.busy_seconds = 0.0

    def _loop(self) -> None:
        while True:
            item = _get(self.queue, self.stop)
            if item is _END:  # the slow end-of-run work here; `commit_all` then makes it final
                finish = getattr(self.sink, "finish", None)
                if finish is not None:
                    t0 = time.perf_counter()
                    finish()
                    self.busy_seconds += time.perf_counter() - t0
                return
            t0 = time.perf_counter()
            # CUDA results arrive as copies in flight (`HostCopy`): this thread waits for them.
            self.sink.write(*(resolved(x) for x in item))
            self.busy_seconds += time.perf_counter() - t0


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


def shot_marked(predictor: Predictor, items: Iterable[T], frame_of: Callable[[T], np.ndarray]) -> Iterator[tuple[T, bool]]:
    """(item, starts_a_new_shot) in order: shot cuts found 2 frames ahead (`metrics.shots`, ~0.3 ms
    a frame) for a temporal model with `predictor.shot_reset`; otherwise never a cut, no cost.
    The caller resets its session where an item starts a new shot."""
    if getattr(predictor, "shot_reset", True) and predictor.model.temporal:
        return mark_shot_cuts(items, frame_of=frame_of)
    return ((item, False) for item in items)


def _step_shots(predictor: Predictor, session: Session, frames: list[Any], new_shot: list[bool]) -> list[Any]:
    """`predictor.step_many` over consecutive frames, resetting the session where a frame starts
    a new shot (a batch is split there: no frame attends across the cut)."""
    out: list[Any] = []
    start = 0
    for end in [i for i, flag in enumerate(new_shot) if flag] + [len(frames)]:
        if end > start:
            out += predictor.step_many(session, frames[start:end])
        if end < len(frames):
            session.reset()
        start = end
    return out


def stream(
    predictor: Predictor,
    frames: Iterator[tuple[int, np.ndarray]],
    sinks: list[Sink],
    opacity: float = 0.5,
    on_frame: Callable[[int], None] | None = None,
) -> RunStats:
    """Run every frame of `frames` through one session and hand the results to `sinks`.

    With `predictor.frame_batch` = m > 1, m decoded frames go through the model together
    (`Predictor.step_many`); sinks still get every frame in order. A temporal model's session is
    reset where a shot cut starts a new shot (`predictor.shot_reset`, on by default).

    On success every sink is finished on its thread, then all are closed together (`commit_all`:
    outputs renamed into place) and their results returned; on any error or Ctrl-C before that,
    every sink is aborted (temporary outputs removed) and the error re-raised.
    """
    stop = threading.Event()
    decoded: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)

    # Temporal models forget their cached frames at a shot cut, found on this decode thread;
    # `new_shots` holds the source indices that start a shot.
    new_shots: set[int] = set()

    def decode() -> None:
        for item, new_shot in shot_marked(predictor, frames, lambda it: it[1]):
            if new_shot:
                new_shots.add(item[0])
            _put(decoded, item, stop)
        _put(decoded, _END, stop)

    decoder = _Thread("decode", decode, stop)
    workers = [_SinkWorker(s, stop) for s in sinks]
    need_overlay = any(isinstance(s, VideoSink) for s in sinks)
    times = StageTimes()
    count = 0
    t_start = time.perf_counter()
    try:
        session = predictor.new_session()  # inside: its failure aborts the sinks too
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
            # On CUDA this only queues work (uploads, model, non-blocking copies back): the sink
            # threads wait for the copies, this thread goes on to the next frame.
            with device_scope(predictor.device):
                frames_dev = [predictor.upload(frame) for _, frame in pending]
                labels_dev = _step_shots(predictor, session, frames_dev, [i in new_shots for i, _ in pending])
                results = []
                for (index, frame), frame_dev, labels in zip(pending, frames_dev, labels_dev):
                    blended = (predictor.to_host(overlay(frame_dev, labels, predictor.palette, opacity))
                               if need_overlay else None)
                    results.append((index, frame, predictor.to_host(labels), blended))
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
        sink_results = commit_all(sinks)
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
    return RunStats(count, seconds, count / seconds if seconds > 0 else 0.0, times, sink_results)


def commit_all(sinks: list[Sink]) -> list[Any]:
    """`close()` every finished sink (renames into place), one after the other, with Ctrl-C /
    SIGTERM / SIGHUP held back until all are done: a signal during the commits is re-raised after
    them, so the run keeps all its outputs rather than some (handlers can only be swapped on the
    main thread; elsewhere the commits just run back to back). A failing `close()` still raises
    (the caller aborts the rest)."""
    from vsegcli.runtime.signals import swapped_signals

    held: list[int] = []
    with swapped_signals(lambda signum, frame: held.append(signum)):
        results = [s.close() for s in sinks]
    if held:  # now that every output is final: the interrupt the user asked for
        signal.raise_signal(held[0])
    return results
