r"""Sequence flows on waveforms: an elementwise map whose parameters come from a causal WaveNet.

The event is a whole sequence x_1..x_T (tensors ``[batch, T]``, T free); the ordering is
time. As in :mod:`invertible.transforms.autoregressive`, the layer computes
x_t = g(u_t; θ_t) with one of the library's elementwise maps g
(:class:`~invertible.transforms.elementwise.Affine` or ``Gated``), and the parameters θ_t
come from a :class:`~invertible.nn.CausalWaveNet` over the preceding samples:

* MAF mode (the WaveNet teacher): θ_t = θ_t(x_{<t}, c). Density (x → u) is one parallel
  pass; sampling (u → x) is sequential, T steps.
* IAF mode (the Parallel WaveNet student): θ_t = θ_t(u_{<t}, c). Sampling (u → x) is one
  parallel pass, and so is the density of its own samples; the density of outside audio
  (x → u) is sequential.

The sequential direction is exact and, by default, incremental (ring buffers, about one
network pass in T small steps; see :meth:`invertible.nn.CausalWaveNet.autoregress`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from invertible.core import Transform
from invertible.nn.wavenet import CausalWaveNet
from invertible.transforms.elementwise import Affine, ElementwiseMap

__all__ = ["WaveNetAutoregressive"]


def check_sequence(name: str, value: Tensor) -> None:
    """Raise naming the problem unless ``value`` is a floating ``[batch, T]`` tensor."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.dim() != 2:
        hint = ""
        if value.dim() == 1:
            hint = f"; a single sequence needs a batch dimension: use {name}.unsqueeze(0)"
        elif value.dim() == 3 and value.shape[1] == 1:
            hint = f"; mono audio [batch, 1, T] must be squeezed: use {name}.squeeze(1)"
        raise ValueError(
            f"{name}: expected a batch of sequences of shape [batch, T], "
            f"got {list(value.shape)}{hint}"
        )
    if value.shape[1] == 0:
        raise ValueError(f"{name}: the sequences are empty (T = 0); give at least one sample")
    if not value.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor, got {value.dtype}; use {name}.float()"
        )


class WaveNetAutoregressive(Transform):
    r"""Autoregressive sequence layer with a causal WaveNet conditioner, MAF or IAF mode.

    With the default :class:`~invertible.transforms.elementwise.Affine` map, forward
    (u → x) is x_t = u_t·exp(α_t) + μ_t, log|det ∂x/∂u| = Σ_t α_t, and inverse (x → u) is
    u_t = (x_t − μ_t)·exp(−α_t), log|det ∂u/∂x| = −Σ_t α_t, where (μ_t, α_t) are the
    outputs at time t of a :class:`~invertible.nn.CausalWaveNet` (which sees samples
    before t only, and the whole conditioning c):

    * ``mode="maf"`` (the WaveNet teacher, van den Oord et al. 2016, as a flow):
      μ_t, α_t = f(x_{<t}, c). ``inverse`` (x → u, density) is **one parallel pass**;
      ``forward`` (u → x, sampling) is **sequential** over the T samples.
    * ``mode="iaf"`` (one flow of the Parallel WaveNet student, van den Oord et al. 2018;
      ClariNet, Ping et al. 2019): μ_t, α_t = f(u_{<t}, c). ``forward`` (u → x, sampling,
      and the density of its own samples) is **one parallel pass**; ``inverse`` (x → u,
      density of outside audio) is **sequential**.

    ``Gated()`` gives x = σ·u + (1 − σ)·m. The log-scale bound must allow audio: the
    16-bit step on [-1, 1] is 3·10⁻⁵ (log −10.4), so the presets use ``Affine(12.0, shift="data")``
    (|α| < 12) rather than the library default 5, which would cap a one-layer teacher at
    about 5 − ½log(2πe) ≈ 3.6 nats per sample.

    ``sequential="incremental"`` (default) or ``"naive"`` (the whole network per step);
    the attribute can be changed at any time. A fresh layer is the identity (the
    conditioner's last layer starts at zero). Context: a log-mel spectrogram
    ``[batch, mel_channels, frames]`` with frames·hop_length ≥ T.

    Args:
        mode: ``"maf"`` or ``"iaf"``.
        elementwise: the elementwise map (default ``Affine(12.0, shift="data")``: the
            linear shortcut predicts μ in the units of the audio).
        sequential: ``"incremental"`` or ``"naive"``.
        residual_channels: see :class:`~invertible.nn.CausalWaveNet` (all the following).
        gate_channels: channels of each half of the gate.
        skip_channels: width of the skip sum and the head.
        kernel_size: taps of each dilated convolution.
        dilations: dilation per residual layer (default 1..512 twice).
        mel_channels: conditioning channels (0: unconditional).
        hop_length: samples per conditioning frame.
        upsample: ``"repeat"`` or ``"transposed"``.
        linear_order: order of the linear-prediction shortcut on μ (``Affine`` only).

    Example:
        >>> import torch
        >>> layer = WaveNetAutoregressive(residual_channels=8, skip_channels=8, dilations=[1, 2])
        >>> _ = torch.nn.init.normal_(layer.net.out.weight, std=0.1)
        >>> x = torch.randn(2, 20)
        >>> u, ladj = layer.inverse(x)  # one parallel pass
        >>> x_back, ladj_fwd = layer(u)  # sequential, T steps
        >>> torch.allclose(x_back, x, atol=1e-5), torch.allclose(ladj_fwd, -ladj, atol=1e-5)
        (True, True)
    """

    def __init__(
        self,
        *,
        mode: str = "maf",
        elementwise: ElementwiseMap | None = None,
        sequential: str = "incremental",
        residual_channels: int = 64,
        gate_channels: int | None = None,
        skip_channels: int = 128,
        kernel_size: int = 2,
        dilations: Sequence[int] | None = None,
        mel_channels: int = 0,
        hop_length: int = 256,
        upsample: str = "repeat",
        linear_order: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ("maf", "iaf"):
            raise ValueError(f"mode: expected 'maf' or 'iaf', got {mode!r}")
        if sequential not in ("incremental", "naive"):
            raise ValueError(f"sequential: expected 'incremental' or 'naive', got {sequential!r}")
        self.mode, self.sequential = mode, sequential
        self.elementwise = elementwise if elementwise is not None else Affine(12.0, shift="data")
        if linear_order and not isinstance(self.elementwise, Affine):
            raise ValueError("linear_order: the linear shortcut adds to μ, so it needs Affine")
        self.net = CausalWaveNet(
            self.elementwise.num_params,
            residual_channels=residual_channels,
            gate_channels=gate_channels,
            skip_channels=skip_channels,
            kernel_size=kernel_size,
            dilations=dilations,
            mel_channels=mel_channels,
            hop_length=hop_length,
            upsample=upsample,
            linear_order=linear_order,
        )

    @property
    def receptive_field(self) -> int:
        """Past samples each step sees (see :attr:`CausalWaveNet.receptive_field`)."""
        return self.net.receptive_field

    def _check(self, name: str, values: Tensor, context: Tensor | None) -> None:
        check_sequence(name, values)
        self.net.check_context(context, values.shape[0], values.shape[1])

    def conditionals(self, values: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r"""Per-step shift and log-scale, given the conditioning side, in one parallel pass.

        ``values`` is x (output side) in MAF mode and u (input side) in IAF mode; returns
        ``(shift, log_scale)``, each ``[batch, T]``, with x_t = u_t·exp(log_scale_t) +
        shift_t. For the teacher these are (μ_t, log σ_t) of p(x_t | x_{<t}, c), what
        ClariNet's per-step KL needs.

        Example:
            >>> import torch
            >>> layer = WaveNetAutoregressive(residual_channels=4, skip_channels=4, dilations=[1])
            >>> shift, log_scale = layer.conditionals(torch.randn(3, 7))
            >>> shift.shape, bool((log_scale == 0).all())  # a fresh layer is the identity
            (torch.Size([3, 7]), True)
        """
        self._check("values", values, context)
        params = self.net(values, context)
        # The maps are affine in u: at u = 0 they give the shift, their log-derivative the scale.
        return self.elementwise(torch.zeros_like(values), params)

    def _parallel(
        self, values: Tensor, context: Tensor | None, *, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        params = self.net(values, context)
        step_map = self.elementwise.inverse if inverse else self.elementwise.forward
        out, ladj = step_map(values, params)
        return out, ladj.sum(dim=1)

    def _sequential(
        self, values: Tensor, context: Tensor | None, *, inverse: bool
    ) -> tuple[Tensor, Tensor]:
        step_map = self.elementwise.inverse if inverse else self.elementwise.forward
        steps = values.t().contiguous().unbind(0)  # time t: a contiguous [batch]

        def step(t: int, params: Tensor) -> tuple[Tensor, Tensor]:
            return step_map(steps[t], params)

        B, T = values.shape
        out, ladjs = self.net.autoregress(step, B, T, context, like=values, method=self.sequential)
        ladj = torch.stack(ladjs, dim=1).sum(dim=1) if T else values.new_zeros(B)
        return out, ladj

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """U → x: one parallel pass in IAF mode, T sequential steps in MAF mode."""
        self._check("z", z, context)
        if self.mode == "iaf":
            return self._parallel(z, context, inverse=False)
        return self._sequential(z, context, inverse=False)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """X → u: one parallel pass in MAF mode, T sequential steps in IAF mode."""
        self._check("x", x, context)
        if self.mode == "maf":
            return self._parallel(x, context, inverse=True)
        return self._sequential(x, context, inverse=True)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"mode={self.mode!r}, sequential={self.sequential!r}"
