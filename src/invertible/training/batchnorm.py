"""Batch-norm statistics of the final weights: :func:`refresh_batchnorm`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from invertible.core import Flow, Transform
from invertible.tensors import as_tensor, dtype_device

__all__ = ["batchnorm_layers", "refresh_batchnorm"]


def batchnorm_layers(flow: nn.Module) -> list[nn.Module]:
    """The batch-norm transforms of ``flow`` (transforms with running statistics)."""
    return [
        m
        for m in flow.modules()
        if isinstance(m, Transform) and hasattr(m, "running_mean") and hasattr(m, "running_var")
    ]


class _Stop(Exception):
    """Raised by the statistics hook once a batch reached the target layer."""


@torch.no_grad()
def refresh_batchnorm(
    flow: Flow,
    data: Any,
    *,
    max_rows: int | None = 20000,
    batch_size: int = 4096,
    seed: int = 0,
) -> int:
    """Set every batch-norm layer's running statistics to the exact statistics of the data.

    During training the running averages are exponential moving averages of batch
    statistics of *changing* weights. Before evaluation (as in the MAF code) we replace them
    by the statistics of the training set under the final weights. Layers are processed in
    the normalizing order (x → z), one pass per layer over at most ``max_rows`` training
    rows (a seeded random subset) in batches of ``batch_size`` (memory bounded): the layer's
    inputs are computed with every earlier layer already refreshed, in eval mode, and their
    mean and (biased) variance accumulated exactly in float64 — the statistics are those of
    the whole subset, not an average of batch statistics. Layers are recognised as
    transforms with ``running_mean`` and ``running_var`` buffers.

    Args:
        flow: the flow (its train/eval mode is preserved).
        data: a ``TabularData`` (its ``train`` split is used), an array or a tensor ``[N, D]``.
        max_rows: cap on the number of rows used (``None``: all).
        batch_size: rows per forward pass.
        seed: seed of the subset.

    Returns:
        the number of layers refreshed.

    Example:
        >>> import torch, invertible
        >>> flow = invertible.RealNVP(2, num_layers=2, hidden_features=(8,))
        >>> x = torch.randn(500, 2) * 3 + 1
        >>> refresh_batchnorm(flow, x)
        1
        >>> bn = [m for m in flow.modules() if hasattr(m, "running_mean")][0]
        >>> z = flow.transform.transforms[2].inverse(x)[0]  # what the BN layer sees
        >>> torch.allclose(bn.running_mean, z.mean(0), atol=1e-4)
        True
    """
    layers = batchnorm_layers(flow)
    if not layers:
        return 0
    x = getattr(data, "train", data)
    dtype, device = dtype_device(flow)
    n = len(x)
    if max_rows is not None and n > max_rows:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=gen)[:max_rows].sort().values.numpy()
        x = x[idx]
    x = as_tensor(x, "cpu", dtype)
    was_training = flow.training
    flow.eval()
    done: set[int] = set()
    try:
        for _ in range(len(layers)):
            target, stats = _first_layer_statistics(flow, layers, done, x, batch_size, device)
            if target is None:  # remaining layers are not on the density path
                break
            target.running_mean.copy_(stats["mean"].to(target.running_mean))
            target.running_var.copy_((stats["m2"] / stats["n"]).to(target.running_var))
            done.add(id(target))
    finally:
        flow.train(was_training)
    return len(done)


def _statistics_hook(
    layer: nn.Module, original: Callable[..., Any], state: dict[str, Any]
) -> Callable[..., Any]:
    """A replacement of ``layer.inverse`` that, if ``layer`` is the first not-yet-refreshed
    layer a batch reaches, accumulates the batch's exact mean and sum of squares into
    ``state`` and stops the pass; other layers run as usual.
    """

    def hook(inp: Tensor, context: Tensor | None = None) -> Any:
        if state["target"] is None:
            state["target"] = layer
        if layer is not state["target"]:
            return original(inp, context)
        dims = [0, *range(2, inp.dim())]
        vals = inp.double()
        count = inp.numel() // inp.shape[1]
        mean = vals.mean(dim=dims)
        m2 = ((vals - vals.mean(dim=dims, keepdim=True)) ** 2).sum(dim=dims)
        if state["mean"] is None:
            state.update(n=count, mean=mean, m2=m2)
        else:  # Chan et al.'s parallel update of mean and sum of squares
            n_a, total = state["n"], state["n"] + count
            delta = mean - state["mean"]
            state["mean"] = state["mean"] + delta * count / total
            state["m2"] = state["m2"] + m2 + delta**2 * n_a * count / total
            state["n"] = total
        raise _Stop

    return hook


def _first_layer_statistics(
    flow: Flow,
    layers: list[nn.Module],
    done: set[int],
    x: Tensor,
    batch_size: int,
    device: torch.device,
) -> tuple[nn.Module | None, dict[str, Any]]:
    """The first layer (in the x → z order) not in ``done`` and the exact statistics of
    its inputs over ``x``; ``(None, ...)`` if no batch reaches such a layer.
    """
    state: dict[str, Any] = {"target": None, "n": 0, "mean": None, "m2": None}
    patched = []
    for layer in layers:
        if id(layer) not in done:
            patched.append(layer)
            layer.inverse = _statistics_hook(layer, layer.inverse, state)  # type: ignore[method-assign]
    try:
        for start in range(0, x.shape[0], batch_size):
            with contextlib.suppress(_Stop):
                flow.log_prob(x[start : start + batch_size].to(device))
    finally:
        for layer in patched:
            del layer.inverse  # back to the class method
    return state["target"], state
