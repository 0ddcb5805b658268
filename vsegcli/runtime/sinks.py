"""Where processed frames go: the `Sink` protocol and the two outputs of `vseg run` beside the
report (`vsegcli.report.ConsistencySink`): the overlay video and the label PNGs.

A sink gets every frame in order on its own thread (`pipeline.stream`). At the end, `finish()`
(optional) does the slow work on that thread — flush the encoder, mux audio, write a manifest —
leaving the output complete under its temporary name; then, once every sink has finished,
`close()` makes each output final (a rename) on the caller's thread, one after the other with
Ctrl-C held back: a run leaves all its outputs or none. `abort()` removes whatever it wrote.
A sink without `finish()` does everything in `close()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import AtomicDir
from vsegcli.io.outputs import check_labels_folder, write_labels_manifest
from vsegcli.runtime.render import Palette


class Sink(Protocol):
    """Receives every processed frame, in order, on its own thread."""

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None: ...

    def close(self) -> Any: ...  # also optional: finish() -> None, called before close() on the sink's thread

    def abort(self) -> None: ...


class LabelPngSink:
    """One PNG per frame, named by the frame's index in the source (000042.png).

    Grey uint8 PNGs hold the class index per pixel (what scripts and evaluators read); with
    `color=True` they are RGB colour maps instead. Written into a temporary folder beside the target
    (`fsutil.AtomicDir`) that is renamed into place when the run completes, with the manifest
    `io.outputs.LABELS_MANIFEST` (version, frames, source) that marks it as vseg's own.
    """

    def __init__(self, folder: Path, palette: Palette, color: bool = False, overwrite: bool = False,
                 source: str | Path | None = None) -> None:
        folder = Path(folder)
        # The one rule (io.outputs): new, empty, or a vseg labels folder with --overwrite.
        check_labels_folder(folder, overwrite=overwrite)
        self.folder = folder
        self.overwrite = overwrite
        self.source = None if source is None else str(source)
        self._staging = AtomicDir(folder)
        self.tmp = self._staging.tmp
        self.palette = palette
        self.color = color
        self.count = 0
        self._first: int | None = None
        self._last: int | None = None
        self._finished = False

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        if self.color:
            image = cv2.cvtColor(self.palette.colorize_np(labels), cv2.COLOR_RGB2BGR)
        else:
            image = labels
        if not cv2.imwrite(str(self.tmp / f"{index:06d}.png"), image, [cv2.IMWRITE_PNG_COMPRESSION, 1]):
            raise VsegError(f"could not write label PNGs into {self.tmp.parent}: disk full or no permission?")
        if self._first is None:
            self._first = index
        self._last = index
        self.count += 1

    def finish(self) -> None:
        """Write the manifest (vseg's mark: only such folders are ever replaced)."""
        if self._finished:
            return
        try:
            write_labels_manifest(self.tmp, frames=self.count, source=self.source, color=self.color,
                                  first_frame=self._first, last_frame=self._last)
        except OSError as exc:
            raise VsegError(f"could not write label PNGs into {self.tmp.parent}: {exc.strerror or exc}") from None
        self._finished = True

    def close(self) -> Path:
        """Rename the folder into place, checking again that what is there may be replaced."""
        self.finish()
        check_labels_folder(self.folder, overwrite=self.overwrite)
        return self._staging.commit()

    def abort(self) -> None:
        self._staging.discard()


class VideoSink:
    """Feeds blended overlay frames to a `vsegcli.io.video.VideoWriter` (H.264 mp4, audio muxed on close)."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer

    def write(self, index: int, frame: np.ndarray, labels: np.ndarray, blended: np.ndarray | None) -> None:
        self.writer.write(blended if blended is not None else frame)

    def finish(self) -> None:
        self.writer.finish()

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()
