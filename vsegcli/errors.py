"""The one exception type for errors a user can cause (bad input, wrong checkpoint, no CUDA).

The CLI prints its message on one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations


class VsegError(Exception):
    """A user-caused error whose message says what to do about it."""
