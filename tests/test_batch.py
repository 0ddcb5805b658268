"""Batches: a folder of videos + an image sequence + a broken file (reported, skipped, exit 1, the
manifest says so), --skip-existing after an interrupted batch, and the overlay legend on pixels."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from videogen import make_images, make_video

from vsegcli.cli import cli
from vsegcli.io.video import FrameReader
from vsegcli.runtime.batch import MANIFEST_NAME, expand_inputs, plan_jobs, read_manifest
from vsegcli.runtime.render import legend_box

RANDOM = ["-m", "segformer-b0", "--size", "32"]


@pytest.fixture()
def batch_dir(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    make_video(d / "a.mp4", 64, 48, 3, fps=10)
    make_video(d / "b.mp4", 64, 48, 3, fps=10)
    make_images(d / "seq", [f"f{i}.png" for i in range(3)])
    (d / "broken.mp4").write_bytes(b"this is not a video" * 20)
    (d / "notes.txt").write_text("not an input")
    return d


def test_folder_batch_reports_the_broken_input_and_goes_on(batch_dir, tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["run", str(batch_dir), "-o", str(out), "--json", *RANDOM])
    assert r.exit_code == 1, r.output  # documented: 1 = some inputs failed, the others written
    assert sorted(p.name for p in out.glob("*.mp4")) == ["a_seg.mp4", "b_seg.mp4", "seq_seg.mp4"]
    for p in out.glob("*.mp4"):
        assert sum(1 for _ in FrameReader(p)) == 3
    entries = read_manifest(out / MANIFEST_NAME)
    assert [Path(e["input"]).name for e in entries] == ["a.mp4", "b.mp4", "broken.mp4", "seq"]
    status = {Path(e["input"]).name: e for e in entries}
    assert status["broken.mp4"]["status"] == "failed" and "broken.mp4" in status["broken.mp4"]["error"]
    assert all(status[k]["status"] == "ok" and status[k]["frames"] == 3 for k in ("a.mp4", "b.mp4", "seq"))
    assert status["seq"]["decoder"] == "images" and status["a.mp4"]["decoder"] == "software"
    summary = json.loads(r.stdout)
    assert summary["batch"]["failed"] == 1 and len(summary["runs"]) == 3
    assert "Error: " in r.stderr and "broken.mp4" in r.stderr


def test_skip_existing_resumes_an_interrupted_batch(batch_dir, tmp_path):
    (batch_dir / "broken.mp4").unlink()
    out = tmp_path / "out"
    out.mkdir()
    # An interrupted batch: a's output complete, b's only a temporary (as a killed encoder leaves).
    r = CliRunner().invoke(cli, ["run", str(batch_dir / "a.mp4"), "-o", str(out / "a_seg.mp4"), *RANDOM])
    assert r.exit_code == 0, r.output
    before = (out / "a_seg.mp4").stat().st_mtime_ns
    (out / ".b_seg.mp4.part999999-dead.mp4").write_bytes(b"half")
    r = CliRunner().invoke(cli, ["run", str(batch_dir), "-o", str(out), "--skip-existing", *RANDOM])
    assert r.exit_code == 0, r.output
    assert (out / "a_seg.mp4").stat().st_mtime_ns == before  # kept, not redone
    assert sum(1 for _ in FrameReader(out / "b_seg.mp4")) == 3  # the temporary did not count
    entries = {Path(e["input"]).name: e["status"] for e in read_manifest(out / MANIFEST_NAME)}
    assert entries == {"a.mp4": "skipped", "b.mp4": "ok", "seq": "ok"}


def test_globs_lists_and_unique_names(tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        make_video(tmp_path / sub / "clip.mp4", 32, 32, 2, fps=10)
    listing = tmp_path / "list.txt"
    listing.write_text("# two clips of the same name\nx/clip.mp4\n\ny/clip.mp4\nrtsp://127.0.0.1:8554/cam\n")
    expanded = expand_inputs([f"@{listing}"])
    sources = expanded.sources
    assert expanded.batch and [s.kind for s in sources] == ["file", "file", "url"]
    jobs = plan_jobs(sources, tmp_path / "o", None, None, None, no_video=False)
    assert [j.video.name for j in jobs] == ["clip_seg.mp4", "clip-2_seg.mp4", "cam_seg.mp4"]
    globbed = expand_inputs([str(tmp_path / "*" / "clip.mp4")])
    assert globbed.batch and len(globbed.sources) == 2
    assert globbed.patterns == [str(tmp_path / "*" / "clip.mp4")] and globbed.folders == []


def test_quickstart_twice_does_not_collide(tmp_path, monkeypatch):
    clip = make_video(tmp_path / "bikes.mp4", 32, 32, 2, fps=10)
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        r = CliRunner().invoke(cli, ["run", str(clip), *RANDOM])
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in tmp_path.glob("bikes_seg*.mp4")) == ["bikes_seg-2.mp4", "bikes_seg.mp4"]
    # An output the user names is still never replaced without --overwrite.
    r = CliRunner().invoke(cli, ["run", str(clip), "-o", "bikes_seg.mp4", *RANDOM])
    assert r.exit_code == 2 and "--overwrite" in r.stderr


def _overlay(tmp_path: Path, *extra: str) -> np.ndarray:
    clip = make_video(tmp_path / "c.mp4", 192, 128, 2, fps=10)
    out = tmp_path / f"o{len(list(tmp_path.glob('o*.mp4')))}.mp4"
    r = CliRunner().invoke(cli, ["run", str(clip), "-o", str(out), "--opacity", "0", *RANDOM, *extra])
    assert r.exit_code == 0, r.output
    return next(iter(FrameReader(out)))[1], next(iter(FrameReader(clip)))[1]


def test_legend_on_the_decoded_overlay_and_not_with_no_legend(tmp_path):
    """Opacity 0: the overlay is the frame itself, except where the legend is drawn."""
    with_legend, src = _overlay(tmp_path)
    without, _ = _overlay(tmp_path, "--no-legend")
    x0, y0, _, row, _, swatch = legend_box(128, 192, 1)
    corner = (slice(y0, y0 + row), slice(x0, x0 + 60))
    diff = np.abs(with_legend.astype(int) - src.astype(int))
    assert diff[corner].mean() > 20  # the legend box (darkened, swatch, text) is there
    assert diff[64:, 96:].max() <= 12  # elsewhere: the frame (H.264 rounding only)
    assert np.abs(without.astype(int) - src.astype(int))[corner].max() <= 12


@pytest.mark.slow
def test_torchrun_two_processes_write_what_one_does(tmp_path):
    """torchrun --nproc_per_node 2 (CPU, gloo): the inputs are split, the label PNGs equal one
    process's, and rank 0's manifest lists every input with the rank that ran it."""
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        make_video(src / f"c{i}.mp4", 64, 48, 3, fps=10)
    common = [str(src), *RANDOM, "--no-legend", "--quiet", "--threads", "1", "--device", "cpu"]
    one = CliRunner().invoke(cli, ["run", *common, "-o", str(tmp_path / "o1"), "--no-video",
                                   "--labels-dir", str(tmp_path / "o1" / "lab")])
    assert one.exit_code == 0, one.output
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # torch's own launcher module (what the `torchrun` script runs): present wherever torch is
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "vsegcli",
                        "run", *common,
                        "-o", str(tmp_path / "o2"), "--no-video", "--labels-dir", str(tmp_path / "o2" / "lab")],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    for i in range(4):
        a = sorted((tmp_path / "o1" / "lab" / f"c{i}").glob("*.png"))
        b = sorted((tmp_path / "o2" / "lab" / f"c{i}").glob("*.png"))
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 3
        assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))
    entries = read_manifest(tmp_path / "o2" / MANIFEST_NAME)
    assert [e["status"] for e in entries] == ["ok"] * 4 and {e["rank"] for e in entries} == {0, 1}


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_stats_match_the_label_pngs(tmp_path, suffix):
    import cv2

    from vsegcli.runtime.stats import read_stats

    clip = make_video(tmp_path / "c.mp4", 64, 48, 2, fps=10)
    stats, labels = tmp_path / f"s{suffix}", tmp_path / "lab"
    r = CliRunner().invoke(cli, ["run", str(clip), "--no-video", "--labels-dir", str(labels), "--stats", str(stats),
                                 *RANDOM])
    assert r.exit_code == 0, r.output
    rows = read_stats(stats)
    assert [row["frame"] for row in rows] == [0, 1] and [row["time"] for row in rows] == [0.0, 0.1]
    from vsegcli.data.labels import get_label_set

    names = get_label_set("cityscapes").classes
    for row in rows:
        lab = cv2.imread(str(labels / f"{row['frame']:06d}.png"), cv2.IMREAD_UNCHANGED)
        counts = np.bincount(lab.reshape(-1), minlength=len(names))
        expect = {names[i]: counts[i] / lab.size for i in np.flatnonzero(counts)}
        assert row["shares"].keys() == expect.keys()
        assert all(abs(row["shares"][k] - v) < 1e-5 for k, v in expect.items())


def test_sigterm_in_a_batch_exits_143_not_130(batch_dir, tmp_path, monkeypatch):
    """A batch interrupted by SIGTERM keeps the signal's exit status (128 + 15), as a single run does."""
    import signal

    from vsegcli import api
    from vsegcli.cli._signals import Terminated

    def terminated(self, *a, **k):
        raise Terminated(signal.SIGTERM)

    monkeypatch.setattr(api.VideoSegmenter, "run", terminated)
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["run", str(batch_dir / "a.mp4"), str(batch_dir / "b.mp4"), "-o", str(out), *RANDOM])
    assert r.exit_code == 143, r.output
    assert "SIGTERM" in r.stderr
    assert read_manifest(out / MANIFEST_NAME)[0]["status"] == "interrupted"


def test_skip_existing_does_not_take_a_users_folder_for_finished_labels(tmp_path):
    """--skip-existing: a labels folder counts as finished only when vseg wrote it (its manifest and
    label PNGs), not any non-empty folder of that name."""
    from vsegcli.io.outputs import write_labels_manifest
    from vsegcli.runtime.batch import Job
    from vsegcli.io.video.source import Source

    labels = tmp_path / "labels" / "a"
    labels.mkdir(parents=True)
    (labels / "notes.txt").write_text("mine")
    job = Job(0, Source("file", str(tmp_path / "a.mp4")), "a", labels_dir=labels)
    assert not job.finished()
    (labels / "notes.txt").unlink()
    (labels / "000000.png").write_bytes(b"png")
    write_labels_manifest(labels, frames=1)
    assert job.finished()


def test_a_folder_where_the_manifest_goes_is_refused_before_any_work(batch_dir, tmp_path):
    """The batch manifest is checked with the other outputs: one line, exit 2, nothing written
    (it was a traceback after every input had been processed)."""
    out = tmp_path / "out"
    (out / MANIFEST_NAME).mkdir(parents=True)
    r = CliRunner().invoke(cli, ["run", str(batch_dir / "a.mp4"), str(batch_dir / "b.mp4"), "-o", str(out), *RANDOM])
    assert r.exit_code == 2, r.output
    assert MANIFEST_NAME in r.stderr and "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME]


@pytest.mark.parametrize("where", ["-o into the folder", "cwd is the folder"])
def test_batch_outputs_never_go_inside_the_input_folder(tmp_path, monkeypatch, where):
    """A rerun would take outputs written into a batch folder for new inputs (a_seg_seg.mp4):
    the folder is an input, and no output may lie inside an input."""
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(2):
        make_video(src / f"c{i}.mp4", 64, 48, 3, fps=10)
    before = sorted(p.name for p in src.iterdir())
    if where == "-o into the folder":
        args = [str(src), "-o", str(src)]
    else:
        monkeypatch.chdir(src)
        args = ["."]
    r = CliRunner().invoke(cli, ["run", *args, *RANDOM, "--quiet"])
    assert r.exit_code == 2, r.output
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1 and "inside" in r.stderr
    assert sorted(p.name for p in src.iterdir()) == before


@pytest.mark.parametrize("where", ["cwd is the folder, -o a sub-folder", "-o a sub-folder of the folder"])
def test_batch_outputs_in_a_sub_folder_of_the_input_folder_are_fine(tmp_path, monkeypatch, where):
    """Only what lies directly in a batch folder is an input of a rerun (its videos and folders of
    images): `cd videos && vseg run . -o out/` is not refused, and the rerun skips it all."""
    src = tmp_path / "videos"
    src.mkdir()
    for i in range(2):
        make_video(src / f"c{i}.mp4", 64, 48, 3, fps=10)
    if where.startswith("cwd"):
        monkeypatch.chdir(src)
        args = [".", "-o", "out"]
    else:
        args = [str(src), "-o", str(src / "out")]
    r = CliRunner().invoke(cli, ["run", *args, *RANDOM, "--quiet"])
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (src / "out").iterdir()) == ["c0_seg.mp4", "c1_seg.mp4", MANIFEST_NAME]
    expanded = expand_inputs([str(src)])
    assert sorted(s.name for s in expanded.sources) == ["c0", "c1"]  # out/ is no input
    assert expanded.folders == [src] and expanded.patterns == []
    r = CliRunner().invoke(cli, ["run", *args, *RANDOM, "--quiet", "--skip-existing"])
    assert r.exit_code == 0, r.output


def test_a_glob_rerun_refuses_outputs_inside_a_folder_it_matches(tmp_path, monkeypatch):
    """`vseg run '*' -o out/`: on the rerun the glob matches out/, a batch folder holding the first
    run's outputs; writing them again there is refused rather than taking them for inputs."""
    monkeypatch.chdir(tmp_path)
    make_video(tmp_path / "c0.mp4", 64, 48, 3, fps=10)
    (tmp_path / "out").mkdir()
    make_video(tmp_path / "out" / "c0_seg.mp4", 64, 48, 3, fps=10)  # what the first run wrote
    r = CliRunner().invoke(cli, ["run", "*", "-o", "out", *RANDOM, "--quiet"])
    assert r.exit_code == 2, r.output
    assert "inside the input folder out" in r.stderr


def test_a_glob_input_refuses_outputs_it_would_match(tmp_path, monkeypatch):
    """'videos/*.mp4' -o videos/: the rerun's glob would match c0_seg.mp4 (an input); a
    sub-folder is fine."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    make_video(tmp_path / "videos" / "c0.mp4", 64, 48, 3, fps=10)
    r = CliRunner().invoke(cli, ["run", "videos/*.mp4", "-o", "videos", *RANDOM, "--quiet"])
    assert r.exit_code == 2, r.output
    assert "matches the input pattern videos/*.mp4" in r.stderr
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == ["c0.mp4"]
    r = CliRunner().invoke(cli, ["run", "videos/*.mp4", "-o", "videos/out", *RANDOM, "--quiet"])
    assert r.exit_code == 0, r.output


def test_run_jobs_as_a_library(tmp_path):
    """runtime.batch.run_jobs without the CLI: a failing input is recorded and the batch goes on;
    an interruption writes the manifest of what finished and re-raises the very exception."""
    from vsegcli.distributed import Dist
    from vsegcli.io.video.source import parse_source
    from vsegcli.runtime.batch import Job, JobEvents, run_jobs

    class Interrupted(KeyboardInterrupt):
        pass

    stop = Interrupted()

    class FakeSegmenter:
        def run(self, source, **kw):
            kw["on_start"](3)
            if source.name == "bad":
                raise ValueError("broken input")
            if source.name == "stop":
                raise stop
            return {"frames": 3, "fps": 1.0}

    class Seen(JobEvents):
        def __init__(self):
            self.log = []

        def written(self, job, summary):
            self.log.append(("written", job.source.name))

        def failed(self, job, message):
            self.log.append(("failed", message))

    def job(i, name):
        return Job(i, parse_source(str(tmp_path / f"{name}.mp4")), name, None, None, None, None)

    seen = Seen()
    out = run_jobs(FakeSegmenter(), [job(0, "a"), job(1, "bad"), job(2, "c")], [], batch=True, dist=Dist(),
                   out_dir=tmp_path, run_options={}, events=seen)
    assert seen.log == [("written", "a"), ("failed", "ValueError: broken input"), ("written", "c")]
    assert [e["status"] for e in read_manifest(out.manifest)] == ["ok", "failed", "ok"] and len(out.results) == 2
    with pytest.raises(Interrupted) as caught:
        run_jobs(FakeSegmenter(), [job(0, "a"), job(1, "stop"), job(2, "c")], [], batch=True, dist=Dist(),
                 out_dir=tmp_path / "second", run_options={})
    assert caught.value is stop
    assert [e["status"] for e in read_manifest(tmp_path / "second" / MANIFEST_NAME)] == ["ok", "interrupted"]
