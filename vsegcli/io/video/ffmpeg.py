"""The ffmpeg binary and its text: where it is, which flags this version takes, its stream listing
and its error lines.

ffmpeg's own log never reaches the terminal; `error_line` picks the line worth putting into a
VsegError. Shared by the probe, the reader and the writer of this package.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from vsegcli.errors import VsegError


class _DropRotationSizeWarning(logging.Filter):
    # imageio-ffmpeg warns on every rotated video that the read size differs from the stored
    # size; that is exactly what autorotation should do, so it is noise for our users.
    def filter(self, record: logging.LogRecord) -> bool:
        return "is different from the source frame size" not in record.getMessage()


logging.getLogger("imageio_ffmpeg").addFilter(_DropRotationSizeWarning())

@dataclass
class Stream:
    index: int
    kind: str  # "Video", "Audio", ...
    codec: str
    text: str  # the stream line after "Video: "/"Audio: "
    side_data: str  # indented lines below the stream line (display matrix lives here)


def ffmpeg_exe() -> str:
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as exc:  # no bundled binary and none on PATH
        raise VsegError(f"ffmpeg was not found ({exc}); reinstall imageio-ffmpeg") from None


def ffmpeg_env() -> dict[str, str] | None:
    """The environment every ffmpeg we start runs in (None: ours, unchanged).

    The static glibc builds of ffmpeg (johnvansickle "-static", bundled by imageio-ffmpeg 0.6 on
    Linux) die with SIGSEGV on any MPEG-TS input: the demuxer converts the service name with
    iconv_open("UTF-8", "ISO6937"), and the static glibc dlopens the host's ISO_6937.so from
    gconv-modules.cache, a module of another glibc. With GCONV_PATH set the cache is skipped and
    only the plain gconv-modules files are read; since glibc 2.34 that file lists just the core
    converters (the rest moved to gconv-modules.d, which the old static glibc does not read), so
    iconv_open fails and ffmpeg keeps the raw bytes. A dynamically linked ffmpeg still finds
    every converter (its glibc reads gconv-modules.d too). On hosts with glibc older than 2.34 the
    plain gconv-modules still lists ISO_6937, so the static build may still crash on MPEG-TS there
    (not seen: Debian 11 is reported not to); a newer imageio-ffmpeg (dynamically linked) avoids it.
    """
    if not sys.platform.startswith("linux") or "GCONV_PATH" in os.environ:
        return None
    return {**os.environ, "GCONV_PATH": os.devnull}  # /dev/null holds no gconv-modules


@functools.lru_cache(maxsize=None)
def _ffmpeg_major() -> int:
    try:
        m = re.match(r"n?(\d+)", imageio_ffmpeg.get_ffmpeg_version())
        return int(m.group(1)) if m else 99
    except Exception:
        return 99


def passthrough_args() -> list[str]:
    # -fps_mode appeared in ffmpeg 5.1 and -vsync was removed in ffmpeg 8/9.
    return ["-fps_mode", "passthrough"] if _ffmpeg_major() >= 5 else ["-vsync", "passthrough"]


def error_line(stderr: str) -> str:
    """The most telling line of an ffmpeg log, for a one-line error message."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    lines = [ln for ln in lines if "At least one output file must be specified" not in ln]
    keys = ("error", "invalid", "not found", "no such", "corrupt", "unable", "failed", "could not")
    for ln in reversed(lines):
        if any(k in ln.lower() for k in keys):
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return re.sub(r"^\[[^\]]*\]\s*", "", lines[-1]) if lines else "no output from ffmpeg"


def hwaccel_error_line(stderr: str) -> str:
    """Why ffmpeg could not decode on the GPU, e.g. "Cannot load libcuda.so.1"."""
    for ln in stderr.replace("\r", "\n").splitlines():
        ln = ln.strip()
        if ln.startswith("[") and re.search(r"cuda|device", ln, re.I):  # "[CUDA @ 0x..] ..." lines
            return re.sub(r"^(\[[^\]]*\]\s*)+", "", ln)
    return error_line(stderr)


def split_top(text: str) -> list[str]:
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


def parse_streams(stderr: str) -> tuple[list[Stream], float | None]:
    streams: list[Stream] = []
    duration = None
    in_input = False
    current: Stream | None = None
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
            current = Stream(int(m.group(1)), m.group(2), codec, rest, "")
            streams.append(current)
        elif current is not None and line.startswith("    "):
            current.side_data += line.strip() + "\n"
    return streams, duration


def run_ffmpeg_info(path: Path | str) -> str:
    # `ffmpeg -i file` with no output prints the container/stream listing and exits 1.
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            env=ffmpeg_env(),
        )
    except subprocess.TimeoutExpired:
        raise VsegError(f"ffmpeg took over 60 s to open {path}; is it a regular video file?") from None
    return proc.stderr.decode("utf-8", "replace")


def popen_detached() -> dict:
    # Keep Ctrl-C away from ffmpeg: we decide whether to finalize or abort the output.
    if sys.platform.startswith("win"):
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


# -- the decoder's log, read while it runs --------------------------------------------------------

# Lines by which ffmpeg says the GPU decoder gave up and it decodes in software instead
# (High10 / 4:4:4 H.264, unsupported codecs): the run goes on, so we must notice ourselves.
_HW_FALLBACK_MARKS = (
    "failed setup for format cuda", "hwaccel initialisation returned error",
    "doesn't support hardware accelerated", "hardware is lacking required capabilities",
    "no device available for decoder", "not supported by the hwaccel",
)
_DECODE_ERROR_MARKS = ("error", "invalid", "corrupt", "concealing", "missing picture", "non-existing",
                       "decode_slice", "left block unavailable", "out of range")


class DecoderLog:
    """What a decoding ffmpeg says on stderr: its header (the input listing and the output
    stream), then decoder errors (corrupted bytes: "Invalid NAL unit size", "concealing ...
    errors") and GPU-decoder fallbacks, counted as they come."""

    def __init__(self) -> None:
        self.header: list[str] = []
        self.output_size: tuple[int, int] | None = None  # (w, h) of the rawvideo stream
        self.header_done = False
        self.errors = 0
        self.error_samples: list[str] = []
        self.hw_fallback: str | None = None
        self.tail: list[str] = []  # last lines, for the message when ffmpeg fails
        self.io_error: str | None = None  # the source's connection failed (not decoding)
        self.pts: list[float] = []  # the first frames' timestamps (showinfo), for a live rate
        self._in_output = False
        self._last_was_error = False

    def feed(self, line: str) -> None:
        line = line.rstrip("\r\n")
        if not line.strip():
            return
        if "Parsed_showinfo" not in line:
            self.tail = (self.tail + [line])[-30:]
        low = line.lower()
        if self.hw_fallback is None and any(m in low for m in _HW_FALLBACK_MARKS):
            self.hw_fallback = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
        if not self.header_done:
            self.header.append(line)
            if line.startswith("Output #0"):
                self._in_output = True
            elif self._in_output and "Video:" in line:
                m = re.search(r"[ ,](\d+)x(\d+)[ ,]", line)
                if m:
                    self.output_size = (int(m.group(1)), int(m.group(2)))
                    self.header_done = True
            return
        if "Parsed_showinfo" in line:
            m = re.search(r"pts_time:\s*(-?[\d.]+)", line)
            if m and len(self.pts) < 256:
                self.pts.append(float(m.group(1)))
            return
        m = re.match(r"\s*Last message repeated (\d+) times", line)
        if m:
            if self._last_was_error:
                self.errors += int(m.group(1))
            return
        self._last_was_error = False
        if "error during demuxing" in low or "input/output error" in low or "connection reset" in low:
            # The source went away (a stream's server closed it): an end, not damaged data.
            self.io_error = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
            return
        if line.startswith("[") and not line.startswith("[out#") and any(k in low for k in _DECODE_ERROR_MARKS):
            self.errors += 1
            self._last_was_error = True
            if len(self.error_samples) < 3:
                self.error_samples.append(re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip()))

    @property
    def header_text(self) -> str:
        return "\n".join(self.header)

    @property
    def text(self) -> str:
        return "\n".join(self.header + self.tail)
