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
from invertible.transforms.autoregressive import AffineAutoregressive
from invertible.transforms.elementwise import Affine

__all__ = ["WAVENET_STUDENT_SIZES", "init_data_scale", "make_student", "make_wavenet_student"]

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
    ``MAF(num_layers=1, batch_norm=False, actnorm=False)``) the ClariNet closed-form loss applies
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


@torch.no_grad()
def init_data_scale(student: Flow, data: Tensor, *, robust: bool = False) -> Flow:
    r"""Start an affine IAF ``student`` at the diagonal Gaussian of ``data``.

    A fresh IAF is the identity map of N(0, I) (its MADEs' last layers are zero), while
    data such as image patches have a standard deviation near 0.1: the student's first
    KL(S‖T) steps would then be spent shrinking every coordinate by a factor of ten,
    through large, noisy gradients of log T far in the teacher's tails. Setting the output
    biases of the student's last layer (next to x) so that it maps u to
    x_i = μ_i + σ_i·u_i, with μ, σ the per-coordinate mean and standard deviation of
    ``data``, starts the student at that Gaussian; the other layers stay the identity and
    keep working on standard-normal-scale inputs. The networks' weights are untouched, so
    every layer still learns from its start as before.

    With ``robust=True`` μ is the median and σ = 1.4826·median|x − median| (the MAD, which
    equals σ for a Gaussian). For a scale mixture such as image patches (most patches are
    nearly flat, a few have high contrast; per-patch RMS spans two orders of magnitude)
    the standard deviation is set by the rare high-contrast patches, the MAD by the
    typical patch: the student then starts inside the region that holds most of the
    teacher's mass and the entropy term widens it, instead of starting in the broad tail
    and having to find that region through reverse KL, which is mode seeking.

    Args:
        student: a flow whose last transform is an ``AffineAutoregressive`` with the
            :class:`~invertible.Affine` map and a fresh (zero) last MADE layer (e.g.
            :class:`~invertible.IAF`); changed in place.
        data: ``[N, D]`` rows (training data, or teacher samples).
        robust: median and MAD instead of mean and standard deviation.

    Returns:
        ``student``.

    Example:
        >>> import torch, invertible
        >>> data = torch.randn(500, 3) * 0.1 + 2.0
        >>> student = init_data_scale(invertible.IAF(3, num_layers=2, hidden_features=(8,)), data)
        >>> x = student.sample(4000)
        >>> bool((x.mean(0) - 2.0).abs().max() < 0.02), bool((x.std(0) - 0.1).abs().max() < 0.02)
        (True, True)
    """
    layers = autoregressive_layers(student)
    layer = layers[-1] if layers else None
    if not isinstance(layer, AffineAutoregressive) or type(layer.elementwise) is not Affine:
        raise ValueError(
            "init_data_scale: the student's autoregressive layer next to x must be an "
            "AffineAutoregressive layer with the Affine map (an IAF preset without gating)"
        )
    out = layer.made.layers[-1]
    bias = out.bias.view(layer.features, -1)
    rows = data.reshape(data.shape[0], -1).to(bias)
    if robust:
        center = rows.median(0).values
        spread = 1.4826 * (rows - center).abs().median(0).values
    else:
        center, spread = rows.mean(0), rows.std(0)
    log_scale = spread.clamp_min(torch.finfo(bias.dtype).tiny).log()
    bound = layer.elementwise.log_scale_bound
    if bound is not None:  # invert the soft clamp α = bound·tanh(α_raw/bound)
        log_scale = log_scale.clamp(-0.99 * bound, 0.99 * bound)
        bias[:, 1] = bound * torch.atanh(log_scale / bound)
    else:
        bias[:, 1] = log_scale
    # The map is affine in its shift parameter (in data or in latent units): its effect at
    # u = 0 per unit of shift gives the shift that puts the mean at μ.
    bias[:, 0] = 0.0
    zeros = torch.zeros(1, layer.features, dtype=bias.dtype, device=bias.device)
    unit = torch.stack([torch.ones_like(bias[:, 1]), bias[:, 1]], -1)[None]
    per_unit = layer.elementwise(zeros, unit)[0][0]
    bias[:, 0] = center / per_unit
    return student


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
