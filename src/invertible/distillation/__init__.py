"""Probability density distillation: train a fast-sampling student from a frozen teacher.

- :mod:`~invertible.distillation.losses`: the three estimators of KL(S‖T) and the data
  term, as a loss object (:class:`DistillationLoss`) run by the shared training loop;
- :mod:`~invertible.distillation.run`: :func:`distill` and :class:`DistillResult`;
- :mod:`~invertible.distillation.students`: :func:`make_student`;
- :mod:`~invertible.distillation.compare`: :func:`evaluate_student`;
- :mod:`~invertible.distillation.diagnostics`: :func:`gradient_variance`.
"""

from invertible.distillation.compare import evaluate_student
from invertible.distillation.diagnostics import gradient_variance
from invertible.distillation.losses import (
    LOSSES,
    DistillationLoss,
    check_closed_form,
    distillation_losses,
    frozen,
    gaussian_kl,
)
from invertible.distillation.run import DistillResult, StudentBatches, distill
from invertible.distillation.students import make_student

__all__ = [
    "LOSSES",
    "DistillResult",
    "DistillationLoss",
    "StudentBatches",
    "check_closed_form",
    "distill",
    "distillation_losses",
    "evaluate_student",
    "frozen",
    "gaussian_kl",
    "gradient_variance",
    "make_student",
]
