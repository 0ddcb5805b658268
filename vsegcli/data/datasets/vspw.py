"""VSPW (480p release), the layout of the official download and of the MRCFA/CFFM code.

    <root>/VSPW_480p/{train,val,test}.txt        video names, one per line   (or <root>/<split>.txt)
    <root>/VSPW_480p/data/<video>/origin/*.jpg   frames, in time order by file name
    <root>/VSPW_480p/data/<video>/mask/*.png     masks: 0 "others" and 255 void -> ignore,
                                                 1..124 -> classes 0..123

Every frame of every video is annotated (test videos have no masks: nothing to score there).
"""
from __future__ import annotations

from pathlib import Path

from vsegcli.data.datasets.base import Sequence, images_in
from vsegcli.errors import VsegError

LAYOUT = (
    "expected <root>/VSPW_480p/{split}.txt (or <root>/{split}.txt) listing videos, with "
    "data/<video>/origin/*.jpg and data/<video>/mask/*.png beside it (VSPW_480p layout)"
)


def _layout_error(root: Path, split: str, problem: str) -> VsegError:
    return VsegError(f"{root}: {problem}; {LAYOUT.format(split=split)}")


def find_base(root: Path, split: str) -> Path:
    """The folder holding <split>.txt and data/: <root>/VSPW_480p or <root> itself."""
    for base in (root / "VSPW_480p", root):
        if (base / f"{split}.txt").is_file():
            return base
    raise _layout_error(root, split, f"no {split}.txt")


def list_sequences(root: Path, split: str) -> list[Sequence]:
    base = find_base(root, split)
    names = [line.strip() for line in (base / f"{split}.txt").read_text().splitlines()]
    names = [n for n in names if n]
    if not names:
        raise _layout_error(root, split, f"{(base / f'{split}.txt')} lists no videos")
    sequences = []
    for name in names:
        origin = base / "data" / name / "origin"
        if not origin.is_dir():
            raise _layout_error(root, split, f"video {name} from {split}.txt has no folder data/{name}/origin/")
        frames = images_in(origin)
        if not frames:
            raise _layout_error(root, split, f"no frames in data/{name}/origin/")
        mask_dir = base / "data" / name / "mask"
        labels = {}
        for i, f in enumerate(frames):
            mask = mask_dir / f"{f.stem}.png"
            if mask.is_file():
                labels[i] = mask
        sequences.append(Sequence(name, frames, labels, "vspw-raw"))
    return sequences
