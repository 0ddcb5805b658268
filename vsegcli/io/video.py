"""Video input/output over imageio-ffmpeg's ffmpeg: probe, frame reader, H.264 writer.

Policies (see docs/reference/ecosystem-io.md section 3 for the ffmpeg facts behind them):

* Frames come out in display orientation: ffmpeg autorotates by the display matrix, and every
  buffer is sized from what the decoder actually produces (imageio-ffmpeg's ``meta["size"]``),
  never from the stored size.
* Variable frame rate: frames are decoded with ``-fps_mode passthrough`` (the true frames, no
  duplicates), and ``VideoInfo.fps`` is the *average* rate. Writing the N decoded frames at
  ``output_fps(info, stride)`` reproduces the input's duration.
* Output is H.264 yuv420p with exact (never rescaled) sizes; odd sizes are padded by one
  replicated row/column. It is written to a hidden temporary name beside the target and renamed
  only when complete, so an interrupted run never leaves a file that looks finished.
* ffmpeg's own log never reaches the terminal; the relevant error line ends up in a VsegError.
"""
from __future__ import annotations

import atexit
import functools
import logging
import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import IO, Iterator
from weakref import WeakSet

import imageio_ffmpeg
import numpy as np

from vsegcli.errors import VsegError

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_IMAGE_FPS",
    "VideoInfo",
    "probe",
    "list_images",
    "output_fps",
    "start_time",
    "FrameReader",
    "VideoWriter",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# An image folder has no timing; this is the rate its output video is written at.
DEFAULT_IMAGE_FPS = 25.0
# Below this size probe() counts packets (a demux-only pass, no decoding) for an exact total;
# above it, duration * fps is the (cheaper) estimate.
_COUNT_PACKETS_MAX_BYTES = 64 * 1024 * 1024
# Output containers we write, and the audio codecs each can carry as-is (others -> AAC).
_MP4_AUDIO_COPY = {"aac", "mp3", "alac", "ac3", "eac3"}
_AUDIO_COPY = {
    ".mp4": _MP4_AUDIO_COPY,
    ".m4v": _MP4_AUDIO_COPY,
    ".mov": _MP4_AUDIO_COPY,
    ".mkv": _MP4_AUDIO_COPY | {"opus", "vorbis", "flac"},
}


class _DropRotationSizeWarning(logging.Filter):
    # imageio-ffmpeg warns on every rotated video that the read size differs from the stored
    # size; that is exactly what autorotation should do, so it is noise for our users.
    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropRotationSizeWarning())


# --------------------------------------------------------------------------------------------
# probing


@dataclass
class VideoInfo:
    """What a reader will deliver.

    width, height: display orientation (after rotation), the size frames will have.
    fps: average frame rate of the source (frames / duration). Decoding keeps the true frames
        (no VFR duplicates), so writing them at this rate reproduces the source's duration.
        When reading with ``stride`` > 1, write at ``output_fps(info, stride)`` = fps / stride.
        For image folders this is DEFAULT_IMAGE_FPS.
    num_frames: frames the reader will yield (after start/max_frames/stride) if known. Exact for
        image folders; for videos an estimate (packet count, or duration * fps) meant for
        progress bars, None if unknown.
    duration: seconds of the source, None if unknown (and for image folders).
    rotation: display-matrix rotation in degrees counter-clockwise, as ffmpeg prints it,
        normalised to [0, 360); 0 if none. Frames are already rotated by it.
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int | None
    duration: float | None
    has_audio: bool
    rotation: int
    is_image_folder: bool
    source_codec: str | None


def output_fps(info: VideoInfo, stride: int = 1) -> float:
    """Frame rate to write a video made of every ``stride``-th frame, so its duration is right."""
    return info.fps / max(1, int(stride))


def start_time(info: VideoInfo, start: int) -> float:
    """Seconds into the source at which frame ``start`` plays (for ``audio_start``).

    Exact for constant frame rate; an average-rate estimate for VFR sources.
    """
    return max(0, int(start)) / info.fps if info.fps > 0 else 0.0


@dataclass
class _Stream:
    index: int
    kind: str  # "Video", "Audio", ...
    codec: str
    text: str  # the stream line after "Video: "/"Audio: "
    side_data: str  # indented lines below the stream line (display matrix lives here)


def _ffmpeg() -> str:
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # no bundled binary and none on PATH
        raise VsegError(f"ffmpeg was not found ({exc}); reinstall imageio-ffmpeg") from None


@functools.lru_cache(maxsize=None)
def _ffmpeg_major() -> int:
    try:
        m = re.match(r"n?(\d+)", imageio_ffmpeg.get_ffmpeg_version())
        return int(m.group(1)) if m else 99
    except Exception:
        return 99


def _passthrough_args() -> list[str]:
    # -fps_mode appeared in ffmpeg 5.1 and -vsync was removed in ffmpeg 8/9.
    return ["-fps_mode", "passthrough"] if _ffmpeg_major() >= 5 else ["-vsync", "passthrough"]


def _error_line(stderr: str) -> str:
    """The most telling line of an ffmpeg log, for a one-line error message."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    lines = [ln for ln in lines if "At least one output file must be specified" not in ln]
    keys = ("error", "invalid", "not found", "no such", "corrupt", "unable", "failed", "could not")
    for ln in reversed(lines):
        if any(k in ln.lower() for k in keys):
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return re.sub(r"^\[[^\]]*\]\s*", "", lines[-1]) if lines else "no output from ffmpeg"


def _hwaccel_error_line(stderr: str) -> str:
    """Why ffmpeg could not decode on the GPU, e.g. "Cannot load libcuda.so.1"."""
    for ln in stderr.replace("\r", "\n").splitlines():
        ln = ln.strip()
        if ln.startswith("[") and re.search(r"cuda|device", ln, re.I):  # "[CUDA @ 0x..] ..." lines
            return re.sub(r"^(\[[^\]]*\]\s*)+", "", ln)
    return _error_line(stderr)


def _split_top(text: str) -> list[str]:
    """Split an ffmpeg stream description on ', ' outside parentheses/brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


_STREAM_RE = re.compile(r"^\s*Stream #0:(\d+)\S*: (Video|Audio|Subtitle|Data|Attachment): (.*)$")


def _parse_streams(stderr: str) -> tuple[list[_Stream], float | None]:
    streams: list[_Stream] = []
    duration = None
    in_input = False
    current: _Stream | None = None
    for line in stderr.splitlines():
        if line.startswith("Input #0"):
            in_input = True
            continue
        if line.startswith(("Input #", "Output #", "Stream mapping")):
            in_input = False
            current = None
            continue
        if not in_input:
            continue
        m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", line)
        if m:
            duration = int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))
            continue
        m = _STREAM_RE.match(line)
        if m:
            rest = m.group(3)
            codec = re.split(r"[ ,]", rest.strip(), maxsplit=1)[0]
            current = _Stream(int(m.group(1)), m.group(2), codec, rest, "")
            streams.append(current)
        elif current is not None and line.startswith("    "):
            current.side_data += line.strip() + "\n"
    return streams, duration


def _run_ffmpeg_info(path: Path) -> str:
    # `ffmpeg -i file` with no output prints the container/stream listing and exits 1.
    try:
        proc = subprocess.run(
            [_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired:
        raise VsegError(f"ffmpeg took over 60 s to open {path}; is it a regular video file?") from None
    return proc.stderr.decode("utf-8", "replace")


def _rate(parts: list[str], unit: str) -> float | None:
    for p in parts:
        m = re.fullmatch(r"(\d+(?:\.\d+)?)(k?) " + unit, p)
        if m:
            return float(m.group(1)) * (1000 if m.group(2) else 1)
    return None


def _snap_fps(fps: float) -> float:
    # ffmpeg prints rates with 2 decimals; restore the exact NTSC rates (29.97 -> 30000/1001)
    # so long outputs do not drift against their audio.
    for base in (24, 30, 48, 60, 120, 240):
        exact = base * 1000 / 1001
        if abs(fps - exact) < 0.006:
            return exact
    return fps


def _count_packets(path: Path, stream_index: int) -> int | None:
    # Demux-only pass (stream copy to the null muxer): no decoding, one packet per frame.
    try:
        proc = subprocess.run(
            [_ffmpeg(), "-hide_banner", "-nostdin", "-i", str(path), "-map", f"0:{stream_index}",
             "-c", "copy", "-f", "null", "-"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
        )
    except subprocess.TimeoutExpired:
        return None
    found = re.findall(rb"frame=\s*(\d+)", proc.stderr)
    return int(found[-1]) if proc.returncode == 0 and found else None


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise VsegError(f"{path} does not exist; check the path")
    if path.is_file() and path.stat().st_size == 0:
        raise VsegError(f"{path} is empty (0 bytes); pass a complete video file")


def probe(path: str | Path, count_frames: bool | None = None) -> VideoInfo:
    """Describe a video file or an image folder without decoding it.

    count_frames: True counts the video's packets (reads, but does not decode, the whole file)
        for an exact ``num_frames``; False uses duration * fps; None (default) counts only for
        files up to 64 MiB.

    Raises VsegError for a missing or empty file, a file ffmpeg cannot open or that has no video
    stream, and a folder without images.
    """
    path = Path(path)
    _check_exists(path)
    if path.is_dir():
        return _probe_folder(path)

    text = _run_ffmpeg_info(path)
    streams, duration = _parse_streams(text)
    if not streams and "moov atom not found" in text and "misdetection possible" not in text:
        # An mp4 whose index (written last) is missing: cut short or still being written.
        raise VsegError(
            f"{path} looks truncated (its mp4 index is missing: ffmpeg says 'moov atom not "
            "found'); use the complete file or re-download/re-export it"
        )
    if not streams:
        raise VsegError(
            f"{path} is not a video ffmpeg can read ({_error_line(text)}); "
            "pass a video file or a folder of images"
        )
    # Cover art in audio files shows up as a one-picture video stream: not a video.
    video = [s for s in streams if s.kind == "Video" and "(attached pic)" not in s.text]
    if not video:
        raise VsegError(f"{path} has no video stream; pass a video file or a folder of images")
    v = video[0]
    parts = _split_top(v.text)
    size = None
    for p in parts:
        m = re.match(r"(\d+)x(\d+)(\s|$)", p)
        if m:
            size = (int(m.group(1)), int(m.group(2)))
            break
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise VsegError(f"{path}: ffmpeg reports no frame size for its video stream; "
                        "the file may be damaged, re-encode it")
    rotation = 0
    m = re.search(r"rotation of (-?\d+(?:\.\d+)?) degrees", v.side_data)
    if m:
        rotation = int(round(float(m.group(1)))) % 360
    width, height = size
    if rotation % 180 == 90:  # autorotation swaps the axes
        width, height = height, width

    fps = _rate(parts, "fps") or _rate(parts, "tbr")
    fps = _snap_fps(fps) if fps else None
    num_frames = None
    do_count = count_frames if count_frames is not None else (
        path.stat().st_size <= _COUNT_PACKETS_MAX_BYTES)
    if do_count:
        num_frames = _count_packets(path, v.index)
    if num_frames is None and duration and fps:
        num_frames = max(1, int(round(duration * fps)))
    if fps is None:
        # No rate in the stream header: derive one if we can, else a common default.
        fps = num_frames / duration if (num_frames and duration) else DEFAULT_IMAGE_FPS

    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=float(fps),
        num_frames=num_frames,
        duration=duration,
        has_audio=any(s.kind == "Audio" for s in streams),
        rotation=rotation,
        is_image_folder=False,
        source_codec=v.codec,
    )


# ffmpeg -hwaccel cuda decodes on the GPU (NVDEC) and hands back system-memory frames, so the
# pipe and the frames are the same as software decoding; "auto" tries it and falls back.
HWACCELS = ("auto", "cuda", "none")


def _natural_key(name: str) -> tuple:
    # "frame2" < "frame10": compare digit runs as numbers; pieces alternate str/int so tuples
    # always compare like with like.
    pieces = re.split(r"(\d+)", name.lower())
    return tuple(int(p) if i % 2 else p for i, p in enumerate(pieces)) + (name,)


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, in natural order (frame2 before frame10).

    Hidden files (e.g. macOS ``._frame.png``) are skipped.
    """
    folder = Path(folder)
    files = [
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: _natural_key(p.name))


def _read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB, C-contiguous; EXIF orientation applied."""
    import cv2  # local: only image folders need OpenCV

    # np.fromfile + imdecode copes with non-ASCII paths on every platform.
    try:
        data = np.fromfile(str(path), np.uint8)
    except OSError as exc:
        raise VsegError(f"cannot read image {path}: {exc.strerror}") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is not None:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    try:  # formats this OpenCV build lacks
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            return np.ascontiguousarray(ImageOps.exif_transpose(im).convert("RGB"))
    except Exception:
        raise VsegError(f"cannot decode image {path}; remove it or convert it to PNG/JPEG") from None


def _probe_folder(folder: Path) -> VideoInfo:
    images = list_images(folder)
    if not images:
        raise VsegError(
            f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "pass a video file or a folder of frames"
        )
    first = _read_image(images[0])
    return VideoInfo(
        path=folder,
        width=int(first.shape[1]),
        height=int(first.shape[0]),
        fps=DEFAULT_IMAGE_FPS,
        num_frames=len(images),
        duration=None,
        has_audio=False,
        rotation=0,
        is_image_folder=True,
        source_codec=None,
    )


def _selected_count(total: int | None, start: int, max_frames: int | None, stride: int) -> int | None:
    if total is None:
        return None
    n = max(0, -(-(total - start) // stride))
    return min(n, max_frames) if max_frames is not None else n


# --------------------------------------------------------------------------------------------
# reading


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
        params += _passthrough_args()
        if self.max_frames is not None:
            params += ["-frames:v", str(self.max_frames + (1 if s > 0 else 0))]
        if self.hwaccel != "none":
            try:
                self._start_ffmpeg(params, ["-hwaccel", "cuda"])
                self.decoder = "cuda"
                return
            except VsegError:
                reason = _hwaccel_error_line(self._ffmpeg_log)
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
                f"{self.info.path}: no decodable video frames ({_error_line(str(exc))}); "
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
                f"{self.info.path}: decoding failed after {k} frames ({_error_line(str(exc))})"
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
            frame = _read_image(p)
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


# --------------------------------------------------------------------------------------------
# writing


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


# Writers still open at interpreter exit are aborted, so a crash leaves no temporary files.
_LIVE_WRITERS: WeakSet[VideoWriter] = WeakSet()


@atexit.register
def _abort_live_writers() -> None:
    for w in list(_LIVE_WRITERS):
        try:
            w.abort()
        except Exception:
            pass


def _popen_detached() -> dict:
    # Keep Ctrl-C away from ffmpeg: we decide whether to finalize or abort the output.
    if sys.platform.startswith("win"):
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class VideoWriter:
    """Encode RGB frames to an H.264 (libx264, yuv420p) video that standard players open.

    Frames must be HxWx3 uint8 RGB of exactly (height, width). Odd sizes are padded to even by
    replicating the last row/column (never rescaled): ``padded_size`` is the (w, h) encoded.
    The video goes to a hidden temporary file beside ``path``; ``close()`` muxes the audio of
    ``audio_source`` (from ``audio_start`` seconds, cut to the video's length), then renames it
    to ``path``. ``abort()`` (or an exception inside ``with``) deletes everything.

    quality: 1..10 like imageio-ffmpeg (libx264 crf = (1 - q/10) * 51; 7 -> crf 15).
    preset: libx264 speed preset (keyword only); "veryfast" keeps the encoder from being the
        bottleneck of a fast model at a small size cost.
    source: the input being processed (keyword only); writing onto it is refused. The
        ``audio_source`` is protected the same way.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        audio_source: Path | None = None,
        audio_start: float = 0.0,
        overwrite: bool = False,
        quality: int = 7,
        *,
        preset: str = "veryfast",
        source: str | Path | None = None,
    ) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = float(fps)
        self.overwrite = overwrite
        self.frames_written = 0
        self._proc: subprocess.Popen | None = None
        self._stderr: IO[bytes] | None = None
        self._temps: list[Path] = []
        self._done = False  # closed successfully or aborted
        self._result: Path | None = None

        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {width}x{height}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise VsegError(f"output frame rate must be a positive number (got {fps})")
        if not (1 <= int(quality) <= 10):
            raise VsegError(f"quality must be between 1 and 10 (got {quality})")
        suffix = self.path.suffix.lower()
        if suffix not in _AUDIO_COPY:
            raise VsegError(
                f"cannot write video {self.path}: use a .mp4 (or .mov/.m4v/.mkv) file name"
            )
        for protected in (source, audio_source):
            if protected is not None and _same_file(Path(protected), self.path):
                raise VsegError(
                    f"refusing to write the output onto the input {protected}; choose another output path"
                )
        if self.path.is_dir():
            raise VsegError(f"{self.path} is a folder; give a video file name such as out.mp4")
        if self.path.exists() and not overwrite:
            raise VsegError(f"{self.path} already exists; pass --overwrite or choose another output path")

        # Audio: decide now, so a bad audio source fails before any encoding.
        self._audio: tuple[Path, float, str] | None = None
        if audio_source is not None:
            self._audio = self._plan_audio(Path(audio_source), float(audio_start), suffix)

        w, h = self.width + self.width % 2, self.height + self.height % 2
        self.padded_size: tuple[int, int] = (w, h)

        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VsegError(f"cannot create output folder {parent}: {exc.strerror}") from None
        token = secrets.token_hex(4)
        self._video_tmp = parent / f".{self.path.name}.part{token}{suffix}"
        self._mux_tmp = parent / f".{self.path.name}.part{token}.a{suffix}"

        rate = Fraction(self.fps).limit_denominator(1001)
        crf = int((1 - int(quality) / 10) * 51)
        cmd = [
            _ffmpeg(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
            "-r", f"{rate.numerator}/{rate.denominator}", "-i", "-",
            "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
            # BT.709 matrix, tagged, so players show the colours we computed.
            "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
                   "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv",
        ]
        if self._audio is None and suffix != ".mkv":
            cmd += ["-movflags", "+faststart"]  # playable while downloading
        cmd.append(str(self._video_tmp))
        self._temps = [self._video_tmp, self._mux_tmp]
        # A file, not a pipe: nobody has to drain it while we write frames.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                **_popen_detached(),
            )
        except OSError as exc:
            self._cleanup()
            raise VsegError(f"cannot start ffmpeg ({exc}); reinstall imageio-ffmpeg") from None
        _LIVE_WRITERS.add(self)

    def _plan_audio(self, src: Path, start: float, suffix: str) -> tuple[Path, float, str] | None:
        if src.is_dir():
            return None
        if not src.exists():
            raise VsegError(f"audio source {src} does not exist; check the path")
        streams, duration = _parse_streams(_run_ffmpeg_info(src))
        audio = [s for s in streams if s.kind == "Audio"]
        if not audio:
            return None  # a silent input gives a silent output
        if duration is not None and start >= duration:
            return None  # the run starts after the audio ends
        codec = "copy" if audio[0].codec in _AUDIO_COPY[suffix] else "aac"
        return src, max(0.0, start), codec

    def write(self, frame: np.ndarray) -> None:
        """Append one HxWx3 uint8 RGB frame of exactly (height, width)."""
        if self._done or self._proc is None:
            raise RuntimeError("write() on a closed or aborted VideoWriter")
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a ({self.height}, {self.width}, 3) uint8 frame, "
                f"got {frame.shape} {frame.dtype}"
            )
        pw, ph = self.padded_size[0] - self.width, self.padded_size[1] - self.height
        if pw or ph:
            frame = np.pad(frame, ((0, ph), (0, pw), (0, 0)), mode="edge")
        else:
            frame = np.ascontiguousarray(frame)
        try:
            stdin = self._proc.stdin
            assert stdin is not None
            stdin.write(frame.reshape(-1).data)
            stdin.flush()  # small frames would otherwise wait in Python's buffer
        except (BrokenPipeError, OSError, ValueError):
            if self._done:  # aborted from another thread while we were writing
                raise RuntimeError("write() on an aborted VideoWriter") from None
            msg = self._ffmpeg_error()
            self.abort()
            raise VsegError(f"encoding {self.path} failed ({msg}); check free disk space and the path") from None
        self.frames_written += 1

    def close(self) -> Path:
        """Finish encoding, mux audio, rename the temporary file to ``path``; returns ``path``."""
        if self._result is not None:
            return self._result
        if self._done:
            raise RuntimeError("close() on an aborted VideoWriter")
        try:
            if self.frames_written == 0:
                raise VsegError(f"no frames were written to {self.path}; nothing to save")
            proc = self._proc
            assert proc is not None and proc.stdin is not None
            try:
                proc.stdin.close()
            except OSError:
                pass
            rc = proc.wait()
            if rc != 0:
                raise VsegError(f"encoding {self.path} failed ({self._ffmpeg_error()})")
            result = self._video_tmp
            if self._audio is not None:
                self._mux(*self._audio)
                result = self._mux_tmp
            if self.path.exists() and not self.overwrite:
                raise VsegError(f"{self.path} appeared while encoding; pass --overwrite or choose another path")
            os.replace(result, self.path)
        except BaseException:
            self.abort()
            raise
        self._proc = None
        self._cleanup()
        self._done = True
        self._result = self.path
        return self.path

    def _mux(self, src: Path, start: float, codec: str) -> None:
        seconds = self.frames_written / self.fps
        cmd = [
            _ffmpeg(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
            "-i", str(self._video_tmp),
            "-ss", f"{start:.6f}", "-t", f"{seconds:.6f}", "-i", str(src),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", codec,
        ]
        if codec == "aac":
            cmd += ["-b:a", "192k"]
        cmd += ["-shortest"]
        if self.path.suffix.lower() != ".mkv":
            cmd += ["-movflags", "+faststart"]
        cmd.append(str(self._mux_tmp))
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              **_popen_detached())
        if proc.returncode != 0:
            raise VsegError(
                f"adding the audio of {src} to {self.path} failed "
                f"({_error_line(proc.stderr.decode('utf-8', 'replace'))}); try without audio"
            )

    def abort(self) -> None:
        """Kill ffmpeg and delete the temporary files; ``path`` is never created."""
        if self._done:
            return
        self._done = True
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            proc.wait()
        self._cleanup()

    def _ffmpeg_error(self) -> str:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(timeout=5)  # let it finish writing its complaint
            except subprocess.TimeoutExpired:
                pass
        if self._stderr is None:
            return "ffmpeg stopped"
        try:
            self._stderr.seek(0)
            return _error_line(self._stderr.read().decode("utf-8", "replace"))
        except (OSError, ValueError):
            return "ffmpeg stopped"

    def _cleanup(self) -> None:
        for p in self._temps:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass
        if self._stderr is not None:
            try:
                self._stderr.close()
            except OSError:
                pass
            self._stderr = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()

    def __del__(self) -> None:
        # Safety net for a writer dropped without close/abort: never leave ffmpeg or temp files.
        try:
            if not self._done:
                self.abort()
        except Exception:
            pass
