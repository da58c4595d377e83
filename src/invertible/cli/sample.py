"""``invertible sample``: draw samples from a checkpoint to a ``.npy`` file."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from invertible import files
from invertible.checkpoint import load
from invertible.cli import common
from invertible.cli.common import CLIError, check_writable
from invertible.data.speech import SAMPLE_RATE, write_wav
from invertible.evaluation import sample_images, sample_to_npy
from invertible.presets.wavenet import SequenceFlow
from invertible.reports.plots import plot_image_grid

__all__ = ["EPILOG", "sample"]

EPILOG = (
    "Examples:\n\n  invertible sample runs/maf/model -n 1000 --out samples.npy\n\n"
    "  invertible sample runs/maf/model -n 64 --out s.npy --raw\n\n"
    "  invertible sample runs/wavenet/model --seconds 1 --out speech.wav"
)


def check_npy_out(
    out: Path,
    n: int,
    shape: tuple[int, ...],
    *,
    itemsize: int,
    png: bool = False,
    overwrite: bool = False,
) -> None:
    """Check ``out`` names a ``.npy`` file (and its ``.png`` grid) that may be written, and
    that ``n`` samples fit in memory and on the disk, before any sample is drawn.
    """
    if out.suffix != ".npy":
        raise CLIError(f"--out must name a .npy file, got {out}")
    if png:
        common.refuse_existing(out.with_suffix(".png"), overwrite=overwrite)
    need = n * math.prod(shape) * itemsize
    where = out.absolute().parent
    while not where.exists() and where.parent != where:
        where = where.parent
    have = {"memory": files.physical_memory(), "free disk space": shutil.disk_usage(where).free}
    for what, size in have.items():
        if size is not None and need > size:
            raise CLIError(
                f"-n {n} samples of shape {list(shape)} need {need / 1e9:.1f} GB, more than "
                f"the {size / 1e9:.1f} GB of {what}; draw fewer (several files if needed)"
            )


def sample(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory")],
    n: Annotated[
        int, typer.Option("-n", "--n", help="number of samples (sequence models: one waveform)")
    ] = 1000,
    out: Annotated[Path, typer.Option(help=".npy file to write")] = Path("samples.npy"),
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    raw: Annotated[
        bool,
        typer.Option(
            help="keep the standardised space (default: undo the dataset's standardisation)"
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            "--batch-size",
            help="samples per chunk: peak memory stays bounded (beyond the output) whatever -n",
        ),
    ] = 10000,
    temperature: Annotated[
        float, typer.Option(help="image models: scale of the base noise (e.g. 0.7)")
    ] = 1.0,
    seconds: Annotated[
        float, typer.Option(help="sequence models: seconds of 16 kHz audio per sample")
    ] = 1.0,
    overwrite: Annotated[
        bool, typer.Option(help="replace an existing OUT file (.npy, its .png grid, or .wav)")
    ] = False,
) -> None:
    """Draw samples from a checkpoint and save them as .npy (atomically). Image models write
    uint8 pixels (quantised like the data) and a PNG grid of the first 64 next to the .npy.
    """
    if n < 1:
        raise CLIError(f"-n must be a positive number of samples, got {n}")
    if not temperature > 0:
        raise CLIError(f"--temperature must be positive, got {temperature}")
    if batch_size < 1:
        raise CLIError(f"--chunk-size must be >= 1, got {batch_size}")
    common.refuse_existing(out, overwrite=overwrite)
    check_writable(out.parent)
    flow = load(checkpoint)
    if isinstance(flow, SequenceFlow):
        _sample_audio(flow, out, seconds=seconds, seed=seed, overwrite=overwrite)
        return
    if len(flow.event_shape) == 3 and "levels" in flow.config:
        levels = int(flow.config["levels"])
        check_npy_out(out, n, flow.event_shape, itemsize=1, png=True, overwrite=overwrite)
        pixels = sample_images(
            flow,
            n,
            levels=levels,
            temperature=temperature,
            seed=seed,
            batch_size=batch_size,
            path=out,
        )
        grid = plot_image_grid(
            pixels[:64], out.with_suffix(".png"), levels=levels, title=f"T = {temperature:g}"
        )
        typer.echo(
            f"wrote {pixels.shape[0]} images of shape {list(pixels.shape[1:])} (uint8, "
            f"{levels} levels) to {out} and a grid to {grid}"
        )
        return
    if temperature != 1.0:
        raise CLIError("--temperature applies to image models only")
    meta = flow.checkpoint_meta.get("data") or {}  # type: ignore[union-attr]
    transform = None
    if not raw and meta.get("mean") is not None and meta.get("std") is not None:
        mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])

        def transform(x: np.ndarray) -> np.ndarray:
            return x * std + mean

    check_npy_out(out, n, flow.event_shape, itemsize=4)
    samples = sample_to_npy(flow, n, out, seed=seed, batch_size=batch_size, transform=transform)
    typer.echo(f"wrote {samples.shape[0]} samples of shape {list(samples.shape[1:])} to {out}")


def _sample_audio(
    flow: SequenceFlow, out: Path, *, seconds: float, seed: int, overwrite: bool
) -> None:
    """One waveform of ``seconds`` at 16 kHz from a sequence flow, as a 16-bit WAV file."""
    if out.suffix.lower() != ".wav":
        raise CLIError(f"--out: a sequence model writes a .wav file, got {out}")
    if out.exists() and not overwrite:
        raise CLIError(f"{out} already exists; pass --overwrite to replace it")
    length = round(seconds * SAMPLE_RATE)
    if length < 1:
        raise CLIError(f"--seconds must give at least one sample, got {seconds}")
    torch.manual_seed(seed)
    x = flow.sample(1, length=length)[0].double().numpy()
    clipped = float((abs(x) > 1.0).mean())  # full scale is [-1, 1]: write_wav clips beyond
    write_wav(out, x, SAMPLE_RATE)
    typer.echo(
        f"wrote {length / SAMPLE_RATE:g} s ({length} samples, 16-bit PCM, {SAMPLE_RATE} Hz) "
        f"to {out}; {100 * clipped:.2f}% of samples clipped"
    )
