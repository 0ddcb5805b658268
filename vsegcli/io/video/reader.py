"""Decoded frames, streamed: `FrameReader` over a video file (ffmpeg, optionally NVDEC) or an image
folder, yielding ``(source index, HxWx3 uint8 RGB)`` in display orientation.

Every buffer is sized from what the decoder actually produces (imageio-ffmpeg's ``meta["size"]``),
never from the stored size: ffmpeg autorotates by the display matrix.
"""
from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import imageio_ffmpeg
import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.video.ffmpeg import error_line, hwaccel_error_line, passthrough_args
from vsegcli.io.video.images import list_images, read_image
from vsegcli.io.video.info import probe

# ffmpeg -hwaccel cuda decodes on the GPU (NVDEC) and hands back system-memory frames, so the
# pipe and the frames are the same as software decoding; "auto" tries it and falls back.
HWACCELS = ("auto", "cuda", "none")


def _selected_count(total: int | None, start: int, max_frames: int | None, stride: int) -> int | None:
    if total is None:
        return None
    n = max(0, -(-(total - start) // stride))
    return min(n, max_frames) if max_frames is not None else n


class FrameReader:
    """Iterate ``(index, frame)`` over a video file or an image folder.

    ``index`` is the frame's index in the source (start + k * stride); ``frame`` is a writable,
    C-contiguous HxWx3 uint8 RGB array in display orientation. Streams: memory does not grow
    with the length of the input. For a video, ffmpeg is started on construction (errors surface
    early and ``info`` reports the decoded size); ``close()`` (or the context manager) stops it.

    Frame selection is exact: every frame is decoded (temporal codecs need that) and ffmpeg's
    select filter drops the unwanted ones before they cross the pipe.
    """

    def __init__(self, path: str | Path, start: int = 0, max_frames: int | None = None,
                 stride: int = 1, hwaccel: str = "none") -> None:
        if hwaccel not in HWACCELS:
            raise VsegError(f"hwaccel must be one of {', '.join(HWACCELS)} (got {hwaccel!r})")
        if int(start) < 0:
            raise VsegError(f"start must be >= 0 (got {start})")
        if int(stride) < 1:
            raise VsegError(f"stride must be >= 1 (got {stride})")
        if max_frames is not None and int(max_frames) < 1:
            raise VsegError(f"max_frames must be >= 1 (got {max_frames})")
        self.start = int(start)
        self.stride = int(stride)
        self.max_frames = None if max_frames is None else int(max_frames)
        src = probe(path)
        self.source_info = src  # whole source, before start/max_frames/stride
        self.info = replace(
            src, num_frames=_selected_count(src.num_frames, self.start, self.max_frames, self.stride)
        )
        self.hwaccel = hwaccel
        # What decodes: "cuda" (NVDEC via ffmpeg -hwaccel cuda), "software" or "images".
        self.decoder = "images" if src.is_image_folder else "software"
        self.hwaccel_fallback: str | None = None  # why "auto" fell back to software
        self._ffmpeg_log = ""
        self._gen: Iterator[bytes] | None = None
        self._lock = threading.Lock()
        self._stop = False
        self._closed = False
        self._started = False
        if not src.is_image_folder:
            self._open_video()

    # -- video ---------------------------------------------------------------------------------

    def _open_video(self) -> None:
        s, t = self.start, self.stride
        params = ["-map", "0:v:0", "-an", "-sn", "-dn"]
        if s > 0:
            # Frame 0 always passes so ffmpeg announces its output (imageio-ffmpeg waits at most
            # 10 s for that) even when decoding up to `start` takes long; we drop it below.
            params += ["-vf", f"select='eq(n,0)+gte(n,{s})*not(mod(n-{s},{t}))'"]
        elif t > 1:
            params += ["-vf", f"select='not(mod(n,{t}))'"]
        params += passthrough_args()
        if self.max_frames is not None:
            params += ["-frames:v", str(self.max_frames + (1 if s > 0 else 0))]
        if self.hwaccel != "none":
            try:
                self._start_ffmpeg(params, ["-hwaccel", "cuda"])
                self.decoder = "cuda"
                return
            except VsegError:
                reason = hwaccel_error_line(self._ffmpeg_log)
                if self.hwaccel == "cuda":
                    raise VsegError(f"{self.info.path}: hardware decoding (ffmpeg -hwaccel cuda) failed ({reason}); "
                                    "use --hwaccel auto (falls back to software) or none") from None
                self.hwaccel_fallback = reason
        self._start_ffmpeg(params, [])

    def _start_ffmpeg(self, params: list[str], input_params: list[str]) -> None:
        try:
            gen = imageio_ffmpeg.read_frames(str(self.info.path), pix_fmt="rgb24",
                                             input_params=input_params, output_params=params)
            meta = next(gen)
        except StopIteration:
            raise VsegError(f"{self.info.path}: ffmpeg produced no output; the file may be damaged") from None
        except Exception as exc:
            self._ffmpeg_log = str(exc)
            raise VsegError(
                f"{self.info.path}: no decodable video frames ({error_line(str(exc))}); "
                "the file may be truncated or damaged"
            ) from None
        w, h = (int(x) for x in meta["size"])
        # The decoder's size is the truth (autorotation, codec cropping); buffers follow it.
        self.info = replace(self.info, width=w, height=h)
        self._gen = gen

    def _iter_video(self) -> Iterator[tuple[int, np.ndarray]]:
        w, h = self.info.width, self.info.height
        nbytes = w * h * 3
        drop_first = self.start > 0
        k = 0
        interrupted = False
        try:
            while True:
                # The lock keeps close() from another thread off the generator while we are in it.
                with self._lock:
                    gen = self._gen
                    if self._stop or gen is None:
                        interrupted = True
                        break
                    try:
                        raw = next(gen)
                    except StopIteration:
                        break
                if drop_first:
                    drop_first = False
                    continue
                if len(raw) != nbytes:
                    raise VsegError(f"{self.info.path}: decoder returned a frame of unexpected size")
                # bytearray: one copy that gives a writable array (torch.from_numpy wants that).
                frame = np.frombuffer(bytearray(raw), np.uint8).reshape(h, w, 3)
                yield self.start + k * self.stride, frame
                k += 1
        except VsegError:
            raise
        except Exception as exc:
            raise VsegError(
                f"{self.info.path}: decoding failed after {k} frames ({error_line(str(exc))})"
            ) from None
        finally:
            self.close()
        if k == 0 and not interrupted:
            if self.start > 0:
                total = self.source_info.num_frames
                has = f" (it has about {total} frames)" if total else ""
                raise VsegError(
                    f"{self.info.path}: no frames at or after frame {self.start}{has}; use a smaller start"
                )
            raise VsegError(f"{self.info.path}: no decodable video frames; the file may be damaged")

    # -- image folder --------------------------------------------------------------------------

    def _iter_images(self) -> Iterator[tuple[int, np.ndarray]]:
        images = list_images(self.info.path)
        picked = images[self.start :: self.stride]
        if self.max_frames is not None:
            picked = picked[: self.max_frames]
        if not picked:
            raise VsegError(
                f"{self.info.path}: no images at or after index {self.start} "
                f"(it has {len(images)}); use a smaller start"
            )
        expected = (self.info.height, self.info.width)
        for k, p in enumerate(picked):
            if self._stop or self._closed:
                return
            frame = read_image(p)
            if frame.shape[:2] != expected:
                raise VsegError(
                    f"{p} is {frame.shape[1]}x{frame.shape[0]} but the folder's first image is "
                    f"{expected[1]}x{expected[0]}; all images must have the same size"
                )
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

    def close(self) -> None:
        """Stop ffmpeg. Safe to call twice; from another thread it stops iteration at the next
        frame (the iterating thread then does the actual close)."""
        self._stop = True
        if not self._lock.acquire(blocking=False):
            return  # the reading thread is inside next(); it sees _stop and closes
        try:
            gen, self._gen = self._gen, None
            if gen is not None:
                gen.close()  # type: ignore[attr-defined]  # terminates ffmpeg
            self._closed = True
        finally:
            self._lock.release()

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
