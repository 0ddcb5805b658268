"""Where processed frames go: the `Sink` protocol and the two outputs of `vseg run` beside the
report (`vsegcli.report.ConsistencySink`): the overlay video and the label PNGs.

A sink gets every frame in order on its own thread (`pipeline.stream`); `close()` makes its
output final (renamed into place), `abort()` removes whatever it wrote.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import AtomicDir
from vsegcli.runtime.render import Palette


class Sink(Protocol):
    """Receives every processed frame, in order, on its own thread."""

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None: ...

    def close(self) -> Any: ...

    def abort(self) -> None: ...


class LabelPngSink:
    """One PNG per frame, named by the frame's index in the source (000042.png).

    Grey uint8 PNGs hold the class index per pixel (what scripts and evaluators read); with
    `color=True` they are RGB colour maps instead. Written into a temporary folder beside the target
    (`fsutil.AtomicDir`) that is renamed into place when the run completes.
    """

    def __init__(self, folder: Path, palette: Palette, color: bool = False, overwrite: bool = False) -> None:
        folder = Path(folder)
        if folder.exists() and not overwrite and (not folder.is_dir() or any(folder.iterdir())):
            raise VsegError(f"{folder} already exists and is not empty; pass --overwrite or choose another --labels-dir")
        self.folder = folder
        self._staging = AtomicDir(folder)
        self.tmp = self._staging.tmp
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
        return self._staging.commit()

    def abort(self) -> None:
        self._staging.discard()


class VideoSink:
    """Feeds blended overlay frames to a `vsegcli.io.video.VideoWriter` (H.264 mp4, audio muxed on close)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        self.writer.write(blended if blended is not None else frame)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()
