"""What the user asked to read: `Source` = a file, an image folder, a URL, a capture device or stdin.

A URL stays a string from the command line to ffmpeg's ``-i``: `pathlib` would collapse its
``//`` (``rtsp://host`` -> ``rtsp:/host``). `parse_source` decides the kind once; everything
downstream asks the `Source`.

    parse_source("clip.mp4")                    -> file
    parse_source("frames/")                     -> folder (image sequence)
    parse_source("rtsp://cam.local/stream")     -> url (live)
    parse_source("https://example.org/a.mp4")   -> url (live or not: ffmpeg says whether it has a duration)
    parse_source("/dev/video0") / parse_source("0") -> device (ffmpeg v4l2 on Linux, avfoundation on macOS)
    parse_source("-")                           -> stdin (a video piped in: `cat a.ts | vseg run - ...`)
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

# Protocols that are streams by nature (no end, no frame count).
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "rtp", "udp", "tcp", "srt")
# Everything ffmpeg opens by URL; http(s) may be a file on a server or a live stream.
URL_SCHEMES = LIVE_SCHEMES + ("http", "https", "hls", "ftp", "sftp", "mms", "mmsh")
_URL_RE = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


@dataclass(frozen=True)
class Source:
    """One input. ``spec`` is what the user gave; ``kind`` is file, folder, url, device or stdin."""

    kind: str
    spec: str

    @property
    def path(self) -> Path:
        """The filesystem path of a file or folder (never called for a URL)."""
        if self.kind not in ("file", "folder"):
            raise TypeError(f"{self.spec} is a {self.kind}, not a path")
        return Path(self.spec)

    @property
    def scheme(self) -> str | None:
        m = _URL_RE.match(self.spec)
        return m.group(1).lower() if m and self.kind == "url" else None

    @property
    def is_stream(self) -> bool:
        """True for sources read once, as they come (URLs, devices, stdin): they cannot be probed
        by a separate ffmpeg run (a server with ``-listen 1`` serves one client; stdin is read once),
        so their description comes from the decoding ffmpeg itself."""
        return self.kind in ("url", "device", "stdin")

    @property
    def surely_live(self) -> bool:
        """Live by nature (devices, stdin, rtsp/udp/...); an http(s) URL is live when ffmpeg
        reports no duration."""
        return self.kind in ("device", "stdin") or (self.scheme in LIVE_SCHEMES)

    @property
    def name(self) -> str:
        """A short name for messages and auto-named outputs (``street`` for street.mp4,
        ``cam.local_stream`` for rtsp://cam.local/stream, ``video0``, ``stdin``)."""
        if self.kind in ("file", "folder"):
            p = Path(self.spec)
            return (p.stem if self.kind == "file" else p.name) or p.resolve().name or "input"
        if self.kind == "stdin":
            return "stdin"
        if self.kind == "device":
            return Path(self.spec).name if self.spec.startswith("/") else f"video{self.spec}"
        rest = _URL_RE.sub("", self.spec).split("?", 1)[0].rstrip("/")
        last = rest.rsplit("/", 1)[-1]
        if "/" in rest and "." in last:
            last = last.rsplit(".", 1)[0]  # https://host/x/clip.mp4 -> clip
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", last if "/" in rest else rest).strip("._")
        return name or "stream"

    def ffmpeg_input(self) -> tuple[list[str], str]:
        """(input options, the argument of -i) for ffmpeg."""
        if self.kind == "stdin":
            return [], "pipe:0"
        if self.kind == "device":
            return device_input(self.spec)
        return [], self.spec

    def __str__(self) -> str:
        return self.spec


def device_input(spec: str, platform: str | None = None) -> tuple[list[str], str]:
    """ffmpeg's input for a capture device: ``/dev/video0`` or ``0`` -> v4l2 on Linux,
    avfoundation on macOS (``0`` = first camera), dshow on Windows (by name)."""
    platform = platform or sys.platform
    if platform.startswith("linux"):
        dev = spec if spec.startswith("/dev/") else f"/dev/video{int(spec)}"
        return ["-f", "v4l2"], dev
    if platform == "darwin":
        return ["-f", "avfoundation", "-framerate", "30"], f"{spec}:none"
    return ["-f", "dshow"], f"video={spec}"


def parse_source(spec: str | Path | Source) -> Source:
    """Decide what kind of input ``spec`` is (see the module doc). Never touches the network."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, Path):
        return Source("folder" if spec.is_dir() else "file", str(spec))
    text = str(spec)
    if text == "-":
        return Source("stdin", "-")
    m = _URL_RE.match(text)
    if m and m.group(1).lower() != "file":
        return Source("url", text)
    if m:  # file:///a/b.mp4
        text = text[len("file://"):]
    if re.fullmatch(r"/dev/video\d+", text) or (text.isdigit() and not Path(text).exists()):
        return Source("device", text)
    return Source("folder" if Path(text).is_dir() else "file", text)
