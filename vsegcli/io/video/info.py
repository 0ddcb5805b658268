"""What a video file or an image folder holds, found without decoding it: `probe` -> `VideoInfo`.

Timing policy (see docs/reference/ecosystem-io.md section 3): frames are decoded with
``-fps_mode passthrough`` (the true frames, no VFR duplicates) and ``VideoInfo.fps`` is the
*average* rate, so writing the N decoded frames at ``output_fps(info, stride)`` reproduces the
input's duration. Sizes are in display orientation (after rotation).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from vsegcli.errors import VsegError
from vsegcli.io.video.ffmpeg import error_line, ffmpeg_env, ffmpeg_exe, parse_streams, run_ffmpeg_info, split_top
from vsegcli.io.video.images import IMAGE_EXTENSIONS, list_images, read_image

# An image folder has no timing; this is the rate its output video is written at.
DEFAULT_IMAGE_FPS = 25.0
# Below this size probe() counts packets (a demux-only pass, no decoding) for an exact total;
# above it, duration * fps is the (cheaper) estimate.
_COUNT_PACKETS_MAX_BYTES = 64 * 1024 * 1024


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

    path: Path | str
    width: int
    height: int
    fps: float
    num_frames: int | None
    duration: float | None
    has_audio: bool
    rotation: int
    is_image_folder: bool
    source_codec: str | None
    # The decoder's pixel format (yuv420p, yuv420p10le, yuv444p, ...), None if unknown.
    pix_fmt: str | None = None
    # A stream read as it comes (a URL without duration, a capture device, stdin): no frame
    # count, no end but the stream's; `path` is then the URL/spec string, never a Path.
    live: bool = False
    # num_frames is an exact packet count (not duration * fps): frames lost can be told.
    frames_exact: bool = False


def output_fps(info: VideoInfo, stride: int = 1) -> float:
    """Frame rate to write a video made of every ``stride``-th frame, so its duration is right."""
    return info.fps / max(1, int(stride))


def start_time(info: VideoInfo, start: int) -> float:
    """Seconds into the source at which frame ``start`` plays (for ``audio_start``).

    Exact for constant frame rate; an average-rate estimate for VFR sources.
    """
    return max(0, int(start)) / info.fps if info.fps > 0 else 0.0

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
    # Demux-only pass (stream copy, no decoding), one framecrc line per packet = per frame. Not
    # the null muxer's "frame=" progress: ffmpeg 7.0 prints none for a stream copy.
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
             "-map", f"0:{stream_index}", "-c", "copy", "-f", "framecrc", "-"],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=ffmpeg_env(),
        )
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        return None
    # Header lines start with "#"; packet lines with the output stream index, "0,".
    return sum(1 for line in proc.stdout.splitlines() if line.startswith(b"0,"))


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
    from vsegcli.io.video.source import Source, parse_source

    src = parse_source(path) if isinstance(path, (str, Source)) else parse_source(Path(path))
    if src.is_stream:  # a URL stays a string; one connection, like the reader's
        if src.kind == "stdin":
            raise VsegError("stdin cannot be probed without reading it; use FrameReader('-')")
        text = run_ffmpeg_info(src.spec)  # type: ignore[arg-type]
        info = describe_listing(text, src.spec, src.spec)
        return replace(info, live=src.surely_live or info.duration is None,
                       num_frames=None if src.surely_live else info.num_frames)
    path = src.path
    _check_exists(path)
    if path.is_dir():
        return _probe_folder(path)

    text = run_ffmpeg_info(path)
    return describe_listing(text, path, path, count_frames=count_frames)


def describe_listing(text: str, path: Path | str, name: object, count_frames: bool | None = False,
                     live: bool = False) -> VideoInfo:
    """A `VideoInfo` from ffmpeg's input listing (``Input #0 ... Stream #0:0: Video: ...``).

    Used by `probe` for files and by the reader for streams, whose listing comes from the
    decoding ffmpeg itself (they cannot be opened twice). ``name`` is what messages call it.
    """
    streams, duration = parse_streams(text)
    if not streams and "moov atom not found" in text and "misdetection possible" not in text:
        # An mp4 whose index (written last) is missing: cut short or still being written.
        raise VsegError(
            f"{name} looks truncated (its mp4 index is missing: ffmpeg says 'moov atom not "
            "found'); use the complete file or re-download/re-export it"
        )
    if not streams:
        raise VsegError(
            f"{name} is not a video ffmpeg can read ({error_line(text)}); "
            "pass a video file, a folder of images, a URL or a capture device"
        )
    # Cover art in audio files shows up as a one-picture video stream: not a video.
    video = [s for s in streams if s.kind == "Video" and "(attached pic)" not in s.text]
    if not video:
        raise VsegError(f"{name} has no video stream; pass a video file or a folder of images")
    v = video[0]
    parts = split_top(v.text)
    size = None
    for p in parts:
        m = re.match(r"(\d+)x(\d+)(\s|$)", p)
        if m:
            size = (int(m.group(1)), int(m.group(2)))
            break
    if size is None or size[0] <= 0 or size[1] <= 0:
        raise VsegError(f"{name}: ffmpeg reports no frame size for its video stream; "
                        "the file may be damaged, re-encode it")
    rotation = 0
    m = re.search(r"rotation of (-?\d+(?:\.\d+)?) degrees", v.side_data)
    if m:
        rotation = int(round(float(m.group(1)))) % 360
    width, height = size
    if rotation % 180 == 90:  # autorotation swaps the axes
        width, height = height, width
    pix_fmt = None
    if len(parts) > 1:
        m = re.match(r"([a-z0-9_]+)(\(|$)", parts[1])
        pix_fmt = m.group(1) if m else None

    fps = _rate(parts, "fps") or _rate(parts, "tbr")
    fps = _snap_fps(fps) if fps else None
    num_frames = None
    exact = False
    if isinstance(path, Path):
        do_count = count_frames if count_frames is not None else (
            path.stat().st_size <= _COUNT_PACKETS_MAX_BYTES)
        if do_count:
            num_frames = _count_packets(path, v.index)
            exact = num_frames is not None
    if live:
        duration = None
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
        pix_fmt=pix_fmt,
        live=live,
        frames_exact=exact,
    )


def _probe_folder(folder: Path) -> VideoInfo:
    images = list_images(folder)
    if not images:
        raise VsegError(
            f"{folder} contains no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "pass a video file or a folder of frames"
        )
    first = read_image(images[0])
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
