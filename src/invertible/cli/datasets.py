"""``invertible datasets``: which datasets are available, and how to get the others."""

from __future__ import annotations

from typing import Annotated

import typer

from invertible.data import list_datasets

__all__ = ["EPILOG", "datasets"]

EPILOG = "Examples:\n\n  invertible datasets\n\n  invertible datasets --verbose --data-dir ~/data"


def datasets(
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="also say how to get each missing dataset")
    ] = False,
) -> None:
    """List the datasets: which are available, and for the others what to download and where
    to put it.
    """
    statuses = list_datasets(data_dir)
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        mark = "available" if s.available else "MISSING"
        typer.echo(f"{s.name:<{width}}  {s.kind:<8}  {mark:<9}  {s.description}")
    missing = [s for s in statuses if not s.available and s.message]
    if missing and not verbose:
        hint = "`invertible datasets --verbose` says where to get them"
        typer.echo(f"\n{len(missing)} missing; {hint}")
    for s in missing if verbose else []:
        typer.echo(f"\n{s.name}:\n{s.message}")
