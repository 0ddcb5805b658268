"""Named architectures (`segformer-b0`, `mrcfa-b1`, `stt-effl0`, ...) and how to build them.

Each model family module registers its variants with `register_architecture`; `build_model`
builds one by name with a class count and options, and records both on the model so a
checkpoint can rebuild it.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

from vsegcli.errors import VsegError
from vsegcli.models.base import Segmentor


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    temporal: bool
    builder: Callable[..., Segmentor]
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    baseline: str | None = None  # the per-frame variant a temporal model is compared with


_REGISTRY: dict[str, Architecture] = {}


def register_architecture(
    name: str,
    *,
    family: str,
    temporal: bool,
    description: str = "",
    baseline: str | None = None,
    **defaults: Any,
) -> Callable[[Callable[..., Segmentor]], Callable[..., Segmentor]]:
    """Decorator: register `builder(num_classes, **options)` under `name`."""

    def wrap(builder: Callable[..., Segmentor]) -> Callable[..., Segmentor]:
        if name in _REGISTRY:
            raise RuntimeError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = Architecture(name, family, temporal, builder, description, dict(defaults), baseline)
        return builder

    return wrap


def _ensure_loaded() -> None:
    import vsegcli.models  # noqa: F401  (imports every family module, which registers itself)


def get_architecture(name: str) -> Architecture:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else " Run `vseg models` for the list."
        raise VsegError(f"unknown architecture {name!r}.{hint}")
    return _REGISTRY[name]


def list_architectures() -> list[Architecture]:
    _ensure_loaded()
    return sorted(_REGISTRY.values(), key=lambda a: (a.family, a.name))


def build_model(name: str, num_classes: int, **options: Any) -> Segmentor:
    arch = get_architecture(name)
    merged = {**arch.defaults, **options}
    model = arch.builder(num_classes=num_classes, **merged)
    model.arch_name = name
    model.arch_options = merged
    return model
