"""Throughput: points per second of the density pass and of sampling (best or median of a
few timed calls after a warm-up; CUDA is synchronised around each call), and the samplers of
sequence flows in samples per second and × real time.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invertible.core import Flow, validation
from invertible.tensors import dtype_device
from invertible.transforms.autoregressive import AffineAutoregressive
from invertible.transforms.sequence import WaveNetAutoregressive

__all__ = [
    "density_throughput",
    "naive_steady_state_speed",
    "sampling_throughput",
    "sequence_sampling_speed",
    "sequential_method",
    "timed",
]


def timed(
    fn: Callable[[], Any], device: torch.device, repeats: int, statistic: str = "min"
) -> float:
    """Seconds of the fastest (``statistic="min"``) or the median (``"median"``) of
    ``repeats`` calls of ``fn``, after one warm-up call that is not counted.
    """
    if statistic not in ("min", "median"):
        raise ValueError(f"statistic: expected 'min' or 'median', got {statistic!r}")
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds, default=math.inf) if statistic == "min" else statistics.median(seconds)


@contextlib.contextmanager
def sequential_method(flow: torch.nn.Module, method: str | None) -> Iterator[None]:
    """Run every autoregressive layer of ``flow`` (MADE and WaveNet) with sequential
    method ``method`` (``"naive"`` or ``"incremental"``; ``None``: as they are), restored
    on exit.
    """
    kinds = (AffineAutoregressive, WaveNetAutoregressive)
    saved = [(m, m.sequential) for m in flow.modules() if isinstance(m, kinds)]
    try:
        if method is not None:
            for m, _ in saved:
                m.sequential = method
        yield
    finally:
        for m, previous in saved:
            m.sequential = previous


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
    was_training = flow.training
    flow.eval()
    try:
        with sequential_method(flow, sequential), validation(False):
            seconds = timed(lambda: flow.sample(n), device, repeats)
    finally:
        flow.train(was_training)
    return n / seconds


def _rates(samples: int, seconds: float, batch: int, sample_rate: int) -> dict[str, float]:
    rate = samples / seconds
    return {
        "samples_per_s": rate,
        "x_real_time": rate / sample_rate,
        "x_real_time_per_stream": rate / sample_rate / batch,
    }


@torch.no_grad()
def sequence_sampling_speed(
    flow: Flow,
    *,
    length: int,
    batch: int = 1,
    repeats: int = 5,
    sequential: str | None = None,
    sample_rate: int = 16000,
) -> dict[str, Any]:
    """Median seconds of ``flow.sample(batch, length=length)`` over ``repeats`` calls after a
    warm-up, as samples/s and × real time (aggregate over the batch, and per stream).

    Args:
        flow: a sequence flow (:class:`~invertible.WaveNetMAF`, :class:`~invertible.WaveNetIAF`).
        length: samples per sequence.
        batch: sequences per call.
        repeats: timed calls (the median is reported).
        sequential: ``"naive"`` or ``"incremental"`` for the autoregressive layers (``None``:
            as they are).
        sample_rate: for × real time.

    Example:
        >>> import invertible
        >>> flow = invertible.WaveNetIAF(num_flows=1, residual_channels=4, skip_channels=4,
        ...                              dilations=[1], length=100)
        >>> sequence_sampling_speed(flow, length=100, repeats=1)["samples_per_s"] > 0
        True
    """
    _, device = dtype_device(flow)
    was_training = flow.training
    flow.eval()
    try:
        with sequential_method(flow, sequential), validation(False):
            seconds = timed(lambda: flow.sample(batch, length=length), device, repeats, "median")
    finally:
        flow.train(was_training)
    row = {"method": sequential or "as built", "batch": batch, "length": length,
           "seconds": seconds, "repeats": repeats}  # fmt: skip
    return {**row, **_rates(batch * length, seconds, batch, sample_rate)}


@torch.no_grad()
def naive_steady_state_speed(
    flow: Flow, *, batch: int = 1, repeats: int = 5, sample_rate: int = 16000
) -> dict[str, Any]:
    """The naive sampler's rate on long audio, from the cost of one of its steps.

    Once t exceeds the receptive field R, every naive step runs the whole network on the
    last R + 1 samples: the cost of ``log_prob`` on ``[batch, R + 1]`` (median of
    ``repeats`` after a warm-up). Timing whole seconds of naive sampling would take minutes
    per call; this is the same work per step, without the shorter windows of the first R
    steps that would flatter it.

    Example:
        >>> import invertible
        >>> flow = invertible.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1])
        >>> naive_steady_state_speed(flow, repeats=1)["method"]
        'naive (steady state)'
    """
    dtype, device = dtype_device(flow)
    window = torch.zeros(batch, flow.receptive_field + 1, dtype=dtype, device=device)
    was_training = flow.training
    flow.eval()
    try:
        with validation(False):
            seconds = timed(lambda: flow.log_prob(window), device, repeats, "median")
    finally:
        flow.train(was_training)
    row = {"method": "naive (steady state)", "batch": batch, "length": None,
           "seconds_per_step": seconds, "repeats": repeats}  # fmt: skip
    return {**row, **_rates(batch, seconds, batch, sample_rate)}
