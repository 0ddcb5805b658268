"""The bad-input and fault matrix: every promise of README "What you can rely on", one probe each.

Each probe runs `vseg run` in a fresh folder holding only the inputs (a 4-frame clip, an image
folder, whatever the probe sets up) and states the exit status, the number of stderr lines
(--quiet: no summary) and exactly which files the folder holds afterwards; every file that was
there before must still hold the same bytes unless the probe says it is replaced.

In-process probes use click's CliRunner (fast); signals, SIGKILL leftovers, read-only mounts and
the wheel use real subprocesses (marked slow).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from videogen import make_images, make_video

from vsegcli.checkpoints import CheckpointMeta, save_checkpoint
from vsegcli.cli import cli
from vsegcli.data.labels import get_label_set
from vsegcli.io.outputs import LABELS_MANIFEST, write_labels_manifest
from vsegcli.models import build_model

REPO = Path(__file__).resolve().parents[1]
BIKES = REPO / "examples" / "bikes.mp4"
FRAMES = 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    """A small random CamVid checkpoint (64-pixel short side) and a 4-frame clip, outside the
    probe folders."""
    root = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = build_model("segformer-b0", 11)
    meta = CheckpointMeta.from_model(model, label_set=get_label_set("camvid"), input_size=64)
    ckpt = save_checkpoint(model, meta, root / "small.safetensors", half=True)
    clip = make_video(root / "clip.mp4", 64, 48, FRAMES, fps=10)
    return {"ckpt": ckpt, "clip": clip}


# ----------------------------------------------------------------------------- helpers
def listing(folder: Path) -> dict[str, str]:
    """Every path under `folder` (hidden ones too) -> a hash of its bytes ('/' for folders)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        out[rel] = "/" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def labels(name: str, n: int = FRAMES) -> set[str]:
    return {name, f"{name}/{LABELS_MANIFEST}", *(f"{name}/{i:06d}.png" for i in range(n))}


def stderr_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


def dead_pid() -> int:
    """The id of a process that has exited (its temporaries are stale)."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def vseg_labels_folder(folder: Path, extra: str | None = None) -> None:
    """A labels folder as vseg writes it (manifest + PNGs), optionally with a user's file in it."""
    folder.mkdir()
    for i in range(2):
        (folder / f"{i:06d}.png").write_bytes(b"old label")
    write_labels_manifest(folder, frames=2, source="earlier.mp4")
    if extra:
        (folder / extra).write_text("the user's own file\n")


def cuda_absent() -> str | None:
    return "this machine has CUDA" if torch.cuda.is_available() else None


@dataclass
class Probe:
    """One row of the matrix: `args` in a folder prepared by `setup`; expected status, stderr
    line count, and the paths created (`added`), replaced or removed, relative to the folder."""
    name: str
    args: list[str]
    code: int
    lines: int
    added: set[str] = field(default_factory=set)
    replaced: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    setup: Callable[[Path], None] | None = None
    needs: Callable[[], str | None] | None = None  # a reason to skip, or None
    says: str = ""  # a word the stderr line must contain


def _text(name: str, body: str = "not a video\n" * 20) -> Callable[[Path], None]:
    return lambda w: (w / name).write_text(body)


def _torch_pickle_named_safetensors(w: Path) -> None:
    torch.save({"some": torch.zeros(3)}, w / "model.safetensors")


def _stale(w: Path) -> None:
    pid = dead_pid()
    (w / f".out.mp4.part{pid}-0a1b2c3d.mp4").write_bytes(b"half a video")
    (w / f".lab.part{pid}-abcd1234").mkdir()
    (w / f".lab.part{pid}-abcd1234" / "000000.png").write_bytes(b"half")


def _live_temporary(w: Path) -> None:
    # This process is alive (the CLI runs in it): a concurrent writer's temporary is never taken.
    (w / f".out.mp4.part{os.getpid()}-0a1b2c3d.mp4").write_bytes(b"someone is writing")


CLIP = "clip.mp4"
PROBES: list[Probe] = [
    # --- what works
    Probe("video+labels", [CLIP, "-o", "out.mp4", "--labels-dir", "lab"], 0, 0, {"out.mp4"} | labels("lab")),
    Probe("image folder", ["frames", "--no-video", "--labels-dir", "lab"], 0, 0, labels("lab", 3)),
    Probe("report without suffix -> rep.html + rep.json", [CLIP, "--no-video", "--report", "rep"], 0, 0,
          {"rep.html", "rep.json"}),
    Probe("report into an existing folder", [CLIP, "--no-video", "--report", "reps"], 0, 0,
          {"reps/report.html", "reps/report.json"}, setup=lambda w: (w / "reps").mkdir()),
    Probe("labels into an empty folder", [CLIP, "--no-video", "--labels-dir", "lab"], 0, 0,
          labels("lab") - {"lab"}, setup=lambda w: (w / "lab").mkdir()),
    Probe("vseg labels folder replaced with --overwrite", [CLIP, "--no-video", "--labels-dir", "lab", "--overwrite"],
          0, 0, labels("lab") - {"lab", "lab/000000.png", "lab/000001.png", f"lab/{LABELS_MANIFEST}"},
          replaced={"lab/000000.png", "lab/000001.png", f"lab/{LABELS_MANIFEST}"},
          setup=lambda w: vseg_labels_folder(w / "lab")),
    Probe("existing video replaced with --overwrite", [CLIP, "-o", "out.mp4", "--overwrite"], 0, 0,
          replaced={"out.mp4"}, setup=_text("out.mp4", "precious")),
    Probe("stale temporaries of a killed run removed, said in one line",
          [CLIP, "-o", "out.mp4", "--labels-dir", "lab"], 0, 1, {"out.mp4"} | labels("lab"),
          removed={"STALE"}, setup=_stale, says="interrupted run"),
    Probe("a live writer's temporary is left alone", [CLIP, "-o", "out.mp4"], 0, 0, {"out.mp4"},
          setup=_live_temporary),
    # --- bad inputs
    Probe("missing input", ["nope.mp4", "-o", "out.mp4"], 2, 1, says="no such file"),
    Probe("not a video", ["bad.mp4", "-o", "out.mp4", "--labels-dir", "lab"], 2, 1, setup=_text("bad.mp4")),
    Probe("empty file", ["bad.mp4", "-o", "out.mp4"], 2, 1, setup=_text("bad.mp4", "")),
    Probe("empty folder", ["empty", "-o", "out.mp4"], 2, 1, setup=lambda w: (w / "empty").mkdir()),
    Probe("not a checkpoint", [CLIP, "-o", "out.mp4", "-c", "junk.pth"], 2, 1,
          setup=_text("junk.pth", "not a checkpoint"), says="checkpoint"),
    Probe("torch pickle named .safetensors (format by content)", [CLIP, "-o", "out.mp4", "-c", "model.safetensors"],
          2, 1, setup=_torch_pickle_named_safetensors),
    Probe("CUDA asked for but absent", [CLIP, "-o", "out.mp4", "--device", "cuda:0"], 2, 1, needs=cuda_absent,
          says="CUDA"),
    Probe("--no-video with nothing to write", [CLIP, "--no-video"], 2, 1),
    # --- outputs: never an input, only what vseg wrote, validated before decoding
    Probe("existing video without --overwrite", [CLIP, "-o", "out.mp4"], 2, 1, setup=_text("out.mp4", "precious"),
          says="--overwrite"),
    Probe("existing report without --overwrite", [CLIP, "--no-video", "--report", "r.html"], 2, 1,
          setup=_text("r.json", "{}"), says="--overwrite"),
    Probe("output video is the input", [CLIP, "-o", CLIP, "--overwrite"], 2, 1, says="input"),
    Probe("labels folder is the input folder", ["frames", "--no-video", "--labels-dir", "frames", "--overwrite"],
          2, 1, says="input"),
    Probe("labels folder holds the input", ["data/clip.mp4", "--no-video", "--labels-dir", "data", "--overwrite"],
          2, 1, setup=lambda w: (w / "data").mkdir() or shutil.copy(w / CLIP, w / "data" / CLIP), says="input"),
    Probe("labels folder is the current folder", [CLIP, "--no-video", "--labels-dir", ".", "--overwrite"], 2, 1),
    Probe("video inside the input image folder", ["frames", "-o", "frames/out.mp4"], 2, 1, says="inside"),
    Probe("a user's folder as labels, even with --overwrite",
          [CLIP, "--no-video", "--labels-dir", "mydata", "--overwrite"], 2, 1,
          setup=lambda w: (w / "mydata").mkdir() or (w / "mydata" / "notes.txt").write_text("thesis"),
          says="not a labels folder written by vseg"),
    Probe("a vseg labels folder with a user's file in it", [CLIP, "--no-video", "--labels-dir", "lab", "--overwrite"],
          2, 1, setup=lambda w: vseg_labels_folder(w / "lab", extra="notes.txt"), says="notes.txt"),
    Probe("a vseg labels folder without --overwrite", [CLIP, "--no-video", "--labels-dir", "lab"], 2, 1,
          setup=lambda w: vseg_labels_folder(w / "lab"), says="--overwrite"),
    Probe("labels dir is a regular file, even with --overwrite", [CLIP, "--no-video", "--labels-dir", "afile",
                                                                  "--overwrite"], 2, 1,
          setup=_text("afile", "mine"), says="is a file"),
    Probe("output under a regular file", [CLIP, "-o", "afile/out.mp4"], 2, 1, setup=_text("afile", "mine"),
          says="not a folder"),
    Probe("video inside the labels folder", [CLIP, "-o", "lab/out.mp4", "--labels-dir", "lab"], 2, 1,
          says="inside the labels folder"),
    Probe("report path with another suffix", [CLIP, "--no-video", "--report", "r.txt"], 2, 1),
    Probe("stats file written", [CLIP, "--no-video", "--stats", "s.csv"], 0, 0, {"s.csv"}),
    Probe("existing stats file without --overwrite", [CLIP, "--no-video", "--stats", "s.csv"], 2, 1,
          setup=_text("s.csv", "mine"), says="--overwrite"),
    Probe("stats file is the input", [CLIP, "--no-video", "--stats", CLIP, "--overwrite"], 2, 1, says="input"),
    Probe("stats file inside the labels folder", [CLIP, "--no-video", "--labels-dir", "lab", "--stats", "lab/s.csv"],
          2, 1, says="inside the labels folder"),
]


def _prepare(work: Path, assets: dict[str, Path], probe: Probe) -> None:
    shutil.copy(assets["clip"], work / CLIP)
    make_images(work / "frames", [f"f{i}.png" for i in range(3)], 32, 24)
    if probe.setup is not None:
        probe.setup(work)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
def test_matrix(probe: Probe, assets, tmp_path, monkeypatch):
    reason = probe.needs() if probe.needs else None
    if reason:
        pytest.skip(reason)
    work = tmp_path / "w"
    work.mkdir()
    _prepare(work, assets, probe)
    before = listing(work)
    monkeypatch.chdir(work)
    args = ["run", *probe.args, "--quiet"]
    if "-c" not in probe.args:
        args += ["-c", str(assets["ckpt"])]
    result = CliRunner().invoke(cli, args)
    lines = stderr_lines(result.stderr)
    assert result.exit_code == probe.code, (result.output, result.exception)
    assert len(lines) == probe.lines, result.stderr
    assert "Traceback" not in result.output
    if probe.code == 2:
        assert lines[0].startswith("Error: ")
    if probe.says:
        assert probe.says in lines[0], lines[0]
    after = listing(work)
    removed = {k for k in before if k not in after}
    if "STALE" in probe.removed:  # the temporaries set up by `_stale`
        assert removed and all(".part" in k for k in removed), removed
    else:
        assert removed == probe.removed
    assert set(after) - set(before) == probe.added
    changed = {k for k in before if k in after and before[k] != after[k]}
    assert changed == probe.replaced  # every other input and file keeps its bytes


@pytest.mark.parametrize("dst,overwrite,code,says", [
    ("same", True, 2, "is the input"),
    ("taken", False, 2, "--overwrite"),
    ("new.safetensors", False, 0, ""),
])
def test_convert_output_rules(dst, overwrite, code, says, assets, tmp_path, monkeypatch):
    """`vseg convert` follows the same output rule as `vseg run` (io.outputs)."""
    shutil.copy(assets["ckpt"], tmp_path / "src.safetensors")
    (tmp_path / "taken").write_text("mine")
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    target = "src.safetensors" if dst == "same" else dst
    r = CliRunner().invoke(cli, ["convert", "src.safetensors", target, *(["--overwrite"] if overwrite else [])])
    assert r.exit_code == code, r.output
    after = listing(tmp_path)
    if code == 2:
        assert len(stderr_lines(r.stderr)) == 1 and says in r.stderr
        assert after == before  # the source and the user's file keep their bytes
    else:
        assert set(after) - set(before) == {target} and all(after[k] == before[k] for k in before)


def test_labels_manifest_names_the_run(assets, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["run", str(assets["clip"]), "--no-video", "--labels-dir", "lab", "--start", "1",
                                 "-c", str(assets["ckpt"]), "--quiet"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "lab" / LABELS_MANIFEST).read_text())
    assert doc["vseg_labels"] == 1 and doc["frames"] == FRAMES - 1
    assert (doc["first_frame"], doc["last_frame"]) == (1, FRAMES - 1) and doc["source"] == str(assets["clip"])


# ----------------------------------------------------------------------------- read-only targets
def _chmod_stops_writes(folder: Path) -> bool:
    try:
        (folder / ".probe").write_bytes(b"")
    except OSError:
        return True
    (folder / ".probe").unlink()
    return False


@pytest.mark.parametrize("flag", ["-o", "--labels-dir", "--report"])
def test_read_only_folder_is_refused_before_decoding(flag, assets, tmp_path, monkeypatch):
    """chmod a-w: one line, exit 2, nothing written (root writes through chmod: then the mount
    test below covers it)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not _chmod_stops_writes(ro):
            pytest.skip("this user writes through chmod (root); see the read-only mount test")
        target = {"-o": "ro/out.mp4", "--labels-dir": "ro/lab", "--report": "ro/r.html"}[flag]
        monkeypatch.chdir(tmp_path)
        extra = [] if flag == "-o" else ["--no-video"]
        r = CliRunner().invoke(cli, ["run", str(assets["clip"]), flag, target, *extra, "-c", str(assets["ckpt"])])
        assert r.exit_code == 2 and len(stderr_lines(r.stderr)) == 1, r.output
        assert "not writable" in r.stderr and list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


_RO_SCRIPT = r"""
set -e
mount -t tmpfs -o size=4m tmpfs "$RO"
mkdir "$RO/lab" && cp "$LAB"/* "$LAB"/.vseg-labels.json "$RO/lab/"
mount -o remount,ro "$RO"
exec "$PY" - <<'EOF'
import json, os, sys
from click.testing import CliRunner
from vsegcli.cli import cli
ro, clip, ckpt = os.environ["RO"], os.environ["CLIP"], os.environ["CKPT"]
out = {}
for name, args in {"video": ["-o", f"{ro}/out.mp4"],
                   "labels": ["--no-video", "--labels-dir", f"{ro}/new"],
                   "replace labels": ["--no-video", "--labels-dir", f"{ro}/lab", "--overwrite"],
                   "report": ["--no-video", "--report", f"{ro}/r.html"]}.items():
    r = CliRunner().invoke(cli, ["run", clip, *args, "-c", ckpt, "--quiet"])
    out[name] = [r.exit_code, r.stderr, sorted(os.listdir(ro)), sorted(os.listdir(f"{ro}/lab"))]
print(json.dumps(out))
EOF
"""


@pytest.mark.slow
def test_read_only_mount_is_refused_before_decoding(assets, tmp_path):
    """A read-only file system (EROFS, the issue's case; root cannot write there either), in a
    private mount namespace: every output kind is one line, exit 2, and nothing changes."""
    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs tmpfs {tmp_path} && umount {tmp_path}"],
            capture_output=True).returncode != 0:
        pytest.skip("no private mount namespace here (needs root or user namespaces)")
    lab = tmp_path / "lab"
    vseg_labels_folder(lab)
    ro = tmp_path / "ro"
    ro.mkdir()
    env = dict(os.environ, RO=str(ro), LAB=str(lab), CLIP=str(assets["clip"]), CKPT=str(assets["ckpt"]),
               PY=sys.executable, PYTHONPATH=str(REPO))
    proc = subprocess.run(["unshare", "-m", "sh", "-c", _RO_SCRIPT], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (code, err, listing_ro, listing_lab) in results.items():
        assert code == 2 and len(stderr_lines(err)) == 1, (name, err)
        assert "Read-only file system" in err, (name, err)
        assert listing_ro == ["lab"] and listing_lab == sorted(["000000.png", "000001.png", LABELS_MANIFEST]), name


# ----------------------------------------------------------------------------- real signals
@pytest.fixture(scope="module")
def long_clip(tmp_path_factory) -> Path:
    """Long enough (1500 frames) that a run is still going when the signal comes."""
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", 64, 48, 1500, fps=25)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    # SIGINT at its default (a background shell may have set it to ignored for us).
    return subprocess.Popen([sys.executable, "-m", "vsegcli", "run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for_temporaries(proc: subprocess.Popen, work: Path, timeout: float = 120.0) -> list[str]:
    """Wait until the video temporary and the labels staging folder (with a PNG) exist."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vseg ended before it could be interrupted: {proc.returncode} {proc.stderr.read()}")
        video = list(work.glob(".out.mp4.part*"))
        staging = [d for d in work.glob(".lab.part*") if d.is_dir()]
        if video and staging and any(staging[0].glob("*.png")):
            return sorted(p.name for p in work.iterdir())
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no temporary appeared in time")


@pytest.mark.slow
@pytest.mark.parametrize("signame,status", [("SIGTERM", 143), ("SIGHUP", 129), ("SIGINT", 130)])
def test_signal_removes_temporaries_one_line_conventional_status(signame, status, assets, long_clip, tmp_path):
    """`timeout`, `kill`, a closed terminal, Ctrl-C: the folder holds only the inputs after."""
    work = tmp_path
    shutil.copy(assets["ckpt"], work / "model.safetensors")
    inputs = sorted(p.name for p in work.iterdir())
    proc = _start([str(long_clip), "-c", "model.safetensors", "-o", "out.mp4", "--labels-dir", "lab",
                   "--report", "rep"], work)
    try:
        during = _wait_for_temporaries(proc, work)
        assert any(n.startswith(f".out.mp4.part{proc.pid}-") for n in during)  # owner pid in the name
        proc.send_signal(getattr(signal, signame))
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith(f"Interrupted ({signame})"), err
    assert sorted(p.name for p in work.iterdir()) == inputs  # no rep/, no rep.*, no .part


@pytest.mark.slow
def test_sigkill_leftovers_are_removed_by_the_next_run(assets, long_clip, tmp_path):
    work = tmp_path
    proc = _start([str(long_clip), "-c", str(assets["ckpt"]), "-o", "out.mp4", "--labels-dir", "lab"], work)
    try:
        _wait_for_temporaries(proc, work)
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)  # the orphaned encoder sees its input end and exits
    left = sorted(p.name for p in work.iterdir())
    assert left and all(n.startswith((f".out.mp4.part{proc.pid}-", f".lab.part{proc.pid}-")) for n in left), left
    r = subprocess.run([sys.executable, "-m", "vsegcli", "run", str(assets["clip"]), "-c", str(assets["ckpt"]),
                        "-o", "out.mp4", "--labels-dir", "lab", "--quiet"], cwd=work, capture_output=True, text=True,
                       timeout=300, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    lines = stderr_lines(r.stderr)
    assert len(lines) == 1 and "left by an interrupted run" in lines[0] and all(n in lines[0] for n in left), r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["lab", "out.mp4"]
    assert len(list((work / "lab").glob("*.png"))) == FRAMES


# ----------------------------------------------------------------------------- overlay opacity
def test_overlay_opacity_is_honoured_on_pixels(assets, tmp_path):
    """The overlay video is frame·(1−α) + colour·α: decoded frames match their own opacity's blend
    (H.264 error only) and clearly not the other's."""
    from vsegcli.io.video import FrameReader

    def frames(source: Path) -> np.ndarray:
        with FrameReader(source) as reader:
            return np.stack([f for _, f in reader]).astype(np.float64)

    def read_colour_labels(folder: Path) -> np.ndarray:
        import cv2

        return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
                         for p in sorted(folder.glob("*.png"))]).astype(np.float64)

    src = frames(assets["clip"])
    outs = {}
    for a in (0.2, 0.8):
        r = CliRunner().invoke(cli, ["run", str(assets["clip"]), "-o", str(tmp_path / f"o{a}.mp4"), "--labels-dir",
                                     str(tmp_path / f"l{a}"), "--color-labels", "--opacity", str(a), "--no-legend",
                                     "-c", str(assets["ckpt"]), "--quiet"])
        assert r.exit_code == 0, r.output
        outs[a] = (frames(tmp_path / f"o{a}.mp4"), read_colour_labels(tmp_path / f"l{a}"))
    colour = outs[0.2][1]
    assert np.array_equal(colour, outs[0.8][1])  # the labels do not depend on the opacity
    assert np.abs(colour - src).mean() > 40  # the colours differ from the frame: blends are apart
    for a, (decoded, _) in outs.items():
        own = np.abs(decoded - ((1 - a) * src + a * colour)).mean()
        other = np.abs(decoded - ((1 - (1 - a)) * src + (1 - a) * colour)).mean()
        assert own < 4.0 and other > 3 * own, (a, own, other)


# ----------------------------------------------------------------------------- the wheel
@pytest.mark.slow
def test_wheel_install_gives_the_shipped_default_labels(tmp_path):
    """pip wheel -> fresh venv (system site-packages for torch, --no-deps) -> `vseg run` from
    outside the checkout: the shipped default runs, and its labels equal the checkout's byte for byte."""
    if not (REPO / "weights" / "models.json").is_file():
        pytest.skip("this checkout has no shipped weights")
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".device", "tests",
        "benchmarks", "*.mp4"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)]
    subprocess.run(pip, check=True, capture_output=True, timeout=600)
    wheel = next(wheels.glob("vseg-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True,
                   capture_output=True, timeout=600)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("VSEG_WEIGHTS_DIR", "PYTHONPATH")}
    where = subprocess.run([str(py), "-c", "import vsegcli; print(vsegcli.__file__)"], cwd=outside, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(venv), where  # the wheel, not the editable checkout
    args = ["run", str(BIKES), "--max-frames", "3", "--no-video", "--quiet", "--json", "--device", "cpu"]
    wheel_run = subprocess.run([str(venv / "bin" / "vseg"), *args, "--labels-dir", "wheel"], cwd=outside, env=env,
                               capture_output=True, text=True, timeout=600)
    assert wheel_run.returncode == 0, wheel_run.stderr
    assert wheel_run.stderr.strip() == ""  # no random-weights warning
    model = json.loads(wheel_run.stdout)["model"]
    assert not model["random_init"] and "_weights" in model["checkpoint"] and Path(model["checkpoint"]).is_relative_to(venv)
    env_repo = dict(env, PYTHONPATH=str(REPO))
    here = subprocess.run([sys.executable, "-m", "vsegcli", *args, "--labels-dir", "checkout"], cwd=outside,
                          env=env_repo, capture_output=True, text=True, timeout=600)
    assert here.returncode == 0, here.stderr
    a = sorted((outside / "wheel").glob("*.png"))
    b = sorted((outside / "checkout").glob("*.png"))
    assert [p.name for p in a] == [p.name for p in b] == ["000000.png", "000001.png", "000002.png"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))
