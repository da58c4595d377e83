r"""A causal WaveNet conditioner for sequence flows (van den Oord et al. 2016).

The network maps a waveform x of shape ``[batch, T]`` to ``num_params`` parameters per
sample, ``[batch, T, num_params]``, such that the parameters at time t depend on
x_{<t} only (and on the whole local conditioning, if any):

* the input is shifted right by one sample, s_t = x_{t-1} (s_0 = 0);
* an input 1×1 convolution lifts s to ``residual_channels``;
* each residual layer l applies a causal dilated convolution (left padding (k-1)·d_l),
  the gated unit z = tanh(a) ⊙ σ(b), and one 1×1 convolution producing both the residual
  update and the skip contribution: h ← h + W_res z, skip ← skip + W_skip z;
* the head is ReLU → 1×1 → ReLU → 1×1 on the summed skips (its last layer starts at 0,
  so a fresh conditioner outputs only its bias: a fresh flow layer is the identity);
* optionally a linear-prediction shortcut adds Σ_k a_k x_{t-k} + c to parameter 0
  (a causal linear convolution of order p; see :meth:`CausalWaveNet.set_linear_prediction`).

Receptive field: R = 1 + (k-1)·Σ_l d_l samples (x_{t-R}, ..., x_{t-1}), or p if the
linear shortcut reaches further.

The sequential direction (:meth:`CausalWaveNet.autoregress`) is exact and incremental
(Ramachandran et al. 2017, *Fast generation for convolutional autoregressive models*):
each dilated layer keeps a ring buffer of its last (k-1)·d+1 inputs — a Python list
written at slot t mod size and read at slot (t - j·d) mod size, so nothing is shifted —
and each activation is computed once, so generating T samples costs about one network
pass spread over T steps. Per step and layer: one matmul for all taps of the dilated
convolution and one for the residual; the conditioning of *all* layers and the skips of
*all* layers take one matmul each per step (the parallel pass computes residual and skip
with one 1×1 convolution per layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invertible.tensors import full_precision

__all__ = ["CausalWaveNet", "wavenet_dilations"]

Step = Callable[[int, Tensor], tuple[Tensor, Any]]


def wavenet_dilations(cycles: int = 2, max_dilation: int = 512) -> list[int]:
    """WaveNet's dilation schedule: 1, 2, 4, ..., ``max_dilation``, repeated ``cycles`` times.

    Example:
        >>> wavenet_dilations(2, 4)
        [1, 2, 4, 1, 2, 4]
    """
    if max_dilation < 1 or max_dilation & (max_dilation - 1):
        raise ValueError(f"max_dilation: expected a power of two >= 1, got {max_dilation}")
    cycle = [2**i for i in range(max_dilation.bit_length())]
    return cycle * cycles


class CausalWaveNet(nn.Module):
    r"""Causal dilated-convolution conditioner (WaveNet, van den Oord et al. 2016).

    ``net(x, context) -> params[batch, T, num_params]`` with params_t a function of
    x_{<t} and of the (whole) context. Gated residual layer l with dilation d_l:

    .. math::
        a, b = W_l * h + V_l c,\quad z = \tanh(a)\odot\sigma(b),\quad
        h \leftarrow h + R_l z,\quad \mathrm{skip} \mathrel{+}= S_l z

    Local conditioning (``mel_channels > 0``): a log-mel spectrogram c of shape
    ``[batch, mel_channels, frames]`` is upsampled to the sample rate by repeating each
    frame ``hop_length`` times (``upsample="repeat"``) or by a learned transposed
    convolution of stride ``hop_length`` (``upsample="transposed"``); it needs
    frames·hop_length ≥ T (extra samples are cut). Unconditional when ``mel_channels=0``.

    ``dilations=()`` gives a network without residual layers whose output is a learned
    constant (plus the linear shortcut): the classical AR(p) linear predictor.

    Args:
        num_params: parameters per sample (2 for an affine map).
        residual_channels: width of the residual stream.
        gate_channels: channels of tanh and of sigmoid each (default: residual width).
        skip_channels: width of the skip sum and of the head.
        kernel_size: taps k of each dilated convolution.
        dilations: dilation per residual layer (default: 1..512 twice, see
            :func:`wavenet_dilations`).
        mel_channels: channels of the local conditioning (0: unconditional).
        hop_length: samples per conditioning frame.
        upsample: ``"repeat"`` or ``"transposed"``.
        linear_order: order p of the linear-prediction shortcut on parameter 0 (0: none).

    Example:
        >>> import torch
        >>> net = CausalWaveNet(2, residual_channels=8, skip_channels=8, dilations=[1, 2])
        >>> net.receptive_field
        4
        >>> net(torch.randn(3, 10)).shape
        torch.Size([3, 10, 2])
    """

    def __init__(
        self,
        num_params: int = 2,
        *,
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
        dilations = wavenet_dilations() if dilations is None else [int(d) for d in dilations]
        if kernel_size < 1 or any(d < 1 for d in dilations):
            raise ValueError("kernel_size and every dilation must be >= 1")
        if upsample not in ("repeat", "transposed"):
            raise ValueError(f"upsample: expected 'repeat' or 'transposed', got {upsample!r}")
        if mel_channels and hop_length < 1:
            raise ValueError(f"hop_length: expected >= 1, got {hop_length}")
        C, G, S = residual_channels, gate_channels or residual_channels, skip_channels
        self.num_params, self.kernel_size, self.dilations = num_params, kernel_size, dilations
        self.residual_channels, self.gate_channels, self.skip_channels = C, G, S
        self.mel_channels, self.hop_length, self.upsample = mel_channels, hop_length, upsample
        self.linear_order = linear_order
        if dilations:
            self._build_layers()
        elif mel_channels:
            raise ValueError("mel_channels needs at least one residual layer (dilations)")
        else:  # no residual layers: the output is a learned constant (plus the shortcut)
            self.out_bias = nn.Parameter(torch.zeros(num_params))
        if linear_order:
            # linear_weight[k-1] is a_k, the coefficient of x_{t-k}; linear_bias is c.
            self.linear_weight = nn.Parameter(torch.zeros(linear_order))
            self.linear_bias = nn.Parameter(torch.zeros(()))

    def _build_layers(self) -> None:
        C, G, S = self.residual_channels, self.gate_channels, self.skip_channels
        k, L, mels = self.kernel_size, len(self.dilations), self.mel_channels
        self.input = nn.Conv1d(1, C, 1)
        self.dilated = nn.ModuleList(nn.Conv1d(C, 2 * G, k) for _ in range(L))
        self.res_skip = nn.ModuleList(nn.Conv1d(G, C + S, 1) for _ in range(L))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(S, S, 1), nn.ReLU())
        self.out = nn.Conv1d(S, self.num_params, 1)
        # A zero last layer: a fresh conditioner outputs its bias, a fresh flow is the identity.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if mels:
            if self.upsample == "transposed":
                hop = self.hop_length
                self.upsampler = nn.ConvTranspose1d(mels, mels, hop, stride=hop)
            # The conditioning of all layers: one 1×1 convolution to L·2G channels.
            self.cond = nn.Conv1d(mels, L * 2 * G, 1)

    # -- properties -----------------------------------------------------------------------
    @property
    def head_bias(self) -> Tensor:
        """The output's bias: params_t of a fresh network (its last layer starts at zero)."""
        return self.out.bias if self.dilations else self.out_bias

    @property
    def receptive_field(self) -> int:
        """Samples of the past that params_t can see: 1 + (k-1)·Σ d (or p, if larger)."""
        conv = 1 + (self.kernel_size - 1) * sum(self.dilations) if self.dilations else 0
        return max(conv, self.linear_order)

    def set_linear_prediction(self, coefficients: Tensor, bias: float | Tensor = 0.0) -> None:
        """Set the linear shortcut: parameter 0 gets Σ_k a_k x_{t-k} + c, a = ``coefficients``."""
        if not self.linear_order:
            raise ValueError("this network has no linear shortcut; build it with linear_order=p")
        coefficients = torch.as_tensor(coefficients).flatten()
        if coefficients.numel() != self.linear_order:
            raise ValueError(
                f"coefficients: expected {self.linear_order} values (a_1..a_p), "
                f"got {coefficients.numel()}"
            )
        with torch.no_grad():
            self.linear_weight.copy_(coefficients)
            self.linear_bias.copy_(torch.as_tensor(bias).reshape(()))

    # -- validation -----------------------------------------------------------------------
    def check_context(self, context: Tensor | None, batch: int, length: int) -> None:
        """Raise a ``ValueError`` naming the problem if ``context`` does not fit."""
        if not self.mel_channels:
            if context is not None:
                raise ValueError(
                    "context: this network is unconditional (mel_channels=0) but a context "
                    "was given; build it with mel_channels=n_mels to condition it"
                )
            return
        if context is None:
            raise ValueError(
                f"context: this network is conditioned on a log-mel spectrogram and needs a "
                f"context of shape [batch, {self.mel_channels}, frames]"
            )
        if context.dim() != 3 or context.shape[1] != self.mel_channels:
            raise ValueError(
                f"context: expected shape [batch, {self.mel_channels}, frames], "
                f"got {list(context.shape)}"
            )
        if context.shape[0] != batch:
            raise ValueError(
                f"context: expected {batch} rows (one per sequence), got {context.shape[0]}"
            )
        if context.shape[2] * self.hop_length < length:
            raise ValueError(
                f"context: {context.shape[2]} frames × hop {self.hop_length} = "
                f"{context.shape[2] * self.hop_length} samples cover less than T = {length}"
            )

    # -- the parallel pass ------------------------------------------------------------------
    def _upsampled(self, context: Tensor, length: int) -> Tensor:
        """The conditioning at the sample rate, ``[batch, channels, T]``."""
        if self.upsample == "repeat":
            return context.repeat_interleave(self.hop_length, dim=2)[..., :length]
        return self.upsampler(context)[..., :length]

    def _linear(self, x: Tensor) -> Tensor:
        """Σ_k a_k x_{t-k} + c for every t, ``[batch, T]`` (a causal linear convolution)."""
        p = self.linear_order
        padded = F.pad(x, (p, 0))[:, None, :]
        kernel = self.linear_weight.flip(0).view(1, 1, p)
        # In the data's precision even under autocast: a linear prediction of audio from
        # its past is most of the mean, and bf16's 8-bit mantissa would round it visibly.
        with full_precision():
            out = F.conv1d(padded.to(kernel.dtype), kernel)
        return out[:, 0, : x.shape[1]].to(x.dtype) + self.linear_bias

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Parameters of every step, ``[batch, T, num_params]``, in one parallel pass.

        Under autocast the convolutions run in the autocast precision; the output is
        returned in the dtype of ``x`` (and the linear shortcut computed in it), so the
        soft clamp, the elementwise maps and the log-determinants stay in full precision.
        """
        up = (
            self._upsampled(context, x.shape[1])
            if self.mel_channels and context is not None
            else None
        )
        return self._params(x, up)

    def _params(self, x: Tensor, up: Tensor | None) -> Tensor:
        """:meth:`forward` with the conditioning already at the sample rate (or ``None``)."""
        B, T = x.shape
        if self.dilations:
            params = self._network(x, up).transpose(1, 2)
        else:
            params = self.out_bias.expand(B, T, self.num_params)
        params = params.to(x.dtype)
        if self.linear_order:
            params = torch.cat([params[..., :1] + self._linear(x)[..., None], params[..., 1:]], -1)
        return params

    def _network(self, x: Tensor, up: Tensor | None) -> Tensor:
        shifted = F.pad(x, (1, -1))[:, None, :]  # s_t = x_{t-1}: causality
        h = self.input(shifted)
        G2, C = 2 * self.gate_channels, self.residual_channels
        skip: Tensor | float = 0.0
        for i, (conv, rs, d) in enumerate(zip(self.dilated, self.res_skip, self.dilations)):
            padded = F.pad(h, ((self.kernel_size - 1) * d, 0))  # causal: left padding only
            a = F.conv1d(padded, conv.weight, conv.bias, dilation=d)
            if up is not None:
                # This layer's slice of the conditioning projection: [batch, 2G, T] at a
                # time, never all L layers' [batch, L·2G, T] at once.
                rows = slice(i * G2, (i + 1) * G2)
                a = a + F.conv1d(up, self.cond.weight[rows], self.cond.bias[rows])
            tanh, gate = a.chunk(2, dim=1)
            out = rs(tanh.tanh() * gate.sigmoid())  # residual and skip: one 1×1 convolution
            h = h + out[:, :C]
            skip = skip + out[:, C:]
        return self.out(self.head(skip))

    # -- the sequential pass ----------------------------------------------------------------
    def autoregress(
        self,
        step: Step,
        batch: int,
        length: int,
        context: Tensor | None = None,
        *,
        like: Tensor | None = None,
        method: str = "incremental",
    ) -> tuple[Tensor, list[Any]]:
        r"""Generate T values one at a time, in time order (the step protocol).

        At t = 0..T-1, the parameters of step t (computed from the values already
        generated, and the context) are passed to ``step(t, params[batch, num_params])
        -> (value_t[batch], extra)``; ``value_t`` is fed back as input t. Returns the values
        ``[batch, T]`` and the T extras in time order. This is MAF sampling (``step`` = the
        map u → x) and IAF inversion (``step`` = x → u); it is the protocol of
        :meth:`invertible.nn.MADE.autoregress`, with the ordering fixed to time.

        ``method="incremental"`` (default) uses one ring buffer per dilated layer and
        computes every activation once: about one network pass in T small steps.
        ``method="naive"`` re-runs the whole network on the last R+1 samples at every step
        (T·R times the work of one pass); it is kept for checks and benchmarks. Both are
        differentiable.

        Example:
            >>> import torch
            >>> net = CausalWaveNet(1, residual_channels=4, skip_channels=4, dilations=[1])
            >>> values, _ = net.autoregress(lambda t, p: (p[:, 0] + 1.0, None), 2, 3)
            >>> values
            tensor([[1., 1., 1.],
                    [1., 1., 1.]], grad_fn=<...>)
        """
        if like is None:
            like = next(self.parameters())
        self.check_context(context, batch, length)
        if method not in ("naive", "incremental"):
            raise ValueError(f"method: expected 'incremental' or 'naive', got {method!r}")
        run = self._autoregress_naive if method == "naive" else self._autoregress_incremental
        # As MADE.autoregress: the T small sequential steps run in the parameters' precision
        # (they gain nothing from bf16, and their rounding would accumulate over the steps).
        with full_precision():
            return run(step, batch, length, context, like)

    def _autoregress_naive(
        self, step: Step, batch: int, length: int, context: Tensor | None, like: Tensor
    ) -> tuple[Tensor, list[Any]]:
        window = self.receptive_field + 1
        values: list[Tensor] = []
        extras: list[Any] = []
        zeros = like.new_zeros(batch, 1)
        up = None
        if context is not None:
            up = self._upsampled(context, length)
        for t in range(length):
            start = max(0, t + 1 - window)
            # The last R values and a placeholder for x_t (which params_t does not see).
            prefix = torch.cat([*(v[:, None] for v in values[start:]), zeros], dim=1)
            ctx = None if up is None else up[..., start : t + 1]
            params = self._params(prefix, ctx)[:, -1]
            value, extra = step(t, params)
            values.append(value)
            extras.append(extra)
        return torch.stack(values, dim=1), extras

    def _step_weights(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per layer: the dilated taps as one ``[k·C, 2G]`` matrix with its bias, and the
        residual 1×1 as ``[G, C]`` with its bias (transposed once per sequence).
        """
        C = self.residual_channels
        weights = []
        for conv, rs in zip(self.dilated, self.res_skip):
            # conv.weight[o, c, j] multiplies h_{t-(k-1-j)d}; taps are concatenated j = 0..k-1.
            taps = conv.weight.permute(2, 1, 0).reshape(-1, conv.weight.shape[0])
            weights.append((taps, conv.bias, rs.weight[:C, :, 0].t(), rs.bias[:C]))
        return weights

    def _skip_weights(self) -> tuple[Tensor, Tensor]:
        """The skip halves of every layer's 1×1 stacked, ``[L·G, S]``, and their summed bias:
        per step all skips come from one matmul over the concatenated gate outputs.
        """
        C = self.residual_channels
        weight = torch.cat([rs.weight[C:, :, 0].t() for rs in self.res_skip], dim=0)
        bias = torch.stack([rs.bias[C:] for rs in self.res_skip]).sum(dim=0)
        return weight, bias

    def _autoregress_incremental(
        self, step: Step, batch: int, length: int, context: Tensor | None, like: Tensor
    ) -> tuple[Tensor, list[Any]]:
        layered = bool(self.dilations)
        network = self._incremental_network(batch, length, context, like) if layered else None
        p = self.linear_order
        lp_ring: list[Tensor] = [like.new_zeros(batch)] * max(p, 1)
        previous = like.new_zeros(batch)  # s_0 = x_{-1} = 0
        values: list[Tensor] = []
        extras: list[Any] = []
        for t in range(length):
            if network is not None:
                params = network(t, previous)
            else:
                params = self.out_bias.expand(batch, self.num_params)
            if p:
                lp_ring[t % p] = previous
                # x_{t-k} = s_{t-k+1} sits in slot (t-k+1) mod p, k = 1..p.
                past = torch.stack([lp_ring[(t - k + 1) % p] for k in range(1, p + 1)], 1)
                linear = past @ self.linear_weight + self.linear_bias
                params = torch.cat([params[:, :1] + linear[:, None], params[:, 1:]], dim=1)
            value, extra = step(t, params)
            values.append(value)
            extras.append(extra)
            previous = value
        if not values:
            return like.new_zeros(batch, 0), extras
        return torch.stack(values, dim=1), extras

    def _incremental_network(
        self, batch: int, length: int, context: Tensor | None, like: Tensor
    ) -> Callable[[int, Tensor], Tensor]:
        """The network as a step function ``(t, s_t) -> params_t`` over ring buffers."""
        k, G2, last = self.kernel_size, 2 * self.gate_channels, len(self.dilations) - 1
        # Ring buffers: slot t mod size holds the layer input at time t (zeros before 0).
        sizes = [(k - 1) * d + 1 for d in self.dilations]
        zeros = like.new_zeros(batch, self.residual_channels)
        rings: list[list[Tensor]] = [[zeros] * size for size in sizes]
        layers = list(zip(self.dilations, sizes, rings, self._step_weights()))
        w_skip, b_skip = self._skip_weights()
        w_in, b_in = self.input.weight[:, 0, 0], self.input.bias
        b1, w1 = self.head[1].bias, self.head[1].weight[:, :, 0].t()
        b2, w2 = self.out.bias, self.out.weight[:, :, 0].t()
        cond_up = w_cond = None
        if context is not None:
            # [T, batch, channels], so that each step reads one contiguous slice.
            cond_up = self._upsampled(context, length).permute(2, 0, 1)
            w_cond = self.cond.weight[:, :, 0].t()

        def network(t: int, previous: Tensor) -> Tensor:
            h = torch.addmm(b_in, previous[:, None], w_in[None, :])
            cond_t = None if cond_up is None else torch.addmm(self.cond.bias, cond_up[t], w_cond)
            gated = []
            for i, (d, size, ring, (w_taps, b_taps, w_res, b_res)) in enumerate(layers):
                ring[t % size] = h
                taps = torch.cat([ring[(t - j * d) % size] for j in range(k - 1, -1, -1)], 1)
                a = torch.addmm(b_taps, taps, w_taps)  # every tap in one matmul
                if cond_t is not None:
                    a = a + cond_t[:, i * G2 : (i + 1) * G2]
                tanh, gate = a.chunk(2, dim=1)
                z = tanh.tanh() * gate.sigmoid()
                gated.append(z)
                if i < last:  # the last layer's residual output is never used
                    h = torch.addmm(b_res, z, w_res) + h
            skip = torch.addmm(b_skip, torch.cat(gated, dim=1), w_skip)  # all skips at once
            hidden = torch.addmm(b1, skip.relu(), w1).relu()
            return torch.addmm(b2, hidden, w2)

        return network

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return (
            f"num_params={self.num_params}, layers={len(self.dilations)}, "
            f"receptive_field={self.receptive_field}, mel_channels={self.mel_channels}, "
            f"linear_order={self.linear_order}"
        )
