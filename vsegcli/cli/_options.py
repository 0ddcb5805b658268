"""What the `vseg` commands share: click settings, repeated options, JSON output, command lines.

Each helper exists once here so that the same flag reads and behaves the same in every command.
Help texts that differ between commands are passed in (they say what the flag means *there*).
"""
from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from vsegcli.errors import VsegError
from vsegcli.io.jsonio import dumps, write_json

F = TypeVar("F", bound=Callable[..., Any])

# Every command and group: -h as well as --help; help wraps at 100 columns.
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

PRECISIONS = ("fp32", "fp16", "bf16", "int8")


def device_option(help: str = "auto, cpu, cuda or cuda:N.") -> Callable[[F], F]:
    """`--device` (default auto)."""
    return click.option("--device", default="auto", show_default=True, help=help)


def gpu_option() -> Callable[[F], F]:
    """`--gpu N`, an alias for `--device cuda:N` (see `device_for`)."""
    return click.option("--gpu", type=click.IntRange(min=0), help="Alias for --device cuda:N.")


def device_for(device: str, gpu: int | None, precision: str | None = None) -> str:
    """The device string that --device and --gpu ask for together (`runtime.device.merge_gpu`:
    they must agree when both are given, as for `vseg bench`); 'auto' with int8 is the CPU."""
    from vsegcli.runtime.device import merge_gpu, spec_for_precision

    return spec_for_precision(merge_gpu(device, gpu), precision)


def precision_option() -> Callable[[F], F]:
    """`--precision fp32|fp16|bf16|int8` (one value, default fp32) for inference commands."""
    return click.option("--precision", type=click.Choice(list(PRECISIONS), case_sensitive=False), default="fp32",
                        show_default=True,
                        help="fp16: GPUs. bf16: GPUs, or CPUs with AVX512-BF16/AMX. int8: ONNX Runtime on "
                             "the CPU (also with --device auto on a GPU machine); the shipped models carry their "
                             "calibration, others calibrate once on $VSEG_CALIBRATION_FRAMES (a folder of "
                             "training frames; it overrides the shipped ranges and keeps depthwise convs fp32, "
                             "which is slower); offered only for models whose accuracy was measured to hold "
                             "(docs/PERFORMANCE.md).")


def runtime_option() -> Callable[[F], F]:
    """`--runtime torch|onnxruntime|auto` (who runs the model's per-frame part)."""
    return click.option("--runtime", type=click.Choice(["torch", "onnxruntime", "auto"], case_sensitive=False),
                        default="torch", show_default=True,
                        help="Who runs the per-frame part (backbone + decoder) on CPU: torch, onnxruntime "
                             "(pip install \"vseg[onnx]\"; ~1.7x faster) or auto (onnxruntime when installed "
                             "and the model is supported, else torch). Temporal modules stay in torch.")


def threads_option() -> Callable[[F], F]:
    """`--threads N`: the model's CPU threads (`runtime.threads.set_threads`)."""
    return click.option("--threads", type=click.IntRange(min=1),
                        help="CPU threads for the model (default: one per core). Idle threads spin briefly, then sleep "
                             "(GOMP_SPINCOUNT=10000 unless a wait policy is set), so a busy machine does not stall the run.")


def fast_math_option() -> Callable[[F], F]:
    """`--fast-math/--no-fast-math` (default on): cuDNN autotuning and TF32 on CUDA (`set_cuda_math`)."""
    return click.option("--fast-math/--no-fast-math", default=True, show_default=True,
                        help="CUDA: cuDNN autotuning (cudnn.benchmark) and TF32 fp32 matmuls/convolutions "
                             "(Ampere+). --no-fast-math: exact fp32 and a fixed algorithm choice. No effect on CPU.")


def quiet_option(help: str) -> Callable[[F], F]:
    """`--quiet/-q`."""
    return click.option("--quiet", "-q", is_flag=True, help=help)


def json_flag(help: str) -> Callable[[F], F]:
    """`--json` as a flag (bound to `as_json`): the result goes to stdout as JSON."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def echo_json(value: Any) -> None:
    """`value` as strict, indented JSON on stdout."""
    click.echo(dumps(value))


def emit_json(value: Any, target: str | Path) -> None:
    """`value` as JSON to stdout (`target` '-') or atomically to a file (never a half-written one)."""
    if str(target) == "-":
        echo_json(value)
    else:
        write_json(check_json_file(target), value)


def check_json_file(target: str | Path) -> Path:
    """`--json FILE` as a path; a folder is a user error (checked before a long run, not after)."""
    path = Path(target)
    if path.is_dir():
        ctx = click.get_current_context(silent=True)  # the example names the command: bench.json
        example = f"{ctx.info_name if ctx is not None else 'results'}.json"
        raise VsegError(f"--json {path} is a folder; give a file name such as {example}")
    return path


def command_line(words: Sequence[str], options: Iterable[tuple[str, Any]] = ()) -> str:
    """The one builder of "run this again" command lines: `words`, then each (flag, value), shell-quoted.

    value True -> the flag alone; None or False -> nothing; a list -> the flag once per item;
    anything else -> the flag and str(value).
    """
    args = [str(w) for w in words]
    for flag, value in options:
        if value is None or value is False:
            continue
        if value is True:
            args.append(flag)
        elif isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        else:
            args += [flag, str(value)]
    return shlex.join(args)


def invoked_command_line() -> str:
    """This process's command line as typed (`python -m vsegcli ...` when run as a module)."""
    argv0 = Path(sys.argv[0]).name if sys.argv else "vseg"
    prog = "python -m vsegcli" if argv0 == "__main__.py" else argv0
    return command_line([prog, *sys.argv[1:]])


def given_options(ctx: click.Context, values: Mapping[str, Any],
                  join: Mapping[str, str] | None = None) -> list[tuple[str, Any]]:
    """(flag, value) for each option given on the command line, by its long name, for `command_line`.

    Multiple options repeat their flag; tuple values are joined with `join[name]` (default "x":
    sizes such as --crop 480x480).
    """
    pairs: list[tuple[str, Any]] = []
    for param in ctx.command.params:
        name = param.name or ""
        if ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        flag = max(getattr(param, "opts", [""]), key=len)
        value = values[name]
        if isinstance(param, click.Option) and param.is_flag:
            pairs.append((flag, True))
        elif isinstance(param, click.Option) and param.multiple:
            pairs.append((flag, [str(v) for v in value]))
        elif isinstance(value, tuple):
            pairs.append((flag, (join or {}).get(name, "x").join(map(str, value))))
        else:
            pairs.append((flag, str(value)))
    return pairs
