"""Per-feature affine layers: NICE's rescaling, ActNorm and batch normalization as flows.

All three act on dimension 1 (features of a vector, or channels of an image
``[batch, C, H, W]``), share one parameter per feature across the remaining dimensions,
and are one parallel pass in both directions. The log-determinant counts every element:
per-feature terms times the number of positions per feature (H·W for images).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from invertible.core import Transform

__all__ = ["ActNorm", "BatchNorm", "Rescaling"]


def _broadcast(param: Tensor, like: Tensor) -> Tensor:
    """View a per-feature ``[C]`` tensor so it broadcasts over ``like`` = ``[B, C, ...]``."""
    return param.view(1, -1, *([1] * (like.dim() - 2)))


def _positions(values: Tensor) -> int:
    """Number of elements per feature in one sample (1 for vectors, H·W for images)."""
    return math.prod(values.shape[2:])


def _reduce_dims(values: Tensor) -> list[int]:
    return [0, *range(2, values.dim())]


class Rescaling(Transform):
    r"""NICE's diagonal scaling layer: x = z ⊙ exp(s), log|det ∂x/∂z| = Σ_i s_i.

    Without it NICE is volume preserving and cannot match data of another scale. Both
    directions are one parallel pass. Dinh et al., *NICE*, 2014, section 3.3.
    ``s`` starts at zero (the identity).

    Args:
        features: number of features (or channels) along dimension 1.

    Example:
        >>> import torch
        >>> layer = Rescaling(2)
        >>> layer(torch.ones(1, 2))
        (tensor([[1., 1.]], grad_fn=<MulBackward0>), tensor([0.], grad_fn=<MulBackward0>))
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        x = z * _broadcast(self.log_scale, z).exp()
        return x, self.log_scale.sum().expand(z.shape[0]) * _positions(z)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        z = x * _broadcast(-self.log_scale, x).exp()
        return z, -self.log_scale.sum().expand(x.shape[0]) * _positions(x)


class ActNorm(Transform):
    r"""Activation normalization (Glow): x = z ⊙ exp(s) + b, log|det ∂x/∂z| = Σ_i s_i.

    Data-dependent initialisation: on the first ``inverse`` call in training mode, ``b`` and
    ``s`` are set so that the normalized batch has zero mean and unit variance per feature.
    The ``initialized`` flag is a buffer, so a loaded checkpoint is not re-initialised.
    Both directions are one parallel pass. Kingma & Dhariwal, *Glow*, NeurIPS 2018, §3.1.

    Args:
        features: number of features (or channels) along dimension 1.

    Example:
        >>> import torch
        >>> layer = ActNorm(2)
        >>> z, _ = layer.inverse(torch.randn(100, 2) * 3 + 1)
        >>> bool(z.mean(0).abs().max() < 1e-5)
        True
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = _reduce_dims(x)
        std, mean = torch.std_mean(x, dim=dims)
        self.shift.copy_(mean)
        self.log_scale.copy_(std.clamp_min(1e-6).log())
        self.initialized.fill_(True)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        x = z * _broadcast(self.log_scale, z).exp() + _broadcast(self.shift, z)
        return x, self.log_scale.sum().expand(z.shape[0]) * _positions(z)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        if self.training and not bool(self.initialized) and x.shape[0] > 1:
            self._initialize(x)
        z = (x - _broadcast(self.shift, x)) * _broadcast(-self.log_scale, x).exp()
        return z, -self.log_scale.sum().expand(x.shape[0]) * _positions(x)


class BatchNorm(Transform):
    r"""Batch normalization as a flow layer (RealNVP §3.7, MAF §3.4 semantics).

    Normalizing direction (x → z): z = (x − m) / √(v + ε) ⊙ exp(γ) + β, with
    log|det ∂z/∂x| = Σ_i (γ_i − ½ log(v_i + ε)). In training mode m, v are the batch
    statistics of x (the running averages are updated); in eval mode, the running averages.
    The generative direction (z → x) inverts the map with the running averages, the only
    statistics available when sampling; so in training mode ``inverse`` and ``forward`` use
    different statistics, and the exact round trip holds in eval mode. Both directions are
    one parallel pass. Training mode refuses a batch of one (no statistics to compute);
    an empty batch uses the running averages and leaves them unchanged.

    Args:
        features: number of features (or channels) along dimension 1.
        momentum: weight of the current batch in the running averages.
        eps: added to the variance.

    Example:
        >>> import torch
        >>> layer = BatchNorm(2)
        >>> z, ladj = layer.inverse(torch.randn(64, 2) * 5)
        >>> bool(z.std(0).sub(1).abs().max() < 0.05)
        True
    """

    def __init__(self, features: int, *, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.log_gamma = nn.Parameter(torch.zeros(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # An empty batch has no statistics: it is passed through with the running averages
        # and leaves them untouched (a NaN mean would poison them for good).
        if not self.training or x.shape[0] == 0:
            return self.running_mean, self.running_var
        if x.numel() == x.shape[1]:
            raise ValueError(
                "BatchNorm: batch statistics need at least 2 values per feature, got a batch "
                "of one in training mode; use a larger batch, or call flow.eval() to use the "
                "running averages"
            )
        var, mean = torch.var_mean(x, dim=_reduce_dims(x), unbiased=False)
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var

    def _log_det_inverse(self, var: Tensor, values: Tensor) -> Tensor:
        per_feature = self.log_gamma - 0.5 * (var + self.eps).log()
        return per_feature.sum().expand(values.shape[0]) * _positions(values)

    def inverse(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Normalizing direction x → z: returns ``(z, log|det ∂z/∂x|)`` (cost: see the class)."""
        mean, var = self._statistics(x)
        scale = self.log_gamma.exp() * (var + self.eps).rsqrt()
        z = (x - _broadcast(mean, x)) * _broadcast(scale, x) + _broadcast(self.beta, x)
        return z, self._log_det_inverse(var, x)

    def forward(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Generative direction z → x: returns ``(x, log|det ∂x/∂z|)`` (cost: see the class)."""
        mean, var = self.running_mean, self.running_var
        scale = (-self.log_gamma).exp() * (var + self.eps).sqrt()
        x = (z - _broadcast(self.beta, z)) * _broadcast(scale, z) + _broadcast(mean, z)
        return x, -self._log_det_inverse(var, z)

    def extra_repr(self) -> str:
        """The summary ``repr`` shows for this module."""
        return f"features={self.beta.numel()}, momentum={self.momentum}, eps={self.eps}"


# --------------------------------------------------------------------------- across processes
# Synchronised BatchNorm and ActNorm for data-parallel training (invertible.training.ddp
# switches a flow's layers to these); without a process group they are the plain layers.

import torch.distributed as dist  # noqa: E402

__all__ += ["SyncActNorm", "SyncBatchNorm", "all_reduce_sum", "is_distributed"]


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is again the sum over processes of the gradients
    (the gradient of ``sum_r f_r(S)`` with respect to each process's contribution to S).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over all processes (identity without a group)."""
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


class SyncBatchNorm(BatchNorm):
    """:class:`~invertible.BatchNorm` whose training statistics are those of the global batch.

    Same parameters, buffers and state-dict keys as ``BatchNorm`` (a checkpoint does not
    know the difference). In training mode under an initialised process group, the mean and
    (biased) variance are computed from per-feature sums of ``x - running_mean`` and of its
    square, all-reduced (differentiably) over the processes, so gradients flow through the
    statistics exactly as in one process holding the whole batch; the shift by the running
    mean (identical on every process) keeps ``E[x^2] - E[x]^2`` accurate in float32.
    Without a group, or in eval mode, it is ``BatchNorm``.
    """

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not (self.training and is_distributed()):
            return super()._statistics(x)
        dims = _reduce_dims(x)
        shift = _broadcast(self.running_mean.detach(), x)
        centred = x - shift
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        local = torch.cat([centred.sum(dim=dims), (centred * centred).sum(dim=dims), count])
        total = all_reduce_sum(local)
        k = self.running_mean.numel()
        n = total[-1].detach()
        mean_c = total[:k] / n
        var = (total[k : 2 * k] / n - mean_c * mean_c).clamp_min(0.0)
        mean = mean_c + self.running_mean.detach()
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var


class SyncActNorm(ActNorm):
    """:class:`~invertible.ActNorm` whose data-dependent initialisation uses the global batch
    (mean and unbiased standard deviation over all processes' first batches).
    """

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        if not is_distributed():
            return super()._initialize(x)
        dims = _reduce_dims(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        xd = x.double()
        local = torch.cat([count, xd.sum(dim=dims)])
        dist.all_reduce(local)
        n, mean = local[0], local[1:] / local[0]
        m2 = ((xd - _broadcast(mean, xd)) ** 2).sum(dim=dims)
        dist.all_reduce(m2)
        std = (m2 / (n - 1).clamp_min(1)).sqrt()
        self.shift.copy_(mean.to(self.shift))
        self.log_scale.copy_(std.clamp_min(1e-6).log().to(self.log_scale))
        self.initialized.fill_(True)
        return None
