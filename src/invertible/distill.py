"""Deprecated module path: use :mod:`invertible.distillation` (and
:mod:`invertible.reports.distillation` for the report). Kept for one release.

``invertible.distill`` is also the function :func:`invertible.distillation.distill`; this
module warns when one of its names is read (``from invertible.distill import X``).
"""

from __future__ import annotations

import warnings
from typing import Any

import invertible.distillation as _distillation
import invertible.evaluation.speed as _speed
import invertible.evaluation.stats as _stats

_MOVED: dict[str, tuple[Any, str]] = {
    **{name: (_distillation, "invertible.distillation") for name in _distillation.__all__},
    "mmd_test": (_stats, "invertible.evaluation"),
    "sampling_throughput": (_speed, "invertible.evaluation"),
}
#: Names now in the reports layer, which needs matplotlib: imported when first read.
_REPORTS = ("distillation_report", "kl_curve_figure")


def __getattr__(name: str) -> Any:
    """Warn, then return the name from its new module."""
    if name in _REPORTS:
        warnings.warn(
            f"invertible.distill.{name} moved to invertible.reports; invertible.distill "
            "is deprecated",
            DeprecationWarning,
            stacklevel=2,
        )
        # the reports need matplotlib: imported only when a moved report name is read
        import invertible.reports.distillation as reports  # noqa: PLC0415
        import invertible.reports.plots as plots  # noqa: PLC0415

        return getattr(reports if name == "distillation_report" else plots, name)
    if name not in _MOVED:
        raise AttributeError(f"module 'invertible.distill' has no attribute {name!r}")
    module, where = _MOVED[name]
    warnings.warn(
        f"invertible.distill.{name} moved to {where}; invertible.distill is deprecated",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(module, name)
