"""``invertible lecture``: the main job (see :func:`invertible.reports.lecture.run_lecture`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from invertible.cli.common import ensure_writable_dir, set_threads
from invertible.reports.lecture import check_lecture_out, run_lecture

__all__ = ["EPILOG", "lecture"]

EPILOG = (
    "Examples:\n\n  invertible lecture --out runs/lecture\n\n"
    "  invertible lecture --out /tmp/lec --budget-minutes 2 --models nice,maf\n\n"
    "  invertible lecture --out /tmp/lec --tiny"
)


def lecture(
    out: Annotated[Path, typer.Option(help="report directory")] = Path("runs/lecture"),
    budget_minutes: Annotated[float, typer.Option(help="total wall-clock budget")] = 10.0,
    data: Annotated[str, typer.Option(help="dataset (default: patches, D=63)")] = "patches",
    models: Annotated[str, typer.Option(help="comma-separated models")] = "nice,realnvp,maf,iaf",
    tiny: Annotated[bool, typer.Option(help="tiny models and data (a smoke test)")] = False,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    threads: Annotated[
        int | None,
        typer.Option(help="torch CPU threads (default: torch's; use 1 on a busy machine)"),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a previous report in OUT")] = False,
) -> None:
    """The lecture's main job: fit NICE, RealNVP, MAF and IAF on 8x8 patches within a time
    budget and write report.md with a comparison table and figures.
    """
    set_threads(threads)
    model_list = [m.strip() for m in models.split(",") if m.strip()]
    check_lecture_out(out, model_list, overwrite=overwrite)
    ensure_writable_dir(out)
    report = run_lecture(
        out,
        budget_minutes=budget_minutes,
        dataset=data,
        models=model_list,
        tiny=tiny,
        seed=seed,
        data_dir=data_dir,
        progress=progress,
        overwrite=overwrite,
    )
    typer.echo(report.table_markdown())
    typer.echo(f"wrote {out / 'report.md'}")
