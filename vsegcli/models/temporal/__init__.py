"""Temporal modules that sit between a per-frame encoder and its head (STT; MRCFA lives beside it)."""
from __future__ import annotations

from vsegcli.models.temporal.sparse_attention import SparseTemporalTransformer

__all__ = ["SparseTemporalTransformer"]
