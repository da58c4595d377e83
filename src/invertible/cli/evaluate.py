"""``invertible eval``: the log-likelihood of a checkpoint on its (or another) dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invertible.checkpoint import load
from invertible.cli import common
from invertible.cli.common import CLIError, parse_options
from invertible.data import SpeechData
from invertible.evaluation import check_data_matches, evaluate
from invertible.evaluation.audio import evaluate_speech
from invertible.jobs import checkpoint_dataset

__all__ = ["EPILOG", "eval_"]

EPILOG = (
    "Examples:\n\n  invertible eval runs/maf/model\n\n"
    "  invertible eval runs/maf/model --data patches --split val\n\n"
    "  invertible eval runs/wavenet/model --data speech"
)


def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory")],
    data: Annotated[
        str | None,
        typer.Option(help="dataset name or file (default: the one the model was trained on)"),
    ] = None,
    split: Annotated[str, typer.Option(help="test, val or train")] = "test",
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            "--batch-size",
            help="rows per chunk: peak memory stays bounded whatever the split's size",
        ),
    ] = 4096,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    option: Annotated[
        list[str] | None,
        typer.Option(help="dataset option KEY=VALUE (with --data; repeatable)"),
    ] = None,
) -> None:
    """Evaluate a checkpoint: mean log-likelihood ± 2 standard errors (nats)."""
    if split not in ("test", "val", "train"):
        raise CLIError(f"unknown split {split!r}; use test, val or train")
    common.check_positive(chunk_size=batch_size)
    flow = load(checkpoint, map_location=common.check_device(device))
    dataset, _ = checkpoint_dataset(
        flow, data, data_dir=data_dir, option=parse_options(option), what=str(checkpoint)
    )
    if isinstance(dataset, SpeechData):  # whole utterances, next to the AR baselines
        typer.echo(str(evaluate_speech(flow, dataset, split=split)))
        return
    check_data_matches(flow, getattr(dataset, split)[:1], f"dataset {dataset.name!r}")
    result = evaluate(flow, dataset, split=split, batch_size=batch_size)
    typer.echo(f"{split} log-likelihood: {result}")
    if result.bits_per_dim is not None:
        typer.echo(f"{split} bits/dim: {result.bits_per_dim:.4f}")
