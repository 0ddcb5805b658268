"""`vseg convert`: any checkpoint vseg reads -> vseg's .safetensors format."""
from __future__ import annotations

from pathlib import Path

import click

from vsegcli.cli._options import CONTEXT
from vsegcli.errors import VsegError


@click.command(context_settings=CONTEXT)
@click.argument("src", metavar="SRC")  # a string: hf://owner/repo must not go through pathlib
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--half", is_flag=True, help="Store weights as fp16 (half the size; loads back as fp32).")
@click.option("--model", "-m", "architecture", help="Architecture, when it cannot be detected from the keys.")
@click.option("--label-set", type=click.Choice(["cityscapes", "camvid", "vspw"]), help="Class names and colours to record.")
@click.option("--input-size", type=click.IntRange(min=32), help="Default inference short side to record.")
@click.option("--num-frames", type=click.IntRange(min=1), metavar="T",
              help="STT models: key frames to attend to (the weights are the same for every T).")
@click.option("--overwrite", is_flag=True, help="Replace an existing DST.")
def convert(src: str, dst: Path, half: bool, architecture: str | None, label_set: str | None,
            input_size: int | None, num_frames: int | None, overwrite: bool) -> None:
    """Convert a checkpoint (HF, NVlabs/mmseg, official MRCFA, vseg; a file, a folder or hf://owner/repo)
    to vseg's .safetensors format.

    \b
    Examples:
      vseg convert mrcfa_b1_vspw.pth weights/mrcfa-b1-vspw.safetensors --half
      vseg convert segformer-b0-cityscapes/ segformer-b0.safetensors --input-size 1024
      vseg convert hf://nvidia/segformer-b0-finetuned-cityscapes-1024-1024 segformer-b0.safetensors
      vseg convert plain_state_dict.pth effl0.safetensors -m effl0 --label-set camvid
      vseg convert runs/stt7/best.safetensors stt3.safetensors --half --num-frames 3
    """
    from vsegcli.checkpoints import convert_checkpoint, load_checkpoint
    from vsegcli.checkpoints.hub import is_hub_spec
    from vsegcli.io.outputs import check_file_output

    if not is_hub_spec(src) and not Path(src).exists():
        raise VsegError(f"{src}: no such file or folder")
    # The same output rule as `vseg run` (io.outputs): never the input, replaced only with --overwrite.
    check_file_output(dst, "the converted checkpoint", inputs=[] if is_hub_spec(src) else [Path(src)],
                      overwrite=overwrite, flag="DST")
    out = convert_checkpoint(src, dst, half=half, architecture=architecture, label_set=label_set,
                             input_size=input_size, num_frames=num_frames)
    meta = load_checkpoint(out).meta  # read back: proves the written file loads
    click.echo(f"{out}: {meta.architecture}, {meta.num_classes} classes, label set {meta.label_set or 'custom'}", err=True)
