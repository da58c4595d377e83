"""Deprecated module path: use :mod:`invertible.training.ddp`. Kept for one release."""

from __future__ import annotations

import warnings

from invertible.training.ddp import *  # noqa: F403
from invertible.training.ddp import __all__ as __all__

warnings.warn(
    "invertible.distributed is deprecated; use invertible.training.ddp",
    DeprecationWarning,
    stacklevel=2,
)
