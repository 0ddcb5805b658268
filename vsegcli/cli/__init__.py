"""`vseg` command line: a thin shell over `vsegcli.api` and the library packages.

One module per command (run, models, convert, eval, bench, train, report); `main` holds the
group and its error handling; `_options` what the commands share (click settings, repeated
options, JSON output, the "reproduce this command" line).
"""
from __future__ import annotations

from vsegcli.cli.main import cli, main

__all__ = ["cli", "main"]
