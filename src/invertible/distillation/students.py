"""Students for distillation: IAFs that share their teacher's ordering, WaveNet students."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from invertible.core import Flow
from invertible.distillation.losses import autoregressive_layers, ordering
from invertible.distributions import StandardLogistic
from invertible.presets.autoregressive import IAF
from invertible.presets.wavenet import WaveNetIAF, init_moving_average

__all__ = ["WAVENET_STUDENT_SIZES", "make_student", "make_wavenet_student"]

#: Sizes of :func:`make_wavenet_student`: WaveNetIAF arguments per name. ``small`` samples
#: faster than real time on two CPU threads; ``fast`` (half its width) is the speech job's
#: student, sized so that batch-1 sampling is well over 1000× the WaveNet teacher's naive
#: sampler there; ``default`` is Parallel WaveNet's width.
WAVENET_STUDENT_SIZES: dict[str, dict[str, Any]] = {
    "tiny": {"num_flows": 2, "residual_channels": 8, "skip_channels": 8,
             "dilations": [1, 2, 4], "linear_order": 32},
    "small": {"num_flows": 4, "residual_channels": 16, "skip_channels": 16,
              "dilation_cycles": 1, "max_dilation": 128, "linear_order": 256},
    "fast": {"num_flows": 4, "residual_channels": 8, "skip_channels": 8,
             "dilation_cycles": 1, "max_dilation": 128, "linear_order": 256},
    "default": {"num_flows": 4, "residual_channels": 64, "skip_channels": 64,
                "dilation_cycles": 1, "max_dilation": 512, "linear_order": 512},
}  # fmt: skip


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


def make_wavenet_student(
    teacher: Flow,
    size: str = "small",
    *,
    utterances: Tensor | Iterable[Tensor] | None = None,
    order: int = 32,
    seed: int = 0,
    **overrides: Any,
) -> WaveNetIAF:
    """A Parallel WaveNet student (:class:`~invertible.WaveNetIAF`) for a sequence teacher.

    Same base (Gaussian or logistic conditionals) and default length as the teacher, the
    flows of ``size`` (:data:`WAVENET_STUDENT_SIZES`, overridden by ``overrides``). Given
    training ``utterances``, the first flow starts as the moving-average form of the
    least-squares AR(``order``) model (:func:`~invertible.init_moving_average`), so the
    student starts with speech's level and long-term spectrum instead of loud white noise.

    Args:
        teacher: a :class:`~invertible.WaveNetMAF` (or any sequence flow with a base).
        size: ``"tiny"``, ``"small"``, ``"fast"`` or ``"default"``.
        utterances: training waveforms for the AR start (``None``: an identity start).
        order: p of the AR start.
        seed: seed of the weights.
        **overrides: other :class:`~invertible.WaveNetIAF` arguments.

    Example:
        >>> import torch, invertible
        >>> teacher = invertible.WaveNetMAF(residual_channels=4, skip_channels=4,
        ...                                 dilations=[1], base="logistic", length=100)
        >>> x = torch.randn(1, 3000).cumsum(1) * 1e-3
        >>> student = make_wavenet_student(teacher, "tiny", utterances=x)
        >>> student.config["base"], student.sample(2).shape
        ('logistic', torch.Size([2, 100]))
    """
    if size not in WAVENET_STUDENT_SIZES:
        choices = sorted(WAVENET_STUDENT_SIZES)
        raise ValueError(f"size: unknown size {size!r}; choose one of {choices}")
    logistic = isinstance(teacher.base.element, StandardLogistic)  # type: ignore[union-attr]
    arguments = {**WAVENET_STUDENT_SIZES[size], "base": "logistic" if logistic else "normal",
                 "length": teacher.event_shape[0], **overrides}  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        student = WaveNetIAF(**arguments)
    student.to(next(teacher.parameters()).dtype)
    if utterances is not None:
        init_moving_average(student, utterances, order)
    return student
