"""Swapping the termination signals' handlers for a block: the one mechanism behind Ctrl-C /
SIGTERM / SIGHUP as interrupts (`cli._signals`), ending a live stream with its outputs kept
(`api`), and holding signals back while outputs are renamed into place (`pipeline.commit_all`)."""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Callable, Iterator

CAUGHT = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def swapped_signals(handler: Callable[[int, Any], Any]) -> Iterator[dict[int, Any]]:
    """Within the block, `handler` receives SIGINT/SIGTERM/SIGHUP; yields the handlers it replaced.
    Only the main thread can set handlers: elsewhere nothing changes. A signal the parent set to
    be ignored (`nohup`) stays ignored, and one that cannot be set here (embedded interpreter) is
    left alone. The previous handlers come back on exit."""
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in CAUGHT:
            try:
                if signal.getsignal(sig) in (signal.SIG_IGN, None):
                    continue
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                continue
    try:
        yield previous
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
