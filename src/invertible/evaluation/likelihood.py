"""Likelihood evaluation: mean log-likelihood ± 2 standard errors, and bits/dim.

Log-likelihoods are in nats, averaged over the test set, reported with two standard errors
of the mean (``2 * std / sqrt(N)``, as the MAF paper reports them). Evaluation runs in
batches, so memory is bounded by ``batch_size`` rows whatever the size of the test set.

Bits/dim is reported when the data are discrete: a dataset whose ``info`` has
``"discrete": True`` and a ``"bin_width"`` (the size of a quantisation bin in the space of
the arrays) gets ``(-mean_log_prob / D - log(bin_width)) / log 2``. Image data (``uint8``
pixels) are dequantized with fixed noise and get the exact bits/dim of the pixels.

Example:
    >>> import torch, invertible
    >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
    >>> res = evaluate_array(flow, torch.zeros(10, 2).numpy())
    >>> round(res.log_prob, 4), res.two_se
    (-1.8379, 0.0)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invertible.checkpoint import CheckpointMismatchError
from invertible.core import Flow
from invertible.data import nonfinite_rows
from invertible.evaluation.dequantize import dequantize_eval
from invertible.tensors import as_tensor, dtype_device, full_precision
from invertible.transforms.preprocessing import bits_per_dim

__all__ = [
    "EvalResult",
    "check_data_matches",
    "evaluate",
    "evaluate_array",
    "evaluate_images",
    "image_log_likelihoods",
    "log_likelihoods",
]


@dataclass
class EvalResult:
    """Mean log-likelihood (nats) ± 2 standard errors on ``n`` points, and extras.

    Attributes:
        log_prob: mean log-likelihood in nats.
        two_se: two standard errors of the mean.
        n: number of points.
        features: dimension D.
        bits_per_dim: for discrete data, else ``None``.
        seconds: wall time of the evaluation.
        samples_per_s: density throughput during the evaluation.
    """

    log_prob: float
    two_se: float
    n: int
    features: int
    bits_per_dim: float | None = None
    seconds: float = 0.0
    samples_per_s: float = 0.0
    median: float | None = None
    minimum: float | None = None
    nonfinite: int = 0

    def __str__(self) -> str:
        se = f"{self.two_se:.3f}" if math.isfinite(self.two_se) else "n/a"
        text = f"{self.log_prob:.3f} ± {se} nats (N={self.n}, D={self.features})"
        if self.bits_per_dim is not None:
            text += f", {self.bits_per_dim:.4f} bits/dim"
        if self.nonfinite:
            text += f"; {self.nonfinite} of {self.n} points have log-density -inf or NaN"
        if self.median is not None and self.minimum is not None and self.n > 1:
            text += f"; median {self.median:.3f}, min {self.minimum:.3g}"
        if self.n == 1:
            text += "; one point: no error bar"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-serialisable dict."""
        return asdict(self)


def check_data_matches(flow: Flow, x: np.ndarray | Tensor, what: str = "data") -> None:
    """Raise a one-line :class:`CheckpointMismatchError` if ``x`` has the wrong dimension,
    and a ``ValueError`` if rows hold NaN or inf.

    Example:
        >>> import numpy as np, invertible
        >>> flow = invertible.NICE(3, num_layers=2, hidden_features=(4,))
        >>> check_data_matches(flow, np.zeros((5, 2)), "dataset 'moons'")
        Traceback (most recent call last):
        ...
        invertible.checkpoint.CheckpointMismatchError: dataset 'moons' has 2 features ...
    """
    shape = tuple(x.shape[1:])
    expected = tuple(flow.event_shape)
    if shape != expected:
        got = shape[0] if len(shape) == 1 else list(shape)
        exp = expected[0] if len(expected) == 1 else list(expected)
        raise CheckpointMismatchError(
            f"{what} has {got} features per point but the model was trained on {exp}; "
            "evaluate it on the dataset it was trained on"
        )
    rows = nonfinite_rows(x)
    if rows.size:
        raise ValueError(
            f"{what}: {rows.size} row(s) contain NaN or inf (first: row {int(rows[0])}); "
            "remove or impute them"
        )


@torch.no_grad()
def log_likelihoods(flow: Flow, x: np.ndarray | Tensor, *, batch_size: int = 4096) -> np.ndarray:
    """Per-point log-likelihoods (float64 numpy ``[N]``), computed in batches in eval mode,
    in full precision even inside an autocast region.
    """
    dtype, device = dtype_device(flow)
    was_training = flow.training
    flow.eval()
    out = []
    try:
        with full_precision():
            for start in range(0, len(x), batch_size):
                lp = flow.log_prob(as_tensor(x[start : start + batch_size], device, dtype))
                out.append(lp.double().cpu().numpy())
    finally:
        flow.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def _nan_to_minus_inf(values: np.ndarray) -> np.ndarray:
    """NaN log-densities count as zero density (-inf); infinities stay as they are."""
    return np.where(np.isnan(values), -np.inf, values)


def _summary(values: np.ndarray) -> tuple[float, float]:
    """Mean and two standard errors (NaN for fewer than two points or any non-finite)."""
    n = values.size
    if n == 0:
        return float("nan"), float("nan")
    finite = bool(np.isfinite(values).all())
    mean = float(values.mean()) if finite else float(_nan_to_minus_inf(values).mean())
    two_se = float(2.0 * values.std(ddof=1) / math.sqrt(n)) if n > 1 and finite else math.nan
    return mean, two_se


def _spread(values: np.ndarray) -> dict[str, Any]:
    """Median, minimum and count of non-finite values: what a mean alone hides."""
    if values.size == 0:
        return {}
    clean = _nan_to_minus_inf(values)
    return {
        "median": float(np.median(clean)),
        "minimum": float(clean.min()),
        "nonfinite": int((~np.isfinite(values)).sum()),
    }


def evaluate_array(
    flow: Flow,
    x: np.ndarray | Tensor,
    *,
    batch_size: int = 4096,
    bin_width: float | None = None,
    what: str = "data",
) -> EvalResult:
    """Evaluate the mean log-likelihood of the rows of ``x`` (see :class:`EvalResult`)."""
    check_data_matches(flow, x, what)
    start = time.perf_counter()
    values = log_likelihoods(flow, x, batch_size=batch_size)
    seconds = time.perf_counter() - start
    mean, two_se = _summary(values)
    features = math.prod(flow.event_shape)
    bpd = None
    if bin_width is not None and math.isfinite(mean):
        bpd = (-mean / features - math.log(bin_width)) / math.log(2.0)
    return EvalResult(
        log_prob=mean,
        two_se=two_se,
        n=int(values.size),
        features=features,
        bits_per_dim=bpd,
        seconds=seconds,
        samples_per_s=values.size / seconds if seconds > 0 else 0.0,
        **_spread(values),
    )


def evaluate(flow: Flow, data: Any, *, split: str = "test", batch_size: int = 4096) -> EvalResult:
    """Mean ``split`` log-likelihood of a dataset ± 2 s.e. (and bits/dim where discrete).

    Args:
        flow: the trained flow (evaluated in eval mode; its mode is restored).
        data: ``TabularData`` (or ``ImageData`` with a registered ``"image"`` hook).
        split: ``"test"``, ``"val"`` or ``"train"``.
        batch_size: rows per batch.

    Example:
        >>> import numpy as np, invertible
        >>> from types import SimpleNamespace
        >>> data = SimpleNamespace(name="zeros", test=np.zeros((4, 2), "float32"), info={})
        >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
        >>> print(evaluate(flow, data))
        -1.838 ± 0.000 nats (N=4, D=2); median -1.838, min -1.84
    """
    x = getattr(data, split)
    info = dict(getattr(data, "info", {}) or {})
    name = getattr(data, "name", "data")
    if getattr(x, "dtype", None) == np.uint8:  # ImageData: pixels, dequantized here
        return evaluate_images(flow, data, split, batch_size)
    bin_width = info.get("bin_width") if info.get("discrete") else None
    return evaluate_array(
        flow, x, batch_size=batch_size, bin_width=bin_width, what=f"dataset {name!r} ({split})"
    )


@torch.no_grad()
def image_log_likelihoods(
    flow: Flow,
    pixels: Tensor | np.ndarray,
    levels: int,
    *,
    batch_size: int = 4096,
) -> np.ndarray:
    """Per-image log-densities (nats, float64 ``[N]``) of the fixed-noise dequantized
    ``pixels`` (:func:`dequantize_eval`), in batches, in eval mode, in full precision.
    """
    dtype, device = dtype_device(flow)
    was_training = flow.training
    flow.eval()
    out = []
    try:
        with full_precision():
            for start in range(0, len(pixels), batch_size):
                chunk = pixels[start : start + batch_size]
                x = dequantize_eval(chunk, levels, start=start, dtype=dtype).to(device)
                out.append(flow.log_prob(x).double().cpu().numpy())
    finally:
        flow.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_images(
    flow: Flow, data: Any, split: str = "test", batch_size: int = 4096
) -> EvalResult:
    """Evaluate an ``ImageData`` split: nats of x ∈ [0, 1)^D and bits/dim of the pixels.

    The pixels are dequantized with fixed noise (:func:`dequantize_eval`); bits/dim follow
    :func:`invertible.transforms.preprocessing.bits_per_dim` with D = C·H·W and the data's
    ``levels``. :func:`evaluate` calls it for ``uint8`` splits.

    Example:
        >>> import numpy as np, invertible
        >>> from types import SimpleNamespace
        >>> flow = invertible.RealNVPImage((1, 4, 4), num_scales=1, channels=4, levels=17)
        >>> px = np.random.default_rng(0).integers(0, 17, (8, 1, 4, 4), dtype=np.uint8)
        >>> data = SimpleNamespace(name="px", test=px, levels=17)
        >>> res = evaluate(flow, data)
        >>> res.n, res.features, res.bits_per_dim is not None
        (8, 16, True)
    """
    x = getattr(data, split)
    name = getattr(data, "name", "data")
    check_data_matches(flow, x[:1], f"dataset {name!r} ({split})")
    levels = int(getattr(data, "levels", 256))
    start = time.perf_counter()
    values = image_log_likelihoods(flow, x, levels, batch_size=batch_size)
    seconds = time.perf_counter() - start
    mean, two_se = _summary(values)
    features = math.prod(flow.event_shape)
    bpd = bits_per_dim(mean, features, levels) if math.isfinite(mean) else None
    return EvalResult(
        log_prob=mean,
        two_se=two_se,
        n=int(values.size),
        features=features,
        bits_per_dim=bpd,
        seconds=seconds,
        samples_per_s=values.size / seconds if seconds > 0 else 0.0,
        **_spread(values),
    )
