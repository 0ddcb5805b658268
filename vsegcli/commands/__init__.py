"""Sub-commands that live in their own modules; `vsegcli.cli` registers them on the `vseg` group."""
from __future__ import annotations
