"""``invertible train``: fit a model by maximum likelihood (:func:`invertible.jobs.train_job`)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from invertible.catalog import check_size, model_spec
from invertible.cli.common import (
    check_device,
    check_positive,
    check_writable,
    join_torchrun,
    parse_options,
    refuse_existing_run,
    set_threads,
)
from invertible.evaluation.audio import SpeechEvalResult
from invertible.jobs import train_job
from invertible.reports.plots import plot_run
from invertible.training import check_precision

__all__ = ["EPILOG", "train"]

EPILOG = (
    "Examples:\n\n"
    "  invertible train --model maf --data patches --steps 5000 --out runs/maf\n\n"
    "  invertible train --model realnvp --data moons --epochs 20 --size small\n\n"
    "  invertible train --model nice --data my_data.npy --max-time 60 --out runs/nice\n\n"
    "  invertible train --model maf --data patches --out runs/maf --resume --steps 10000\n\n"
    "  invertible train --model maf --data patches --precision bf16 --out runs/maf-bf16\n\n"
    "  invertible train --model wavenet --data speech --size small --out runs/wavenet"
)


def _nats(value: float | None) -> str:
    """A log-likelihood for people: three decimals, or "none" without validation."""
    return "none" if value is None else f"{value:.3f}"


def train(
    model: Annotated[
        str,
        typer.Option(
            help="nice, realnvp, maf, maf-mog, iaf, gaussian-ar, made-mog, realnvp-image, wavenet"
        ),
    ] = "maf",
    data: Annotated[
        str,
        typer.Option(help="dataset name (see `invertible datasets`) or an [N, D] .npy/.csv file"),
    ] = "patches",
    steps: Annotated[
        int | None, typer.Option(help="optimisation steps (default: 2000, unless --epochs)")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option(help="passes over the training set (default: none, --steps)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="mini-batch size")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty")] = 0.0,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant")] = "cosine",
    grad_clip: Annotated[float, typer.Option(help="max gradient norm (0: off)")] = 5.0,
    patience: Annotated[
        int, typer.Option(help="evaluations without improvement before stopping (0: off)")
    ] = 10,
    eval_every: Annotated[
        int | None, typer.Option(help="steps between evaluations (default: one epoch, 50 to 1000)")
    ] = None,
    max_time: Annotated[
        float | None, typer.Option(help="training time cap, seconds (default: none)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of data, weights and batches")] = 0,
    size: Annotated[str, typer.Option(help="model size: tiny, small or default")] = "default",
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/run"),
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="dataset option KEY=VALUE, e.g. n_train=10000 (repeatable)"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/training")] = False,
    checkpoint_every: Annotated[
        int, typer.Option(help="write the resumable OUT/training state every N evaluations")
    ] = 1,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile", help="torch.compile the training step (eager fallback if unavailable)"
        ),
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="replace the run in OUT (its model and saved state)")
    ] = False,
    device: Annotated[
        str | None, typer.Option(help="cpu, cuda, cuda:1, ... (default: cpu)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    threads: Annotated[
        int | None,
        typer.Option(help="torch CPU threads (default: torch's; use 1 on a busy machine)"),
    ] = None,
    val_max_rows: Annotated[
        int | None,
        typer.Option(help="validate on the first N validation rows only (faster evaluations)"),
    ] = None,
    precision: Annotated[
        str,
        typer.Option(
            help="training steps in auto (bf16 where its products are fast, else fp32), fp32, "
            "bf16 (autocast) or fp16 (CUDA, gradient scaler); validation and test always run "
            "in fp32"
        ),
    ] = "auto",
) -> None:
    """Fit a model by maximum likelihood; save checkpoint, metrics and plots; print the test
    log-likelihood (and bits/dim for images: sample grids at temperatures 1.0 and 0.7).
    """
    model_spec(model)  # validates the name before anything is loaded
    check_size(size)
    check_positive(
        epochs=epochs, batch_size=batch_size, lr=lr, eval_every=eval_every, max_time=max_time,
        checkpoint_every=checkpoint_every, val_max_rows=val_max_rows,
    )  # fmt: skip
    device = check_device(device)
    check_precision(precision, device or "cpu")  # one line, before any data is loaded
    set_threads(threads)
    dist_ctx = join_torchrun(device)  # under torchrun: DDP, one process per GPU / CPU share
    if dist_ctx is not None:
        device = str(dist_ctx.device)
    refuse_existing_run(out, resume=resume, overwrite=overwrite)
    check_writable(out)
    job = train_job(
        model, data, size=size, seed=seed, out=out, data_dir=data_dir,
        option=parse_options(option), resume=resume, device=device, progress=progress,
        is_main=dist_ctx is None or dist_ctx.is_main, announce=typer.echo,
        steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
        schedule=schedule, grad_clip=grad_clip or None, patience=patience or None,
        eval_every=eval_every, max_time=max_time, checkpoint_every=checkpoint_every,
        compile=compile_, overwrite=overwrite, precision=precision,
        **({"val_max_rows": val_max_rows} if val_max_rows else {}),
    )  # fmt: skip
    if job.test is None:
        return  # not the main process: rank 0 evaluates, saves and reports
    try:
        plot_run(model, job.flow, job.data, job.result.history, out, seed=seed)
    except Exception as e:  # a picture is never worth a failed run
        warnings.warn(f"could not draw samples: {e}", stacklevel=1)
    result, test = job.result, job.test
    typer.echo(
        f"trained {result.steps} steps in {result.train_time:.1f}s ({result.stopped}); "
        f"validation log-likelihood {_nats(result.final_val_log_prob)} (the saved weights, "
        f"from step {result.best_step})"
    )
    if isinstance(test, SpeechEvalResult):  # waveforms: nats and bits per sample, baselines
        typer.echo("\n".join(test.lines()))
        typer.echo(f"saved {out / 'model'}")
        return
    typer.echo(f"test log-likelihood: {test}")
    if test.bits_per_dim is not None:
        typer.echo(f"test bits/dim: {test.bits_per_dim:.4f}")
    typer.echo(f"saved {out / 'model'}")
