"""Image folders as videos: which files count as frames, their order, and decoding one.

A folder of images is read in natural order (frame2 before frame10); hidden files are skipped.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from vsegcli.errors import VsegError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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


def read_image(path: Path) -> np.ndarray:
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
