"""Throughput: points per second of the density pass and of sampling (best or median of a
few timed calls after a warm-up; CUDA is synchronised around each call), and the samplers of
sequence flows in samples per second and × real time.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invertible.core import Flow, validation
from invertible.tensors import dtype_device
from invertible.transforms.autoregressive import AffineAutoregressive
from invertible.transforms.sequence import WaveNetAutoregressive

__all__ = [
    "NAIVE_STEADY_STATE",
    "Sampler",
    "density_throughput",
    "naive_steady_state_speed",
    "sampling_throughput",
    "sequence_sampling_speed",
    "sequential_method",
    "time_samplers",
    "timed",
]


def timed(
    fn: Callable[[], Any],
    device: torch.device,
    repeats: int,
    statistic: str = "min",
    *,
    warmup: bool = True,
) -> float:
    """Seconds of the fastest (``statistic="min"``) or the median (``"median"``) of
    ``repeats`` calls of ``fn``, after one warm-up call that is not counted (``warmup``);
    with ``repeats=0`` it only warms up and returns inf.
    """
    if statistic not in ("min", "median"):
        raise ValueError(f"statistic: expected 'min' or 'median', got {statistic!r}")
    if warmup:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    if not seconds:
        return math.inf
    return min(seconds) if statistic == "min" else statistics.median(seconds)


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


#: The naive sampler's rate on long audio, timed from one of its steps (see
#: :func:`naive_steady_state_speed`).
NAIVE_STEADY_STATE = "naive (steady state)"


@dataclass(frozen=True)
class Sampler:
    """One sampler of a sequence flow to time: ``flow.sample(batch, length=length)`` with
    its autoregressive layers in ``method`` (``"naive"``, ``"incremental"``, ``None`` as
    built), or with ``method=NAIVE_STEADY_STATE`` one naive step on long audio (``length``
    unused).
    """

    flow: Flow
    batch: int = 1
    length: int = 16000
    method: str | None = None

    def call(self) -> Callable[[], Any]:
        """The timed call (no gradients, input checks off)."""
        if self.method == NAIVE_STEADY_STATE:
            dtype, device = dtype_device(self.flow)
            window = torch.zeros(self.batch, self.flow.receptive_field + 1, dtype=dtype,
                                 device=device)  # fmt: skip
            return lambda: self.flow.log_prob(window)

        def sample() -> Any:
            with sequential_method(self.flow, self.method):
                return self.flow.sample(self.batch, length=self.length)

        return sample

    def row(self, seconds: float, repeats: int, sample_rate: int) -> dict[str, Any]:
        """The timing as a table row: seconds, samples/s, × real time."""
        steady = self.method == NAIVE_STEADY_STATE
        key = "seconds_per_step" if steady else "seconds"
        row = {
            "method": self.method or "as built",
            "batch": self.batch,
            "length": None if steady else self.length,
            key: seconds,
            "repeats": repeats,
        }
        samples = self.batch if steady else self.batch * self.length
        return {**row, **_rates(samples, seconds, self.batch, sample_rate)}


@torch.no_grad()
def time_samplers(
    samplers: Mapping[str, Sampler], *, repeats: int = 5, sample_rate: int = 16000
) -> dict[str, dict[str, Any]]:
    """Median seconds of each sampler over ``repeats`` rounds, **interleaved**: one warm-up
    call of each, then each round calls every sampler once, so a change in the machine's
    load hits all of them alike and their ratios stay fair. Flows are timed in eval mode
    (restored after).

    Returns:
        ``{name: row}`` with ``method``, ``batch``, ``length``, ``seconds`` (or
        ``seconds_per_step``), ``samples_per_s``, ``x_real_time`` (aggregate over the
        batch) and ``x_real_time_per_stream``.
    """
    flows = {id(s.flow): s.flow for s in samplers.values()}
    modes = {key: flow.training for key, flow in flows.items()}
    calls = {name: s.call() for name, s in samplers.items()}
    devices = {name: dtype_device(s.flow)[1] for name, s in samplers.items()}
    seconds: dict[str, list[float]] = {name: [] for name in samplers}
    try:
        for flow in flows.values():
            flow.eval()
        with validation(False):
            for name, fn in calls.items():
                timed(fn, devices[name], 0)  # warm-up only
            for _ in range(repeats):
                for name, fn in calls.items():
                    seconds[name].append(timed(fn, devices[name], 1, warmup=False))
    finally:
        for key, flow in flows.items():
            flow.train(modes[key])
    return {name: samplers[name].row(statistics.median(seconds[name]), repeats, sample_rate)
            for name in samplers}  # fmt: skip


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
    sampler = Sampler(flow, batch, length, sequential)
    return time_samplers({"one": sampler}, repeats=repeats, sample_rate=sample_rate)["one"]


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
    sampler = Sampler(flow, batch, method=NAIVE_STEADY_STATE)
    return time_samplers({"one": sampler}, repeats=repeats, sample_rate=sample_rate)["one"]
