"""Temporal consistency (flow-warped TC, flicker) and VSPW mVC against independent computations."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from vsegcli.errors import VsegError
from vsegcli.metrics import TemporalConsistency, VideoConsistency, temporal_consistency

# ---------------------------------------------------------------------------------------------
# TC / flicker
# ---------------------------------------------------------------------------------------------


def _scene(num_frames: int, shift: int, h: int = 96, w: int = 160, k: int = 5):
    """A textured image panned `shift` px per frame, with striped labels panned the same."""
    rng = np.random.default_rng(0)
    span = w + shift * num_frames
    big = cv2.GaussianBlur(rng.integers(0, 255, (h, span, 3), dtype=np.uint8), (0, 0), 2)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    lab = ((np.arange(span) // 12) % k).astype(np.uint8)[None].repeat(h, 0)
    lab[h // 3: 2 * h // 3] = (lab[h // 3: 2 * h // 3] + 2) % k
    frames = [np.ascontiguousarray(big[:, shift * t: shift * t + w]) for t in range(num_frames)]
    labels = [np.ascontiguousarray(lab[:, shift * t: shift * t + w]) for t in range(num_frames)]
    return frames, labels


def test_static_video_is_perfectly_consistent():
    frames, labels = _scene(1, 0)
    res = temporal_consistency(frames * 4, labels * 4, 5, flow_size=None)
    assert res.num_pairs == 3
    assert res.tc == pytest.approx(100.0)
    assert res.flicker_rate == 0 and res.flow_flicker_rate == 0
    np.testing.assert_allclose(res.per_class_tc, 100.0)
    assert res.flicker_heatmap is not None and res.flicker_heatmap.max() == 0


@pytest.mark.parametrize("preset", ["medium", "fast"])
def test_translating_scene_flow_compensates_the_motion(preset):
    frames, labels = _scene(6, 3)
    res = temporal_consistency(frames, labels, 5, flow_size=None, flow_preset=preset)
    assert res.flow_method == f"opencv-dis-{preset}"
    assert res.tc > 90
    assert res.flow_flicker_rate < 0.05
    # Without flow, 3 px of a 12 px stripe changes each frame: about a quarter of the pixels.
    assert 0.15 < res.flicker_rate < 0.35
    assert res.valid_fraction > 0.9  # only the border column band leaves the image
    assert len(res.per_pair_flicker) == len(res.per_pair_flow_flicker) == 5


def test_shuffled_labels_drop_tc():
    frames, labels = _scene(6, 3)
    rng = np.random.default_rng(1)
    shuffled = [rng.permutation(5).astype(np.uint8)[lab] for lab in labels]
    good = temporal_consistency(frames, labels, 5, flow_size=None).tc
    bad = temporal_consistency(frames, shuffled, 5, flow_size=None).tc
    assert bad < 40 < 90 < good
    noise = [rng.integers(0, 5, lab.shape).astype(np.uint8) for lab in labels]
    assert temporal_consistency(frames, noise, 5, flow_size=None).tc < 20


def _zero_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.zeros((*a.shape, 2), np.float32)


def _shift_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    flow = np.zeros((*a.shape, 2), np.float32)
    flow[..., 0] = 1.0  # pixel x of frame t is at x + 1 in frame t+1
    return flow


P0 = np.array([[0, 0, 1, 1], [2, 2, 1, 1]], np.uint8)
P1 = np.array([[0, 1, 1, 1], [2, 2, 2, 1]], np.uint8)
BLANK = np.zeros((2, 4, 3), np.uint8)


def test_hand_made_pair_with_zero_flow():
    tc = TemporalConsistency(3, flow_size=None, flow_fn=_zero_flow)
    tc.update(BLANK, P0)
    tc.update(BLANK, P1)
    res = tc.result()
    # Confusion rows P0, cols P1: [[1,1,0],[0,3,1],[0,0,2]].
    np.testing.assert_array_equal(res.tc_confusion, [[1, 1, 0], [0, 3, 1], [0, 0, 2]])
    np.testing.assert_allclose(res.per_class_tc, [100 * 1 / 2, 100 * 3 / 5, 100 * 2 / 3])
    assert res.tc == pytest.approx(100 * (1 / 2 + 3 / 5 + 2 / 3) / 3)
    assert res.flicker_rate == pytest.approx(2 / 8)
    assert res.flow_flicker_rate == pytest.approx(2 / 8)
    np.testing.assert_allclose(res.per_class_flicker, [1 / 2, 1 / 4, 0])
    np.testing.assert_allclose(res.per_class_flow_flicker, [1 / 2, 1 / 4, 0])
    np.testing.assert_allclose(res.class_share, [[2 / 8, 4 / 8, 2 / 8], [1 / 8, 4 / 8, 3 / 8]])
    expected_heat = np.zeros((2, 4))
    expected_heat[0, 1] = expected_heat[1, 2] = 1
    np.testing.assert_array_equal(res.flicker_heatmap, expected_heat)
    assert res.analysis_size == (2, 4) and res.flow_method == "custom"


def test_hand_made_pair_with_injected_shift():
    tc = TemporalConsistency(3, flow_size=None, flow_fn=_shift_flow)
    tc.update(BLANK, P0)
    tc.update(BLANK, P1)
    res = tc.result()
    # W(y, x) = P1(y, x + 1); the last column samples outside the image and is excluded.
    # P0 -> W: row 0 (0,0,1) -> (1,1,1); row 1 (2,2,1) -> (2,2,1).
    np.testing.assert_array_equal(res.tc_confusion, [[0, 2, 0], [0, 2, 0], [0, 0, 2]])
    np.testing.assert_allclose(res.per_class_tc, [0, 50, 100])
    assert res.tc == pytest.approx(50)
    assert res.valid_fraction == pytest.approx(6 / 8)
    assert res.flow_flicker_rate == pytest.approx(2 / 6)
    assert res.flicker_rate == pytest.approx(2 / 8)  # flow-free value unaffected by the flow


def test_out_of_range_labels_are_excluded_and_absent_classes_nan():
    p0 = P0.copy()
    p0[0, 0] = 255
    tc = TemporalConsistency(4, flow_size=None, flow_fn=_zero_flow)
    tc.update(BLANK, p0)
    tc.update(BLANK, P1)
    res = tc.result()
    assert res.tc_confusion.sum() == 7
    assert math.isnan(res.per_class_tc[3])  # class 3 never appears
    d = json.loads(json.dumps(res.to_dict(include_heatmap=True, include_confusion=True)))
    assert d["per_class_tc"][3] is None and d["units"]["tc"] == "percent"
    assert len(d["flicker_heatmap"]) == 2


def test_analysis_grid_and_streaming_equals_helper():
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (272, 640, 3), dtype=np.uint8) for _ in range(3)]
    labels = [rng.integers(0, 4, (272, 640), dtype=np.uint8) for _ in range(3)]
    acc = TemporalConsistency(4, flow_size=256, flow_fn=_zero_flow)
    for f, lab in zip(frames, labels):
        acc.update(f, lab)
    res = acc.result()
    assert res.frame_size == (272, 640) and res.analysis_size == (256, 602)
    assert res.flicker_heatmap is not None and res.flicker_heatmap.shape == (256, 602)
    again = temporal_consistency(frames, labels, 4, flow_size=256, flow_fn=_zero_flow)
    assert again.to_dict() == res.to_dict()
    with pytest.raises(VsegError):
        acc.update(frames[0][:100], labels[0][:100])
    with pytest.raises(VsegError):
        temporal_consistency(frames, labels[:2], 4, flow_fn=_zero_flow)
    with pytest.raises(VsegError):
        TemporalConsistency(4, flow_preset="slow")


def test_frames_too_small_for_dis_fall_back_to_no_flow():
    res = temporal_consistency([BLANK] * 2, [P0, P1], 3)
    assert res.flow_method.startswith("none") and res.tc == pytest.approx(
        100 * (1 / 2 + 3 / 5 + 2 / 3) / 3
    )


# ---------------------------------------------------------------------------------------------
# mVC: a literal transcription of the VSPW formula (stt-metrics-datasets §4) as the reference
# ---------------------------------------------------------------------------------------------


def test_pairs_across_a_shot_cut_are_left_out():
    # Two scenes (different textures, labels and pans); the pair between them is a cut.
    fa, la = _scene(5, 3)
    fb, lb = _scene(4, 4)
    rng = np.random.default_rng(1)
    fb = [np.ascontiguousarray(255 - f[:, ::-1]) for f in fb]  # another picture
    lb = [np.ascontiguousarray(((lab.astype(int) + rng.integers(1, 4)) % 5).astype(np.uint8)) for lab in lb]
    opts = dict(flow_size=None, flow_fn=_zero_flow)
    only_a = temporal_consistency(fa, la, 5, shot_cuts=False, **opts)
    only_b = temporal_consistency(fb, lb, 5, shot_cuts=False, **opts)
    acc = TemporalConsistency(5, **opts)
    for i, (f, lab) in enumerate(zip(fa + fb, la + lb)):
        acc.update(f, lab, new_shot=i == len(fa))
    res = acc.result()
    # Independent check: excluding the cut pair = scoring the two shots separately.
    np.testing.assert_array_equal(res.tc_confusion, only_a.tc_confusion + only_b.tc_confusion)
    assert res.shot_cuts == [5] and res.pairs_excluded == 1 and res.num_pairs == 7
    assert math.isnan(res.per_pair_flicker[4]) and math.isnan(res.per_pair_flow_flicker[4])
    assert len(res.per_pair_flicker) == 8 and res.class_share.shape[0] == 9
    changed = sum(int(np.count_nonzero(a != b)) for a, b in zip(la[:-1] + lb[:-1], la[1:] + lb[1:]))
    assert res.flicker_rate == pytest.approx(changed / (7 * la[0].size))
    # `including_cuts` is the same run with every pair counted.
    everything = temporal_consistency(fa + fb, la + lb, 5, shot_cuts=False, **opts)
    assert everything.shot_cuts == [] and everything.num_pairs == 8
    assert res.including_cuts["tc"] == pytest.approx(everything.tc)
    assert res.including_cuts["flicker_rate"] == pytest.approx(everything.flicker_rate)
    assert res.including_cuts["flow_flicker_rate"] == pytest.approx(everything.flow_flicker_rate)
    assert res.tc > everything.tc  # the cut pair was the inconsistent one
    d = res.to_dict()
    assert d["shot_cuts"] == [5] and d["pairs_excluded"] == 1 and d["per_pair_flicker"][4] is None
    # The helper finds the cut itself on these frames.
    found = temporal_consistency(fa + fb, la + lb, 5, **opts)
    assert found.shot_cuts == [5]
    np.testing.assert_array_equal(found.tc_confusion, res.tc_confusion)


def reference_mvc(videos, k: int, skip_at_most: int = 16) -> float:
    """mVC_k exactly as published: windows range(N - k), videos with N <= 16 skipped,
    VC_i = |G ∧ P| / |G| per window, nanmean over all windows of all videos, in percent."""
    scores = []
    for preds, gts in videos:
        n = len(gts)
        if n <= skip_at_most:
            continue
        for i in range(n - k):
            g_common = np.ones(gts[0].shape, bool)
            p_common = np.ones(preds[0].shape, bool)
            for j in range(1, k):
                g_common &= gts[i] == gts[i + j]
                p_common &= preds[i] == preds[i + j]
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append(np.float64((g_common & p_common).sum()) / g_common.sum())
    return float(np.nanmean(scores)) * 100 if scores else math.nan


def _random_video(rng: np.random.Generator, n: int, shape=(12, 16), classes: int = 6):
    """GT that mostly persists (so G is non-empty) with occasional region changes; 255 voids;
    predictions = GT with sparse random flips."""
    gts, preds = [], []
    g = rng.integers(0, classes, shape).astype(np.uint8)
    g[rng.random(shape) < 0.1] = 255
    for _ in range(n):
        g = g.copy()
        if rng.random() < 0.5:
            y, x = rng.integers(0, shape[0] - 3), rng.integers(0, shape[1] - 3)
            g[y: y + 3, x: x + 3] = rng.integers(0, classes)
        p = g.copy()
        flips = rng.random(shape) < 0.03
        p[flips] = rng.integers(0, classes, int(flips.sum()))
        gts.append(g)
        preds.append(p)
    return preds, gts


def test_mvc_matches_literal_formula_on_random_videos():
    rng = np.random.default_rng(7)
    lengths = [10, 16, 17, 20, 24, 31]  # 10 and 16 are skipped for both k
    videos = [_random_video(rng, n) for n in lengths]
    # One video with a total GT change mid-way: its windows across the change have G empty.
    preds, gts = _random_video(rng, 22)
    gts = gts[:11] + [np.where(gt == 255, 0, 255 - gt).astype(np.uint8) for gt in gts[11:]]
    videos.append((preds, gts))
    vc = VideoConsistency(ks=(8, 16))
    used = [vc.add_video(p, g) for p, g in videos]
    assert used == [False, False, True, True, True, True, True]
    res = vc.result()
    assert res["mVC8"] == pytest.approx(reference_mvc(videos, 8))
    assert res["mVC16"] == pytest.approx(reference_mvc(videos, 16))
    assert vc.to_dict()["windows_empty_G"]["mVC8"] > 0  # the NaN windows really occurred
    # Per-frame streaming gives the same numbers; a non-official threshold matches too.
    vc2 = VideoConsistency(ks=(16, 8), skip_threshold=None)
    for p_list, g_list in videos:
        for p, g in zip(p_list, g_list):
            vc2.update(p, g)
        vc2.end_video()
    assert vc2.result()["mVC8"] == pytest.approx(reference_mvc(videos, 8, skip_at_most=8))
    assert vc2.result()["mVC16"] == pytest.approx(reference_mvc(videos, 16, skip_at_most=16))


def test_mvc_quirks_last_window_unused_and_short_videos_skipped():
    gt = np.zeros((4, 4), np.uint8)
    good = np.zeros((4, 4), np.uint8)
    bad = np.ones((4, 4), np.uint8)
    # N = 17, k = 8: windows start 0..8; the prediction changes only at frame 16, which only
    # the unused last window (start 9) would see.
    preds = [good] * 16 + [bad]
    vc = VideoConsistency(ks=(8,))
    vc.add_video(preds, [gt] * 17)
    assert vc.result()["mVC8"] == pytest.approx(100.0)
    assert vc.to_dict()["windows"]["mVC8"] == 9
    # A 16-frame video is skipped however bad it is.
    vc.add_video([good, bad] * 8, [gt] * 16)
    assert vc.result()["mVC8"] == pytest.approx(100.0) and vc.videos_skipped == 1
    # A change at frame 15 of 17: of the used windows (i <= 8) only i = 8 (frames 8..15)
    # sees it, so 1 of 9 windows scores 0.
    vc = VideoConsistency(ks=(8,))
    vc.add_video([good] * 15 + [bad, bad], [gt] * 17)
    assert vc.result()["mVC8"] == pytest.approx(100 * 8 / 9)
    assert math.isnan(VideoConsistency().result()["mVC8"])
    with pytest.raises(VsegError):
        VideoConsistency().add_video([good] * 3, [gt] * 2)
