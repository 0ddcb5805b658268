"""CamVid in the SegNet layout (the 11-class, 480x360 version most papers use).

    <root>/<split>/<sequence>_<frame>.png|jpg      images   (split: train, val, test)
    <root>/<split>annot/<sequence>_<frame>.png     labels   uint8 0..10, 11 = void

A sequence is the name before the last '_' (0001TP, 0006R0, 0016E5, Seq05VD), its frames ordered
by frame number. Every image is labelled: the labelled frames of the 1 Hz (or 15 Hz) annotation
form a low-frame-rate video of their own, so each sequence is streamed as one video.

Where the frame numbers jump by more than `GAP_FACTOR` times the sequence's usual step, the video
is cut there (the parts are named <sequence>, <sequence>-2, ...): the SegNet train split's 0016E5
skips 1950 frames (65 s, the part that became val) and later 270 frames, and a temporal model must
not use frames a minute away as "previous frames" (nor mVC count windows across the cut).
"""
from __future__ import annotations

from pathlib import Path

from vsegcli.data.datasets.base import Sequence, frame_sort_key, images_in
from vsegcli.errors import VsegError

GAP_FACTOR = 4
LAYOUT = "expected <root>/{split}/*.png|jpg and <root>/{split}annot/*.png (SegNet CamVid layout)"


def _layout_error(root: Path, split: str, problem: str) -> VsegError:
    return VsegError(f"{root}: {problem}; {LAYOUT.format(split=split)}")


def list_sequences(root: Path, split: str) -> list[Sequence]:
    image_dir, label_dir = root / split, root / f"{split}annot"
    if not image_dir.is_dir() or not label_dir.is_dir():
        missing = image_dir if not image_dir.is_dir() else label_dir
        raise _layout_error(root, split, f"no folder {missing.name}/")
    images = images_in(image_dir)
    if not images:
        raise _layout_error(root, split, f"no images in {split}/")
    groups: dict[str, list[tuple[tuple[int, int, str], Path, Path]]] = {}
    missing_labels: list[str] = []
    for image in images:
        seq, sep, frame = image.stem.rpartition("_")
        if not sep:  # no '_' in the name: the whole folder is one video
            seq, frame = split, image.stem
        label = label_dir / f"{image.stem}.png"
        if not label.is_file():
            missing_labels.append(label.name)
            continue
        groups.setdefault(seq, []).append((frame_sort_key(frame), image, label))
    if missing_labels:
        raise _layout_error(
            root, split,
            f"{len(missing_labels)} image(s) have no label PNG in {split}annot/ (first: {missing_labels[0]})",
        )
    sequences = []
    for name in sorted(groups):
        items = sorted(groups[name], key=lambda t: t[0])
        keys = [k for k, _, _ in items]
        if len(set(keys)) != len(keys):
            raise _layout_error(root, split, f"sequence {name} has two images with the same frame number")
        for part, chunk in enumerate(_split_at_gaps(items), start=1):
            sequences.append(Sequence(
                name=name if part == 1 else f"{name}-{part}",
                frames=[img for _, img, _ in chunk],
                labels={i: lab for i, (_, _, lab) in enumerate(chunk)},
                label_format="train",
            ))
    return sequences


def _split_at_gaps(items: list[tuple[tuple[int, int, str], Path, Path]]) -> list[list]:
    """Cut a sorted frame list where the frame number jumps far beyond its usual (median) step."""
    numbers = [k[1] for k, _, _ in items]
    if len(items) < 3 or any(k[0] for k, _, _ in items):  # too short, or names without numbers
        return [items]
    steps = sorted(b - a for a, b in zip(numbers, numbers[1:]))
    limit = GAP_FACTOR * steps[len(steps) // 2]
    parts, start = [], 0
    for i in range(1, len(items)):
        if numbers[i] - numbers[i - 1] > limit:
            parts.append(items[start:i])
            start = i
    parts.append(items[start:])
    return parts
