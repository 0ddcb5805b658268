"""Progress on stderr (rich): done/total, rate, elapsed, ETA — only when enabled (a terminal).

A source without a frame count (a live stream, a capture device, stdin) shows frames, rate and
elapsed time only: no bar and no ETA, since there is nothing to estimate it from.

Logs and pipes get nothing (no half-drawn bars); the commands print a one-line summary instead.
`vseg run` / `vseg eval` count frames (fps); `vseg train` counts iterations (it/s) and shows the
loss and learning rate in the info column.
"""
from __future__ import annotations

from typing import Any


class FrameProgress:
    """Rich progress bar: description, bar, done/total, rate in `unit`, info, elapsed, ETA."""

    def __init__(self, enabled: bool, console: Any, unit: str = "fps") -> None:
        self.enabled = enabled
        self.console = console
        self.unit = unit
        self.progress = None
        self.task = None

    def start(self, description: str, total: int | None, completed: int = 0) -> None:
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
        )
        from rich.text import Text

        unit = self.unit

        class RateColumn(ProgressColumn):
            def render(self, task: Any) -> Text:
                speed = task.finished_speed or task.speed
                return Text(f"{speed:.1f} {unit}" if speed else f"-- {unit}")

        if total is None:  # unbounded: a count, never a fake ETA
            columns = [TextColumn("[bold]{task.description}"), TextColumn("{task.completed} frames"), RateColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn()]
        else:
            columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
                       TimeRemainingColumn()]
        self.progress = Progress(*columns, console=self.console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(description, total=total, completed=completed, info="")

    def update(self, done: int, info: str | None = None) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=done, **({"info": info} if info is not None else {}))

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
