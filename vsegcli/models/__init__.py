"""Model families. Importing this package registers every named architecture."""
from __future__ import annotations

from vsegcli.models import segformer  # noqa: F401
from vsegcli.models import mrcfa  # noqa: F401
from vsegcli.models import bisenet, effl0, pspnet, stt  # noqa: F401
from vsegcli.models.base import Segmentor, Session
from vsegcli.models.registry import build_model, get_architecture, list_architectures

__all__ = ["Segmentor", "Session", "build_model", "get_architecture", "list_architectures"]
