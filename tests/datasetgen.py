"""Tiny datasets in the real layouts (CamVid SegNet, Cityscapes + sequence package, VSPW 480p).

Every frame is a flat-coloured scene painted with the dataset's palette: two background bands,
a rectangle that moves right 3 px per frame, a disc that bobs, and a void stripe on the left.
`scene(t, ...)` returns the image and its train-id labels (255 = void), so a model that maps each
pixel to the nearest palette colour (tests' oracle) reproduces the ground truth exactly on PNGs.
Each builder returns a manifest {sequence name: [(image, label or None), ...] in time order} so
tests can check readers and metrics against an independent list of files.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import cv2
import numpy as np

from vsegcli.data.labels import get_label_set

SIZE = (64, 96)  # (H, W): divisible by 32, so no model needs to resize
Manifest = dict[str, list[tuple[Path, "Path | None"]]]


def scene(t: int, classes: list[int], size: tuple[int, int] = SIZE, void: bool = True) -> np.ndarray:
    """(H, W) uint8 train ids of frame t: classes[0] top band, [1] bottom band, [2] moving box,
    [3] bobbing disc, [4] (optional) a thin strip along the bottom; 255 on a void stripe."""
    h, w = size
    lab = np.empty((h, w), np.uint8)
    lab[: h // 2] = classes[0]
    lab[h // 2:] = classes[1]
    x0 = 6 + (3 * t) % (w - 30)
    lab[h // 4: h // 4 + 16, x0: x0 + 20] = classes[2]
    cv2.circle(lab, (w - 18, h - 18 - (t % 6)), 8, int(classes[3]), -1)
    if len(classes) > 4:
        lab[h - 5:, w // 3: 2 * w // 3] = classes[4]
    if void:
        lab[:, :3] = 255
    return lab


def paint(labels: np.ndarray, dataset: str) -> np.ndarray:
    """RGB image of a label map in the dataset's palette (void pixels black)."""
    return get_label_set(dataset).palette_array()[labels]


def _write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(path), image), path
    return path


def _classes(seed: int, num_classes: int, n: int = 5) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(c) for c in rng.choice(num_classes, size=n, replace=False)]


def make_camvid(
    root: Path,
    split: str = "val",
    sequences: dict[str, int] | None = None,
    ext: str = ".png",
    step: int = 30,
    size: tuple[int, int] = SIZE,
) -> Manifest:
    """SegNet layout: <root>/<split>/<seq>_<num>.<ext>, <root>/<split>annot/<seq>_<num>.png
    (values 0..10, 11 = void). Frame numbers start at 90 and grow by `step` (unpadded, so name
    order and time order differ: 90, 120, ..., 990, 1020)."""
    sequences = sequences if sequences is not None else {"0016E5": 6, "0001TP": 4}
    manifest: Manifest = {}
    for s, (name, n) in enumerate(sequences.items()):
        classes = _classes(s, 11)
        items = []
        for i in range(n):
            num = 90 + step * i
            lab = scene(i, classes, size)
            img = _write(root / split / f"{name}_{num}{ext}", paint(lab, "camvid"))
            raw = np.where(lab == 255, 11, lab).astype(np.uint8)
            items.append((img, _write(root / f"{split}annot" / f"{name}_{num}.png", raw)))
        manifest[name] = items
    return manifest


CITYSCAPES_SNIPPETS = (("munster", 100, 19), ("frankfurt", 0, 1016), ("frankfurt", 0, 1030))


def make_cityscapes(
    root: Path,
    split: str = "val",
    snippets: tuple[tuple[str, int, int], ...] = CITYSCAPES_SNIPPETS,
    sequence_package: bool = True,
    size: tuple[int, int] = SIZE,
) -> Manifest:
    """gtFine/<split>/<city>/<id>_gtFine_labelIds.png (label ids, void ids 0 and 9 'parking') and
    either leftImg8bit_sequence/<split>/<city>/ with frames n-19..n+10 of each annotated frame n
    (Frankfurt's long sequence: two annotated frames with overlapping snippets) or, with
    `sequence_package=False`, only leftImg8bit/<split>/<city>/<id>_leftImg8bit.png.

    Frame content depends only on (city, seq, frame number): overlapping snippets agree.
    Manifest: {<city>_<seq>_<frame>: [(frame, label or None), ...]} for the 30 snippet frames."""
    to_ids = get_label_set("cityscapes").train_to_raw_lut()
    manifest: Manifest = {}
    for city, seq, number in snippets:
        classes = _classes(zlib.crc32(f"{city}_{seq}".encode()), 19)  # stable across processes
        items = []
        numbers = range(max(0, number - 19), number + 11) if sequence_package else [number]
        gt = root / "gtFine" / split / city / f"{city}_{seq:06d}_{number:06d}_gtFine_labelIds.png"
        for n in numbers:
            lab = scene(n, classes, size)
            stem = f"{city}_{seq:06d}_{n:06d}_leftImg8bit.png"
            folder = "leftImg8bit_sequence" if sequence_package else "leftImg8bit"
            img = _write(root / folder / split / city / stem, paint(lab, "cityscapes"))
            label = None
            if n == number:
                raw = to_ids[lab]
                raw[lab == 255] = 0  # 'unlabeled'
                raw[-4:, : size[1] // 4] = 9  # 'parking': a void id inside the image too
                label = _write(gt, raw)
            items.append((img, label))
        manifest[f"{city}_{seq:06d}_{number:06d}"] = items
    return manifest


VSPW_CLASSES = [0, 2, 5, 12, 20]  # train ids with well-separated palette colours


def make_vspw(
    root: Path,
    split: str = "val",
    videos: dict[str, int] | None = None,
    nested: bool = True,
    masks: bool = True,
    size: tuple[int, int] = SIZE,
) -> Manifest:
    """<root>/VSPW_480p/<split>.txt (or <root>/<split>.txt with nested=False),
    data/<video>/origin/<00000i>.jpg, data/<video>/mask/<00000i>.png with raw values
    (train id + 1; void stripe alternates between 0 'others' and 255)."""
    videos = videos if videos is not None else {"127_-hIVCYO4C90": 18, "13_aBcD": 5}
    base = root / "VSPW_480p" if nested else root
    manifest: Manifest = {}
    for v, (name, n) in enumerate(videos.items()):
        items = []
        for i in range(n):
            lab = scene(i, VSPW_CLASSES[v:] + VSPW_CLASSES[:v], size)
            img = _write(base / "data" / name / "origin" / f"{i:08d}.jpg", paint(lab, "vspw"))
            mask = None
            if masks:
                raw = np.where(lab == 255, 0 if i % 2 else 255, lab.astype(np.int32) + 1).astype(np.uint8)
                mask = _write(base / "data" / name / "mask" / f"{i:08d}.png", raw)
            items.append((img, mask))
        manifest[name] = items
    base.mkdir(parents=True, exist_ok=True)
    (base / f"{split}.txt").write_text("".join(f"{name}\n" for name in videos))
    return manifest
