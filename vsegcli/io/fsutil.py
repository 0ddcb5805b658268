"""Atomic outputs: write under a hidden temporary name in the target folder, then one rename.

An interrupted or failed write never leaves a file (or folder) at the final path that looks
complete. This module is the one home of that rule:

    atomic_write(path, write)         a binary file produced by a callback (torch.save, ...)
    atomic_write_bytes / _text        a file from bytes / UTF-8 text
    atomic_write_files({path: data})  several files that must appear together (report.html + .json)
    atomic_path(path)                 a temporary path for writers that want a file name (cv2, ffmpeg)
    AtomicDir(folder) / atomic_dir    a folder filled file by file, renamed into place when complete

Temporary names are ``.NAME.part<pid>-<token>[...]`` beside NAME: hidden, never looking like
results, and carrying the writing process's id, so a later run can recognise the ones a killed
run (SIGKILL, power loss) left behind and remove them (`remove_stale_temporaries`).
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], durable: bool = False) -> Path:
    """Call `write(f)` on a temporary binary file beside `path`, then rename it to `path`.

    `durable=True` fsyncs before the rename (checkpoints and resume state: a crash right after
    must not leave an empty file under the final name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_part_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> Path:
    return atomic_write(path, lambda f: f.write(data), durable)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _part_prefix(path: Path, kind: str = "part") -> str:
    return f".{path.name}.{kind}{os.getpid()}-"


def part_name(path: str | os.PathLike, suffix: str = "") -> Path:
    """A fresh hidden temporary name beside `path`: ``.NAME.part<pid>-<token><suffix>``.
    Every temporary vseg writes is named this way (the video writer too)."""
    path = Path(os.path.abspath(path))
    return path.with_name(f"{_part_prefix(path)}{secrets.token_hex(4)}{suffix}")


def _part_name(path: Path, keep_suffix: bool = False) -> Path:
    return part_name(path, path.suffix if keep_suffix else "")


_TEMP_RE = r"\.(?:part|old)(\d+)-[A-Za-z0-9_]+(?:\..*)?"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or not a pid we can ask about): keep it
    return True


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporaries of `path` (``.NAME.part<pid>-…``, ``.NAME.old<pid>-…``) whose writing process
    is gone: left by a killed run. A live process's temporaries are never listed (a concurrent
    run writing the same output keeps its own). The pid is checked on this machine only."""
    path = Path(os.path.abspath(path))
    pattern = re.compile(re.escape(f".{path.name}") + _TEMP_RE + r"\Z")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    stale = []
    for entry in entries:
        m = pattern.match(entry.name)
        if m and not _pid_alive(int(m.group(1))):
            stale.append(entry)
    return sorted(stale)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove `stale_temporaries(path)`; returns what was removed."""
    removed = []
    for entry in stale_temporaries(path):
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue
        except OSError:
            continue  # not ours to fight over: the output check reports unwritable folders
        removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so cv2/ffmpeg pick the format) for the
    caller to write; on success it is renamed to `path`, on any exception (Ctrl-C included) removed.

        with atomic_path("out/0001.png") as tmp:
            cv2.imwrite(str(tmp), image)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _part_name(path, keep_suffix=True)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_files(files: Mapping[str | os.PathLike, bytes | str]) -> list[Path]:
    """Write every file under a temporary name, then rename them all: a crash never leaves a
    finished-looking set whose members disagree (e.g. a report page and its JSON).
    str values are written as UTF-8. Files are created with the usual (umask) mode."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in files.items():
            target = Path(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = _part_name(target)
            staged.append((tmp, target))
            with open(tmp, "xb") as f:  # "xb", not mkstemp: the umask decides the mode
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
        for tmp, target in staged:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    return [target for _, target in staged]


class AtomicDir:
    """A folder built under a hidden temporary name beside `folder` (``.NAME.part…``), renamed into
    place by `commit()` (replacing an existing folder of that name) or removed by `discard()`.

    For writers with a write/close/abort life cycle (the engine's label PNG sink); in a `with`
    block use `atomic_dir`.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        # Absolute: `Path(".")` has no name to build a sibling from.
        self.folder = Path(os.path.abspath(folder))
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=_part_prefix(self.folder), dir=self.folder.parent))

    def commit(self) -> Path:
        """Rename the temporary folder to `folder`; an existing one is moved aside first and
        deleted after, so the final name always holds a complete folder. Whether an existing
        folder may be replaced at all is the caller's rule (`vsegcli.io.outputs`)."""
        os.chmod(self.tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders; outputs get the usual mode
        if self.folder.is_symlink() or self.folder.exists():
            trash = Path(tempfile.mkdtemp(prefix=_part_prefix(self.folder, "old"), dir=self.folder.parent))
            aside = trash / "old"  # rename into a fresh folder: never onto something that exists
            self.folder.rename(aside)
            self.tmp.rename(self.folder)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            self.tmp.rename(self.folder)
        return self.folder

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `folder` to fill; renamed to `folder` when the block
    completes, removed on any exception (Ctrl-C included)."""
    staging = AtomicDir(folder)
    try:
        yield staging.tmp
        staging.commit()
    except BaseException:
        staging.discard()
        raise
