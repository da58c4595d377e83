"""The ``invertible`` command line (Typer): train, eval, sample, datasets, lecture, distill,
speech.

Examples::

    invertible train --model maf --data patches --steps 5000 --out runs/maf
    invertible eval runs/maf/model --data patches
    invertible sample runs/maf/model -n 1000 --out samples.npy
    invertible datasets
    invertible lecture --out runs/lecture --budget-minutes 10
    invertible distill --teacher runs/maf/model --out runs/iaf
    invertible speech --out runs/speech --budget-minutes 30

Each command is one thin module (parse the flags, run a job, print); bad input (NaN rows,
a checkpoint for another dimension, a missing dataset file, a corrupt, truncated or newer
checkpoint, an unknown model or dataset, an unwritable output directory) ends with one
``error: ...`` line on stderr and exit status 1 (:func:`~invertible.cli.common.cli_errors`).
"""

from __future__ import annotations

import typer

from invertible.cli import datasets, distill, evaluate, lecture, sample, speech, train
from invertible.cli.common import CLIError, cli_errors

__all__ = ["CLIError", "app", "cli_errors", "main"]

app = typer.Typer(
    name="invertible",
    help=(
        "Normalizing flows: fit NICE, RealNVP, MAF, IAF, ... by maximum likelihood, evaluate "
        "them, sample from them.\n\n"
        "Examples:\n\n"
        "  invertible train --model maf --data patches --steps 5000 --out runs/maf\n\n"
        "  invertible eval runs/maf/model --data patches\n\n"
        "  invertible sample runs/maf/model -n 1000 --out samples.npy\n\n"
        "  invertible datasets\n\n"
        "  invertible lecture --out runs/lecture --budget-minutes 10"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

app.command(epilog=train.EPILOG)(cli_errors(train.train))
app.command(name="eval", epilog=evaluate.EPILOG)(cli_errors(evaluate.eval_))
app.command(epilog=sample.EPILOG)(cli_errors(sample.sample))
app.command(epilog=datasets.EPILOG)(cli_errors(datasets.datasets))
app.command(epilog=lecture.EPILOG)(cli_errors(lecture.lecture))
app.command(name="distill", epilog=distill.EPILOG)(cli_errors(distill.distill_command))
app.command(epilog=speech.EPILOG)(cli_errors(speech.speech))


def main() -> None:
    """Entry point of the ``invertible`` script."""
    app(prog_name="invertible")
