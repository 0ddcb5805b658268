"""Walk two lazily produced sequences in step, failing clearly when their lengths differ."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from vsegcli.errors import VsegError

A = TypeVar("A")
B = TypeVar("B")


def strict_pairs(a: Iterable[A], b: Iterable[B], error: str) -> Iterator[tuple[A, B]]:
    """(a_i, b_i) pairs; VsegError(`error`) as soon as one runs out before the other."""
    end: Any = object()
    ita, itb = iter(a), iter(b)
    while True:
        x, y = next(ita, end), next(itb, end)
        if x is end and y is end:
            return
        if x is end or y is end:
            raise VsegError(error)
        yield x, y
