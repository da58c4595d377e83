"""Training flows: :func:`fit` (maximum likelihood) on the shared loop :class:`Trainer`.

- :mod:`~invertible.training.config`: :class:`TrainConfig`, :class:`TrainResult`;
- :mod:`~invertible.training.schedule`: :func:`adam`, :func:`lr_factor`;
- :mod:`~invertible.training.state`: seeds, optimizer and RNG states for resuming;
- :mod:`~invertible.training.batchnorm`: :func:`refresh_batchnorm`;
- :mod:`~invertible.training.compile`: :func:`compile_flow` and the compiled step;
- :mod:`~invertible.training.metrics`: the metric files of a run;
- :mod:`~invertible.training.objective`: what the loop minimises;
- :mod:`~invertible.training.precision`: the ``precision=`` option (bf16/fp16 autocast);
- :mod:`~invertible.training.strategy` and :mod:`~invertible.training.ddp`: how the loop
  runs in one process or data-parallel under ``torchrun``;
- :mod:`~invertible.training.loop`: :class:`Trainer`; :mod:`~invertible.training.fit`:
  :func:`fit`, the one place that picks single-process or DDP.
"""

from invertible.training.batchnorm import refresh_batchnorm
from invertible.training.compile import CompiledFlow, CompiledModule, compile_flow
from invertible.training.config import TrainConfig, TrainingWarning, TrainResult
from invertible.training.fit import RunExistsError, existing_run, fit
from invertible.training.loop import DivergedError, Trainer
from invertible.training.metrics import MetricsLogger
from invertible.training.objective import MaximumLikelihood
from invertible.training.precision import PRECISIONS, check_precision, resolve_precision
from invertible.training.schedule import adam, lr_factor
from invertible.training.state import seed_everything
from invertible.training.strategy import SingleProcess

__all__ = [
    "PRECISIONS",
    "CompiledFlow",
    "CompiledModule",
    "DivergedError",
    "MaximumLikelihood",
    "MetricsLogger",
    "RunExistsError",
    "SingleProcess",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingWarning",
    "adam",
    "check_precision",
    "compile_flow",
    "existing_run",
    "fit",
    "lr_factor",
    "refresh_batchnorm",
    "resolve_precision",
    "seed_everything",
]
