"""How noisy a distillation loss's gradient is: :func:`gradient_variance`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from invertible.core import Flow, validation
from invertible.distillation.losses import check_closed_form, distillation_losses, frozen

__all__ = ["gradient_variance"]


def _flat_grad(params: Sequence[Tensor]) -> Tensor:
    """All gradients of ``params`` as one flat vector (zeros where there is none)."""
    return torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params]
    )


def gradient_variance(
    teacher: Flow,
    student: Flow,
    loss: str,
    *,
    batch_size: int = 256,
    num_batches: int = 32,
    seed: int = 0,
) -> dict[str, float]:
    r"""Variance of the minibatch gradient of a distillation loss at the current student.

    Draws ``num_batches`` independent minibatches at the *same* student state and returns
    ``trace_var`` = mean_k ‖g_k − ḡ‖² (the trace of the gradient covariance, unbiased),
    ``mean_sq_norm`` = ‖ḡ‖², their ratio ``relative`` (noise-to-signal), and the standard
    deviation of the KL *value* estimate across batches (``kl_std``) with its mean
    (``kl_mean``). The student's parameters are not changed (gradients are cleared after).

    Example:
        >>> import invertible
        >>> t = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
        >>> s = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
        >>> sorted(gradient_variance(t, s, "mc", batch_size=8, num_batches=4))
        ['kl_mean', 'kl_std', 'mean_sq_norm', 'relative', 'trace_var']
    """
    params = [p for p in student.parameters() if p.requires_grad]
    closed = check_closed_form(teacher, student) if loss == "closed-form" else None
    grads, values = [], []
    was_training = student.training
    student.eval()
    with torch.random.fork_rng(devices=[]), frozen(teacher), validation(False):
        torch.manual_seed(seed)
        for _ in range(num_batches):
            for p in params:
                p.grad = None
            parts = distillation_losses(
                teacher, student, batch_size, loss, closed_form_layers=closed
            )
            parts["loss"].backward()
            grads.append(_flat_grad(params).double())
            values.append(float(parts["kl"].detach()))
    for p in params:
        p.grad = None
    student.train(was_training)
    g = torch.stack(grads)
    mean = g.mean(0)
    trace_var = float((g - mean).square().sum(1).sum() / (num_batches - 1))
    mean_sq = float(mean.square().sum())
    kl = torch.tensor(values, dtype=torch.float64)
    return {
        "trace_var": trace_var,
        "mean_sq_norm": mean_sq,
        "relative": trace_var / max(mean_sq, 1e-300),
        "kl_mean": float(kl.mean()),
        "kl_std": float(kl.std()),
    }
