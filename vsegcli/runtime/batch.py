"""Many inputs in one run: expanding what the user named, naming outputs, skipping finished ones,
sharding across torchrun processes, and the manifest every batch leaves beside its outputs.

    expand_inputs(["videos/", "extra/*.mp4", "@list.txt", "rtsp://cam/1"])   -> Inputs (sources, batch,
                                           the batch folders and glob patterns it expanded)
    plan_jobs(sources, out_dir=..., ...)   -> [Job]   unique output names, same on every rank
    shard(jobs, rank, world)               -> this process's jobs (round robin: balanced)
    write_manifest(out_dir, entries)       -> vseg-manifest.jsonl (one JSON line per input)

A folder is an image sequence when it holds images and no videos (one input); otherwise it is a
batch folder: each video file in it and each sub-folder of images is one input. A glob (quoted
so the shell leaves it) expands to its matches, sorted; ``@list.txt`` holds one input per line
(blank lines and ``#`` comments ignored), URLs allowed.

Exit status of a batch (`vseg run`): 0 every input written (or skipped as finished), 1 some
input failed (the others are written, the manifest says which and why), 2 nothing ran (a usage
error, one line).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vsegcli.errors import VsegError
from vsegcli.io.video.images import IMAGE_EXTENSIONS, list_images
from vsegcli.io.video.source import Source, parse_source

MANIFEST_NAME = "vseg-manifest.jsonl"
EXIT_SOME_FAILED = 1
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".mts",
                    ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".y4m", ".mxf")


def _is_video_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith(".")


def _folder_inputs(folder: Path) -> list[Source] | None:
    """A batch folder's inputs, or None when the folder itself is an image sequence."""
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    videos = [p for p in entries if _is_video_file(p)]
    has_images = any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in entries)
    if has_images and not videos:
        return None
    seqs = [p for p in entries if p.is_dir() and list_images(p)]
    return [Source("file", str(p)) for p in videos] + [Source("folder", str(p)) for p in seqs]


def _is_glob(spec: str) -> bool:
    """Whether a file input is a glob to expand (quoted so the shell left it): it has wildcards and
    names no existing file (a file called 'a[1].mp4' is that file)."""
    return not os.path.exists(spec) and glob.has_magic(spec)


@dataclass
class Inputs:
    """What `expand_inputs` made of the user's inputs: the sources, whether this is a batch, and
    what it looked into: the batch folders whose contents became inputs (each folder named or
    matched by a glob that is not itself an image sequence) and the glob patterns it expanded.
    An output written directly into one of those folders, or matched by one of those patterns,
    would be a new input on a rerun (`vseg run` refuses it); sub-folders of a batch folder are not
    looked into, and a @list names its inputs one by one."""

    sources: list[Source]
    batch: bool
    folders: list[Path] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)


def expand_inputs(specs: list[str] | tuple[str, ...]) -> Inputs:
    """The sources the user named, whether this is a batch (several inputs, or any folder of
    videos, glob or @list), and the batch folders and patterns it expanded (`Inputs`). Raises
    VsegError for a missing file or an empty expansion."""
    sources: list[Source] = []
    folders: list[Path] = []
    patterns: list[str] = []
    batch = len(specs) > 1
    for spec in specs:
        spec = str(spec)
        if spec.startswith("@") and len(spec) > 1:
            batch = True
            listing = Path(spec[1:])
            try:
                lines = listing.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise VsegError(f"{spec}: cannot read the list ({exc.strerror or exc})") from None
            items = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
            base = listing.parent
            for item in items:
                src = parse_source(item)
                if src.kind in ("file", "folder") and not Path(item).is_absolute():
                    src = parse_source(str(base / item)) if (base / item).exists() else src
                sources.append(src)
            continue
        src = parse_source(spec)
        if src.kind == "file" and _is_glob(spec):
            matches = sorted(glob.glob(spec))
            if not matches:
                raise VsegError(f"{spec}: the pattern matches nothing")
            batch = True
            patterns.append(spec)
            for m in matches:
                p = Path(m)
                if p.is_dir():
                    inner = _folder_inputs(p)
                    if inner is not None:
                        folders.append(p)
                    sources.extend(inner if inner is not None else [Source("folder", m)])
                else:
                    sources.append(Source("file", m))
            continue
        if src.kind == "folder":
            inner = _folder_inputs(src.path)
            if inner is not None:
                batch = True
                if not inner:
                    raise VsegError(f"{spec} holds no videos ({', '.join(VIDEO_EXTENSIONS[:6])}, ...) "
                                    "and no folders of images")
                folders.append(src.path)
                sources.extend(inner)
                continue
        if src.kind in ("file", "folder") and not os.path.exists(spec):
            if batch or len(specs) > 1:
                sources.append(src)  # reported as this input's failure; the batch goes on
                continue
            raise VsegError(f"{spec}: no such file or folder")
        sources.append(src)
    return Inputs(sources, batch, folders, patterns)


@dataclass
class Job:
    """One input of a batch and where its outputs go."""

    index: int
    source: Source
    name: str
    video: Path | None = None
    labels_dir: Path | None = None
    report: Path | None = None
    stats: Path | None = None

    def outputs(self) -> list[Path]:
        return [p for p in (self.video, self.labels_dir, self.report, self.stats) if p is not None]

    def finished(self) -> bool:
        """Every output of this job is in place. Outputs appear only when complete (renamed from a
        hidden temporary), so an interrupted one is never mistaken for a finished one."""
        from vsegcli.io.outputs import is_vseg_labels
        from vsegcli.report.document import report_paths

        outs = [p for p in (self.video, self.stats) if p is not None]
        if self.report is not None:
            outs += list(report_paths(self.report))
        if self.labels_dir is not None:
            # vseg's own (manifest + label PNGs, renamed into place when complete), not any folder
            if not (is_vseg_labels(self.labels_dir) and any(self.labels_dir.glob("*.png"))):
                return False
        return bool(outs or self.labels_dir) and all(p.is_file() for p in outs)


def plan_jobs(sources: list[Source], out_dir: Path | None, labels_root: Path | None, report_root: Path | None,
              stats_root: Path | None, no_video: bool) -> list[Job]:
    """Output names for every input: ``<name>_seg.mp4`` in `out_dir`, ``<labels_root>/<name>/``,
    ``<report_root>/<name>.html``, ``<stats_root>/<name>.csv``. Names that collide (two clip.mp4
    in different folders) get -2, -3, ... in input order, so every rank plans the same names."""
    seen: dict[str, int] = {}
    jobs = []
    for i, src in enumerate(sources):
        base = src.name
        n = seen.get(base.lower(), 0) + 1
        seen[base.lower()] = n
        name = base if n == 1 else f"{base}-{n}"
        while n > 1 and name.lower() in seen:
            n += 1
            name = f"{base}-{n}"
        if n > 1:
            seen[name.lower()] = 1
        jobs.append(Job(
            i, src, name,
            video=None if no_video else (out_dir or Path.cwd()) / f"{name}_seg.mp4",
            labels_dir=labels_root / name if labels_root is not None else None,
            report=report_root / f"{name}.html" if report_root is not None else None,
            stats=(stats_root / f"{name}.csv") if stats_root is not None else None,
        ))
    return jobs


def shard(jobs: list[Job], rank: int, world: int) -> list[Job]:
    """This process's share of the jobs (round robin, so long and short inputs spread evenly)."""
    return [j for j in jobs if j.index % world == rank]


@dataclass
class ManifestEntry:
    """One line of the manifest."""

    input: str
    status: str  # ok, failed, skipped, interrupted
    outputs: list[str] = field(default_factory=list)
    frames: int | None = None
    fps: float | None = None
    video_fps: float | None = None
    decoder: str | None = None
    decode_errors: int | None = None
    frames_lost: int | None = None
    seconds: float | None = None
    error: str | None = None
    rank: int = 0
    index: int = 0

    @classmethod
    def from_summary(cls, job: Job, summary: dict[str, Any], rank: int) -> "ManifestEntry":
        return cls(str(job.source), "ok", [str(p) for p in job.outputs()], summary.get("frames"), summary.get("fps"),
                   summary.get("video_fps"), summary.get("decoder"), summary.get("decode_errors"),
                   summary.get("frames_lost"), summary.get("seconds"), None, rank, job.index)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def manifest_path(out_dir: Path) -> Path:
    return out_dir / MANIFEST_NAME


def write_manifest(path: Path, entries: list[dict[str, Any]]) -> Path:
    """Write the manifest (JSON lines, in input order) atomically."""
    from vsegcli.io.fsutil import atomic_write_text
    from vsegcli.io.jsonio import dumps

    ordered = sorted(entries, key=lambda e: e.get("index", 0))
    return atomic_write_text(path, "".join(dumps(e, indent=None) + "\n" for e in ordered))


def read_manifest(path: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]


class JobEvents:
    """What the caller shows while `run_jobs` works (the CLI prints; the library stays silent).
    Every method is optional to override."""

    def started(self, job: Job, total: int | None) -> None:
        """Called once the input's frame count is known (None: a live source)."""

    def frame(self, done: int) -> None:
        """Called after each frame of the current input."""

    def stopped(self, job: Job) -> None:
        """The current input ended (written, failed or interrupted)."""

    def written(self, job: Job, summary: dict[str, Any]) -> None:
        """An input's outputs are complete."""

    def failed(self, job: Job, message: str) -> None:
        """A batch input failed; the batch goes on."""


@dataclass
class BatchOutcome:
    """What `run_jobs` did: the summaries of the written inputs (every rank's, on every rank),
    the manifest entries (skipped ones included) and where the manifest went (batches only)."""

    results: list[dict[str, Any]]
    entries: list[dict[str, Any]]
    manifest: Path | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [e for e in self.entries if e["status"] == "failed"]


def run_jobs(seg: Any, mine: list[Job], skipped: list[Job], *, batch: bool, dist: Any, out_dir: Path,
             run_options: dict[str, Any], events: JobEvents | None = None) -> BatchOutcome:
    """Run this process's jobs through `seg.run` (an `api.VideoSegmenter`).

    One input (not a batch): its error or interruption propagates unchanged. A batch reports a
    failed input and goes on; an interruption (Ctrl-C, SIGTERM, SIGHUP) stops the batch, writes
    the manifest of what finished (so `--skip-existing` resumes) and is re-raised as it came, so
    the exit status stays the signal's. Under torchrun (`dist`) rank 0 merges every rank's entries
    into one manifest in input order."""
    from vsegcli.distributed import all_gather_object, barrier

    events = events or JobEvents()
    results: list[dict[str, Any]] = []
    entries = [ManifestEntry(str(j.source), "skipped", [str(p) for p in j.outputs()], index=j.index).to_dict()
               for j in skipped] if dist.main else []
    interrupted: KeyboardInterrupt | None = None
    for job in mine:
        try:
            summary = seg.run(job.source, output=job.video, labels_dir=job.labels_dir, report=job.report,
                              stats=job.stats, on_start=lambda total, j=job: events.started(j, total),
                              on_frame=events.frame, **run_options)
        except KeyboardInterrupt as exc:
            events.stopped(job)
            if not batch:
                raise
            entries.append(ManifestEntry(str(job.source), "interrupted", index=job.index, rank=dist.rank).to_dict())
            interrupted = exc
            break
        except Exception as exc:  # noqa: BLE001 - a batch reports the input and goes on
            events.stopped(job)
            if not batch:
                raise
            message = str(exc) if isinstance(exc, VsegError) else f"{type(exc).__name__}: {exc}"
            events.failed(job, message)
            entries.append(ManifestEntry(str(job.source), "failed", index=job.index, rank=dist.rank,
                                         error=message).to_dict())
            continue
        events.stopped(job)
        results.append(summary)
        if batch:
            entries.append(ManifestEntry.from_summary(job, summary, dist.rank).to_dict())
        events.written(job, summary)
    if not batch:
        return BatchOutcome(results, entries)
    if interrupted is not None or not dist.enabled:
        gathered = [entries]
    else:
        gathered = all_gather_object(entries, dist)
        results = [r for part in all_gather_object(results, dist) for r in part]
    entries = [e for part in gathered for e in part]
    manifest = write_manifest(manifest_path(out_dir), entries) if dist.main else None
    if interrupted is not None:
        interrupted.manifest = manifest  # type: ignore[attr-defined]  # the CLI names it
        raise interrupted
    barrier(dist)
    return BatchOutcome(results, entries, manifest)
