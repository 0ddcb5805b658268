"""Atomic outputs: write under a hidden temporary name in the target folder, then one rename.

An interrupted or failed write never leaves a file (or folder) at the final path that looks
complete. This module is the one home of that rule:

    atomic_write(path, write)         a binary file produced by a callback (torch.save, ...)
    atomic_write_bytes / _text        a file from bytes / UTF-8 text
    atomic_write_files({path: data})  several files that must appear together (report.html + .json)
    atomic_path(path)                 a temporary path for writers that want a file name (cv2, ffmpeg)
    AtomicDir(folder) / atomic_dir    a folder filled file by file, renamed into place when complete

Temporary names start with a dot and contain ``.part``, so they never look like results.
"""
from __future__ import annotations

import contextlib
import os
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def _part_name(path: Path, keep_suffix: bool = False) -> Path:
    """A fresh hidden name beside `path`: .NAME.part<token>[.suffix]."""
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.part{secrets.token_hex(4)}{suffix}")


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
        self.folder = Path(folder)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.folder.name}.part", dir=self.folder.parent))

    def commit(self) -> Path:
        """Rename the temporary folder to `folder`; an existing one is moved aside first and
        deleted after, so the final name always holds a complete folder."""
        if self.folder.exists():
            trash = self.folder.with_name(f".{self.folder.name}.old")
            shutil.rmtree(trash, ignore_errors=True)
            self.folder.rename(trash)
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
