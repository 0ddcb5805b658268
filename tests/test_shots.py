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


# ---------------------------------------------------------------------------------------------
# Temporal sessions forget the previous shot at a cut (runtime.stream, api)
# ---------------------------------------------------------------------------------------------


class _Labels:
    """A sink that keeps every frame's labels."""

    def __init__(self) -> None:
        self.labels: list[np.ndarray] = []

    def write(self, index, frame, labels, blended) -> None:
        self.labels.append(np.asarray(labels).copy())

    def close(self) -> int:
        return len(self.labels)

    def abort(self) -> None:
        pass


def _stream_labels(seg, frames: list[np.ndarray]) -> list[np.ndarray]:
    from vsegcli.runtime import stream

    sink = _Labels()
    stream(seg.predictor, iter(list(enumerate(frames))), [sink])
    return sink.labels


def _load(arch: str):
    """Random weights; STT's output projection starts at zero and the classifier is timid, so
    both get drawn larger: the attention to earlier frames then shows in the labels."""
    import torch

    from vsegcli import api

    seg = api.load(model=arch, device="cpu", label_set="camvid", size=64)
    model = seg.predictor.model
    if hasattr(model, "stt"):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            model.stt.out.weight.copy_(torch.randn(model.stt.out.weight.shape, generator=gen))
            model.stt.out.bias.copy_(torch.randn(model.stt.out.bias.shape, generator=gen) * 0.1)
            for mod in model.decode_head.modules():
                if isinstance(mod, torch.nn.Conv2d) and mod.out_channels == model.num_classes:
                    mod.weight.copy_(torch.randn(mod.weight.shape, generator=gen))
    return seg


@pytest.mark.parametrize("arch", ["stt-effl0", "mrcfa-b0"])
def test_session_reset_at_a_cut_equals_a_fresh_session(bikes: np.ndarray, arch: str, one_thread) -> None:
    seg = _load(arch)
    shot_a = [cv2.resize(f, (128, 54), interpolation=cv2.INTER_AREA) for f in bikes[40:46]]
    shot_b = [cv2.resize(f, (128, 54), interpolation=cv2.INTER_AREA) for f in bikes[150:156]]
    fresh_b = seg.segment_frames(shot_b)  # a new session on the second shot alone
    for batch in (1, 4):  # 4: the cut falls inside a micro-batch, which is split there
        seg.predictor.frame_batch = batch
        seg.predictor.shot_reset = True
        got = _stream_labels(seg, shot_a + shot_b)
        assert len(got) == 12
        for a, b in zip(got[6:], fresh_b):
            np.testing.assert_array_equal(a, b)
    assert [np.array_equal(a, b) for a, b in zip(seg.segment_frames(shot_a + shot_b)[6:], fresh_b)] == [True] * 6
    # Without the reset the second shot's first frames attend to the first shot: labels differ.
    seg.predictor.frame_batch = 1
    seg.predictor.shot_reset = False
    kept = _stream_labels(seg, shot_a + shot_b)
    differ = [int(np.count_nonzero(a != b)) for a, b in zip(kept[6:], fresh_b)]
    assert sum(differ) > 0, differ


def test_clip_without_cuts_is_unchanged(bikes: np.ndarray, one_thread) -> None:
    seg = _load("stt-effl0")
    clip = [cv2.resize(f, (128, 54), interpolation=cv2.INTER_AREA) for f in bikes[40:50]]
    seg.predictor.shot_reset = True
    on = _stream_labels(seg, clip)
    seg.predictor.shot_reset = False
    off = _stream_labels(seg, clip)
    assert len(on) == len(off) == 10
    for a, b in zip(on, off):
        np.testing.assert_array_equal(a, b)
