"""Video input/output over imageio-ffmpeg's ffmpeg: probe, frame reader, H.264 writer.

    info.py     `probe(path)` -> `VideoInfo` (size, average fps, frame count, audio, rotation);
                `output_fps` / `start_time` for writing what was read
    reader.py   `FrameReader`: (index, RGB uint8 frame) from a video (software or NVDEC) or an
                image folder
    writer.py   `VideoWriter`: H.264 yuv420p, audio muxed, temporary name renamed when complete
    images.py   image folders: `list_images` (natural order), `IMAGE_EXTENSIONS`
    ffmpeg.py   the binary, its flags and its log (stream listing, one-line errors)

Policies (see docs/reference/ecosystem-io.md section 3 for the ffmpeg facts behind them):

* Frames come out in display orientation: ffmpeg autorotates by the display matrix, and every
  buffer is sized from what the decoder actually produces, never from the stored size.
* Variable frame rate: frames are decoded with ``-fps_mode passthrough`` (the true frames, no
  duplicates), and ``VideoInfo.fps`` is the *average* rate. Writing the N decoded frames at
  ``output_fps(info, stride)`` reproduces the input's duration.
* Output is H.264 yuv420p with exact (never rescaled) sizes; odd sizes are padded by one
  replicated row/column. It is written to a hidden temporary name beside the target and renamed
  only when complete, so an interrupted run never leaves a file that looks finished.
* ffmpeg's own log never reaches the terminal; the relevant error line ends up in a VsegError.
"""
from __future__ import annotations

from vsegcli.io.video.images import IMAGE_EXTENSIONS, list_images
from vsegcli.io.video.info import DEFAULT_IMAGE_FPS, VideoInfo, output_fps, probe, start_time
from vsegcli.io.video.reader import HWACCELS, FrameReader
from vsegcli.io.video.writer import VideoWriter

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_IMAGE_FPS",
    "HWACCELS",
    "VideoInfo",
    "probe",
    "list_images",
    "output_fps",
    "start_time",
    "FrameReader",
    "VideoWriter",
]
