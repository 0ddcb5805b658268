"""Dataset readers: layouts, time order, snippets, label conversions and layout errors."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from datasetgen import make_camvid, make_cityscapes, make_vspw
from vsegcli.data.datasets import (
    DATASET_LABEL_SETS,
    Sequence,
    list_sequences,
    read_image,
    read_label,
)
from vsegcli.data.datasets.cityscapes import snippet_numbers
from vsegcli.errors import VsegError

REAL_CAMVID = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "camvid"


def _png(path: Path, arr: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr, mode="L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
        im.putdata(arr.reshape(-1).tolist())
    elif mode == "RGB":
        im = im.convert("RGB")
    im.save(path)
    return path


def test_label_sets_per_dataset():
    assert DATASET_LABEL_SETS == {"camvid": "camvid", "cityscapes": "cityscapes", "vspw": "vspw"}


# ------------------------------------------------------------------ label conversions


def test_label_conversions(tmp_path: Path):
    raw = np.arange(256, dtype=np.uint8).reshape(16, 16)
    path = _png(tmp_path / "raw.png", raw)
    camvid = read_label(path, "camvid").reshape(-1)
    assert camvid[:11].tolist() == list(range(11)) and (camvid[11:] == 255).all()  # 11 = void
    cs = read_label(path, "cityscapes").reshape(-1)
    ids = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert [int(cs[i]) for i in ids] == list(range(19))
    assert all(cs[i] == 255 for i in range(256) if i not in ids)  # 0..6, 9 parking, 10, 14..16, ...
    vspw = read_label(path, "vspw").reshape(-1)
    assert vspw[0] == 255 and vspw[255] == 255  # "others" and void
    assert vspw[1:125].tolist() == list(range(124))  # raw - 1
    assert (vspw[125:255] == 255).all()
    # A label format works as well as a dataset name (what Sequence.label_format holds).
    assert np.array_equal(read_label(path, "cityscapes-ids").reshape(-1), cs)
    assert np.array_equal(read_label(path, "vspw-raw").reshape(-1), vspw)
    assert np.array_equal(read_label(path, "train").reshape(-1), camvid)


def test_label_png_modes(tmp_path: Path):
    arr = (np.arange(48, dtype=np.uint8) % 12).reshape(6, 8)
    # A palette PNG (VSPW style) gives its indices, not its colours.
    assert np.array_equal(read_label(_png(tmp_path / "p.png", arr, "P"), "camvid"), np.where(arr == 11, 255, arr))
    with pytest.raises(VsegError, match="single-channel"):
        read_label(_png(tmp_path / "rgb.png", arr, "RGB"), "camvid")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(VsegError, match="cannot read"):
        read_label(tmp_path / "bad.png", "camvid")
    with pytest.raises(VsegError, match="cannot read"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(VsegError, match="unknown label format"):
        read_label(tmp_path / "p.png", "kitti")


def test_read_image_is_rgb(tmp_path: Path):
    img = np.zeros((4, 5, 3), np.uint8)
    img[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = read_image(tmp_path / "a.png")
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8 and (out[..., 0] == 200).all() and (out[..., 2] == 0).all()


# ------------------------------------------------------------------ CamVid


def test_camvid_layout(tmp_path: Path):
    manifest = make_camvid(tmp_path, "val", {"0016E5": 6, "0001TP": 4}, ext=".jpg")
    seqs = list_sequences("camvid", tmp_path, "val")
    assert [s.name for s in seqs] == ["0001TP", "0016E5"]
    for s in seqs:
        assert isinstance(s, Sequence) and s.label_format == "train"
        assert s.frames == [img for img, _ in manifest[s.name]]  # by frame number: 90 before 120
        assert s.labels == {i: lab for i, (_, lab) in enumerate(manifest[s.name])}  # all annotated
    gt = read_label(seqs[1].labels[0], "camvid")
    assert gt.shape == (64, 96) and set(np.unique(gt)) <= set(range(11)) | {255} and (gt[:, :3] == 255).all()


def test_camvid_splits_at_gaps_and_f_numbers(tmp_path: Path):
    # SegNet names like 0006R0_f00930, and a sequence whose numbers jump (train 0016E5 skips val).
    make_camvid(tmp_path, "train", {"0006R0": 3}, step=30)
    for p in sorted((tmp_path / "train").glob("0006R0_*")) + sorted((tmp_path / "trainannot").glob("0006R0_*")):
        p.rename(p.with_name(p.name.replace("0006R0_", "0006R0_f0")))
    make_camvid(tmp_path / "g", "train", {"0016E5": 4}, step=30)
    for sub in ("train", "trainannot"):
        for p in (tmp_path / "g" / sub).iterdir():
            shutil.move(p, tmp_path / sub / p.name)
    # Add frames 2000 and 2030 to 0016E5: a 1760-frame jump starts a new part.
    src_img, src_lab = tmp_path / "train" / "0016E5_90.png", tmp_path / "trainannot" / "0016E5_90.png"
    for num in (2000, 2030):
        shutil.copy(src_img, tmp_path / "train" / f"0016E5_{num}.png")
        shutil.copy(src_lab, tmp_path / "trainannot" / f"0016E5_{num}.png")
    seqs = {s.name: s for s in list_sequences("camvid", tmp_path, "train")}
    assert sorted(seqs) == ["0006R0", "0016E5", "0016E5-2"]
    assert [f.name for f in seqs["0006R0"].frames] == ["0006R0_f090.png", "0006R0_f0120.png", "0006R0_f0150.png"]
    assert [f.stem for f in seqs["0016E5"].frames] == ["0016E5_90", "0016E5_120", "0016E5_150", "0016E5_180"]
    assert [f.stem for f in seqs["0016E5-2"].frames] == ["0016E5_2000", "0016E5_2030"]
    assert sorted(seqs["0016E5-2"].labels) == [0, 1]


def test_camvid_errors(tmp_path: Path):
    with pytest.raises(VsegError, match="no such folder"):
        list_sequences("camvid", tmp_path / "nope", "val")
    with pytest.raises(VsegError, match=r"expected <root>/val/\*\.png\|jpg and <root>/valannot/\*\.png \(SegNet"):
        list_sequences("camvid", tmp_path, "val")
    make_camvid(tmp_path, "val", {"0016E5": 3})
    with pytest.raises(VsegError, match="no folder test/.*testannot"):
        list_sequences("camvid", tmp_path, "test")
    (tmp_path / "valannot" / "0016E5_120.png").unlink()
    with pytest.raises(VsegError, match="1 image.* no label PNG.*0016E5_120.png"):
        list_sequences("camvid", tmp_path, "val")
    with pytest.raises(VsegError, match="unknown dataset"):
        list_sequences("kitti", tmp_path, "val")


@pytest.mark.skipif(not REAL_CAMVID.is_dir(), reason=f"real CamVid not found at {REAL_CAMVID}")
def test_real_camvid_val_layout():
    seqs = list_sequences("camvid", REAL_CAMVID, "val")
    assert [s.name for s in seqs] == ["0016E5"]
    seq = seqs[0]
    assert len(seq.frames) == 101 and sorted(seq.labels) == list(range(101))
    numbers = [int(f.stem.split("_")[1]) for f in seq.frames]
    assert numbers == sorted(numbers) and numbers[0] == 7959  # time order, every 2nd frame (15 Hz)
    values: set[int] = set()
    for i in range(0, 101, 10):
        gt = read_label(seq.labels[i], "camvid")
        assert gt.shape == read_image(seq.frames[i]).shape[:2] == (360, 480)
        values |= set(np.unique(gt).tolist())
    assert values <= set(range(11)) | {255} and 255 in values and len(values) > 5


# ------------------------------------------------------------------ Cityscapes


def test_snippet_numbers():
    assert snippet_numbers(19) == list(range(0, 30))  # short sequences: annotated 000019
    assert snippet_numbers(1016) == list(range(997, 1027))  # frankfurt: around the frame itself
    assert snippet_numbers(5) == list(range(0, 16))  # never below frame 0


def test_cityscapes_snippets(tmp_path: Path):
    manifest = make_cityscapes(tmp_path)
    seqs = list_sequences("cityscapes", tmp_path, "val")
    assert [s.name for s in seqs] == ["frankfurt_000000_001016", "frankfurt_000000_001030", "munster_000100_000019"]
    for s in seqs:
        assert s.label_format == "cityscapes-ids"
        assert len(s.frames) == 30 and list(s.labels) == [19]  # annotated frame = 20th
        assert s.frames == [img for img, _ in manifest[s.name]]
        assert s.frames[19].name == f"{s.name}_leftImg8bit.png"
        assert s.labels[19].name == f"{s.name}_gtFine_labelIds.png"
    # Frankfurt's long sequence: snippets around each annotated frame, overlapping here.
    assert seqs[0].frames[0].name == "frankfurt_000000_000997_leftImg8bit.png"
    assert seqs[1].frames[0].name == "frankfurt_000000_001011_leftImg8bit.png"
    assert seqs[1].frames[-1].name == "frankfurt_000000_001040_leftImg8bit.png"
    # label ids -> train ids: 0 'unlabeled' (void stripe) and 9 'parking' become ignore.
    gt = read_label(seqs[2].labels[19], "cityscapes")
    raw = np.asarray(Image.open(seqs[2].labels[19]))
    assert (gt[:, :3] == 255).all() and (gt[-4:, :24] == 255).all()
    assert set(np.unique(raw[gt != 255])) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


def test_cityscapes_incomplete_sequence_package(tmp_path: Path):
    make_cityscapes(tmp_path, snippets=(("munster", 100, 19),))
    seq_dir = tmp_path / "leftImg8bit_sequence" / "val" / "munster"
    for n in (28, 29):  # a short tail after the annotated frame is tolerated (only TC uses it)
        (seq_dir / f"munster_000100_{n:06d}_leftImg8bit.png").unlink()
    (seq,) = list_sequences("cityscapes", tmp_path, "val")
    assert len(seq.frames) == 28 and list(seq.labels) == [19]
    (seq_dir / "munster_000100_000003_leftImg8bit.png").unlink()  # context is required
    with pytest.raises(VsegError, match="missing .*munster_000100_000003_leftImg8bit.png.*incomplete"):
        list_sequences("cityscapes", tmp_path, "val")


def test_cityscapes_without_sequence_package_warns(tmp_path: Path):
    make_cityscapes(tmp_path, sequence_package=False)
    with pytest.warns(UserWarning, match="no leftImg8bit_sequence.*no earlier frames"):
        seqs = list_sequences("cityscapes", tmp_path, "val")
    assert [len(s.frames) for s in seqs] == [1, 1, 1] and all(list(s.labels) == [0] for s in seqs)
    assert seqs[2].frames[0] == tmp_path / "leftImg8bit" / "val" / "munster" / "munster_000100_000019_leftImg8bit.png"


def test_cityscapes_errors(tmp_path: Path):
    layout = r"expected <root>/gtFine/val/<city>/\*_gtFine_labelIds.png and <root>/leftImg8bit_sequence"
    with pytest.raises(VsegError, match=layout):
        list_sequences("cityscapes", tmp_path, "val")
    make_cityscapes(tmp_path, snippets=(("munster", 100, 19),))
    shutil.rmtree(tmp_path / "leftImg8bit_sequence")
    with pytest.raises(VsegError, match="neither leftImg8bit_sequence/val/ nor leftImg8bit/val/"):
        list_sequences("cityscapes", tmp_path, "val")
    (tmp_path / "leftImg8bit" / "val").mkdir(parents=True)
    good = tmp_path / "gtFine" / "val" / "munster" / "munster_000100_000019_gtFine_labelIds.png"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(VsegError, match="missing leftImg8bit/val/munster/munster_000100_000019_leftImg8bit.png"):
            list_sequences("cityscapes", tmp_path, "val")
        good.rename(good.with_name("munster_x_gtFine_labelIds.png"))
        with pytest.raises(VsegError, match="not named <city>_<seq>_<frame>"):
            list_sequences("cityscapes", tmp_path, "val")


# ------------------------------------------------------------------ VSPW


@pytest.mark.parametrize("nested", [True, False])
def test_vspw_layout(tmp_path: Path, nested: bool):
    manifest = make_vspw(tmp_path, videos={"127_-hIVCYO4C90": 6, "13_aBcD": 3}, nested=nested)
    seqs = list_sequences("vspw", tmp_path, "val")
    assert [s.name for s in seqs] == list(manifest)  # split-file order
    for s in seqs:
        assert s.label_format == "vspw-raw"
        assert s.frames == [img for img, _ in manifest[s.name]]
        assert s.labels == {i: m for i, (_, m) in enumerate(manifest[s.name])}  # every frame
    gt0, gt1 = (read_label(seqs[0].labels[i], "vspw") for i in (0, 1))
    assert (gt0[:, :3] == 255).all() and (gt1[:, :3] == 255).all()  # raw 255 and raw 0 -> ignore
    assert set(np.unique(gt0)) == {0, 2, 5, 12, 20, 255}  # raw 1, 3, 6, 13, 21 -> minus one


def test_vspw_test_split_and_errors(tmp_path: Path):
    with pytest.raises(VsegError, match=r"expected <root>/VSPW_480p/val.txt .*\(VSPW_480p layout\)"):
        list_sequences("vspw", tmp_path, "val")
    make_vspw(tmp_path, split="test", videos={"a": 3}, masks=False)
    (seq,) = list_sequences("vspw", tmp_path, "test")
    assert len(seq.frames) == 3 and seq.labels == {}
    (tmp_path / "VSPW_480p" / "test.txt").write_text("a\nmissing_video\n")
    with pytest.raises(VsegError, match="missing_video .*no folder data/missing_video/origin/"):
        list_sequences("vspw", tmp_path, "test")
    (tmp_path / "VSPW_480p" / "test.txt").write_text("\n")
    with pytest.raises(VsegError, match="lists no videos"):
        list_sequences("vspw", tmp_path, "test")
