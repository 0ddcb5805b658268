"""Encoded output: `VideoWriter` turns RGB frames into an H.264 yuv420p video players open.

Sizes are exact (odd ones padded by one replicated row/column, never rescaled). The video is
written to a hidden temporary name beside the target and renamed only when complete, with the
source's audio muxed in, so an interrupted run never leaves a file that looks finished.
"""
from __future__ import annotations

import atexit
import math
import os
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import IO

from weakref import WeakSet

import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import part_name
from vsegcli.io.outputs import VIDEO_SUFFIXES, check_file_output, check_video_suffix
from vsegcli.io.video.ffmpeg import error_line, ffmpeg_env, ffmpeg_exe, parse_streams, popen_detached, run_ffmpeg_info

# The audio codecs each output container (io.outputs.VIDEO_SUFFIXES) carries as-is (others -> AAC):
# the MP4 family's, and Matroska's on top.
_MP4_AUDIO_COPY = {"aac", "mp3", "alac", "ac3", "eac3"}
_AUDIO_COPY = {s: _MP4_AUDIO_COPY | ({"opus", "vorbis", "flac"} if s == ".mkv" else set()) for s in VIDEO_SUFFIXES}


# Writers still open at interpreter exit are aborted, so a crash leaves no temporary files.
_LIVE_WRITERS: WeakSet[VideoWriter] = WeakSet()


@atexit.register
def _abort_live_writers() -> None:
    for w in list(_LIVE_WRITERS):
        try:
            w.abort()
        except Exception:
            pass


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
        self._finished: Path | None = None  # the complete temporary file, once `finish()` ran

        self._check_request(quality, protected=(source, audio_source))
        suffix = self.path.suffix.lower()
        # Audio: decide now, so a bad audio source fails before any encoding.
        self._audio: tuple[Path, float, str] | None = None
        if audio_source is not None:
            self._audio = self._plan_audio(Path(audio_source), float(audio_start), suffix)
        # Odd sizes are padded to even (yuv420p needs that), never rescaled.
        self.padded_size: tuple[int, int] = (self.width + self.width % 2, self.height + self.height % 2)
        self._video_tmp, self._mux_tmp = self._temp_paths(suffix)
        self._start_encoder(self._encoder_command(int(quality), preset, suffix))
        _LIVE_WRITERS.add(self)

    def _check_request(self, quality: int, protected: tuple[str | Path | None, ...]) -> None:
        """Refuse a bad size, rate, quality or container, writing onto an input, or overwriting."""
        if self.width < 1 or self.height < 1:
            raise ValueError(f"frame size must be positive, got {self.width}x{self.height}")
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise VsegError(f"output frame rate must be a positive number (got {self.fps})")
        if not (1 <= int(quality) <= 10):
            raise VsegError(f"quality must be between 1 and 10 (got {quality})")
        check_video_suffix(self.path)
        # The output rules every vseg output shares (never an input, --overwrite, writable).
        check_file_output(self.path, "output video", inputs=[p for p in protected if p is not None],
                          overwrite=self.overwrite)

    def _temp_paths(self, suffix: str) -> tuple[Path, Path]:
        """Hidden names beside the target for the encoded video and the audio-muxed result."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VsegError(f"cannot create output folder {parent}: {exc.strerror}") from None
        video_tmp = part_name(self.path, suffix)  # .NAME.part<pid>-<token>.mp4: see io.fsutil
        return video_tmp, video_tmp.with_name(f"{video_tmp.name[:-len(suffix)]}.a{suffix}")

    def _encoder_command(self, quality: int, preset: str, suffix: str) -> list[str]:
        """ffmpeg reading raw RGB frames on stdin and writing H.264 yuv420p to the temporary file."""
        w, h = self.padded_size
        rate = Fraction(self.fps).limit_denominator(1001)
        crf = int((1 - quality / 10) * 51)
        cmd = [
            ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
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
        return cmd

    def _start_encoder(self, cmd: list[str]) -> None:
        self._temps = [self._video_tmp, self._mux_tmp]
        # A file, not a pipe: nobody has to drain it while we write frames.
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr,
                env=ffmpeg_env(), **popen_detached(),
            )
        except OSError as exc:
            self._cleanup()
            raise VsegError(f"cannot start ffmpeg ({exc}); reinstall imageio-ffmpeg") from None

    def _plan_audio(self, src: Path, start: float, suffix: str) -> tuple[Path, float, str] | None:
        if src.is_dir():
            return None
        if not src.exists():
            raise VsegError(f"audio source {src} does not exist; check the path")
        streams, duration = parse_streams(run_ffmpeg_info(src))
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

    def finish(self) -> None:
        """Finish encoding and mux audio into the temporary file, without renaming it: the slow
        half of `close()`, so that several outputs can be made final together (`runtime.pipeline`)."""
        if self._finished is not None or self._result is not None:
            return
        if self._done:
            raise RuntimeError("finish() on an aborted VideoWriter")
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
        except BaseException:
            self.abort()
            raise
        self._proc = None
        self._finished = result

    def close(self) -> Path:
        """`finish()` if not done yet, then rename the temporary file to ``path``; returns ``path``."""
        if self._result is not None:
            return self._result
        if self._done:
            raise RuntimeError("close() on an aborted VideoWriter")
        self.finish()
        try:
            if self.path.exists() and not self.overwrite:
                raise VsegError(f"{self.path} appeared while encoding; pass --overwrite or choose another path")
            assert self._finished is not None
            os.replace(self._finished, self.path)
        except BaseException:
            self.abort()
            raise
        self._cleanup()
        self._done = True
        self._result = self.path
        return self.path

    def _mux(self, src: Path, start: float, codec: str) -> None:
        seconds = self.frames_written / self.fps
        cmd = [
            ffmpeg_exe(), "-y", "-hide_banner", "-nostdin", "-loglevel", "error",
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
                              env=ffmpeg_env(), **popen_detached())
        if proc.returncode != 0:
            raise VsegError(
                f"adding the audio of {src} to {self.path} failed "
                f"({error_line(proc.stderr.decode('utf-8', 'replace'))}); try without audio"
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
            return error_line(self._stderr.read().decode("utf-8", "replace"))
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
