"""The `vseg` group: every command registered in one place, user errors turned into one line.

User errors (`VsegError`) print one line and exit 2; Ctrl-C, SIGTERM and SIGHUP remove partial
outputs, print one line and exit 128 + the signal (130, 143, 129); anything else is a bug and
keeps its traceback.
"""
from __future__ import annotations

from typing import Any

import click

from vsegcli import __version__
from vsegcli.cli._options import CONTEXT
from vsegcli.cli._signals import interrupt_name, interrupt_status, signals_as_interrupts
from vsegcli.cli.bench import bench
from vsegcli.cli.convert import convert
from vsegcli.cli.eval import eval_cmd
from vsegcli.cli.models import models
from vsegcli.cli.report import report
from vsegcli.cli.run import run
from vsegcli.cli.train import train
from vsegcli.errors import NeedsOption, VsegError


class VsegGroup(click.Group):
    """A click group that is the one place where user errors and Ctrl-C become exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with signals_as_interrupts():  # SIGTERM/SIGHUP clean up like Ctrl-C
                return super().invoke(ctx)
        except VsegError as exc:
            click.echo(f"Error: {self._worded(ctx, exc)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt as exc:
            click.echo(f"Interrupted ({interrupt_name(exc)}): outputs that were not complete were removed.", err=True)
            ctx.exit(interrupt_status(exc))  # 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP

    def _worded(self, ctx: click.Context, exc: VsegError) -> str:
        """The message, with a hint that names the invoked command's own flag (`NeedsOption`)."""
        if not isinstance(exc, NeedsOption):
            return str(exc)
        command = self.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
        names = _OPTION_PARAMS.get(exc.option, ())
        flag = next(("/".join(sorted(p.opts, key=len)) for p in (command.params if command else [])
                     if isinstance(p, click.Option) and p.name in names), None)
        return exc.worded(flag)


# The parameter names under which commands take what a `NeedsOption` asks for.
_OPTION_PARAMS = {"architecture": ("model", "arch", "architecture"), "num_classes": ("num_classes",)}


@click.group(cls=VsegGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="vseg")
def cli() -> None:
    """Video semantic segmentation with temporal models (STT, MRCFA).

    \b
    Examples:
      vseg run street.mp4 -o street_seg.mp4
      vseg run clip.mp4 --checkpoint mrcfa_b1.pth --labels-dir labels/ --no-video
      vseg models
    """


# Registration order is the order of `vseg --help`'s command list (click sorts it by name anyway).
for _command in (run, models, convert, report, bench, train, eval_cmd):
    cli.add_command(_command)


def main() -> None:
    """The console script `vseg` and `python -m vsegcli`."""
    cli(prog_name="vseg")
