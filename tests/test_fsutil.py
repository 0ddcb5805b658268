"""vsegcli.io.fsutil: every atomic writer leaves either the finished output or nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from vsegcli.io.fsutil import AtomicDir, atomic_dir, atomic_path, atomic_write_bytes, atomic_write_files, atomic_write_text


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
