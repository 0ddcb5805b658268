"""vsegcli.io.fsutil: every atomic writer leaves either the finished output or nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vsegcli.io.fsutil import (
    AtomicDir, atomic_dir, atomic_path, atomic_write, atomic_write_bytes, atomic_write_files, atomic_write_text, part_name,
    remove_stale_temporaries, stale_temporaries,
)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_and_text_replace_and_leave_no_temporaries(tmp_path: Path):
    atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    atomic_write_text(tmp_path / "sub" / "b.txt", "é\n")
    atomic_write_text(tmp_path / "sub" / "b.txt", "second")
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "second"
    assert entries(tmp_path) == ["a.bin", "sub"] and entries(tmp_path / "sub") == ["b.txt"]


def test_atomic_path_keeps_suffix_renames_on_success_removes_on_interrupt(tmp_path: Path):
    target = tmp_path / "frame.png"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".frame.png.part") and tmp.parent == tmp_path
        tmp.write_bytes(b"png")
        assert not target.exists()
    assert target.read_bytes() == b"png" and entries(tmp_path) == ["frame.png"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"png" and entries(tmp_path) == ["frame.png"]


def test_atomic_write_files_all_or_nothing(tmp_path: Path):
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    assert atomic_write_files({html: "<p>", js: b"{}"}) == [html, js]
    assert html.read_text() == "<p>" and js.read_bytes() == b"{}"
    mode = html.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # shared like any output, not mkstemp's 0600

    with pytest.raises(TypeError):  # the second file cannot be written: neither is replaced
        atomic_write_files({html: "<new>", js: 3})  # type: ignore[dict-item]
    assert html.read_text() == "<p>" and js.read_bytes() == b"{}"
    assert entries(tmp_path) == ["r.html", "r.json"]


def test_atomic_dir_commits_replaces_and_discards(tmp_path: Path):
    target = tmp_path / "labels"
    with atomic_dir(target) as tmp:
        (tmp / "000000.png").write_bytes(b"x")
        assert tmp.name.startswith(".labels.part") and not target.exists()
    assert entries(target) == ["000000.png"]
    with atomic_dir(target) as tmp:  # an existing folder is replaced whole
        (tmp / "000001.png").write_bytes(b"y")
    assert entries(target) == ["000001.png"] and entries(tmp_path) == ["labels"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "000002.png").write_bytes(b"z")
            raise KeyboardInterrupt
    assert entries(target) == ["000001.png"] and entries(tmp_path) == ["labels"]
    staging = AtomicDir(tmp_path / "other")
    (staging.tmp / "f").write_bytes(b"")
    staging.discard()
    assert entries(tmp_path) == ["labels"]


class _Interrupt(BaseException):
    """Not an Exception: a cleanup written as `except Exception` lets it through."""


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, _Interrupt])
def test_atomic_write_interrupted_mid_write_leaves_no_temporary(tmp_path: Path, exc: type[BaseException]):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"previous")
    seen: list[str] = []

    def write(f) -> None:
        f.write(b"half of the new")
        seen.extend(entries(tmp_path))  # the temporary exists while writing
        raise exc()

    with pytest.raises(exc):
        atomic_write(target, write, durable=True)
    assert len(seen) == 2 and any(n.startswith(".model.safetensors.part") for n in seen)
    assert entries(tmp_path) == ["model.safetensors"] and target.read_bytes() == b"previous"
    with pytest.raises(exc):  # several files at once: the same
        atomic_write_files({tmp_path / "a.html": "<p>", tmp_path / "a.json": _Raises(exc)})  # type: ignore[dict-item]
    assert entries(tmp_path) == ["model.safetensors"]


class _Raises(str):
    """Text whose encoding is interrupted: the first file is staged, the second interrupted."""

    exc: type[BaseException] = KeyboardInterrupt

    def __new__(cls, exc: type[BaseException]) -> "_Raises":
        self = super().__new__(cls, "{}")
        self.exc = exc
        return self

    def encode(self, *args, **kwargs):  # type: ignore[override]
        raise self.exc()


def test_temporaries_carry_the_pid_and_stale_ones_are_removed(tmp_path: Path):
    import subprocess
    import sys

    target = tmp_path / "out.mp4"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = int(gone.stdout)  # a process that has exited: its temporaries are stale
    stale_file = tmp_path / f".out.mp4.part{dead}-0a1b2c3d.mp4"
    stale_dir = tmp_path / f".out.mp4.old{dead}-x1y2z3_q"
    live = tmp_path / f".out.mp4.part{os.getpid()}-0a1b2c3d.mp4"  # a running writer's: kept
    other = tmp_path / f".other.mp4.part{dead}-0a1b2c3d.mp4"  # another output's: not ours to touch
    user = tmp_path / ".out.mp4.partial-notes"  # not our pattern
    for p in (stale_file, live, other, user):
        p.write_bytes(b"x")
    stale_dir.mkdir()
    (stale_dir / "old").mkdir()
    (stale_dir / "old" / "000000.png").write_bytes(b"x")
    assert part_name(target, ".mp4").name.startswith(f".out.mp4.part{os.getpid()}-")
    assert stale_temporaries(target) == sorted([stale_dir, stale_file])
    assert remove_stale_temporaries(target) == sorted([stale_dir, stale_file])
    assert entries(tmp_path) == sorted(p.name for p in (live, other, user))


def test_atomic_dir_replaces_a_file_without_leaving_old_and_gets_the_usual_mode(tmp_path: Path):
    target = tmp_path / "labels"
    target.write_bytes(b"a file in the way")  # callers decide whether it may go (io.outputs)
    with atomic_dir(target) as tmp:
        (tmp / "000000.png").write_bytes(b"x")
    assert entries(target) == ["000000.png"] and entries(tmp_path) == ["labels"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_video_suffixes_are_the_writers_containers():
    """One list of output containers (io.outputs) and the writer's audio rules cover the same ones."""
    from vsegcli.io.outputs import VIDEO_SUFFIXES
    from vsegcli.io.video.writer import _AUDIO_COPY

    assert set(VIDEO_SUFFIXES) == set(_AUDIO_COPY)
