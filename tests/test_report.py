"""Consistency report: the sink's numbers, worst moments, the HTML page, atomic writes, `report compare`."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from vsegcli.report import plots as report_plots
from vsegcli.report.sink import JSON_HEATMAP_SIDE
from vsegcli.cli import cli
from vsegcli.errors import VsegError
from vsegcli.metrics import TemporalConsistency
from vsegcli.report import (
    ConsistencySink,
    format_timestamp,
    load_report,
    report_paths,
    worst_moments,
)

K = 5
CLASSES = ["road", "car", "tree", "sky", "person"]
PALETTE = [[128, 64, 128], [0, 0, 142], [107, 142, 35], [70, 130, 180], [220, 20, 60]]
START, STRIDE, FPS = 100, 2, 10.0  # source index of position k is 100 + 2k; 10 fps source
BURST = range(10, 13)  # positions whose labels are random


def _data(burst: bool = True, n: int = 20, h: int = 64, w: int = 96):
    """A static textured scene with block labels; with `burst`, random labels in frames 10-12."""
    rng = np.random.default_rng(0)
    frame = cv2.GaussianBlur(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), (0, 0), 2)
    lab = np.zeros((h, w), np.uint8)
    lab[: h // 3] = 3
    lab[h // 3 :, w // 2 :] = 1
    lab[h // 2 :, : w // 4] = 2
    labels = [lab.copy() for _ in range(n)]
    if burst:
        for k in BURST:
            labels[k] = rng.integers(0, K, (h, w), dtype=np.uint8)
    return [frame.copy() for _ in range(n)], labels


def _context(**extra):
    ctx = {"architecture": "segformer-b0", "checkpoint": "w.safetensors", "temporal": False,
           "input": "/videos/clip.mp4", "source_fps": FPS, "stride": STRIDE, "start": START}
    ctx.update(extra)
    return ctx


def _drive(path: Path, burst: bool = True, **kwargs) -> ConsistencySink:
    sink = ConsistencySink(path, K, CLASSES, PALETTE, context=kwargs.pop("context", _context()), **kwargs)
    for k, (f, lab) in enumerate(zip(*_data(burst))):
        sink.write(START + STRIDE * k, f, lab, None)
    return sink


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Two reports on the same clip: with the burst (plots drawn) and without (no plots: fast)."""
    d = tmp_path_factory.mktemp("reports")
    _drive(d / "bursty.html").close()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report_plots, "_load_matplotlib", lambda: None)
        _drive(d / "steady.json", burst=False, context=_context(architecture="stt-segformer-b0", temporal=True)).close()
    return {"bursty": d / "bursty.json", "steady": d / "steady.json", "dir": d}


def test_report_paths(tmp_path):
    assert report_paths("r.html") == (Path("r.html"), Path("r.json"))
    assert report_paths("out/r.json") == (Path("out/r.html"), Path("out/r.json"))
    # A name without a suffix names the pair; an existing folder gets report.html + report.json.
    assert report_paths(tmp_path / "out") == (tmp_path / "out.html", tmp_path / "out.json")
    assert report_paths(tmp_path) == (tmp_path / "report.html", tmp_path / "report.json")
    with pytest.raises(VsegError):
        report_paths("r.txt")


def test_format_timestamp():
    assert format_timestamp(12.0) == "00:12.00"
    assert format_timestamp(83.456) == "01:23.46"
    assert format_timestamp(59.999) == "01:00.00"
    assert format_timestamp(3725.5) == "1:02:05.50"
    assert format_timestamp(None) == ""


def test_json_numbers_equal_independent_metric(reports):
    doc = load_report(reports["bursty"])
    acc = TemporalConsistency(K, flow_size=256)
    for f, lab in zip(*_data()):
        acc.update(f, lab)
    expected = json.loads(json.dumps(acc.result().to_dict()))
    assert expected.pop("shot_cuts") == []  # the report lists cuts at the top level, as source frames
    assert doc["vseg_report"] == 1
    assert doc["metrics"] == expected
    assert doc["shot_cuts"] == [] and doc["pairs_excluded"] == 0 and doc["shot_cut_detection"] == "on"
    assert "flicker_heatmap" not in doc["metrics"]  # only the small copy at the top level
    assert max(doc["flicker_heatmap"]["size"]) <= JSON_HEATMAP_SIDE
    assert doc["frames"]["indices"] == [START + STRIDE * k for k in range(20)]
    assert doc["frames"]["timestamps"][1] == pytest.approx((START + STRIDE) / FPS)
    assert doc["context"]["architecture"] == "segformer-b0"
    assert doc["measured"]["frames"] == 20
    by_name = {d["name"]: d for d in doc["per_class"]}
    assert by_name["sky"]["tc"] == pytest.approx(expected["per_class_tc"][3], abs=1e-4)
    assert [d["share"] for d in doc["per_class"]] == sorted((d["share"] for d in doc["per_class"]), reverse=True)


def test_worst_moment_is_the_burst(reports):
    doc = load_report(reports["bursty"])
    moments = doc["worst_moments"]
    assert len(moments) == 1  # the static rest never flickers: nothing else is "worst"
    m = moments[0]
    # Pairs touching the random frames (positions 9-10 ... 12-13) merge into one window.
    assert (m["first_pair"], m["last_pair"]) == (9, 12)
    assert (m["first_frame"], m["last_frame"]) == (START + STRIDE * 9, START + STRIDE * 13)
    assert m["start"] == format_timestamp((START + STRIDE * 9) / FPS) == "00:11.80"
    assert m["peak_flow_flicker"] > 0.5
    assert load_report(reports["steady"])["worst_moments"] == []


def test_worst_moments_separate_windows():
    s = [0.01] * 30
    s[5] = s[6] = 0.5
    s[20] = 0.3
    ms = worst_moments(s, s, list(range(31)), fps=None, k=5)
    assert [(m.first_pair, m.last_pair) for m in ms] == [(5, 6), (20, 20)]
    assert ms[0].start_s is None and ms[1].first_frame == 20 and ms[1].last_frame == 21
    assert len(worst_moments(s, s, list(range(31)), fps=None, k=1)) == 1
    # A dip found in pieces: the spike is listed, its lower shoulders stay part of it, unlisted;
    # a second spike that reaches the first one's halfway level is merged in.
    s = [0.01] * 30
    s[10], s[11], s[12], s[25] = 0.5, 0.2, 0.2, 0.1
    ms = worst_moments(s, s, list(range(31)), fps=None, k=5)
    assert [(m.first_pair, m.last_pair) for m in ms] == [(10, 10), (25, 25)]
    s[13], s[14], s[15] = 0.2, 0.2, 0.3  # 15 reaches 10's halfway level (0.255): one stretch
    ms = worst_moments(s, s, list(range(31)), fps=None, k=5)
    assert [(m.first_pair, m.last_pair) for m in ms] == [(10, 15), (25, 25)]
    assert ms[0].peak_flow_flicker == 0.5
    # A steady video with a tiny wobble lists nothing.
    assert worst_moments([0.1, 0.11, 0.1, 0.1], [0.1] * 4, list(range(5)), fps=None) == []


def test_html_self_contained_with_numbers_and_plots(reports):
    page = (reports["dir"] / "bursty.html").read_text(encoding="utf-8")
    doc = load_report(reports["bursty"])
    met = doc["metrics"]
    assert 'src="http' not in page and "<script" not in page and "<link" not in page
    assert "clip.mp4" in page and "segformer-b0" in page
    assert f"{met['tc']:.2f} %" in page
    assert f"{100 * met['flicker_rate']:.2f} %" in page
    assert f"{100 * met['flow_flicker_rate']:.2f} %" in page
    assert "00:11.80" in page and "higher is better" in page and "lower is better" in page
    assert "96 × 64" in page  # resolution and analysis resolution (no downscale at this size)
    pytest.importorskip("matplotlib", reason="plots need the optional matplotlib (report extra)")
    from PIL import Image

    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    for b64 in images:
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        assert img.shape[0] > 100 and img.shape[1] > 300
        assert img.std() > 10  # not a blank canvas


def test_page_without_matplotlib_says_so(reports):
    page = (reports["dir"] / "steady.html").read_text(encoding="utf-8")
    assert "matplotlib is not installed" in page
    assert "data:image/png" not in page
    assert "No frame pair stands out" in page


def test_update_context_after_close_rewrites(tmp_path, monkeypatch):
    monkeypatch.setattr(report_plots, "_load_matplotlib", lambda: None)
    sink = _drive(tmp_path / "r.html")
    out = sink.close()
    assert out["report_json"] == str(tmp_path / "r.json")
    sink.update_context({"frames": 20, "seconds": 4.0, "fps": 5.0})
    assert "5.0 (20 frames in 4.0 s, whole run)" in (tmp_path / "r.html").read_text(encoding="utf-8")
    assert load_report(tmp_path / "r.json")["context"]["fps"] == 5.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.json"]


def test_abort_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(report_plots, "_load_matplotlib", lambda: None)
    _drive(tmp_path / "r.html").abort()
    assert list(tmp_path.iterdir()) == []

    import os

    written: list[str] = []
    real_replace = os.replace

    def fail(src, dst):  # the rename step fails after both temporaries were written
        written.extend(p.name for p in tmp_path.iterdir())
        raise OSError(28, "No space left on device")

    sink = _drive(tmp_path / "r.html")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(VsegError, match="could not write the report .*r.html: No space left"):
        sink.close()
    monkeypatch.setattr(os, "replace", real_replace)
    assert len(written) == 2 and all(n.startswith(".") and ".part" in n for n in written)  # both were complete...
    assert list(tmp_path.iterdir()) == []  # ...and the failed write removed them itself
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_report_folder_appears_only_with_the_report(tmp_path, monkeypatch):
    monkeypatch.setattr(report_plots, "_load_matplotlib", lambda: None)
    folder = tmp_path / "new" / "reports"
    sink = _drive(folder / "r.html")  # frames written, run not finished (e.g. Ctrl-C next)
    assert not (tmp_path / "new").exists()
    sink.abort()
    assert not (tmp_path / "new").exists()
    sink = _drive(folder / "r.html")
    sink.close()
    assert sorted(p.name for p in folder.iterdir()) == ["r.html", "r.json"]


def test_no_frames_writes_nothing(tmp_path):
    sink = ConsistencySink(tmp_path / "r.html", K, CLASSES, PALETTE)
    assert sink.close() is None
    assert list(tmp_path.iterdir()) == []


def test_overwrite_refused_unless_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(report_plots, "_load_matplotlib", lambda: None)
    (tmp_path / "r.json").write_text("old")
    with pytest.raises(VsegError, match="already exists"):
        ConsistencySink(tmp_path / "r.html", K, CLASSES, PALETTE)
    _drive(tmp_path / "r.html", overwrite=True).close()
    assert load_report(tmp_path / "r.json")["vseg_report"] == 1


def test_compare_table_and_json(reports):
    a, b = str(reports["bursty"]), str(reports["steady"])
    res = CliRunner().invoke(cli, ["report", "compare", a, b])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "bursty" in out and "steady" in out and "Δ (steady − bursty)" in out
    assert "stt-segformer-b0 (temporal)" in out and "TC sky (%)" in out
    ta, tb = load_report(a)["metrics"]["tc"], load_report(b)["metrics"]["tc"]
    assert tb > ta
    assert f"{tb - ta:+.2f}" in out
    assert "warning" not in res.output  # same input, same frame count

    res = CliRunner().invoke(cli, ["report", "compare", a, b, "--json"])
    data = json.loads(res.stdout)
    tc_row = next(r for r in data["rows"] if r["metric"] == "tc")
    assert tc_row["best"] == 1 and tc_row["diff"] == pytest.approx(tb - ta)
    assert {r["metric"] for r in data["rows"]} >= {"flicker_rate", "flow_flicker_rate", "class_tc:road"}


def test_compare_warns_on_different_inputs(reports, tmp_path):
    doc = load_report(reports["steady"])
    doc["context"]["input"] = "/videos/other.mp4"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(doc))
    res = CliRunner().invoke(cli, ["report", "compare", str(reports["bursty"]), str(other)])
    assert res.exit_code == 0
    warns = [ln for ln in res.stderr.splitlines() if ln.startswith("warning")]
    assert len(warns) == 1 and "different inputs" in warns[0]


BIKES = Path(__file__).resolve().parents[1] / "examples" / "bikes.mp4"


@pytest.fixture(scope="module")
def two_shots():
    """12 frames of one shot of bikes.mp4 then 12 of another (cut at position 12), 160x68, with
    labels that follow the picture (grey levels in 5 bands)."""
    from vsegcli.io.video.reader import FrameReader

    with FrameReader(BIKES, max_frames=162) as reader:
        decoded = [f for _, f in reader]
    frames = [cv2.resize(f, (160, 68), interpolation=cv2.INTER_AREA) for f in decoded[40:52] + decoded[150:162]]
    labels = [np.minimum(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) // 52, K - 1).astype(np.uint8) for f in frames]
    return frames, labels


def _drive_frames(path: Path, frames, labels, **kwargs) -> dict:
    sink = ConsistencySink(path, K, CLASSES, PALETTE, context=_context(), **kwargs)
    for k, (f, lab) in enumerate(zip(frames, labels)):
        sink.write(START + STRIDE * k, f, lab, None)
    result = sink.close()
    return {"result": result, "doc": load_report(path), "html": Path(path).with_suffix(".html").read_text()}


def test_shot_cut_pair_left_out_listed_and_marked(two_shots, tmp_path):
    frames, labels = two_shots
    out = _drive_frames(tmp_path / "cut.html", frames, labels)
    doc = out["doc"]
    cut_frame = START + STRIDE * 12
    assert doc["shot_cuts"] == [cut_frame] and doc["pairs_excluded"] == 1
    assert out["result"]["shot_cuts"] == [cut_frame]
    # Numbers = an accumulator told where the cut is; and = the two shots scored on their own.
    acc = TemporalConsistency(K, flow_size=256)
    for k, (f, lab) in enumerate(zip(frames, labels)):
        acc.update(f, lab, new_shot=k == 12)
    expected = json.loads(json.dumps(acc.result().to_dict()))
    expected.pop("shot_cuts")
    assert doc["metrics"] == expected
    assert doc["metrics"]["num_pairs"] == 22 and doc["metrics"]["per_pair_flow_flicker"][11] is None
    assert doc["measured"]["frames"] == 24 and doc["frames"]["indices"][-1] == START + STRIDE * 23
    # The cut is no worst moment, and the page says what was left out and the numbers with it.
    assert all(not (m["first_pair"] <= 11 <= m["last_pair"]) for m in doc["worst_moments"])
    assert "1 shot cut found" in out["html"] and f"source frame {cut_frame}" in out["html"]
    inc = doc["metrics"]["including_cuts"]
    assert inc["tc"] < doc["metrics"]["tc"] and inc["flicker_rate"] > doc["metrics"]["flicker_rate"]

    # Detection off: every pair counts, as an accumulator without cuts computes it.
    off = _drive_frames(tmp_path / "off.html", frames, labels, shot_cuts=False)
    acc = TemporalConsistency(K, flow_size=256)
    for f, lab in zip(frames, labels):
        acc.update(f, lab)
    assert off["doc"]["shot_cut_detection"] == "off" and off["doc"]["shot_cuts"] == []
    assert off["doc"]["metrics"]["tc"] == pytest.approx(acc.result().tc, abs=1e-6)
    assert off["doc"]["metrics"]["tc"] == pytest.approx(inc["tc"], abs=1e-6)
    assert "Shot-cut detection was off" in off["html"]

    # compare says when two reports left out different pairs.
    res = CliRunner().invoke(cli, ["report", "compare", str(tmp_path / "cut.json"), str(tmp_path / "off.json")])
    assert res.exit_code == 0, res.output
    assert f"different pairs left out at shot cuts (frames {cut_frame}; not detected)" in res.stderr


@pytest.mark.parametrize("content", [None, "not json", '{"tc": 1}'])
def test_compare_bad_file_is_a_one_line_error(reports, tmp_path, content):
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    res = CliRunner().invoke(cli, ["report", "compare", str(reports["bursty"]), str(bad)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and "bad.json" in lines[0]
