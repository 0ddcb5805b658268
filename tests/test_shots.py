"""Shot-cut detection (vsegcli.metrics.shots) on clips cut from real footage (examples/bikes.mp4),
encoded with the real ffmpeg and decoded back; what the detector guarantees is in its docstring."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vsegcli.io.video.reader import FrameReader
from vsegcli.io.video.writer import VideoWriter
from vsegcli.metrics.shots import ShotCutDetector, detect_shot_cuts, mark_shot_cuts

BIKES = Path(__file__).resolve().parents[1] / "examples" / "bikes.mp4"
# Frames that start a new shot in bikes.mp4, checked by eye (29|30 man in suit, 75|76 taxi ->
# cyclist, 136|137 cyclist -> railings, 186|187, 241|242).
BIKES_CUTS = [30, 76, 137, 187, 242]
W, H = 320, 136  # half size: the clips stay small


@pytest.fixture(scope="module")
def bikes() -> np.ndarray:
    if not BIKES.is_file():
        pytest.skip("examples/bikes.mp4 is missing")
    with FrameReader(BIKES) as reader:
        return np.stack([f for _, f in reader])


def roundtrip(frames: list[np.ndarray], path: Path) -> list[np.ndarray]:
    """Encode with the real ffmpeg (H.264) and decode back: detection sees codec artefacts."""
    h, w = frames[0].shape[:2]
    with VideoWriter(path, w, h, fps=25) as writer:
        for f in frames:
            writer.write(np.ascontiguousarray(f))
    with FrameReader(path) as reader:
        return [f for _, f in reader]


def small(frame: np.ndarray) -> np.ndarray:
    return cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA)


def pan(frame: np.ndarray, n: int, step_fraction: float) -> list[np.ndarray]:
    """n crops W x H sliding right across a full-size frame by `step_fraction` of W per frame."""
    step = round(step_fraction * W)
    assert (n - 1) * step + W <= frame.shape[1]
    return [np.ascontiguousarray(frame[60 : 60 + H, k * step : k * step + W]) for k in range(n)]


def test_bikes_cuts_found_and_nothing_else(bikes: np.ndarray) -> None:
    assert detect_shot_cuts(bikes) == BIKES_CUTS


def test_two_shot_clip_cut_at_the_exact_frame(bikes: np.ndarray, tmp_path: Path) -> None:
    # Two street scenes of similar colours (shot 2: man and cars; shot 4: railings and cars).
    clip = [small(f) for f in bikes[40:52]] + [small(f) for f in bikes[150:162]]
    frames = roundtrip(clip, tmp_path / "two.mp4")
    assert detect_shot_cuts(frames) == [12]


def test_fast_pan_is_not_a_cut(bikes: np.ndarray, tmp_path: Path) -> None:
    frames = roundtrip(pan(bikes[60], 16, 0.06), tmp_path / "pan.mp4")
    assert detect_shot_cuts(frames) == []
    # A pan followed by a real cut: only the cut.
    cut = roundtrip(pan(bikes[60], 12, 0.06) + [small(f) for f in bikes[150:160]], tmp_path / "pancut.mp4")
    assert detect_shot_cuts(cut) == [12]


def flashed(bikes: np.ndarray) -> list[np.ndarray]:
    """Shot 2 with a one-frame white flash (position 5) and a two-frame flash (11, 12: x2.2)."""
    frames = [small(f) for f in bikes[40:58]]
    frames[5] = np.full_like(frames[5], 255)
    for i in (11, 12):
        frames[i] = np.clip(frames[i].astype(np.float32) * 2.2 + 30, 0, 255).astype(np.uint8)
    return frames


def test_flash_is_not_a_cut(bikes: np.ndarray, tmp_path: Path) -> None:
    frames = roundtrip(flashed(bikes), tmp_path / "flash.mp4")
    assert detect_shot_cuts(frames) == []
    # Without the look-ahead the same flashes do look like cuts: the look-ahead is what rejects them.
    assert len(detect_shot_cuts(frames, lookahead=0)) >= 2
    # A flash then a real cut: only the cut.
    clip = flashed(bikes) + [small(f) for f in bikes[150:160]]
    assert detect_shot_cuts(roundtrip(clip, tmp_path / "flashcut.mp4")) == [18]


def test_streaming_marks_items_in_order_with_lookahead(bikes: np.ndarray) -> None:
    clip = [small(f) for f in bikes[20:40]]  # cut at bikes frame 30 -> position 10
    det = ShotCutDetector()
    items = list(enumerate(clip))
    seen = []
    for (pos, frame), flag in mark_shot_cuts(items, frame_of=lambda it: it[1], detector=det):
        seen.append((pos, flag))
        # Decided `lookahead` frames late, never later: frame pos is out once pos+2 was pushed.
        assert det.frames == min(len(clip), pos + 1 + det.lookahead)
    assert [p for p, _ in seen] == list(range(len(clip)))
    assert [p for p, flag in seen if flag] == [10] == det.cuts


def test_short_and_flat_inputs() -> None:
    assert detect_shot_cuts([]) == []
    black = np.zeros((12, 16, 3), np.uint8)
    assert detect_shot_cuts([black] * 4) == []  # flat frames: no structure, no colour change
    grey = np.full((12, 16), 128, np.uint8)  # grey frames are accepted too
    assert detect_shot_cuts([grey, grey]) == []
