"""Cityscapes with its video context (the `leftImg8bit_sequence` package).

    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png            annotations
    <root>/leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png  video frames

Each annotated image is the 20th frame of a 30-frame snippet: frames frame-19 .. frame+10. Most
cities have one short sequence per annotated frame (frame number 000019); Frankfurt has a few
long sequences with several annotated frames at arbitrary numbers, so snippets are built around
each annotated frame's own number, never around the sequence number. One `Sequence` per
annotated frame, named `<city>_<seq>_<frame>` (the annotated frame's id), label at position 19
(fewer when the frame number is below 19).

Without the sequence package (only `leftImg8bit/`), each annotated image is a one-frame sequence
and a warning says that temporal models get no context there.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from vsegcli.data.datasets.base import Sequence
from vsegcli.errors import VsegError

CONTEXT_BEFORE = 19  # frames before the annotated one in a snippet
CONTEXT_AFTER = 10  # frames after it (only streamed when temporal consistency is measured)
GT_SUFFIX = "_gtFine_labelIds.png"
IMAGE_SUFFIX = "_leftImg8bit.png"
LAYOUT = (
    "expected <root>/gtFine/{split}/<city>/*_gtFine_labelIds.png and "
    "<root>/leftImg8bit_sequence/{split}/<city>/*_leftImg8bit.png (or <root>/leftImg8bit/{split}/...) "
    "(Cityscapes layout)"
)


def _layout_error(root: Path, split: str, problem: str) -> VsegError:
    return VsegError(f"{root}: {problem}; {LAYOUT.format(split=split)}")


def parse_id(name: str) -> tuple[str, str, str]:
    """'frankfurt_000000_001016' -> ('frankfurt', '000000', '001016')."""
    city, seq, frame = (name.rsplit("_", 2) + ["", "", ""])[:3]
    if not city or not seq.isdigit() or not frame.isdigit():
        raise ValueError(name)
    return city, seq, frame


def snippet_numbers(frame: int) -> list[int]:
    """Frame numbers of the snippet around annotated frame `frame`: frame-19 .. frame+10."""
    return list(range(max(0, frame - CONTEXT_BEFORE), frame + CONTEXT_AFTER + 1))


def list_sequences(root: Path, split: str) -> list[Sequence]:
    gt_dir = root / "gtFine" / split
    if not gt_dir.is_dir():
        raise _layout_error(root, split, f"no folder gtFine/{split}/")
    gts = sorted(gt_dir.glob(f"*/*{GT_SUFFIX}"))
    if not gts:
        raise _layout_error(root, split, f"no *{GT_SUFFIX} files in gtFine/{split}/<city>/")
    seq_dir = root / "leftImg8bit_sequence" / split
    frame_dir = root / "leftImg8bit" / split
    if seq_dir.is_dir():
        return [_snippet(root, split, seq_dir, gt) for gt in gts]
    if frame_dir.is_dir():
        warnings.warn(
            f"{root}: no leftImg8bit_sequence/{split}/ (the video package); evaluating the annotated "
            "images alone, so temporal models get no earlier frames as context",
            stacklevel=3,
        )
        return [_single(root, split, frame_dir, gt) for gt in gts]
    raise _layout_error(root, split, f"neither leftImg8bit_sequence/{split}/ nor leftImg8bit/{split}/ exists")


def _gt_id(root: Path, split: str, gt: Path) -> tuple[str, str, str]:
    name = gt.name[: -len(GT_SUFFIX)]
    try:
        return parse_id(name)
    except ValueError:
        raise _layout_error(root, split, f"{gt.name} is not named <city>_<seq>_<frame>{GT_SUFFIX}") from None


def _snippet(root: Path, split: str, seq_dir: Path, gt: Path) -> Sequence:
    city, seq, frame = _gt_id(root, split, gt)
    number, width = int(frame), len(frame)
    frames: list[Path] = []
    target = -1
    for n in snippet_numbers(number):
        path = seq_dir / city / f"{city}_{seq}_{n:0{width}d}{IMAGE_SUFFIX}"
        if not path.is_file():
            if n <= number:  # context and the annotated frame itself are required
                raise _layout_error(
                    root, split,
                    f"missing {path.relative_to(root)} (frame {n} of the snippet of {gt.name}): "
                    f"the leftImg8bit_sequence package for {split} is incomplete",
                )
            break  # frames after the annotated one only serve TC: a short tail is tolerated
        if n == number:
            target = len(frames)
        frames.append(path)
    return Sequence(f"{city}_{seq}_{frame}", frames, {target: gt}, "cityscapes-ids")


def _single(root: Path, split: str, frame_dir: Path, gt: Path) -> Sequence:
    city, seq, frame = _gt_id(root, split, gt)
    path = frame_dir / city / f"{city}_{seq}_{frame}{IMAGE_SUFFIX}"
    if not path.is_file():
        raise _layout_error(root, split, f"missing {path.relative_to(root)} for {gt.name}")
    return Sequence(f"{city}_{seq}_{frame}", [path], {0: gt}, "cityscapes-ids")
