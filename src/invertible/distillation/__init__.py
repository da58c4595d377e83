"""Probability density distillation: train a fast-sampling student from a frozen teacher.

- :mod:`~invertible.distillation.losses`: the three estimators of KL(S‖T) and the data
  term, as a loss object (:class:`DistillationLoss`) run by the shared training loop;
- :mod:`~invertible.distillation.sequence`: the per-sample estimators for WaveNet teachers
  and students (Parallel WaveNet's conditional Monte Carlo, ClariNet's closed form) and the
  power loss;
- :mod:`~invertible.distillation.run`: :func:`distill` and :class:`DistillResult`;
- :mod:`~invertible.distillation.students`: :func:`make_student`, :func:`init_data_scale`,
  :func:`make_wavenet_student`;
- :mod:`~invertible.distillation.compare`: :func:`evaluate_student`, :func:`median_ratio`;
- :mod:`~invertible.distillation.diagnostics`: :func:`gradient_variance`.
"""

from invertible.distillation.compare import evaluate_student, median_ratio
from invertible.distillation.diagnostics import gradient_variance
from invertible.distillation.losses import (
    ANCHORS,
    LOSSES,
    ContrastTarget,
    DistillationLoss,
    check_closed_form,
    distillation_losses,
    frozen,
    gaussian_kl,
)
from invertible.distillation.run import DistillResult, StudentBatches, distill
from invertible.distillation.sequence import (
    SEQUENCE_LOSSES,
    SequenceDistillationLoss,
    power_loss,
    real_spectrum,
    sequence_distillation_losses,
    time_averaged_spectrum,
)
from invertible.distillation.students import (
    WAVENET_STUDENT_SIZES,
    init_data_scale,
    make_student,
    make_wavenet_student,
)

__all__ = [
    "ANCHORS",
    "LOSSES",
    "SEQUENCE_LOSSES",
    "WAVENET_STUDENT_SIZES",
    "ContrastTarget",
    "DistillResult",
    "DistillationLoss",
    "SequenceDistillationLoss",
    "StudentBatches",
    "check_closed_form",
    "distill",
    "distillation_losses",
    "evaluate_student",
    "frozen",
    "gaussian_kl",
    "gradient_variance",
    "init_data_scale",
    "make_student",
    "make_wavenet_student",
    "median_ratio",
    "power_loss",
    "real_spectrum",
    "sequence_distillation_losses",
    "time_averaged_spectrum",
]
