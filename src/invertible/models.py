"""Deprecated module path: use :mod:`invertible.catalog`. Kept for one release."""

from __future__ import annotations

import warnings

from invertible.catalog import *  # noqa: F403
from invertible.catalog import __all__ as __all__

warnings.warn(
    "invertible.models is deprecated; use invertible.catalog", DeprecationWarning, stacklevel=2
)
