"""Cell formatting of benchmark results, shared by `vseg bench`'s tables and benchmarks/to_markdown.py."""
from __future__ import annotations

from typing import Any


def fmt_number(v: Any, digits: int = 2) -> str:
    """A table cell: '-' for a missing value, floats to `digits` decimals, anything else as str()."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)
