"""Throughput: points per second of the density pass and of sampling (best of a few
timed calls after a warm-up; CUDA is synchronised around each call).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invertible.core import Flow, validation
from invertible.tensors import dtype_device
from invertible.transforms.autoregressive import AffineAutoregressive

__all__ = ["density_throughput", "sampling_throughput", "timed"]


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def density_throughput(
    flow: Flow, x: np.ndarray | Tensor, *, n: int = 1000, repeats: int = 3
) -> float:
    """Points per second of ``log_prob`` on a batch of ``n`` rows of ``x`` (best of
    ``repeats``, after a warm-up).
    """
    dtype, device = dtype_device(flow)
    batch = torch.as_tensor(np.asarray(x[:n]) if not isinstance(x, Tensor) else x[:n])
    batch = batch.to(device=device, dtype=dtype)
    was_training = flow.training
    flow.eval()
    try:
        seconds = timed(lambda: flow.log_prob(batch), device, repeats)
    finally:
        flow.train(was_training)
    return batch.shape[0] / seconds


@torch.no_grad()
def sampling_throughput(
    flow: Flow, n: int = 1000, *, repeats: int = 3, sequential: str | None = None
) -> float:
    """Samples per second of ``flow.sample(n)`` (best of ``repeats``, after a warm-up).

    Args:
        flow: the flow to sample (input checks off while timing).
        n: batch size of each call.
        repeats: timed calls; the fastest is reported.
        sequential: for autoregressive layers, force ``"naive"`` (D full MADE passes per
            layer, as the peer libraries sample) or ``"incremental"`` (the library's exact
            fast sampler); ``None`` leaves them as they are. Restored afterwards.

    Example:
        >>> import invertible
        >>> flow = invertible.MAF(3, num_layers=1, hidden_features=(8,))
        >>> sampling_throughput(flow, 100, repeats=1, sequential="naive") > 0
        True
    """
    _, device = dtype_device(flow)
    layers = [m for m in flow.modules() if isinstance(m, AffineAutoregressive)]
    saved = [(m, m.sequential) for m in layers]
    was_training = flow.training
    flow.eval()
    try:
        if sequential is not None:
            for m in layers:
                m.sequential = sequential
        with validation(False):
            seconds = timed(lambda: flow.sample(n), device, repeats)
    finally:
        for m, method in saved:
            m.sequential = method
        flow.train(was_training)
    return n / seconds
