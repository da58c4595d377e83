r"""Sequence flows for raw audio: the WaveNet teacher, the Parallel WaveNet student, AR(p).

An event is a waveform x_1..x_T, tensors ``[batch, T]`` with T free (each call may use
another length). Units: nats per sample on the [-1, 1] scale (see ``MODELS.md``).

Which direction is parallel:

* :class:`WaveNetMAF` (teacher) and :class:`LinearPredictionAR` (baseline): density
  (``log_prob``) is one parallel pass; sampling is sequential, T steps (incremental: ring
  buffers, about one network pass in all).
* :class:`WaveNetIAF` (student): sampling and ``sample_and_log_prob`` are one parallel pass
  per flow; the density of outside audio is sequential (exact).

Log-scale bound: the 16-bit step on [-1, 1] is 3·10⁻⁵ (log −10.4), so the WaveNet presets
soft-bound each log-scale to |α| < 12 (``log_scale_bound=12.0``) instead of the library's 5
(which would cap a one-layer teacher at about 3.6 nats per sample).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invertible.core import Compose, Flow, Transform, check_finite_rows
from invertible.distributions import StandardLaplace, StandardLogistic, StandardNormal
from invertible.nn.wavenet import wavenet_dilations
from invertible.transforms.elementwise import Affine, Gated
from invertible.transforms.sequence import WaveNetAutoregressive, check_sequence

__all__ = [
    "IIDSequence",
    "LinearPredictionAR",
    "SequenceFlow",
    "WaveNetIAF",
    "WaveNetMAF",
    "impulse_response",
    "init_linear_prediction",
    "init_moving_average",
    "linear_prediction_least_squares",
]

_BASES = {"normal": StandardNormal, "gaussian": StandardNormal, "logistic": StandardLogistic}
_BASES_AR = {"normal": StandardNormal, "gaussian": StandardNormal, "laplace": StandardLaplace}


class IIDSequence(nn.Module):
    r"""An i.i.d. base over sequences of any length T: log p(z) = Σ_t log p_0(z_t).

    Args:
        element: the one-dimensional base p_0 (``StandardNormal(1)``, ``StandardLogistic(1)``,
            ``StandardLaplace(1)``).
        length: default T of :meth:`rsample` (``event_shape`` is ``(length,)``).
        hop_length: samples per context frame: given a context ``[batch, channels,
            frames]`` and no length, :meth:`rsample` draws frames·hop_length samples
            (0: always ``length``).

    Example:
        >>> import torch
        >>> from invertible.distributions import StandardNormal
        >>> base = IIDSequence(StandardNormal(1), length=4)
        >>> base.log_prob(torch.zeros(1, 3))  # any length
        tensor([-2.7568])
        >>> base.rsample(2, length=5).shape
        torch.Size([2, 5])
    """

    def __init__(self, element: nn.Module, length: int = 16000, hop_length: int = 0) -> None:
        super().__init__()
        self.element = element
        self.event_shape: tuple[int, ...] = (int(length),)
        self.hop_length = hop_length

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each sequence ``[batch, T]`` (i.i.d. elements), shape ``[batch]``."""
        return self.step_log_prob(z).sum(dim=1)

    def step_log_prob(self, z: Tensor) -> Tensor:
        """Log-density of every element, log p_0(z_t), shape ``[batch, T]``."""
        return self.element.log_prob(z.reshape(-1, 1)).view(z.shape)

    def rsample(self, n: int, context: Tensor | None = None, length: int | None = None) -> Tensor:
        """``n`` i.i.d. sequences ``[n, length]`` (default: the context's or ``T``)."""
        if length is None:
            frames = context.shape[-1] if context is not None and self.hop_length else 0
            length = frames * self.hop_length or self.event_shape[0]
        return self.element.rsample(n * length).view(n, length)

    def entropy_rate(self) -> float:
        """Differential entropy of one element, nats per sample."""
        return float(self.element.entropy())

    def entropy(self, length: int | None = None) -> float:
        """Differential entropy of a sequence of ``length`` (default T) samples, nats."""
        return self.entropy_rate() * (self.event_shape[0] if length is None else length)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"length={self.event_shape[0]}, hop_length={self.hop_length}"


class SequenceFlow(Flow, preset=False):
    r"""A flow over sequences ``[batch, T]`` of free length, optionally conditioned on a
    log-mel spectrogram ``[batch, mel_channels, frames]``.

    log p(x | c) = log p_U(f^{-1}(x; c)) + log|det ∂f^{-1}/∂x| as for any :class:`Flow`;
    only validation and sampling change: ``sample(n, length=T, context=c)`` draws T samples
    (default: frames·hop_length when conditioned, else ``length``).

    Args:
        transform: the map u → x (sequence transforms, e.g. :class:`WaveNetAutoregressive`).
        base: the i.i.d. base over sequences (:class:`IIDSequence`).
        mel_channels: conditioning channels (0: unconditional).
        hop_length: samples per conditioning frame.

    Example:
        >>> import torch, invertible
        >>> from invertible.distributions import StandardNormal
        >>> layer = invertible.WaveNetAutoregressive(
        ...     residual_channels=4, skip_channels=4, dilations=[1])
        >>> flow = SequenceFlow(layer, IIDSequence(StandardNormal(1), length=8))
        >>> flow.sample(2, length=5).shape
        torch.Size([2, 5])
    """

    def __init__(
        self, transform: Transform, base: IIDSequence, *, mel_channels: int = 0, hop_length: int = 1
    ) -> None:
        super().__init__(transform, base, context_features=mel_channels)
        self.hop_length = hop_length
        base.hop_length = hop_length if mel_channels else 0

    @property
    def length(self) -> int:
        """Default length T of :meth:`sample`."""
        return self.event_shape[0]

    def check_input(self, x: Tensor) -> None:
        """Validate a batch of sequences ``[batch, T]`` (any T): shape, finiteness, dtype."""
        check_sequence("x", x)
        check_finite_rows("x", x)
        self.check_dtype("x", x)

    def check_context(self, context: Tensor | None, batch: int | None) -> Tensor | None:
        """Validate a log-mel context ``[batch, mel_channels, frames]``."""
        if self.context_features == 0:
            if context is not None:
                raise ValueError(
                    "context: this flow is unconditional (mel_channels=0) but a context was "
                    "given; build it with mel_channels=n_mels to condition it"
                )
            return None
        if not isinstance(context, Tensor) or context.dim() != 3:
            got = None if context is None else list(getattr(context, "shape", []))
            raise ValueError(
                f"context: expected a log-mel spectrogram [batch, {self.context_features}, "
                f"frames], got {got}"
            )
        if batch is not None and context.shape[0] == 1 and batch != 1:
            context = context.expand(batch, -1, -1)
        return context

    def _length(self, length: int | None, context: Tensor | None) -> int:
        if length is None:
            return self.length if context is None else context.shape[2] * self.hop_length
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length: expected a positive int number of samples, got {length!r}")
        return length

    def rsample(  # type: ignore[override]
        self, n: int, context: Tensor | None = None, *, length: int | None = None
    ) -> Tensor:
        """``n`` reparameterised sequences ``[n, T]`` (u → x)."""
        return self.sample_and_log_prob(n, context, length=length, _density=False)[0]

    @torch.no_grad()
    def sample(  # type: ignore[override]
        self,
        n: int,
        context: Tensor | None = None,
        *,
        length: int | None = None,
        chunk_size: int | None = None,
    ) -> Tensor:
        """``n`` sequences of ``length`` samples without gradients, ``chunk_size`` at a time."""
        return self.in_chunks(
            lambda m, rows: self.rsample(m, rows, length=length), n, context, chunk_size
        )

    def sample_and_log_prob(  # type: ignore[override]
        self,
        n: int,
        context: Tensor | None = None,
        *,
        length: int | None = None,
        _density: bool = True,
    ) -> tuple[Tensor, Tensor]:
        """``n`` sequences and their log-density from one u → x pass (parallel for IAF)."""
        n = self.check_n(n)
        context = self.check_context(context, n)
        u = self.base.rsample(n, context, length=self._length(length, context))
        x, ladj = self.transform(u, context)
        if not _density:
            return x, ladj
        return x, self.base.log_prob(u) - ladj


def _sequence_base(name: str, table: dict[str, type[nn.Module]], length: int) -> IIDSequence:
    if name.lower() not in table:
        raise ValueError(f"base: unknown base {name!r}; choose one of {sorted(set(table))}")
    return IIDSequence(table[name.lower()](1), length)


def _dilations(dilations: Sequence[int] | None, cycles: int, max_dilation: int) -> list[int]:
    if dilations is not None:
        return [int(d) for d in dilations]
    return wavenet_dilations(cycles, max_dilation)


class WaveNetMAF(SequenceFlow):
    r"""The WaveNet teacher as a flow (van den Oord et al. 2016; Parallel WaveNet 2018).

    p(x | c) = Π_t p(x_t | x_{<t}, c) with Gaussian (``base="normal"``) or logistic
    conditionals: x_t = μ_t(x_{<t}, c) + exp(α_t(x_{<t}, c))·u_t, u_t ~ p_U, one
    :class:`~invertible.WaveNetAutoregressive` layer in MAF mode. ``log_prob`` is **one
    parallel pass**: log p(x) = Σ_t log p_U(u_t) − Σ_t α_t; ``sample`` is **sequential**,
    T steps (incremental ring buffers, about one network pass in all). |α_t| < 12 by
    default (``log_scale_bound``), enough for 16-bit audio on [-1, 1].

    Linear-prediction shortcut (``linear_order=p``): μ_t also gets Σ_k a_k x_{t−k} + c
    from a causal linear convolution; :func:`init_linear_prediction` sets (a, c) and the
    scale by least squares so that training starts at the AR(p) likelihood, or pass
    ``linear_coefficients``.

    Args:
        base: ``"normal"`` or ``"logistic"``.
        residual_channels: width of the residual stream.
        gate_channels: channels of each gate half (default: residual width).
        skip_channels: width of the skips and the head.
        kernel_size: taps per dilated convolution.
        dilation_cycles: repeats of 1, 2, ..., ``max_dilation``.
        max_dilation: largest dilation (a power of two).
        dilations: explicit dilations (override the two above).
        mel_channels: log-mel channels of the conditioning (0: unconditional).
        hop_length: samples per mel frame.
        upsample: ``"repeat"`` or ``"transposed"``.
        linear_order: order p of the linear shortcut (0: none).
        linear_coefficients: a_1..a_p to start from (``None``: zeros).
        log_scale_bound: soft bound of |α|.
        length: default sample length T.

    Example:
        >>> import torch
        >>> teacher = WaveNetMAF(residual_channels=8, skip_channels=8, dilations=[1, 2, 4])
        >>> teacher.log_prob(torch.zeros(2, 100)).shape
        torch.Size([2])
        >>> teacher.sample(1, length=30).shape
        torch.Size([1, 30])
    """

    def __init__(
        self,
        *,
        base: str = "normal",
        residual_channels: int = 64,
        gate_channels: int | None = None,
        skip_channels: int = 128,
        kernel_size: int = 2,
        dilation_cycles: int = 2,
        max_dilation: int = 512,
        dilations: Sequence[int] | None = None,
        mel_channels: int = 0,
        hop_length: int = 256,
        upsample: str = "repeat",
        linear_order: int = 0,
        linear_coefficients: Sequence[float] | None = None,
        log_scale_bound: float | None = 12.0,
        length: int = 16000,
    ) -> None:
        layer = WaveNetAutoregressive(
            mode="maf",
            elementwise=Affine(log_scale_bound, shift="data"),
            residual_channels=residual_channels,
            gate_channels=gate_channels,
            skip_channels=skip_channels,
            kernel_size=kernel_size,
            dilations=_dilations(dilations, dilation_cycles, max_dilation),
            mel_channels=mel_channels,
            hop_length=hop_length,
            upsample=upsample,
            linear_order=linear_order,
        )
        if linear_coefficients is not None:
            layer.net.set_linear_prediction(torch.tensor(list(linear_coefficients)))
        super().__init__(
            layer,
            _sequence_base(base, _BASES, length),
            mel_channels=mel_channels,
            hop_length=hop_length,
        )
        self.config = {
            "base": base,
            "residual_channels": residual_channels,
            "gate_channels": gate_channels,
            "skip_channels": skip_channels,
            "kernel_size": kernel_size,
            "dilation_cycles": dilation_cycles,
            "max_dilation": max_dilation,
            "dilations": None if dilations is None else [int(d) for d in dilations],
            "mel_channels": mel_channels,
            "hop_length": hop_length,
            "upsample": upsample,
            "linear_order": linear_order,
            "linear_coefficients": (
                None if linear_coefficients is None else [float(a) for a in linear_coefficients]
            ),
            "log_scale_bound": log_scale_bound,
            "length": length,
        }

    @property
    def receptive_field(self) -> int:
        """Past samples each conditional sees: 1 + (k−1)·Σ d."""
        return self.transform.receptive_field  # type: ignore[return-value]

    def conditionals(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(μ_t, log σ_t) of every p(x_t | x_{<t}, c), each ``[batch, T]``: one pass.

        σ_t is the scale of the base (the standard deviation for ``"normal"``).
        """
        return self.transform.conditionals(x, context)  # type: ignore[operator]


class WaveNetIAF(SequenceFlow):
    r"""The Parallel WaveNet student (van den Oord et al. 2018; ClariNet, Ping et al. 2019).

    K flows in time order, each x ← μ^k(z_{<t}, c) + exp(α^k(z_{<t}, c))·x (a
    :class:`~invertible.WaveNetAutoregressive` in IAF mode whose conditioner sees that
    flow's input). Given the noise prefix, the composition is affine in z_t:
    x_t = z_t·exp(Σ_k α^k_t) + μ^tot_t (see :meth:`conditionals`), so p_S(x_t | z_{<t}) is
    Gaussian (or logistic). ``sample`` and ``sample_and_log_prob`` are **one parallel pass
    per flow** (log p(x) = log p_U(z) − Σ_{k,t} α^k_t); ``log_prob`` of outside audio is
    **sequential** (T steps per flow, exact).

    Args:
        num_flows: K.
        base: ``"normal"`` or ``"logistic"``.
        residual_channels: width of each flow's residual stream.
        gate_channels: channels of each gate half.
        skip_channels: width of the skips and the head.
        kernel_size: taps per dilated convolution.
        dilation_cycles: repeats of 1..``max_dilation`` per flow.
        max_dilation: largest dilation.
        dilations: explicit dilations per flow (override the two above).
        gated: Kingma's gated update ``Gated()`` instead of ``Affine``.
        mel_channels: log-mel channels of the conditioning (0: unconditional).
        hop_length: samples per mel frame.
        upsample: ``"repeat"`` or ``"transposed"``.
        log_scale_bound: soft bound of each flow's |α| (affine update).
        linear_order: a causal linear shortcut of order q on the first flow's shift,
            μ¹_t += Σ_k b_k z_{t−k}: with α¹ = log σ the first flow is then a moving-average
            filter of the noise, MA(q), which :func:`~invertible.make_wavenet_student` sets
            to the AR(p) model's impulse response (0: none).
        length: default sample length T.

    Example:
        >>> import torch
        >>> student = WaveNetIAF(num_flows=2, residual_channels=8, skip_channels=8,
        ...                      dilations=[1, 2])
        >>> x, log_p = student.sample_and_log_prob(2, length=40)  # one parallel pass
        >>> torch.allclose(student.log_prob(x), log_p, atol=1e-4)  # sequential inverse
        True
    """

    def __init__(
        self,
        *,
        num_flows: int = 4,
        base: str = "normal",
        residual_channels: int = 64,
        gate_channels: int | None = None,
        skip_channels: int = 64,
        kernel_size: int = 2,
        dilation_cycles: int = 1,
        max_dilation: int = 512,
        dilations: Sequence[int] | None = None,
        gated: bool = False,
        mel_channels: int = 0,
        hop_length: int = 256,
        upsample: str = "repeat",
        log_scale_bound: float | None = 12.0,
        linear_order: int = 0,
        length: int = 16000,
    ) -> None:
        if linear_order and gated:
            raise ValueError("linear_order: the linear shortcut adds to μ, so it needs gated=False")
        flows = [
            WaveNetAutoregressive(
                mode="iaf",
                elementwise=Gated() if gated else Affine(log_scale_bound, shift="data"),
                residual_channels=residual_channels,
                gate_channels=gate_channels,
                skip_channels=skip_channels,
                kernel_size=kernel_size,
                dilations=_dilations(dilations, dilation_cycles, max_dilation),
                mel_channels=mel_channels,
                hop_length=hop_length,
                upsample=upsample,
                linear_order=linear_order if k == 0 else 0,
            )
            for k in range(num_flows)
        ]
        super().__init__(
            Compose(flows),
            _sequence_base(base, _BASES, length),
            mel_channels=mel_channels,
            hop_length=hop_length,
        )
        self.config = {
            "num_flows": num_flows,
            "base": base,
            "residual_channels": residual_channels,
            "gate_channels": gate_channels,
            "skip_channels": skip_channels,
            "kernel_size": kernel_size,
            "dilation_cycles": dilation_cycles,
            "max_dilation": max_dilation,
            "dilations": None if dilations is None else [int(d) for d in dilations],
            "gated": gated,
            "mel_channels": mel_channels,
            "hop_length": hop_length,
            "upsample": upsample,
            "log_scale_bound": log_scale_bound,
            "linear_order": linear_order,
            "length": length,
        }

    def conditionals(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""(μ^tot_t, log s^tot_t) of p_S(x_t | z_{<t}, c), each ``[batch, T]``: one pass.

        x = z·exp(log s^tot) + μ^tot with log s^tot = Σ_k α^k and μ^tot accumulated
        through the flows (μ ← μ·exp(α^k) + μ^k), what ClariNet's per-step KL needs.

        Example:
            >>> import torch
            >>> student = WaveNetIAF(num_flows=2, residual_channels=4, skip_channels=4,
            ...                      dilations=[1])
            >>> z = torch.randn(1, 9)
            >>> shift, log_scale = student.conditionals(z)
            >>> torch.allclose(z * log_scale.exp() + shift, student.transform(z)[0])
            True
        """
        values = z
        shift, log_scale = torch.zeros_like(z), torch.zeros_like(z)
        for flow in self.transform.transforms:  # type: ignore[union-attr]
            mu_k, alpha_k = flow.conditionals(values, context)
            values = values * alpha_k.exp() + mu_k
            shift = shift * alpha_k.exp() + mu_k
            log_scale = log_scale + alpha_k
        return shift, log_scale


class LinearPredictionAR(SequenceFlow):
    r"""The classical linear-prediction baseline AR(p) as a flow.

    x_t = Σ_{k=1}^p a_k x_{t−k} + c + σ·u_t, u_t ~ N(0, 1) (``base="normal"``) or Laplace
    (``base="laplace"``, σ = the Laplace scale b), with x_{<0} = 0 (p = 0: the i.i.d.
    model, mean c): a causal linear
    convolution and a learned scale, i.e. a :class:`~invertible.WaveNetAutoregressive`
    in MAF mode without residual layers. ``log_prob`` is one parallel pass (the same code
    that evaluates the teacher); ``sample`` is sequential. :meth:`fit_least_squares` sets
    (a, c) by least squares and σ by maximum likelihood given them (Gaussian: RMS of the
    residuals; Laplace: their mean absolute value).

    Args:
        order: p.
        base: ``"normal"`` or ``"laplace"``.
        length: default sample length T.

    Example:
        >>> import torch
        >>> x = torch.randn(1, 2000, dtype=torch.float64).cumsum(1) * 0.01
        >>> model = LinearPredictionAR(order=2).double().fit_least_squares(x)
        >>> round(model.coefficients.tolist()[0], 1)
        1.0
    """

    def __init__(self, order: int = 32, *, base: str = "normal", length: int = 16000) -> None:
        if order < 0:
            raise ValueError(f"order: expected >= 0, got {order}")
        layer = WaveNetAutoregressive(
            mode="maf", elementwise=Affine(None, shift="data"), dilations=(), linear_order=order
        )
        super().__init__(layer, _sequence_base(base, _BASES_AR, length))
        self.config = {"order": order, "base": base, "length": length}

    @property
    def coefficients(self) -> Tensor:
        """a_1..a_p (a_k multiplies x_{t−k}); empty for order 0."""
        net = self.transform.net
        if not net.linear_order:  # type: ignore[union-attr]
            return net.out_bias.new_zeros(0)  # type: ignore[union-attr]
        return net.linear_weight  # type: ignore[return-value]

    @property
    def log_scale(self) -> Tensor:
        """Log σ of the residual law."""
        return self.transform.net.out_bias[1]  # type: ignore[index]

    def fit_least_squares(
        self, utterances: Tensor | Iterable[Tensor] | None, fit: dict[str, Any] | None = None
    ) -> LinearPredictionAR:
        """Fit (a, c) by least squares on ``utterances`` and σ by maximum likelihood.

        Args:
            utterances: a ``[N, T]`` tensor or an iterable of 1-D waveforms (any lengths).
            fit: a :func:`linear_prediction_least_squares` result of this order to use
                instead (models of one order share one fit; ``utterances`` is then unused).

        Returns:
            ``self``, fitted.
        """
        laplace = isinstance(self.base.element, StandardLaplace)  # type: ignore[union-attr]
        if fit is None:
            fit = linear_prediction_least_squares(utterances, self.config["order"])  # type: ignore[arg-type]
        scale = fit["mean_abs_residual"] if laplace else math.sqrt(fit["mean_square_residual"])
        net = self.transform.net  # type: ignore[union-attr]
        if self.config["order"]:
            net.set_linear_prediction(fit["coefficients"], fit["bias"])
        with torch.no_grad():
            net.out_bias.zero_()
            if not self.config["order"]:  # order 0: the mean is the output bias itself
                net.out_bias[0] = fit["bias"]
            net.out_bias[1] = math.log(scale)
        return self


def _as_rows(utterances: Tensor | Iterable[Tensor]) -> list[Tensor]:
    rows = list(utterances)
    out = []
    for i, row in enumerate(rows):
        row = torch.as_tensor(row, dtype=torch.float64).flatten()
        if row.numel() == 0 or not bool(torch.isfinite(row).all()):
            raise ValueError(f"utterances[{i}]: empty or not finite")
        out.append(row)
    if not out:
        raise ValueError("utterances: need at least one waveform")
    return out


def _lag_design(x: Tensor, order: int) -> Tensor:
    """Rows [x_{t−1}, ..., x_{t−p}, 1] for t = 0..T−1 (x_{<0} = 0), ``[T, p + 1]``."""
    if order == 0:
        return x.new_ones(x.numel(), 1)
    lags = F.pad(x, (order, 0)).unfold(0, order, 1)[: x.numel()].flip(1)
    return torch.cat([lags, lags.new_ones(x.numel(), 1)], dim=1)


def linear_prediction_least_squares(
    utterances: Tensor | Iterable[Tensor], order: int
) -> dict[str, Any]:
    r"""Least-squares linear prediction of order p over utterances, in float64.

    Minimises Σ_n Σ_t (x_t − Σ_k a_k x_{t−k} − c)² with x_{<0} = 0 in each utterance (the
    likelihood the flows compute), by the normal equations accumulated per utterance.

    Returns:
        ``coefficients`` (a_1..a_p, tensor), ``bias`` (c), ``mean_square_residual`` and
        ``mean_abs_residual`` per sample.

    Example:
        >>> import torch
        >>> x = torch.zeros(100, dtype=torch.float64); x[0] = 1.0
        >>> for t in range(1, 100): x[t] = 0.5 * x[t - 1]
        >>> fit = linear_prediction_least_squares([x], 1)
        >>> round(float(fit["coefficients"][0]), 6)
        0.5
    """
    rows = _as_rows(utterances)
    gram = torch.zeros(order + 1, order + 1, dtype=torch.float64)
    moment = torch.zeros(order + 1, dtype=torch.float64)
    for x in rows:
        design = _lag_design(x, order)
        gram += design.T @ design
        moment += design.T @ x
    # A tiny ridge keeps silent or very short data solvable; it is negligible otherwise.
    ridge = 1e-10 * gram.diagonal().mean().clamp(min=1e-30)
    weights = torch.linalg.solve(gram + ridge * torch.eye(order + 1, dtype=gram.dtype), moment)
    square = absolute = 0.0
    count = 0
    for x in rows:
        residual = x - _lag_design(x, order) @ weights
        square += float(residual.square().sum())
        absolute += float(residual.abs().sum())
        count += x.numel()
    return {
        "coefficients": weights[:order].clone(),
        "bias": float(weights[order]),
        "mean_square_residual": square / count,
        "mean_abs_residual": absolute / count,
    }


def init_linear_prediction(
    flow: WaveNetMAF, utterances: Tensor | Iterable[Tensor]
) -> dict[str, Any]:
    """Start a teacher at the AR(p) likelihood: least-squares shortcut and residual scale.

    Sets the linear shortcut (a, c) of a :class:`WaveNetMAF` built with ``linear_order=p``
    by least squares, and the log-scale output bias to the residual scale (RMS for a
    Gaussian base, RMS·√3/π for a logistic one), so that with the conditioner's zero last
    layer the fresh teacher *is* the Gaussian (logistic) AR(p) model.

    Returns:
        The least-squares fit (see :func:`linear_prediction_least_squares`).

    Example:
        >>> import torch
        >>> teacher = WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1],
        ...                      linear_order=2)
        >>> x = torch.randn(1, 500).cumsum(1) * 0.01
        >>> _ = init_linear_prediction(teacher, x)
        >>> bool(teacher.log_prob(x).mean() / 500 > 2.0)
        True
    """
    layer: WaveNetAutoregressive = flow.transform  # type: ignore[assignment]
    order = layer.net.linear_order
    if not order:
        raise ValueError("flow: build the teacher with linear_order=p to use the shortcut")
    fit = linear_prediction_least_squares(utterances, order)
    layer.net.set_linear_prediction(fit["coefficients"], fit["bias"])
    _set_residual_scale(flow, layer, fit)
    return fit


def _set_residual_scale(flow: SequenceFlow, layer: WaveNetAutoregressive, fit: dict) -> None:
    """Zero the head's bias but for the log-scale: the least-squares residual scale (RMS for
    a Gaussian base, RMS·√3/π for a logistic one), before the soft clamp.
    """
    scale = math.sqrt(fit["mean_square_residual"])
    if isinstance(flow.base.element, StandardLogistic):  # type: ignore[union-attr]
        scale *= math.sqrt(3.0) / math.pi  # logistic scale of that standard deviation
    log_scale = math.log(scale)
    bound = layer.elementwise.log_scale_bound  # type: ignore[union-attr]
    if bound is not None:
        if abs(log_scale) >= bound:
            raise ValueError(f"residual log-scale {log_scale:.2f} is outside ±{bound}")
        log_scale = bound * math.atanh(log_scale / bound)  # undo the soft clamp
    with torch.no_grad():
        layer.net.head_bias.zero_()
        layer.net.head_bias[1] = log_scale


def impulse_response(coefficients: Tensor, length: int) -> Tensor:
    r"""The first ``length`` taps h_0..h_{n−1} of the all-pole filter 1/A(z) of an AR(p).

    h_0 = 1 and h_j = Σ_{k=1}^{p} a_k h_{j−k}: the AR(p) process x = h ∗ e driven by its
    residual e, so a moving average of ``length`` taps approximates it.

    Example:
        >>> impulse_response(torch.tensor([0.5]), 4).tolist()
        [1.0, 0.5, 0.25, 0.125]
    """
    a = coefficients.detach().double().flatten().tolist()
    h = [1.0]
    for j in range(1, length):
        h.append(sum(a[k - 1] * h[j - k] for k in range(1, min(len(a), j) + 1)))
    return torch.tensor(h, dtype=torch.float64)


def init_moving_average(
    student: WaveNetIAF, utterances: Tensor | Iterable[Tensor], order: int = 32
) -> dict[str, Any]:
    r"""Start a student at the AR(p) model's spectrum: its first flow becomes x = σ·(h ∗ z).

    Fits an AR(``order``) by least squares, and sets the first flow of a
    :class:`WaveNetIAF` built with ``linear_order=q`` to the moving average
    x_t = σ·(z_t + Σ_{k=1}^{q} h_k z_{t−k}) + m, h the AR model's impulse response
    (:func:`impulse_response`), σ its residual scale and m its mean; the other flows stay
    the identity. A fresh student (x = z) is white noise far louder than speech, whose
    samples the teacher scores hundreds of nats per sample below real audio.

    Returns:
        The least-squares fit (see :func:`linear_prediction_least_squares`).

    Example:
        >>> import torch
        >>> student = WaveNetIAF(num_flows=1, residual_channels=4, skip_channels=4,
        ...                      dilations=[1], linear_order=64)
        >>> e = 0.01 * torch.randn(1, 1, 20000, generator=torch.Generator().manual_seed(0))
        >>> kernel = (0.9 ** torch.arange(200.0)).flip(0).view(1, 1, -1)
        >>> x = torch.nn.functional.conv1d(e, kernel, padding=199)[0, :, :20000]  # AR(1)
        >>> fit = init_moving_average(student, x, order=1)
        >>> round(float(fit["coefficients"][0]), 2)
        0.9
        >>> round(float(student.sample(16, length=4000).std() / x.std()), 1)
        1.0
    """
    first: WaveNetAutoregressive = student.transform.transforms[0]  # type: ignore[union-attr,index]
    taps = first.net.linear_order
    if not taps:
        raise ValueError("student: build it with linear_order=q to start from the AR model")
    fit = linear_prediction_least_squares(utterances, order)
    _set_residual_scale(student, first, fit)
    with torch.no_grad():
        sigma = math.exp(float(first.conditionals(torch.zeros(1, 1))[1]))
    gain = 1.0 - float(fit["coefficients"].sum())
    mean = fit["bias"] / gain if abs(gain) > 1e-3 else 0.0
    taps_h = impulse_response(fit["coefficients"], taps + 1)[1:]
    first.net.set_linear_prediction(sigma * taps_h, mean)
    return fit
