"""Students for distillation: IAFs that share their teacher's ordering."""

from __future__ import annotations

from collections.abc import Sequence

from invertible.core import Flow
from invertible.distillation.losses import autoregressive_layers, ordering
from invertible.presets.autoregressive import IAF

__all__ = ["make_student"]


def make_student(
    teacher: Flow,
    num_layers: int = 5,
    hidden_features: Sequence[int] = (512, 512),
    *,
    log_scale_bound: float | None = 5.0,
    seed: int = 0,
) -> Flow:
    """An affine :class:`~invertible.IAF` student for ``teacher`` whose layers all share
    the ordering of the teacher's autoregressive layer next to the data.

    Every IAF layer gets the same ordering and nothing sits between them, so when the
    teacher is a one-layer Gaussian autoregressive model (``GaussianAR``, or
    ``MAF(num_layers=1, batch_norm=False)``) the ClariNet closed-form loss applies
    (:func:`check_closed_form`). For deeper teachers the student is still a valid IAF for
    ``loss="mc"`` or ``"analytic-entropy"`` (where the reversal between layers of the
    default ``IAF`` preset may train better). A teacher without autoregressive layers gives
    the natural ordering. The result is an ``IAF`` preset, so :func:`invertible.save`
    handles it.

    Args:
        teacher: the teacher flow (its dimension and ordering are read).
        num_layers: number of IAF layers.
        hidden_features: hidden widths of each MADE.
        log_scale_bound: soft bound of each layer's |α|.
        seed: seed of the MADE initialisation.

    Example:
        >>> import invertible
        >>> teacher = invertible.GaussianAR(3, hidden_features=(8,), ordering=[2, 0, 1])
        >>> make_student(teacher, 2, (8,)).config["ordering"]
        [2, 0, 1]
    """
    layers = autoregressive_layers(teacher)
    order: str | list[int] = ordering(layers[-1]).tolist() if layers else "natural"
    return IAF(
        teacher.features,
        num_layers=num_layers,
        hidden_features=hidden_features,
        ordering=order,
        log_scale_bound=log_scale_bound,
        seed=seed,
    )
