"""invertible: normalizing flows on PyTorch, from NICE to probability density distillation.

Directions, once and for all: ``forward`` is the generative direction z → x (what
``Flow.sample`` runs), ``inverse`` is the normalizing direction x → z (what
``Flow.log_prob`` runs). Both return ``(output, log_abs_det)`` with a log-determinant of
shape ``[batch]`` for the direction that ran.
"""

import invertible.distill as _distill_module  # noqa: F401  (the deprecated module path)
from invertible.checkpoint import load as load
from invertible.checkpoint import save as save
from invertible.core import *
from invertible.distillation import DistillResult as DistillResult
from invertible.distillation import distill as distill
from invertible.distillation import make_wavenet_student as make_wavenet_student
from invertible.distributions import *
from invertible.evaluation import evaluate as evaluate
from invertible.nn import MLP as MLP
from invertible.presets import *
from invertible.training import TrainResult as TrainResult
from invertible.training import compile_flow as compile_flow
from invertible.training import fit as fit
from invertible.transforms import *
from invertible.version import __version__ as __version__

train = fit  # alias: ``invertible.train(flow, data, ...)``
