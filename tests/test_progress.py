"""Progress on a terminal: a bounded source shows a bar and an ETA, a live one only a count."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from vsegcli.runtime.progress import FrameProgress


def _render(total: int | None, done: int) -> str:
    buf = io.StringIO()
    progress = FrameProgress(True, Console(file=buf, force_terminal=True, width=120))
    progress.start("clip", total)
    progress.update(done)
    progress.progress.refresh()
    progress.stop()
    return buf.getvalue()


def test_live_source_shows_a_count_and_no_eta():
    out = _render(None, 7)
    assert "7 frames" in out and "ETA" not in out


def test_file_source_shows_done_of_total_and_eta():
    out = _render(50, 7)
    assert "7/50" in out and "ETA" in out


@pytest.mark.parametrize("total", [None, 50])
def test_disabled_progress_prints_nothing(total):
    buf = io.StringIO()
    progress = FrameProgress(False, Console(file=buf, force_terminal=True))
    progress.start("clip", total)
    progress.update(3)
    progress.stop()
    assert buf.getvalue() == ""
