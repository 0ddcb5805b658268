"""Our Cityscapes mIoU equals cityscapesscripts' evaluateImgLists on the same label-id PNGs.

cityscapesscripts runs in a subprocess (tests/cityscapes_ref.py) under the first interpreter
that can import it: $VSEG_CITYSCAPES_PYTHON, else <repo>/.venv-cs/bin/python, else this one.
Without one the test skips — unless VSEG_REQUIRE_CITYSCAPES=1 (CI), where it fails.

Definitions compared: cityscapesscripts averages the per-class IoU over classes whose IoU is
not NaN (nonzero union), which is our `miou_nanmean` — always equal. Our headline `miou`
(classes present in GT, the MRCFA/VSPW definition) equals it when every predicted class also
occurs in the ground truth: case "a" is built that way; case "b" predicts a class absent from
the GT, where only the nan-mean matches and `miou` is higher, as documented.
No size requirement exists in evaluatePair (only equal sizes), so the images are small.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vsegcli.data.labels import get_label_set
from vsegcli.metrics import ConfusionMatrix

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
INSTALL_HINT = (
    'python -m venv .venv-cs && .venv-cs/bin/pip install cityscapesscripts "numpy<2.4" '
    "(or set VSEG_CITYSCAPES_PYTHON to a Python that has cityscapesscripts)"
)
_PROBE = "import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"


def _can_import(python: str) -> bool:
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@lru_cache(maxsize=None)
def _reference_python() -> str | None:
    explicit = os.environ.get("VSEG_CITYSCAPES_PYTHON")
    if explicit:  # asked for by name: a broken one is an error, not a reason to look elsewhere
        if not _can_import(explicit):
            pytest.fail(f"VSEG_CITYSCAPES_PYTHON={explicit} cannot import cityscapesscripts")
        return explicit
    for candidate in (REPO / ".venv-cs" / "bin" / "python", Path(sys.executable)):
        if candidate.exists() and _can_import(str(candidate)):
            return str(candidate)
    return None


def _need_reference() -> str:
    python = _reference_python()
    if python is None:
        reason = f"cityscapesscripts not importable; to run this cross-check: {INSTALL_HINT}"
        if os.environ.get("VSEG_REQUIRE_CITYSCAPES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)  # cityscapesscripts absent (CI sets VSEG_REQUIRE_CITYSCAPES=1)
    return python


# Evaluated label ids (19), and a few void ids that appear in GT and predictions.
EVAL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
VOID_IDS = [0, 1, 4, 6, 9, 10, 14, 29]
ABSENT = 31  # 'train': never in GT; absent everywhere in case a, predicted in case b


def _make_case(tmp: Path, name: str, rng: np.random.Generator, predict_absent: bool):
    h, w = 64, 96
    gt_ids = [i for i in EVAL_IDS if i not in (ABSENT, 28)]  # 'bus' (28) absent everywhere too
    preds, gts = [], []
    for n in range(3):
        gt = rng.choice(VOID_IDS, size=(h, w)).astype(np.uint8)  # void background
        for _ in range(40):  # random blocks of evaluated classes
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
            gt[y: y + rng.integers(4, 16), x: x + rng.integers(4, 24)] = rng.choice(gt_ids)
        pred = gt.copy()
        wrong = rng.random((h, w)) < 0.25
        pred[wrong] = rng.choice(gt_ids + VOID_IDS[:3], size=int(wrong.sum()))
        if predict_absent:
            pred[rng.random((h, w)) < 0.02] = ABSENT
        stem = f"frankfurt_000000_{n:06d}"
        gpath = tmp / name / "gt" / f"{stem}_gtFine_labelIds.png"
        ppath = tmp / name / "pred" / f"{stem}_pred_labelIds.png"
        for path, arr in ((gpath, gt), (ppath, pred)):
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr, mode="L").save(path)
        preds.append(str(ppath))
        gts.append(str(gpath))
    return {"pred": preds, "gt": gts}


def _ours(job: dict) -> ConfusionMatrix:
    labels = get_label_set("cityscapes")
    lut = labels.raw_lut()  # label id -> train id, everything else -> 255
    cm = ConfusionMatrix(labels.num_classes, labels.ignore_index)
    for p, g in zip(job["pred"], job["gt"]):
        pred = np.asarray(Image.open(p))
        gt = np.asarray(Image.open(g))
        cm.update(lut[pred], lut[gt])  # a void prediction becomes 255: a miss, as in theirs
    return cm


def test_miou_matches_cityscapesscripts(tmp_path: Path):
    python = _need_reference()
    rng = np.random.default_rng(0)
    jobs = [_make_case(tmp_path, "a", rng, False), _make_case(tmp_path, "b", rng, True)]
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    proc = subprocess.run(
        [python, str(TESTS / "cityscapes_ref.py"), str(tmp_path / "jobs.json")],
        capture_output=True, text=True, timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    names = get_label_set("cityscapes").classes

    for job, ref in zip(jobs, theirs):
        cm = _ours(job)
        for c, name in enumerate(names):
            want = ref["classScores"][name]
            got = cm.iou[c]
            if want is None:
                assert math.isnan(got), name
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=1e-15), name
        assert cm.miou_nanmean == pytest.approx(ref["averageScoreClasses"], rel=1e-12)
        job["ours"] = cm

    a, b = jobs[0]["ours"], jobs[1]["ours"]
    names_l = list(names)
    # Case a: 'bus' and 'train' absent from GT and prediction -> NaN on both sides, 17 averaged.
    assert theirs[0]["classScores"]["train"] is None and theirs[0]["classScores"]["bus"] is None
    assert int(a.present.sum()) == 17
    assert a.miou == pytest.approx(theirs[0]["averageScoreClasses"], rel=1e-12)
    # Case b: 'train' predicted but never in GT: IoU 0 counts for them (and our nan-mean),
    # not in our GT-present mIoU.
    assert theirs[1]["classScores"]["train"] == 0.0 and b.iou[names_l.index("train")] == 0.0
    assert b.miou > theirs[1]["averageScoreClasses"]
    assert b.miou == pytest.approx(theirs[1]["averageScoreClasses"] * 18 / 17, rel=1e-12)
    print(  # shown with -s: the numbers behind the report
        f"\ncityscapesscripts avg a={theirs[0]['averageScoreClasses']:.6f} ours miou={a.miou:.6f}; "
        f"b theirs={theirs[1]['averageScoreClasses']:.6f} ours nanmean={b.miou_nanmean:.6f} "
        f"miou={b.miou:.6f}"
    )


class _NearestColour:
    """Builds a model that labels each pixel with the nearest Cityscapes palette colour (the GT on
    datasetgen's painted frames) and, on a fixed 8x8 corner block, predicts `absent`: a class the
    ground truth never holds (what a real model does on a small subset)."""

    @staticmethod
    def build(absent: int):
        import torch

        from vsegcli.models.base import Segmentor

        ls = get_label_set("cityscapes")

        class Model(Segmentor):
            output_stride = 1
            size_divisor = 1

            def __init__(self) -> None:
                super().__init__(ls.num_classes)
                self.register_buffer("palette", torch.tensor(ls.palette, dtype=torch.float32))

            def forward_frame(self, images):
                rgb = images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
                logits = -((rgb[:, None] - self.palette[None, :, :, None, None]) ** 2).sum(2)
                logits[:, absent, 20:28, 40:48] = 1e9
                return logits

        return Model().eval()


MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def test_eval_headline_miou_is_cityscapesscripts_on_a_4_snippet_subset(tmp_path: Path):
    """The issue's case: `vseg eval` on a 4-snippet subset, a class predicted but absent from the
    GT. The headline mIoU must be cityscapesscripts' averageScoreClasses on the saved label-id
    PNGs (the GT-present mean, VSPW's rule, is higher and is only reported beside it)."""
    import torch

    from datasetgen import make_cityscapes
    from vsegcli.evaluate import evaluate
    from vsegcli.runtime import Predictor
    from vsegcli.runtime.render import Palette

    python = _need_reference()
    snippets = (("munster", 100, 19), ("frankfurt", 0, 1016), ("lindau", 0, 25), ("frankfurt", 0, 1030))
    manifest = make_cityscapes(tmp_path / "cs", snippets=snippets)
    ls = get_label_set("cityscapes")
    lut = ls.raw_lut()
    in_gt = set()
    for items in manifest.values():
        in_gt |= {int(v) for v in np.unique(lut[np.asarray(Image.open(items[19][1]))])} - {255}
    absent = min(set(range(19)) - in_gt)
    predictor = Predictor(_NearestColour.build(absent), MEAN, STD, Palette.from_label_set(ls), torch.device("cpu"),
                          classes=list(ls.classes))
    out = tmp_path / "results"
    res = evaluate(predictor, "cityscapes", tmp_path / "cs", "val", save_predictions=out)
    assert res["sequences"] == 4 and res["frames_scored"] == 4 and res["miou_definition"] == "nonempty-union"

    names = sorted(manifest)
    job = {"pred": [str(out / n.split("_")[0] / f"{n}_pred.png") for n in names],
           "gt": [str(manifest[n][19][1]) for n in names]}
    (tmp_path / "jobs.json").write_text(json.dumps([job]))
    proc = subprocess.run([python, str(TESTS / "cityscapes_ref.py"), str(tmp_path / "jobs.json")],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])[0]
    assert theirs["classScores"][ls.classes[absent]] == 0.0  # predicted, never in the GT
    assert res["miou"] == pytest.approx(theirs["averageScoreClasses"], rel=1e-12)
    assert res["miou_gt_present"] > res["miou"]  # the other definition would not match
    for c, name in enumerate(ls.classes):
        want, got = theirs["classScores"][name], res["per_class"][name]["iou"]
        assert (want is None and got is None) or got == pytest.approx(want, rel=1e-12), name
