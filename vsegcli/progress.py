"""Frame progress on stderr (rich): done/total, fps, elapsed, ETA — only when stderr is a terminal.

Logs and pipes get nothing (no half-drawn bars); the commands print a one-line summary instead.
"""
from __future__ import annotations

from typing import Any


class FrameProgress:
    """Rich progress on stderr (frames done/total, fps, ETA) — only when stderr is a terminal."""

    def __init__(self, enabled: bool, console: Any) -> None:
        self.enabled = enabled
        self.console = console
        self.progress = None
        self.task = None

    def start(self, description: str, total: int | None) -> None:
        if not self.enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.text import Text

        class FpsColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.1f} fps" if speed else "-- fps")

        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), FpsColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(description, total=total)

    def update(self, done: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
