"""Tiny synthetic test videos made with imageio-ffmpeg's bundled ffmpeg.

Frames come from `pattern_frame(k, w, h)`, so a test can check that frame k of a decoded or
re-encoded video is frame k of the source: the whole frame's colour encodes k (`frame_index`
reads it back) and a white block marks the top-left corner (orientation checks).
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
_STEP = 8  # colour step per frame index; large enough to survive H.264 error, up to 31 frames


def pattern_frame(k: int, width: int, height: int) -> np.ndarray:
    """Frame k of the test pattern: HxWx3 uint8 RGB.

    Red encodes k (k*8), green is constant, blue is the complement of red; the top-left
    (h//3, w//3) block is white so rotations and flips are visible.
    """
    v = (k * _STEP) % 256
    frame = np.empty((height, width, 3), np.uint8)
    frame[..., 0] = v
    frame[..., 1] = 96
    frame[..., 2] = 255 - v
    frame[: max(1, height // 3), : max(1, width // 3)] = 255
    return frame


def frame_index(frame: np.ndarray) -> int:
    """Inverse of `pattern_frame`: read k back from the bottom-right quarter's red channel."""
    h, w = frame.shape[:2]
    red = float(frame[h // 2 :, w // 2 :, 0].mean())
    return int(round(red / _STEP))


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")


def make_video(
    path: str | Path,
    width: int = 64,
    height: int = 48,
    n_frames: int = 10,
    fps: float = 10.0,
    rotate: int | None = None,
    vfr: bool = False,
    audio: bool = False,
    audio_duration: float | None = None,
    audio_codec: str = "aac",
    audio_silent_until: float = 0.0,
    pattern: str = "index",
    faststart: bool = False,
) -> Path:
    """Write a small H.264 .mp4 (or .mkv/.mov by suffix) and return its path.

    rotate: store a display-matrix rotation (ffmpeg's ``-display_rotation``, counter-clockwise
        degrees) without touching the pixels, like a phone video.
    vfr: uneven timestamps: frame durations alternate 1/fps and 2/fps (average rate 2/3 fps),
        stored with ``-fps_mode passthrough``; see `vfr_times`.
    audio: add a 440 Hz sine track (AAC by default) lasting `audio_duration` seconds
        (default: the video's duration), silent before `audio_silent_until` seconds (so a test
        can tell where an audio cut starts, see `audio_peak_db`).
    pattern: "index" (see `pattern_frame`) or "noise" (seeded random blocks).
    """
    path = Path(path)
    if width % 2 or height % 2:
        pix_fmt = "yuv444p"  # yuv420p cannot hold odd sizes; the reader must still cope
    else:
        pix_fmt = "yuv420p"
    # VFR frames go in on a 1/(2 fps) clock; the setts filter below restamps the encoded packets.
    cmd = [FFMPEG, "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", str(2 * fps if vfr else fps), "-i", "-"]
    video_seconds = vfr_times(n_frames, fps)[-1] if vfr else n_frames / fps
    if audio:
        dur = audio_duration if audio_duration is not None else video_seconds
        expr = f"if(gte(t,{audio_silent_until}),0.5*sin(2*PI*440*t),0)"
        cmd += ["-f", "lavfi", "-i", f"aevalsrc=exprs='{expr}':s=44100:d={dur}"]
    cmd += ["-map", "0:v:0"]
    if audio:
        cmd += ["-map", "1:a:0", "-c:a", audio_codec]
    if vfr:
        # Packet times and durations in ticks of 1/(2 fps), the last frame's included. Not setpts
        # on the frames: ffmpeg 7.0's setpts drops the frame duration, its mp4 muxer then ends
        # the edit list at the last frame's start and that frame is never decoded.
        cmd += ["-bsf:v", "setts=ts=3*N-mod(N\\,2):duration=2+2*mod(N\\,2)", "-fps_mode", "passthrough"]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "8", "-pix_fmt", pix_fmt,
            "-g", "5"]
    if faststart:
        cmd += ["-movflags", "+faststart"]
    target = path if rotate is None else path.with_name(path.stem + ".norot" + path.suffix)
    cmd.append(str(target))

    rng = np.random.default_rng(0)
    frames = []
    for k in range(n_frames):
        if pattern == "noise":
            small = rng.integers(0, 256, (max(1, height // 8), max(1, width // 8), 3), np.uint8)
            f = np.kron(small, np.ones((8, 8, 1), np.uint8))
            f = np.pad(f, ((0, max(0, height - f.shape[0])), (0, max(0, width - f.shape[1])), (0, 0)),
                       mode="edge")[:height, :width]
            frames.append(np.ascontiguousarray(f))
        else:
            frames.append(pattern_frame(k, width, height))
    proc = subprocess.run(cmd, input=b"".join(f.tobytes() for f in frames), capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')}")
    if rotate is not None:
        # -display_rotation is an input option that sets the display matrix; stream copy keeps
        # the pixels as they are (-metadata:s:v rotate=N is ignored by ffmpeg 7+).
        _run([FFMPEG, "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
              "-display_rotation", str(rotate), "-i", str(target), "-c", "copy", str(path)])
        target.unlink()
    return path


def vfr_times(n_frames: int, fps: float) -> list[float]:
    """Start times of the frames `make_video(vfr=True)` writes: frame k starts at
    (3k - k%2) / (2 fps), i.e. durations alternate 1/fps and 2/fps. For fps=20: 0, .05, .15, .2, ...
    The returned list has one more entry, the end of the last frame: every packet carries its
    duration, so the mp4 container duration is that end (same file from ffmpeg 7.0.2 and 9.0.2).
    """
    starts = [(3 * k - k % 2) / (2 * fps) for k in range(n_frames)]
    return starts + [starts[-1] + (2 if (n_frames - 1) % 2 else 1) / fps]


def make_images(folder: str | Path, names: list[str], width: int = 32, height: int = 24,
                sizes: dict[str, tuple[int, int]] | None = None) -> list[Path]:
    """Write pattern frames as image files; image i of `names` shows frame i.

    sizes: optional {name: (w, h)} overrides to build a folder with mixed sizes.
    """
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        w, h = (sizes or {}).get(name, (width, height))
        p = folder / name
        ok = cv2.imwrite(str(p), pattern_frame(i, w, h)[..., ::-1].copy())
        if not ok:
            raise RuntimeError(f"cv2 could not write {p}")
        out.append(p)
    return out


def count_packets(path: str | Path) -> int:
    """Number of video packets (= frames for H.264 without B-frame tricks) in the file."""
    # Stream copy to the framecrc muxer: one line per packet, no decoding. (The null muxer's
    # "frame=" progress is not printed for a stream copy by ffmpeg 7.0.)
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
         "-map", "0:v:0", "-c", "copy", "-f", "framecrc", "-"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return sum(1 for line in proc.stdout.splitlines() if line.startswith("0,"))


def audio_duration(path: str | Path) -> float:
    """Seconds of decoded audio in the first audio stream (decodes it to the null muxer; the
    final progress line's time= is the end of the last sample). 0.0 if there is no audio."""
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0:a:0", "-f", "null", "-"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    text = proc.stderr if proc.returncode == 0 else ""
    found = re.findall(r"time=\s*(-?\d+):(\d+):(\d+(?:\.\d+)?)", text)
    if not found:
        return 0.0
    h, m, s = found[-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def container_info(path: str | Path) -> str:
    """ffmpeg's stream listing (stderr of ``ffmpeg -i``), for asserting codecs and sizes."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    return proc.stderr


def container_duration(path: str | Path) -> float | None:
    """The container's ``Duration:`` in seconds as ffmpeg prints it (None if N/A)."""
    m = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", container_info(path))
    if not m:
        return None
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def audio_peak_db(path: str | Path, start: float, seconds: float) -> float:
    """Peak level (dBFS) of the first audio stream between start and start+seconds;
    -91 or lower means silence."""
    proc = subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-ss", str(start), "-t", str(seconds), "-i", str(path),
         "-map", "0:a:0", "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL)
    m = re.search(r"max_volume: (-?[\d.]+|-inf) dB", proc.stderr)
    if not m:
        raise RuntimeError(proc.stderr)
    return -200.0 if m.group(1) == "-inf" else float(m.group(1))
