"""``invertible speech``: Parallel WaveNet on speech (see
:func:`invertible.reports.speech.run_speech`).

Example::

    invertible speech --out runs/speech --budget-minutes 30 --threads 2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invertible.cli.common import (
    CLIError,
    check_positive,
    ensure_writable_dir,
    parse_options,
    set_threads,
)
from invertible.distillation import SEQUENCE_LOSSES, WAVENET_STUDENT_SIZES
from invertible.jobs import SPEECH_EVALUATION, check_speech_out
from invertible.reports.speech import run_speech

__all__ = ["EPILOG", "speech"]

EPILOG = (
    "Examples:\n\n  invertible speech --out runs/speech --budget-minutes 30 --threads 2\n\n"
    "  invertible speech --out /tmp/sp --budget-minutes 1 --teacher tiny --size tiny "
    "--option n_prompts=6 --evaluation clip_seconds=0.5"
)


def speech(
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/speech"),
    budget_minutes: Annotated[
        float, typer.Option(help="teacher training + distillation, wall clock")
    ] = 30.0,
    teacher: Annotated[str, typer.Option(help="teacher size: tiny, small, default")] = "small",
    size: Annotated[str, typer.Option(help="student size: tiny, small, fast, default")] = "fast",
    loss: Annotated[
        str, typer.Option(help="mc, analytic-entropy, conditional-mc or closed-form")
    ] = "conditional-mc",
    power_loss: Annotated[float, typer.Option(help="weight of the power (STFT) loss")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="student sequences per step")] = 2,
    lr: Annotated[float, typer.Option(help="student learning rate")] = 1e-3,
    lr_warmup: Annotated[
        int, typer.Option(help="student steps of linear learning-rate warm-up")
    ] = 0,
    option: Annotated[
        list[str] | None, typer.Option(help="dataset option KEY=VALUE (repeatable)")
    ] = None,
    evaluation: Annotated[
        list[str] | None,
        typer.Option(help=f"evaluation setting KEY=VALUE ({', '.join(SPEECH_EVALUATION)})"),
    ] = None,
    teacher_checkpoint: Annotated[
        Path | None,
        typer.Option(help="distil this saved teacher (e.g. an earlier OUT/teacher/model)"),
    ] = None,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    data_dir: Annotated[str | None, typer.Option(help="where the speech cache lives")] = None,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    overwrite: Annotated[bool, typer.Option(help="replace a previous run in OUT")] = False,
) -> None:
    """Parallel WaveNet on speech: train a WaveNet teacher by maximum likelihood, distil a
    parallel IAF student by minimising KL(student ‖ teacher), and write OUT/report.md with
    the likelihood, quality and speed tables, WAVs, spectrograms and curves.
    """
    set_threads(threads)
    check_positive(budget_minutes=budget_minutes, batch_size=batch_size, lr=lr)
    if loss not in SEQUENCE_LOSSES:
        raise CLIError(f"unknown loss {loss!r}; choose one of {', '.join(SEQUENCE_LOSSES)}")
    if size not in WAVENET_STUDENT_SIZES:
        raise CLIError(
            f"unknown student size {size!r}; choose one of {', '.join(WAVENET_STUDENT_SIZES)}"
        )
    if power_loss < 0 or lr_warmup < 0:
        raise CLIError(f"--power-loss and --lr-warmup must be >= 0, got {power_loss}, {lr_warmup}")
    settings = parse_options(evaluation)
    unknown = sorted(set(settings) - set(SPEECH_EVALUATION))
    if unknown:
        raise CLIError(f"unknown --evaluation {unknown}; known: {', '.join(SPEECH_EVALUATION)}")
    check_speech_out(out, overwrite=overwrite)
    ensure_writable_dir(out)
    job = run_speech(
        out, budget_minutes=budget_minutes, teacher_size=teacher, student_size=size,
        data_dir=data_dir, option=parse_options(option), evaluation=settings, seed=seed,
        teacher_checkpoint=teacher_checkpoint,
        distill_options={"loss": loss, "power_loss": power_loss, "batch_size": batch_size,
                         "lr": lr, "lr_warmup_steps": lr_warmup},
        progress=progress, overwrite=overwrite, announce=lambda line: typer.echo(line, err=True),
    )  # fmt: skip
    ups = job.speed["speedups"]
    typer.echo(job.teacher.test.verdict["line"])
    typer.echo(f"KL(student ‖ teacher): {job.likelihood['kl_final']:.4f} nats/sample")
    typer.echo("student speed-up: " + "; ".join(f"{k} {v:,.1f}x" for k, v in ups.items()))
    typer.echo(f"wrote {out / 'report.md'}")
