"""Decoded frames, streamed: `FrameReader` over a video file (ffmpeg, optionally NVDEC), a URL, a
capture device, stdin, or an image folder, yielding ``(source index, HxWx3 uint8 RGB)`` in display
orientation.

Every buffer is sized from what the decoder actually produces (the rawvideo stream ffmpeg
announces), never from the stored size: ffmpeg autorotates by the display matrix.

One ffmpeg process decodes to raw RGB on a pipe; its stderr is read on a thread (`DecoderLog`), so
decoder errors (corrupted bytes) and a GPU decoder's silent fallback to software are counted and
reported, not lost. Streams (URLs, devices, stdin) are opened once: their description comes from
that same process, a stall ends them after ``read_timeout`` seconds, and `finish()` (the live
run's Ctrl-C) ends them like an end of stream.
"""
from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.video.ffmpeg import (DecoderLog, error_line, ffmpeg_env, ffmpeg_exe, hwaccel_error_line,
                                    passthrough_args, popen_detached)
from vsegcli.io.video.images import list_images, read_image
from vsegcli.io.video.info import DEFAULT_IMAGE_FPS, VideoInfo, describe_listing, probe
from vsegcli.io.video.source import Source, parse_source

# ffmpeg -hwaccel cuda decodes on the GPU (NVDEC) and hands back system-memory frames, so the
# pipe and the frames are the same as software decoding; "auto" tries it and falls back.
HWACCELS = ("auto", "cuda", "none")
# Seconds a stream may send nothing before the run ends with what it has.
DEFAULT_READ_TIMEOUT = 10.0
# Seconds ffmpeg may take to open an input and announce its first frame.
OPEN_TIMEOUT = {"file": 60.0, "stream": 30.0}


def _selected_count(total: int | None, start: int, max_frames: int | None, stride: int) -> int | None:
    if total is None:
        return None
    n = max(0, -(-(total - start) // stride))
    return min(n, max_frames) if max_frames is not None else n


def decode_filters(start: int, stride: int, source_pix_fmt: str | None, hwaccel: bool,
                   timestamps: bool = False) -> list[str]:
    """The -vf chain of the decoder.

    With NVDEC, frames come down from the GPU as NV12 and ffmpeg's NV12 -> RGB conversion differs
    from the software path's yuv420p -> RGB (up to 84 levels): converting to the source's own
    pixel format first makes the two paths give identical pixels (the plane reshuffle is lossless).
    """
    filters: list[str] = []
    if hwaccel and source_pix_fmt:
        filters.append(f"format={source_pix_fmt}")
    if start > 0:
        # Frame 0 always passes so ffmpeg announces its output at once even when decoding up to
        # `start` takes long; the reader drops it.
        filters.append(f"select='eq(n,0)+gte(n,{start})*not(mod(n-{start},{stride}))'")
    elif stride > 1:
        filters.append(f"select='not(mod(n,{stride}))'")
    if timestamps:
        # One log line per frame with its timestamp: a live source's real rate comes from the
        # stream's clock, not from arrival times (bursty after ffmpeg's probing, slowed by us).
        filters.append("showinfo")
    return filters


def decoder_command(source: Source, filters: list[str], max_out: int | None, duration: float | None,
                    hwaccel: bool = False, hwaccel_device: int | None = None,
                    reconnect: bool = False) -> list[str]:
    """The ffmpeg command that decodes `source` to raw RGB24 on stdout."""
    input_opts, target = source.ffmpeg_input()
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats"]
    if source.kind != "stdin":
        cmd.append("-nostdin")
    if hwaccel:
        cmd += ["-hwaccel", "cuda"]
        if hwaccel_device is not None:
            cmd += ["-hwaccel_device", str(int(hwaccel_device))]  # the inference GPU, not always 0
    if reconnect and source.scheme in ("http", "https"):
        cmd += ["-reconnect", "1", "-reconnect_streamed", "1", "-reconnect_delay_max", "5"]
    cmd += input_opts + ["-i", target, "-map", "0:v:0", "-an", "-sn", "-dn"]
    if filters:
        cmd += ["-vf", ",".join(filters)]
    cmd += passthrough_args()
    if max_out is not None:
        cmd += ["-frames:v", str(max_out)]
    if duration is not None:
        cmd += ["-t", f"{duration:.6f}"]
    return cmd + ["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]


class _Stalled(Exception):
    pass


class _DecoderProcess:
    """One running ffmpeg: frames on stdout, its log on a thread."""

    def __init__(self, cmd: list[str], stdin_source: bool) -> None:
        self.log = DecoderLog()
        stdin = None if stdin_source else subprocess.DEVNULL  # `-`: ffmpeg reads our stdin itself
        try:
            self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         env=ffmpeg_env(), **popen_detached())
        except OSError as exc:
            raise VsegError(f"cannot start ffmpeg ({exc}); reinstall imageio-ffmpeg") from None
        self._header = threading.Event()
        self._log_thread = threading.Thread(target=self._read_log, name="ffmpeg-log", daemon=True)
        self._log_thread.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        try:
            for raw in iter(self.proc.stderr.readline, b""):
                self.log.feed(raw.decode("utf-8", "replace"))
                if self.log.header_done:
                    self._header.set()
        except (OSError, ValueError):  # the pipe was closed under us (a process that would not die)
            pass
        self._header.set()  # ffmpeg ended: whoever waits must look at the log

    def wait_header(self, timeout: float, stop: threading.Event) -> bool:
        """True once ffmpeg announced its output; False if it ended (or `stop`) first."""
        deadline = time.monotonic() + timeout
        while not self._header.wait(0.1):
            if stop.is_set():
                return False
            if time.monotonic() > deadline:
                raise _Stalled()
        return self.log.header_done

    def read(self, nbytes: int, stop: threading.Event, timeout: float | None) -> bytearray | None:
        """One frame's bytes; b"" at the end of the stream, None when `stop` was set."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        last = time.monotonic()
        while len(buf) < nbytes:
            if stop.is_set():
                return None
            if sys.platform != "win32":
                ready, _, _ = select.select([fd], [], [], 0.2)
                if not ready:
                    if timeout is not None and time.monotonic() - last > timeout:
                        raise _Stalled()
                    continue
            chunk = os.read(fd, nbytes - len(buf))
            if not chunk:
                if not buf:
                    return b""
                raise VsegError("the decoder stopped in the middle of a frame; the input may be truncated")
            buf += chunk
            last = time.monotonic()
        return buf  # a bytearray: np.frombuffer over it gives a writable array

    def close(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.kill()
        try:
            if proc.stdout is not None:
                proc.stdout.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        # ffmpeg has exited: its log ends with EOF, so the reader thread finishes on its own; the
        # pipe is closed only after it (closing it under a blocked readline crashes that thread).
        self._log_thread.join(timeout=2)
        try:
            if proc.stderr is not None:
                proc.stderr.close()
        except OSError:
            pass


class FrameReader:
    """Iterate ``(index, frame)`` over a video file, a stream (URL, capture device, stdin) or an
    image folder.

    ``index`` is the frame's index in the source (start + k * stride); ``frame`` is a writable,
    C-contiguous HxWx3 uint8 RGB array in display orientation. Streams: memory does not grow
    with the length of the input. For a video, ffmpeg is started on construction (errors surface
    early and ``info`` reports the decoded size); ``close()`` (or the context manager) stops it.

    Frame selection is exact: every frame is decoded (temporal codecs need that) and ffmpeg's
    select filter drops the unwanted ones before they cross the pipe.

    Live sources (``info.live``): no frame count; ``duration`` (seconds) or ``max_frames`` end
    them, else the stream's end, a stall of ``read_timeout`` seconds (``end_reason`` says so) or
    `finish()`. ``reconnect``: reopen a dropped network stream (same size) up to 5 times.
    After iteration: ``decode_errors`` / ``decode_error_samples`` (what the decoder complained
    about), ``decoder`` (the one that really decoded: "cuda", "software" or "images"),
    ``hwaccel_fallback`` (why not the GPU), ``arrivals`` (monotonic times of the first frames).
    """

    def __init__(self, path: str | Path | Source, start: int = 0, max_frames: int | None = None,
                 stride: int = 1, hwaccel: str = "none", *, hwaccel_device: int | None = None,
                 duration: float | None = None, read_timeout: float | None = DEFAULT_READ_TIMEOUT,
                 reconnect: bool = False) -> None:
        if hwaccel not in HWACCELS:
            raise VsegError(f"hwaccel must be one of {', '.join(HWACCELS)} (got {hwaccel!r})")
        if int(start) < 0:
            raise VsegError(f"start must be >= 0 (got {start})")
        if int(stride) < 1:
            raise VsegError(f"stride must be >= 1 (got {stride})")
        if max_frames is not None and int(max_frames) < 1:
            raise VsegError(f"max_frames must be >= 1 (got {max_frames})")
        if duration is not None and not duration > 0:
            raise VsegError(f"duration must be > 0 seconds (got {duration})")
        self.source = parse_source(path)
        self.start = int(start)
        self.stride = int(stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        self.duration = duration
        self.read_timeout = read_timeout
        self.reconnect = reconnect
        self.hwaccel = hwaccel
        self.hwaccel_device = hwaccel_device
        # What decodes: "cuda" (NVDEC via ffmpeg -hwaccel cuda), "software" or "images".
        self.decoder = "software"
        self.hwaccel_fallback: str | None = None  # why "auto" fell back to software
        self.end_reason: str | None = None  # why a live source ended, if not its own end
        self.decode_errors = 0
        self.decode_error_samples: list[str] = []
        self.arrivals: list[float] = []
        self.frames_read = 0
        self._proc: _DecoderProcess | None = None
        self._last_log = ""
        self._log: DecoderLog | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._started = False
        if self.source.is_stream:
            self.source_info: VideoInfo | None = None
            self._open_stream()
        else:
            src = probe(self.source.path)
            self.source_info = src  # whole source, before start/max_frames/stride
            selected = _selected_count(src.num_frames, self.start, self.max_frames, self.stride)
            if duration is not None and selected is not None:
                selected = min(selected, max(1, int(round(duration * src.fps / self.stride))))
            self.info = replace(src, num_frames=selected)
            if src.is_image_folder:
                self.decoder = "images"
            else:
                self._open_video()

    @property
    def name(self) -> str:
        return self.source.spec

    # -- video ---------------------------------------------------------------------------------

    def _max_out(self) -> int | None:
        if self.max_frames is None:
            return None
        return self.max_frames + (1 if self.start > 0 else 0)

    def _open_video(self) -> None:
        src = self.source_info
        assert src is not None
        if self.hwaccel != "none":
            try:
                self._start(src.pix_fmt, hw=True)
                self.decoder = "cuda"
                return
            except VsegError:
                reason = hwaccel_error_line(self._last_log)
                if self.hwaccel == "cuda":
                    raise VsegError(f"{self.name}: hardware decoding (ffmpeg -hwaccel cuda) failed ({reason}); "
                                    "use --hwaccel auto (falls back to software) or none") from None
                self.hwaccel_fallback = reason
        self._start(src.pix_fmt, hw=False)

    def _open_stream(self) -> None:
        # One connection only (a `-listen 1` server serves one client; stdin is read once): no
        # probe, no NVDEC retry. "auto" decodes streams in software.
        hw = self.hwaccel == "cuda"
        self._start(None, hw=hw)
        self.decoder = "cuda" if hw else "software"

    def _start(self, pix_fmt: str | None, hw: bool) -> None:
        filters = decode_filters(self.start, self.stride, pix_fmt, hw, timestamps=self.source.is_stream)
        cmd = decoder_command(self.source, filters, self._max_out(),
                              self.duration, hwaccel=hw, hwaccel_device=self.hwaccel_device,
                              reconnect=self.reconnect)
        proc = _DecoderProcess(cmd, stdin_source=self.source.kind == "stdin")
        timeout = OPEN_TIMEOUT["stream" if self.source.is_stream else "file"]
        try:
            ok = proc.wait_header(timeout, self._stop)
        except _Stalled:
            proc.close()
            raise VsegError(f"{self.name}: no video after {timeout:.0f} s; is the source sending?") from None
        if not ok:
            proc.close()
            text = self._last_log = proc.log.text
            if self.source.is_stream:
                raise VsegError(f"{self.name}: cannot read this stream ({error_line(text)})")
            raise VsegError(f"{self.name}: no decodable video frames ({error_line(text)}); "
                            "the file may be truncated or damaged")
        assert proc.log.output_size is not None
        w, h = proc.log.output_size
        if self.source.is_stream and self.source_info is None:
            described = describe_listing(proc.log.header_text, self.source.spec, self.source.spec)
            live = self.source.surely_live or described.duration is None
            described = replace(described, live=live, num_frames=None if live else described.num_frames)
            self.source_info = described
            self.info = replace(described, num_frames=_selected_count(
                described.num_frames, self.start, self.max_frames, self.stride))
        # The decoder's size is the truth (autorotation, codec cropping); buffers follow it.
        self.info = replace(self.info, width=w, height=h)
        self._proc = proc
        self._log = proc.log

    def _reopen(self) -> bool:
        """Reconnect a dropped stream; False when it cannot be (size changed, not reachable)."""
        size = (self.info.width, self.info.height)
        for _ in range(5):
            if self._stop.is_set():
                return False
            time.sleep(1.0)
            try:
                self._start(None, hw=self.decoder == "cuda")
            except VsegError:
                continue
            if (self.info.width, self.info.height) == size:
                return True
            return False
        return False

    def _iter_video(self) -> Iterator[tuple[int, np.ndarray]]:
        live = self.info.live
        drop_first = self.start > 0
        k = 0
        stopped = False
        try:
            while True:
                w, h = self.info.width, self.info.height
                proc = self._proc
                if proc is None or self._stop.is_set():
                    stopped = True
                    break
                try:
                    raw = proc.read(w * h * 3, self._stop, self.read_timeout if self.source.is_stream else None)
                except _Stalled:
                    self._absorb_log(proc)
                    proc.close()
                    self._proc = None
                    if self.reconnect and self.source.kind != "stdin" and self._reopen():
                        continue
                    self.end_reason = f"the stream sent nothing for {self.read_timeout:.0f} s"
                    break
                if raw is None:
                    stopped = True
                    break
                if not raw:  # end of stream
                    self._absorb_log(proc)
                    if proc.log.io_error and self.end_reason is None:
                        self.end_reason = f"the connection ended ({proc.log.io_error})"
                    if live and self.reconnect and self.source.kind != "stdin" and k > 0 and (
                            self.max_frames is None or k < self.max_frames):
                        proc.close()
                        self._proc = None
                        if self._reopen():
                            continue
                        self.end_reason = "the stream ended and could not be reopened"
                    break
                if drop_first:
                    drop_first = False
                    continue
                if len(self.arrivals) < 256:
                    self.arrivals.append(time.monotonic())
                frame = np.frombuffer(raw, np.uint8).reshape(h, w, 3)
                self.frames_read = k + 1
                yield self.start + k * self.stride, frame
                k += 1
                if self.max_frames is not None and k >= self.max_frames:
                    break
        except VsegError as exc:
            raise VsegError(f"{self.name}: {exc}") from None
        finally:
            if self._proc is not None:
                self._absorb_log(self._proc)
            self.close()
        if k == 0 and not stopped:
            if self.start > 0:
                total = self.source_info.num_frames if self.source_info else None
                has = f" (it has about {total} frames)" if total else ""
                raise VsegError(
                    f"{self.name}: no frames at or after frame {self.start}{has}; use a smaller start"
                )
            reason = f" ({self.decode_error_samples[0]})" if self.decode_error_samples else ""
            raise VsegError(f"{self.name}: no decodable video frames{reason}; the file may be damaged")

    def _absorb_log(self, proc: _DecoderProcess) -> None:
        """Take the decoder's counts (errors, a GPU fallback) once it has finished talking."""
        if proc.proc.poll() is not None:
            proc._log_thread.join(timeout=2)
        log = proc.log
        self.decode_errors = max(self.decode_errors, log.errors)
        for s in log.error_samples:
            if s not in self.decode_error_samples and len(self.decode_error_samples) < 3:
                self.decode_error_samples.append(s)
        if self.decoder == "cuda" and log.hw_fallback:
            # ffmpeg fell back to software inside the run (High10, 4:4:4, ...): say so.
            self.decoder = "software"
            self.hwaccel_fallback = f"NVDEC cannot decode this stream: {log.hw_fallback}"

    # -- image folder --------------------------------------------------------------------------

    def _iter_images(self) -> Iterator[tuple[int, np.ndarray]]:
        images = list_images(self.info.path)  # type: ignore[arg-type]
        picked = images[self.start :: self.stride]
        if self.max_frames is not None:
            picked = picked[: self.max_frames]
        if self.duration is not None:
            picked = picked[: max(1, int(round(self.duration * DEFAULT_IMAGE_FPS / self.stride)))]
        if not picked:
            raise VsegError(
                f"{self.info.path}: no images at or after index {self.start} "
                f"(it has {len(images)}); use a smaller start"
            )
        expected = (self.info.height, self.info.width)
        for k, p in enumerate(picked):
            if self._stop.is_set() or self._closed:
                return
            frame = read_image(p)
            if frame.shape[:2] != expected:
                raise VsegError(
                    f"{p} is {frame.shape[1]}x{frame.shape[0]} but the folder's first image is "
                    f"{expected[1]}x{expected[0]}; all images must have the same size"
                )
            self.frames_read = k + 1
            yield self.start + k * self.stride, frame

    # -- protocol ------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self._started:
            raise RuntimeError("a FrameReader can be iterated only once; create a new one")
        self._started = True
        if self.info.is_image_folder:
            return self._iter_images()
        if self._closed:
            return iter(())
        return self._iter_video()

    def measured_fps(self) -> float | None:
        """A stream's real frame rate: from the timestamps of its first frames (up to 256), else
        from their arrival times (median spacing). None before two frames."""
        pts = self._log.pts if self._log is not None else []
        if len(pts) >= 2 and pts[-1] > pts[0]:
            return (len(pts) - 1) / (pts[-1] - pts[0])
        t = self.arrivals
        if len(t) < 2:
            return None
        gaps = sorted(b - a for a, b in zip(t, t[1:]))
        gap = gaps[len(gaps) // 2]
        return 1.0 / gap if gap > 0 else None

    def finish(self, reason: str) -> None:
        """End the source as if the stream ended (a live run's Ctrl-C): frames read so far are
        kept; iteration stops at the next frame. Safe from a signal handler."""
        if self.end_reason is None:
            self.end_reason = reason
        self._stop.set()

    def close(self) -> None:
        """Stop ffmpeg. Safe to call twice and from another thread (iteration then stops at the
        next frame)."""
        self._stop.set()
        proc, self._proc = self._proc, None
        if proc is not None:
            self._absorb_log(proc)
            proc.close()
        self._closed = True

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
