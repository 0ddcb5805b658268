"""SIGTERM and SIGHUP handled like Ctrl-C: partial outputs removed, one line, exit 128 + signal.

`timeout`, `kill`, a closed terminal or a job scheduler stop a run with SIGTERM/SIGHUP; Python's
default for those is to die on the spot, leaving the hidden temporaries behind. While a command
runs, they raise `Terminated` (a KeyboardInterrupt) instead, so the same cleanup paths as Ctrl-C
run (`runtime.pipeline.stream` aborts every sink). SIGKILL cannot be caught: its leftovers are
removed by the next run for the same output (`io.fsutil.remove_stale_temporaries`).
"""
from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

from vsegcli.runtime.signals import swapped_signals


class Terminated(KeyboardInterrupt):
    """A termination signal turned into an interrupt; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def interrupt_status(exc: BaseException) -> int:
    """The conventional exit status: 128 + signal number (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def interrupt_name(exc: BaseException) -> str:
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block (main thread only), SIGINT/SIGTERM/SIGHUP raise `Terminated` once; later
    ones are ignored so that the cleanup the first one started can finish (it waits for worker
    threads at most a few seconds; SIGKILL remains for a hung one). A signal the parent set to be ignored
    (`nohup`) stays ignored. The previous handlers come back on exit."""
    fired = False

    def handler(signum: int, frame: Any) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        raise Terminated(signum)

    with swapped_signals(handler):
        yield
