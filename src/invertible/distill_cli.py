"""``invertible distill``: distill a trained teacher checkpoint into a fast-sampling IAF.

Registered on the Typer app of :mod:`invertible.cli` through :func:`register` (the CLI
imports this module if present and calls ``register(app)``).

Example::

    invertible distill --teacher runs/maf/model --data patches --out runs/iaf \\
        --steps 3000 --loss analytic-entropy --layers 5 --hidden 512 --hidden 512 \\
        --data-anchor 1.0
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["distill_command", "register"]


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
        list[int] | None, typer.Option(help="hidden widths of each MADE (repeatable)")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="student samples per step")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    same_ordering: Annotated[
        bool,
        typer.Option(help="all student layers in the teacher's ordering (needed by closed-form)"),
    ] = False,
    data_anchor: Annotated[
        float,
        typer.Option(
            help="weight of the data term: the student's exact negative log-likelihood of "
            "training rows (0: KL only)"
        ),
    ] = 0.0,
    anchor_every: Annotated[int, typer.Option(help="add the data term every N steps")] = 1,
    anchor_batch_size: Annotated[int, typer.Option(help="training rows per data term")] = 64,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Distill a teacher checkpoint into an IAF student by minimising KL(student ‖ teacher).

    Loads the teacher, trains the student (the teacher stays frozen), evaluates the
    student's exact test log-likelihood (sequential inverse), and saves the student like any
    flow in OUT/model, with OUT/results.json and OUT/distill_kl.png.
    """
    import torch

    from invertible.checkpoint import data_metadata, load, save
    from invertible.cli import CLIError, ensure_writable_dir, load_data
    from invertible.distill import LOSSES, distill, kl_curve_figure, make_student
    from invertible.evaluation import check_data_matches, evaluate
    from invertible.presets.autoregressive import IAF

    if loss not in LOSSES:
        raise CLIError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if data_anchor < 0 or anchor_every < 1 or anchor_batch_size < 1:
        raise CLIError(
            "--data-anchor must be >= 0 and --anchor-every, --anchor-batch-size >= 1; got "
            f"{data_anchor}, {anchor_every}, {anchor_batch_size}"
        )
    hidden_features = tuple(hidden or (512, 512))
    teacher_flow = load(teacher, map_location=device)
    meta = teacher_flow.checkpoint_meta.get("data") or {}  # type: ignore[union-attr]
    stored = meta.get("options") or {}
    name = data or stored.get("path") or meta.get("name")
    if name is None:
        raise CLIError(f"{teacher} does not record its dataset; pass --data NAME")
    same = data is None or data == meta.get("name") or data == stored.get("path")
    options = {k: v for k, v in stored.items() if k not in ("seed", "path")} if same else {}
    data_seed = int(stored.get("seed", 0)) if same else 0
    dataset, reload = load_data(name, data_dir=data_dir, seed=data_seed, options=options)
    check_data_matches(teacher_flow, dataset.test[:1], f"dataset {dataset.name!r}")
    ensure_writable_dir(out)
    torch.manual_seed(seed)
    if same_ordering or loss == "closed-form":
        student = make_student(teacher_flow, layers, hidden_features, seed=seed)
    else:
        student = IAF(teacher_flow.features, num_layers=layers, hidden_features=hidden_features)
    student.to(torch.device(device))
    anchor = {}
    if data_anchor > 0:  # the student's exact likelihood of real rows (sequential inverse)
        anchor = {
            "data_anchor": data_anchor,
            "data": torch.as_tensor(dataset.train),
            "anchor_every": anchor_every,
            "anchor_batch_size": anchor_batch_size,
        }
    result = distill(
        teacher_flow, student, steps=steps, batch_size=batch_size, loss=loss, lr=lr,
        progress=progress, seed=seed, **anchor,
    )  # fmt: skip
    test = evaluate(student, dataset)
    teacher_test = evaluate(teacher_flow, dataset)
    summary = {
        "teacher": str(teacher),
        "student": type(student).__name__,
        "student_config": student.config,
        "data": dataset.name,
        "distill": result.config,
        "final_kl": result.final("kl"),
        "wall_time_s": result.wall_time,
        "student_test": test.to_dict(),
        "teacher_test": teacher_test.to_dict(),
    }
    save(
        student,
        out / "model",
        data=data_metadata(dataset, options=reload),
        extra={"distill": summary},
    )
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    kl_curve_figure([result]).savefig(out / "distill_kl.png", dpi=120)
    typer.echo(f"distilled {steps} steps ({loss}) in {result.wall_time:.1f}s; final KL "
               f"estimate {result.final('kl'):.4f} nats")  # fmt: skip
    typer.echo(f"student test log-likelihood: {test}")
    typer.echo(f"teacher test log-likelihood: {teacher_test}")
    typer.echo(f"saved {out / 'model'}")


def register(app: typer.Typer) -> None:
    """Add the ``distill`` command to the ``invertible`` Typer app."""
    from invertible.cli import cli_errors

    app.command(
        name="distill",
        epilog="Example:\n\n  invertible distill --teacher runs/maf/model --data patches "
        "--out runs/iaf --steps 3000 --loss analytic-entropy",
    )(cli_errors(distill_command))
