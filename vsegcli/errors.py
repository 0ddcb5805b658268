"""The one exception type for errors a user can cause (bad input, wrong checkpoint, no CUDA).

The CLI prints its message on one line and exits with status 2; anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations


class VsegError(Exception):
    """A user-caused error whose message says what to do about it."""


class NeedsOption(VsegError):
    """A user error fixed by giving an option: the hint names it in the caller's own words.

    `option` is what is missing ('architecture', 'num_classes'); `hint` is a template with
    `{flag}`. The library says the keyword argument (`architecture=`); the CLI words the hint with
    the invoked command's own flag (`-m/--model` for run, `--arch` for train) and, for a command
    without such an option, uses `otherwise` (or only the message).
    """

    def __init__(self, message: str, option: str, hint: str, otherwise: str = "") -> None:
        self.message, self.option, self.hint, self.otherwise = message, option, hint, otherwise
        super().__init__(self.worded(f"{option}=..."))

    def worded(self, flag: str | None) -> str:
        if flag:
            return f"{self.message}; {self.hint.format(flag=flag)}"
        return f"{self.message}; {self.otherwise}" if self.otherwise else self.message
