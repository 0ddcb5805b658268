"""ConfusionMatrix against brute-force per-class loops, and across processes (gloo)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vsegcli.errors import VsegError
from vsegcli.metrics import ConfusionMatrix

K = 7


def _brute(preds: list[np.ndarray], gts: list[np.ndarray], k: int) -> dict:
    """Independent per-class loop: TP/FP/FN straight from the masks."""
    tp = np.zeros(k)
    fp = np.zeros(k)
    fn = np.zeros(k)
    gt_n = np.zeros(k)
    for p, g in zip(preds, gts):
        valid = (g >= 0) & (g < k)
        for c in range(k):
            tp[c] += np.sum((p == c) & (g == c) & valid)
            fp[c] += np.sum((p == c) & (g != c) & valid)
            fn[c] += np.sum((p != c) & (g == c) & valid)
            gt_n[c] += np.sum((g == c) & valid)
    iou = [tp[c] / (tp[c] + fp[c] + fn[c]) if tp[c] + fp[c] + fn[c] else math.nan for c in range(k)]
    present = [c for c in range(k) if gt_n[c] > 0]
    return {
        "tp": tp, "gt": gt_n, "iou": np.array(iou),
        "miou": sum(iou[c] for c in present) / len(present),
        "nanmean": float(np.nanmean(iou)),
        "fwiou": sum(gt_n[c] / gt_n.sum() * iou[c] for c in present),
        "pa": tp.sum() / gt_n.sum(),
        "acc": np.array([tp[c] / gt_n[c] if gt_n[c] else math.nan for c in range(k)]),
    }


def _random_pairs(seed: int, n: int = 3, shape=(23, 31), k: int = K):
    rng = np.random.default_rng(seed)
    preds, gts = [], []
    for _ in range(n):
        g = rng.integers(0, k, shape).astype(np.uint8)
        g[rng.random(shape) < 0.1] = 255  # ignore
        p = np.where(rng.random(shape) < 0.6, g, rng.integers(0, k, shape)).astype(np.uint8)
        p[p == 255] = 0
        preds.append(p)
        gts.append(g)
    return preds, gts


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.int32])
def test_random_against_brute_force(dtype):
    preds, gts = _random_pairs(0)
    cm = ConfusionMatrix(K)
    for p, g in zip(preds, gts):
        g = g.astype(dtype)
        if dtype != np.uint8:
            g[g == 255] = -1 if dtype == np.int32 else 255  # negative ids are ignored too
        cm.update(p.astype(dtype), g)
    ref = _brute(preds, gts, K)
    np.testing.assert_allclose(cm.iou, ref["iou"], equal_nan=True)
    assert cm.miou == pytest.approx(ref["miou"])
    assert cm.miou_nanmean == pytest.approx(ref["nanmean"])
    assert cm.fwiou == pytest.approx(ref["fwiou"])
    assert cm.pixel_accuracy == pytest.approx(ref["pa"])
    np.testing.assert_allclose(cm.class_accuracy, ref["acc"], equal_nan=True)
    assert cm.total == int(ref["gt"].sum())
    np.testing.assert_array_equal(np.diag(cm.matrix), ref["tp"])


def test_ignore_and_out_of_range_predictions():
    gt = np.array([[0, 1, 255], [2, 9, 1]], dtype=np.uint8)  # 255 and 9 (>= K=3) ignored
    pred = np.array([[0, 2, 1], [200, 1, 1]], dtype=np.uint8)  # 200: a miss with no class
    cm = ConfusionMatrix(3)
    cm.update(pred, gt)
    assert cm.total == 4
    np.testing.assert_array_equal(cm.matrix, [[1, 0, 0], [0, 1, 1], [0, 0, 0]])
    # class 2: GT 1 pixel predicted as 200 -> FN; one FP from the class-1 pixel -> IoU 0.
    np.testing.assert_allclose(cm.iou, [1.0, 0.5, 0.0])
    assert cm.pixel_accuracy == pytest.approx(2 / 4)
    assert cm.to_dict()["pred_out_of_range"] == [0, 0, 1]


def test_merge_two_halves_equals_one_pass_and_roundtrip():
    preds, gts = _random_pairs(1, n=4)
    whole = ConfusionMatrix(K)
    a, b = ConfusionMatrix(K), ConfusionMatrix(K)
    for i, (p, g) in enumerate(zip(preds, gts)):
        whole.update(p, g)
        (a if i < 2 else b).update(p, g)
    a_copy = ConfusionMatrix.from_dict(json.loads(json.dumps(a.to_dict())))
    a_copy += b
    np.testing.assert_array_equal(a_copy.counts_with_misses, whole.counts_with_misses)
    assert a.merge(b).summary() == whole.summary()
    with pytest.raises(VsegError):
        a.merge(ConfusionMatrix(K + 1))
    with pytest.raises(VsegError):
        ConfusionMatrix.from_dict({"num_classes": 2, "matrix": [[1]]})


def test_torch_and_numpy_agree():
    torch = pytest.importorskip("torch")
    preds, gts = _random_pairs(2)
    cm_np, cm_t, cm_mixed = ConfusionMatrix(K), ConfusionMatrix(K), ConfusionMatrix(K)
    for p, g in zip(preds, gts):
        cm_np.update(p, g)
        cm_t.update(torch.from_numpy(p), torch.from_numpy(g).long())
        cm_mixed.update(torch.from_numpy(p), g)
    assert cm_t._device_counts  # accumulated as a tensor, read lazily
    np.testing.assert_array_equal(cm_t.matrix, cm_np.matrix)
    np.testing.assert_array_equal(cm_mixed.counts_with_misses, cm_np.counts_with_misses)
    assert not cm_t._device_counts


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(VsegError):
        ConfusionMatrix(3).update(np.zeros((2, 3), np.uint8), np.zeros((3, 2), np.uint8))


def test_miou_over_present_classes_vs_nanmean():
    # Class 2 is predicted but never in GT: IoU 0, counted by the nan-mean only.
    gt = np.array([0, 0, 1, 1], dtype=np.uint8)
    pred = np.array([0, 0, 1, 2], dtype=np.uint8)
    cm = ConfusionMatrix(4)  # class 3 absent everywhere -> NaN, in neither mean
    cm.update(pred, gt)
    iou = cm.iou
    assert iou[0] == 1.0 and iou[1] == 0.5 and iou[2] == 0.0 and math.isnan(iou[3])
    assert cm.miou == pytest.approx((1.0 + 0.5) / 2)
    assert cm.miou_nanmean == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    s = cm.summary(["a", "b", "c", "d"])
    assert s["iou"][3] is None and s["classes_present"] == 2
    json.dumps(s)  # JSON-ready


def test_fwiou_by_hand():
    # GT: 6 px class 0, 2 px class 1. Pred: 5 of the class-0 px right, 1 -> class 1; class 1 right.
    gt = np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.uint8)
    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1], dtype=np.uint8)
    cm = ConfusionMatrix(2)
    cm.update(pred, gt)
    iou0, iou1 = 5 / 6, 2 / 3
    assert cm.fwiou == pytest.approx(6 / 8 * iou0 + 2 / 8 * iou1)
    assert cm.pixel_accuracy == pytest.approx(7 / 8)
    assert cm.mean_class_accuracy == pytest.approx((5 / 6 + 1) / 2)


def test_empty_matrix_gives_nan_not_errors():
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.miou) and math.isnan(cm.fwiou) and math.isnan(cm.pixel_accuracy)
    assert cm.summary()["miou"] is None


_WORKER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch.distributed as dist
    from vsegcli.metrics import ConfusionMatrix, all_reduce_

    rank, init, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    rng = np.random.default_rng(rank)
    g = rng.integers(0, 5, (16, 16)).astype(np.uint8)
    p = rng.integers(0, 6, (16, 16)).astype(np.uint8)  # 5: out-of-range prediction
    cm = ConfusionMatrix(5).update(p, g)
    with open(out + f".before{rank}", "w") as f:
        json.dump(cm.to_dict(), f)
    all_reduce_(cm)
    with open(out + f".after{rank}", "w") as f:
        json.dump(cm.to_dict(), f)
    dist.destroy_process_group()
    """
)


def test_all_reduce_two_gloo_ranks(tmp_path: Path):
    pytest.importorskip("torch.distributed")
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "cm")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), init, out], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for r in range(2)
    ]
    for proc in procs:
        log, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, log.decode(errors="replace")[-2000:]
    load = lambda name: ConfusionMatrix.from_dict(json.loads(Path(out + name).read_text()))
    expected = load(".before0").merge(load(".before1")).counts_with_misses
    before0, before1 = load(".before0").counts_with_misses, load(".before1").counts_with_misses
    assert not np.array_equal(before0, before1)
    for r in range(2):
        np.testing.assert_array_equal(load(f".after{r}").counts_with_misses, expected)
