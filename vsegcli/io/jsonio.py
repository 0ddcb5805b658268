"""JSON the way vseg writes it: strict (no NaN/Infinity tokens), plain types, written atomically.

The one place that turns metric values, numpy/torch numbers, paths and tuples into JSON; every
summary, report, manifest, log record and checkpoint header goes through `jsonable`.
Importing this module does not import torch (the metrics package stays importable without it).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vsegcli.io.fsutil import atomic_write_text


def finite(value: Any, ndigits: int | None = None) -> float | None:
    """A number as a JSON float: NaN / inf / None -> None; optionally rounded."""
    if value is None:
        return None
    f = float(value)
    if not math.isfinite(f):
        return None
    return round(f, ndigits) if ndigits is not None else f


def jsonable(value: Any) -> Any:
    """`value` as plain JSON types, recursively.

    Mappings -> dicts with str keys; tuples, lists, numpy arrays and tensors -> lists; numpy and
    torch scalars -> int/float; non-finite floats -> None (strict JSON); bools, ints, strings and
    None as they are; anything else (paths, enums, devices) -> its str().
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return finite(value)
    tolist = getattr(value, "tolist", None)  # numpy scalars/arrays, torch tensors
    if callable(tolist):
        return jsonable(tolist())
    return str(value)


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of `jsonable(value)` (raises if anything non-finite slipped through)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    """Write `value` as strict JSON to `path` atomically (temporary name, then rename)."""
    return atomic_write_text(path, dumps(value, indent) + "\n")
