"""invertible: normalizing flows on PyTorch, from NICE to probability density distillation.

Directions, once and for all: ``forward`` is the generative direction z → x (what
``Flow.sample`` runs), ``inverse`` is the normalizing direction x → z (what
``Flow.log_prob`` runs). Both return ``(output, log_abs_det)`` with a log-determinant of
shape ``[batch]`` for the direction that ran.
"""

from invertible.core import *
from invertible.distributions import *
from invertible.nn import MLP as MLP
from invertible.presets import *
from invertible.transforms import *

__version__ = "0.1.0"
