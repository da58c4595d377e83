r"""``invertible distill``: distil a trained teacher checkpoint into a fast-sampling IAF
(see :func:`invertible.jobs.distill_job`).

Example::

    invertible distill --teacher runs/maf/model --data patches --out runs/iaf \
        --steps 3000 --loss analytic-entropy --layers 5 --hidden 512 --hidden 512 \
        --data-anchor 10 --anchor contrast
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invertible.cli.common import CLIError, check_device, check_writable
from invertible.distillation import ANCHORS, LOSSES
from invertible.jobs import distill_job
from invertible.reports.plots import kl_curve_figure
from invertible.training import check_precision

__all__ = ["EPILOG", "distill_command"]

#: The widest MADE hidden layer ``--hidden`` takes (wider ones do not fit in memory).
MAX_WIDTH = 1 << 20

EPILOG = (
    "Example:\n\n  invertible distill --teacher runs/maf/model --data patches "
    "--out runs/iaf --steps 3000 --loss analytic-entropy"
)


def distill_command(
    teacher: Annotated[Path, typer.Option(help="teacher checkpoint directory (e.g. a MAF)")],
    out: Annotated[Path, typer.Option(help="output directory (student saved in OUT/model)")],
    data: Annotated[
        str | None,
        typer.Option(help="dataset name or file (default: the teacher's dataset)"),
    ] = None,
    steps: Annotated[int, typer.Option(help="distillation steps")] = 2000,
    loss: Annotated[
        str, typer.Option(help="mc, analytic-entropy or closed-form (ClariNet)")
    ] = "analytic-entropy",
    layers: Annotated[int, typer.Option(help="IAF layers of the student")] = 5,
    hidden: Annotated[
        list[int] | None, typer.Option(help="MADE hidden widths (repeatable; default 512 512)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="student samples per step")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    same_ordering: Annotated[
        bool,
        typer.Option(help="all student layers in the teacher's ordering (needed by closed-form)"),
    ] = False,
    data_anchor: Annotated[
        float,
        typer.Option(help="weight of the data term on training rows (--anchor; 0: KL only)"),
    ] = 0.0,
    anchor: Annotated[
        str,
        typer.Option(
            help="the data term: likelihood (exact, sequential), contrast (the samples' "
            "spread of contrast matched to the data's; parallel), moments or teacher-latent"
        ),
    ] = "likelihood",
    anchor_every: Annotated[int, typer.Option(help="add the data term every N steps")] = 1,
    anchor_batch_size: Annotated[int, typer.Option(help="training rows per data term")] = 64,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    overwrite: Annotated[
        bool, typer.Option(help="replace a distilled model already in OUT")
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            help="training steps in auto (bf16 where its products are fast, else fp32), fp32, "
            "bf16 (autocast) or fp16 (CUDA only)"
        ),
    ] = "auto",
) -> None:
    """Distill a teacher checkpoint into an IAF student by minimising KL(student ‖ teacher).

    Loads the teacher, trains the student (the teacher stays frozen), evaluates the
    student's exact test log-likelihood (sequential inverse), and saves the student like any
    flow in OUT/model, with OUT/results.json and OUT/distill_kl.png.
    """
    if loss not in LOSSES:
        raise CLIError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if anchor not in ANCHORS:
        raise CLIError(f"unknown --anchor {anchor!r}; choose one of {', '.join(ANCHORS)}")
    if data_anchor < 0 or anchor_every < 1 or anchor_batch_size < 1:
        raise CLIError(
            "--data-anchor must be >= 0 and --anchor-every, --anchor-batch-size >= 1; got "
            f"{data_anchor}, {anchor_every}, {anchor_batch_size}"
        )
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise CLIError(
            f"--steps and --batch-size must be >= 1 and --lr > 0; got {steps}, {batch_size}, {lr}"
        )
    if layers < 1 or any(not 1 <= h <= MAX_WIDTH for h in hidden or ()):
        raise CLIError(
            f"--layers must be >= 1 and each --hidden between 1 and {MAX_WIDTH}; got {layers}, "
            f"{list(hidden or [])}"
        )
    check_device(device)
    check_precision(precision, device)
    check_writable(out)
    job = distill_job(
        teacher, out, data=data, steps=steps, loss=loss, layers=layers,
        hidden=tuple(hidden or (512, 512)), batch_size=batch_size, lr=lr,
        same_ordering=same_ordering, data_anchor=data_anchor, anchor=anchor,
        anchor_every=anchor_every,
        anchor_batch_size=anchor_batch_size, seed=seed, data_dir=data_dir, device=device,
        progress=progress, overwrite=overwrite, precision=precision,
    )  # fmt: skip
    result = job.result
    kl_curve_figure([result]).savefig(out / "distill_kl.png", dpi=120)
    typer.echo(f"distilled {steps} steps ({loss}) in {result.wall_time:.1f}s; final KL "
               f"estimate {result.final('kl'):.3f} nats (mean of the last {min(steps, 50)} "
               "steps, as in distill_kl.png)")  # fmt: skip
    typer.echo(f"student test log-likelihood: {job.test}")
    typer.echo(f"teacher test log-likelihood: {job.teacher_test}")
    typer.echo(f"saved {out / 'model'}")
