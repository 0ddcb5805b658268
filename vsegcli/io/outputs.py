"""May vseg write here? The one home of the output rules, checked before the first frame is decoded.

    plan = plan_outputs(["clip.mp4"], video="out.mp4", labels_dir="labels", report="r.html",
                        overwrite=False)        # raises VsegError (one line) or returns a plan
    plan.removed                                # stale temporaries of a killed run, now removed

The rules, the same for every output kind (overlay video, labels folder, report files):

- **Never an input**: an output is not an input, does not contain one (a labels folder that is an
  input's folder) and does not lie inside an input folder (an image folder being read); nor is
  it inside another output, nor the current folder.
- **Only what vseg wrote**: an existing file is replaced only with ``overwrite``; an existing
  labels folder only when it is empty, or is a vseg labels folder (its manifest
  `LABELS_MANIFEST` and nothing but label PNGs) and ``overwrite`` is given. A user's folder, a
  regular file or a link in its place is refused whatever the flags.
- **Writable**: the folder that will receive the output (its nearest existing ancestor when it is
  still to be made) must accept a new file, tried for real (chmod, read-only mounts, a file in the
  way, no space for a name): a refusal is one line, before any work.

Writers apply the same rules again when they commit (`check_labels_folder` from `LabelPngSink`).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from vsegcli.errors import VsegError
from vsegcli.io.fsutil import atomic_write_text, remove_stale_temporaries

__all__ = [
    "LABELS_MANIFEST", "OutputPlan", "check_file_output", "check_labels_folder", "check_writable",
    "is_vseg_labels", "labels_manifest", "plan_outputs",
]

LABELS_MANIFEST = ".vseg-labels.json"
# What the writers accept (io.video.writer, runtime.stats), checked here before any work.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")
STATS_SUFFIXES = (".csv", ".jsonl")


def check_video_suffix(path: str | os.PathLike) -> None:
    """The containers vseg writes (io.video.writer knows their audio rules)."""
    if Path(path).suffix.lower() not in VIDEO_SUFFIXES:
        others = "/".join(s for s in VIDEO_SUFFIXES if s != ".mp4")
        raise VsegError(f"cannot write video {path}: use a .mp4 (or {others}) file name")


def stats_format(path: str | os.PathLike) -> str:
    """`--stats` file format from its name: .csv or .jsonl."""
    suffix = Path(path).suffix.lower()
    if suffix not in STATS_SUFFIXES:
        raise VsegError(f"--stats {path}: use a .csv or .jsonl file name")
    return suffix
_LABEL_PNG = re.compile(r"\d{6,}\.png\Z")

PathLike = Union[str, "os.PathLike[str]"]


def _abs(p: PathLike) -> Path:
    # realpath: links resolved, so "inside"/"contains" compare what is really on disk.
    return Path(os.path.realpath(os.fspath(p)))


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _same(a: PathLike, b: PathLike) -> bool:
    if _abs(a) == _abs(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


# ----------------------------------------------------------------------------- manifest
def labels_manifest(frames: int, source: str | None = None, color: bool = False,
                    first_frame: int | None = None, last_frame: int | None = None) -> str:
    """The text of the manifest vseg writes into every labels folder (its mark of ownership)."""
    from vsegcli import __version__

    return json.dumps({
        "vseg_labels": 1,
        "vseg_version": __version__,
        "frames": int(frames),
        "first_frame": first_frame,
        "last_frame": last_frame,
        "source": source,
        "color": bool(color),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }, indent=1) + "\n"


def write_labels_manifest(folder: PathLike, **info: Any) -> Path:
    return atomic_write_text(Path(folder) / LABELS_MANIFEST, labels_manifest(**info))


def _foreign_entry(folder: Path) -> str | None:
    """The first entry of `folder` that vseg would not have written there, or None."""
    try:
        doc = json.loads((folder / LABELS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return LABELS_MANIFEST
    if not isinstance(doc, dict) or doc.get("vseg_labels") != 1:
        return LABELS_MANIFEST
    for entry in sorted(folder.iterdir()):
        if entry.name == LABELS_MANIFEST:
            continue
        if entry.is_symlink() or not entry.is_file() or not _LABEL_PNG.match(entry.name):
            return entry.name
    return None


def is_vseg_labels(folder: PathLike) -> bool:
    """True when `folder` is a labels folder vseg wrote: its manifest, and only label PNGs."""
    folder = Path(folder)
    return folder.is_dir() and not folder.is_symlink() and _foreign_entry(folder) is None


# ----------------------------------------------------------------------------- checks
def check_writable(path: PathLike, what: str) -> None:
    """Refuse (VsegError) unless a new file can be made where `path` will be written: in its
    parent, or the nearest existing ancestor when folders are still to be made. Tried for real
    (a probe file made and removed), so it holds for root, ACLs and read-only mounts alike."""
    target = _abs(path)
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise VsegError(f"cannot write {what} {path}: {folder} is a file, not a folder")
    _probe(folder, f"cannot write {what} {path}")


def _probe(folder: Path, prefix: str) -> None:
    probe = folder / f".vseg-probe{os.getpid()}-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise VsegError(f"{prefix}: {folder} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError:
        pass


def _check_against(path: PathLike, what: str, inputs: Sequence[PathLike]) -> None:
    """Never an input, never containing one, never inside an input folder, never the cwd."""
    out = _abs(path)
    for inp in inputs:
        src = _abs(inp)
        if _same(path, inp):
            raise VsegError(f"{what} {path} is the input {inp}; choose another output path")
        if _within(src, out):
            raise VsegError(f"{what} {path} contains the input {inp}; choose another output path")
        if Path(inp).is_dir() and _within(out, src):
            raise VsegError(f"{what} {path} lies inside the input folder {inp}; choose a path outside it")
    cwd = Path(os.path.realpath(os.getcwd()))
    if _within(cwd, out):
        raise VsegError(f"{what} {path} is the current folder (or holds it); choose a new folder name")


def check_file_output(path: PathLike, what: str, *, inputs: Sequence[PathLike] = (),
                      overwrite: bool = False, flag: str = "the output path") -> Path:
    """A file output (video, report page/JSON): not a folder, replaced only with `overwrite`,
    never an input, its folder writable."""
    p = Path(path)
    _check_against(p, what, inputs)
    if p.is_dir():
        raise VsegError(f"{what} {p} is a folder; give a file name")
    if (p.exists() or p.is_symlink()) and not overwrite:
        raise VsegError(f"{p} already exists; pass --overwrite or choose another {flag}")
    check_writable(p, what)
    return p


def check_labels_folder(folder: PathLike, *, inputs: Sequence[PathLike] = (), overwrite: bool = False) -> Path:
    """A labels folder: new, empty, or a vseg labels folder replaced with `overwrite`; never a
    user's folder, a file or a link; never an input; its parent (and it, when replaced) writable."""
    p = Path(folder)
    _check_against(p, "labels folder", inputs)
    if p.is_symlink():
        raise VsegError(f"--labels-dir {p} is a link; vseg replaces only label folders it wrote: "
                        "choose another --labels-dir")
    if p.exists():
        if not p.is_dir():
            raise VsegError(f"--labels-dir {p} is a file, not a labels folder written by vseg; "
                            "choose another --labels-dir")
        try:
            empty = not any(p.iterdir())
        except OSError as exc:
            raise VsegError(f"cannot read --labels-dir {p} ({exc.strerror or exc})") from None
        if not empty:
            foreign = _foreign_entry(p)
            if foreign == LABELS_MANIFEST:
                raise VsegError(f"--labels-dir {p} is not empty and is not a labels folder written by vseg "
                                f"(no {LABELS_MANIFEST}); vseg replaces only its own: choose another --labels-dir")
            if foreign is not None:
                raise VsegError(f"--labels-dir {p} holds {foreign}, which vseg did not write; move it "
                                "or choose another --labels-dir")
            if not overwrite:
                raise VsegError(f"{p} already exists; pass --overwrite or choose another --labels-dir")
            _probe(_abs(p), f"cannot replace --labels-dir {p}")  # its files must be removable
    check_writable(p, "labels folder")
    return p


# ----------------------------------------------------------------------------- plan
@dataclass
class OutputPlan:
    """Validated outputs (absolute-free: as given) and the stale temporaries removed for them."""
    videos: list[Path] = field(default_factory=list)
    labels_dirs: list[Path] = field(default_factory=list)
    reports: list[tuple[Path, Path]] = field(default_factory=list)
    stats: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def files(self) -> list[tuple[str, Path]]:
        return ([("video", v) for v in self.videos] + [("labels folder", d) for d in self.labels_dirs]
                + [("report", f) for pair in self.reports for f in pair] + [("stats file", s) for s in self.stats])


def _many(value: PathLike | Iterable[PathLike | None] | None) -> list[Path]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value if v is not None]


def plan_outputs(
    inputs: Iterable[PathLike],
    *,
    video: PathLike | Iterable[PathLike | None] | None = None,
    labels_dir: PathLike | Iterable[PathLike | None] | None = None,
    report: PathLike | Iterable[PathLike | None] | None = None,
    stats: PathLike | Iterable[PathLike | None] | None = None,
    overwrite: bool = False,
    sweep: bool = True,
) -> OutputPlan:
    """Check every output of a run (each argument one path or a list: one per input of a batch)
    against the rules above and against each other; raise VsegError on the first violation.
    With `sweep`, then remove the temporaries that killed runs left beside these outputs."""
    from vsegcli.report.document import report_paths

    ins = [Path(i) for i in inputs]
    plan = OutputPlan()
    for v in _many(video):
        plan.videos.append(check_file_output(v, "output video", inputs=ins, overwrite=overwrite,
                                             flag="-o/--output"))
        check_video_suffix(v)  # after: "that is the input" says more than "wrong suffix"
    for d in _many(labels_dir):
        plan.labels_dirs.append(check_labels_folder(d, inputs=ins, overwrite=overwrite))
    for r in _many(report):
        html, js = report_paths(r)
        for f in (html, js):
            check_file_output(f, "report", inputs=ins, overwrite=overwrite, flag="--report name")
        plan.reports.append((html, js))
    for s in _many(stats):
        plan.stats.append(check_file_output(s, "stats file", inputs=ins, overwrite=overwrite, flag="--stats path"))
        stats_format(s)
    outs = plan.files()
    for i, (kind_a, a) in enumerate(outs):
        for kind_b, b in outs[i + 1:]:
            if _same(a, b):
                raise VsegError(f"the {kind_a} and the {kind_b} are the same path {a}; give each its own")
            for (ka, x), (kb, y) in (((kind_a, a), (kind_b, b)), ((kind_b, b), (kind_a, a))):
                if kb == "labels folder" and _within(_abs(x), _abs(y)):
                    raise VsegError(f"the {ka} {x} lies inside the labels folder {y}, which is replaced "
                                    "whole; put it elsewhere")
    if sweep:
        for _, f in outs:
            plan.removed += remove_stale_temporaries(f)
    return plan
