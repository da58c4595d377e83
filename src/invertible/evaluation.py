"""Evaluation: test log-likelihood ± 2 standard errors, bits/dim, sampling, throughput, MMD.

Log-likelihoods are in nats, averaged over the test set, reported with two standard errors
of the mean (``2 * std / sqrt(N)``, as the MAF paper reports them). Evaluation runs in
batches, so memory is bounded by ``batch_size`` rows whatever the size of the test set.

Bits/dim is reported when the data are discrete: a dataset whose ``info`` has
``"discrete": True`` and a ``"bin_width"`` (the size of a quantisation bin in the space of
the arrays) gets ``(-mean_log_prob / D - log(bin_width)) / log 2``. Image data use a hook:
another module registers the exact function with :func:`register_bits_per_dim`.

Example:
    >>> import torch, invertible
    >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
    >>> res = evaluate_array(flow, torch.zeros(10, 2).numpy())
    >>> round(res.log_prob, 4), res.two_se
    (-1.8379, 0.0)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from invertible.checkpoint import CheckpointMismatchError
from invertible.core import Flow

__all__ = [
    "EvalResult",
    "check_data_matches",
    "density_throughput",
    "dequantize_eval",
    "dequantize_step",
    "evaluate",
    "evaluate_array",
    "evaluate_images",
    "image_log_likelihoods",
    "log_likelihoods",
    "mmd",
    "register_bits_per_dim",
    "sample_images",
    "sample_to_npy",
    "sampling_throughput",
]

#: ``kind -> fn(flow, data, split, batch_size) -> float`` hooks computing exact bits/dim
#: (e.g. the image engineer registers ``"image"`` for ``ImageData``).
BITS_PER_DIM_HOOKS: dict[str, Callable[..., float]] = {}


def register_bits_per_dim(kind: str, fn: Callable[..., float]) -> None:
    """Register the bits/dim function of a data kind (``"image"`` for ``ImageData``)."""
    BITS_PER_DIM_HOOKS[kind] = fn


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

    def __str__(self) -> str:
        text = f"{self.log_prob:.3f} ± {self.two_se:.3f} nats (N={self.n}, D={self.features})"
        if self.bits_per_dim is not None:
            text += f", {self.bits_per_dim:.4f} bits/dim"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dtype_device(flow: Flow) -> tuple[torch.dtype, torch.device]:
    for p in flow.parameters():
        return p.dtype, p.device
    for b in flow.buffers():
        if b.is_floating_point():
            return b.dtype, b.device
    return torch.float32, torch.device("cpu")


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
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            raise ValueError(
                f"{what}: {rows.size} row(s) contain NaN or inf (first: row {int(rows[0])}); "
                "remove or impute them"
            )


@torch.no_grad()
def log_likelihoods(flow: Flow, x: np.ndarray | Tensor, *, batch_size: int = 4096) -> np.ndarray:
    """Per-point log-likelihoods (float64 numpy ``[N]``), computed in batches in eval mode."""
    dtype, device = _dtype_device(flow)
    was_training = flow.training
    flow.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            chunk = torch.as_tensor(
                np.asarray(x[start : start + batch_size])
                if not isinstance(x, Tensor)
                else x[start : start + batch_size]
            )
            lp = flow.log_prob(chunk.to(device=device, dtype=dtype))
            out.append(lp.double().cpu().numpy())
    finally:
        flow.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def _summary(values: np.ndarray) -> tuple[float, float]:
    n = values.size
    mean = float(values.mean())
    two_se = float(2.0 * values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return mean, two_se


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
        -1.838 ± 0.000 nats (N=4, D=2)
    """
    x = getattr(data, split)
    info = dict(getattr(data, "info", {}) or {})
    name = getattr(data, "name", "data")
    if getattr(x, "dtype", None) == np.uint8 and "image" in BITS_PER_DIM_HOOKS:
        # ImageData: the image module knows the preprocessing and its Jacobian.
        return BITS_PER_DIM_HOOKS["image"](flow, data, split, batch_size)
    bin_width = info.get("bin_width") if info.get("discrete") else None
    return evaluate_array(
        flow, x, batch_size=batch_size, bin_width=bin_width, what=f"dataset {name!r} ({split})"
    )


# --------------------------------------------------------------------------- images

#: Seed of the fixed dequantization noise used to evaluate images (:func:`dequantize_eval`).
EVAL_NOISE_SEED = 20170527
#: Rows per block of evaluation noise: each block has its own seeded generator, so the noise
#: of an image depends on its row index only, not on the batch size of the evaluation.
NOISE_BLOCK_ROWS = 256


def _noise_seed(*keys: int) -> int:
    """A 63-bit torch seed from integer ``keys`` (distinct keys give unrelated streams)."""
    entropy = [int(k) % 2**64 for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _pixels(pixels: Tensor | np.ndarray) -> Tensor:
    if isinstance(pixels, np.ndarray):
        array = np.ascontiguousarray(pixels)
        if not array.flags.writeable:  # read-only dataset arrays: torch wants its own copy
            array = array.copy()
        return torch.from_numpy(array)
    return pixels


def dequantize_step(
    pixels: Tensor | np.ndarray,
    levels: int,
    *,
    seed: int,
    step: int,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The training batch of ``step``: x = (p + u) / levels ∈ [0, 1), fresh noise per step.

    The noise u ~ U[0, 1) comes from a generator seeded by ``(seed, step)``, so a batch is a
    pure function of (pixels, seed, step) and a resumed run sees exactly the same inputs.
    The result is on the device of ``pixels``.

    Example:
        >>> p = torch.tensor([[0, 16]], dtype=torch.uint8)
        >>> a, b = dequantize_step(p, 17, seed=0, step=3), dequantize_step(p, 17, seed=0, step=3)
        >>> bool((a == b).all()), bool((a != dequantize_step(p, 17, seed=0, step=4)).all())
        (True, True)
    """
    from invertible.transforms.preprocessing import dequantize

    values = _pixels(pixels)
    gen = torch.Generator().manual_seed(_noise_seed(seed, step, 1))
    return dequantize(values, levels, generator=gen, dtype=dtype)


def dequantize_eval(
    pixels: Tensor | np.ndarray,
    levels: int,
    *,
    start: int = 0,
    seed: int = EVAL_NOISE_SEED,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Dequantize rows ``start, start + 1, ...`` of a split with FIXED noise.

    Row ``i`` always gets the same noise (blocks of :data:`NOISE_BLOCK_ROWS` rows, each from
    a generator seeded by ``(seed, block)``), whatever the batching, so evaluating a
    checkpoint after loading reproduces the number printed at the end of training.

    Example:
        >>> p = torch.randint(0, 256, (600, 1, 2, 2), dtype=torch.uint8)
        >>> whole = dequantize_eval(p, 256)
        >>> part = dequantize_eval(p[300:500], 256, start=300)
        >>> bool((whole[300:500] == part).all())
        True
    """
    values = _pixels(pixels)
    n = values.shape[0]
    if n == 0:
        return values.to(dtype) / levels
    rows = NOISE_BLOCK_ROWS
    first, last = start // rows, (start + n - 1) // rows
    blocks = [
        torch.rand(
            (rows, *values.shape[1:]),
            generator=torch.Generator().manual_seed(_noise_seed(seed, block, 2)),
            dtype=dtype,
        )
        for block in range(first, last + 1)
    ]
    offset = start - first * rows
    noise = torch.cat(blocks)[offset : offset + n]
    return (values.to(dtype) + noise.to(values.device)) / levels


@torch.no_grad()
def image_log_likelihoods(
    flow: Flow,
    pixels: Tensor | np.ndarray,
    levels: int,
    *,
    batch_size: int = 4096,
) -> np.ndarray:
    """Per-image log-densities (nats, float64 ``[N]``) of the fixed-noise dequantized
    ``pixels`` (:func:`dequantize_eval`), in batches, in eval mode."""
    dtype, device = _dtype_device(flow)
    was_training = flow.training
    flow.eval()
    out = []
    try:
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
    ``levels``. Registered as the ``"image"`` hook of :func:`evaluate`.

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
    from invertible.transforms.preprocessing import bits_per_dim

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
    )


register_bits_per_dim("image", evaluate_images)


@torch.no_grad()
def sample_images(
    flow: Flow,
    n: int,
    *,
    levels: int = 256,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int = 1000,
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Draw ``n`` images from an image flow and quantize them to pixels (``uint8``).

    Samples x ∈ (0, 1) become p = ⌊levels·x⌋ clipped to ``0 .. levels - 1`` (the inverse of
    the dequantization); NaN samples become 0. With ``path`` the array is written as
    ``.npy`` atomically.

    Example:
        >>> import invertible
        >>> flow = invertible.RealNVPImage((1, 4, 4), num_scales=1, channels=4).eval()
        >>> px = sample_images(flow, 5, levels=17, temperature=0.7, seed=0)
        >>> px.shape, px.dtype, int(px.max()) <= 16
        ((5, 1, 4, 4), dtype('uint8'), True)
    """
    if seed is not None:
        torch.manual_seed(seed)
    was_training = flow.training
    flow.eval()
    chunks = []
    try:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            x = flow.sample(m, temperature=temperature)  # type: ignore[call-arg]
            x = torch.nan_to_num(x.double(), nan=0.0)
            chunks.append(torch.floor(x * levels).clamp(0, levels - 1).to(torch.uint8).cpu())
    finally:
        flow.train(was_training)
    pixels = torch.cat(chunks).numpy() if chunks else np.zeros((0, *flow.event_shape), np.uint8)
    if path is not None:
        _atomic_save_npy(Path(path), pixels)
    return pixels


def sample_to_npy(
    flow: Flow,
    n: int,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 10000,
    seed: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Draw ``n`` samples in batches and write them to ``path`` (``.npy``) atomically.

    ``transform`` maps samples before saving (e.g. ``data.unstandardize``). Samples with
    NaN/inf are kept (they are informative) but a warning count is not raised here.

    Example:
        >>> import tempfile, numpy as np, invertible
        >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
        >>> p = tempfile.mkdtemp() + "/s.npy"
        >>> sample_to_npy(flow, 5, p, seed=0).shape, np.load(p).shape
        ((5, 2), (5, 2))
    """
    if seed is not None:
        torch.manual_seed(seed)
    was_training = flow.training
    flow.eval()
    chunks = []
    try:
        for start in range(0, n, batch_size):
            chunks.append(flow.sample(min(batch_size, n - start)).double().cpu().numpy())
    finally:
        flow.train(was_training)
    samples = (np.concatenate(chunks) if chunks else np.zeros((0, *flow.event_shape))).astype(
        np.float32
    )
    if transform is not None:
        samples = np.asarray(transform(samples), dtype=np.float32)
    _atomic_save_npy(Path(path), samples)
    return samples


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
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
    ``repeats``, after a warm-up)."""
    dtype, device = _dtype_device(flow)
    batch = torch.as_tensor(np.asarray(x[:n]) if not isinstance(x, Tensor) else x[:n])
    batch = batch.to(device=device, dtype=dtype)
    was_training = flow.training
    flow.eval()
    try:
        seconds = _timed(lambda: flow.log_prob(batch), device, repeats)
    finally:
        flow.train(was_training)
    return batch.shape[0] / seconds


@torch.no_grad()
def sampling_throughput(flow: Flow, *, n: int = 1000, repeats: int = 3) -> float:
    """Samples per second of ``flow.sample(n)`` (best of ``repeats``, after a warm-up).

    Example:
        >>> import invertible
        >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
        >>> sampling_throughput(flow, n=10, repeats=1) > 0
        True
    """
    _, device = _dtype_device(flow)
    was_training = flow.training
    flow.eval()
    try:
        seconds = _timed(lambda: flow.sample(n), device, repeats)
    finally:
        flow.train(was_training)
    return n / seconds


def mmd(
    x: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    *,
    bandwidth: float | None = None,
    max_points: int = 2000,
    seed: int = 0,
) -> float:
    """Unbiased squared MMD between samples ``x`` and ``y`` with a Gaussian kernel.

    ``k(a, b) = exp(-|a - b|² / (2 h²))``; ``h`` defaults to the median heuristic (the
    median pairwise distance of the pooled samples). At most ``max_points`` rows of each
    are used (a seeded subset). Near 0 (possibly slightly negative) when both come from the
    same distribution.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.normal(size=(500, 2)), rng.normal(size=(500, 2))
        >>> abs(mmd(a, b)) < 0.01, mmd(a, b + 2) > 0.1
        (True, True)
    """
    gen = np.random.default_rng(seed)

    def prep(a: np.ndarray | Tensor) -> Tensor:
        arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
        arr = arr.reshape(arr.shape[0], -1).astype(np.float64)
        if arr.shape[0] > max_points:
            arr = arr[np.sort(gen.choice(arr.shape[0], max_points, replace=False))]
        return torch.from_numpy(arr)

    a, b = prep(x), prep(y)
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError("mmd needs at least 2 points in each sample")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"mmd: samples have {a.shape[1]} and {b.shape[1]} features")
    d_aa, d_bb, d_ab = torch.cdist(a, a) ** 2, torch.cdist(b, b) ** 2, torch.cdist(a, b) ** 2
    if bandwidth is None:
        pooled = torch.cat([a, b])
        d = torch.cdist(pooled, pooled)
        iu = torch.triu_indices(len(pooled), len(pooled), 1)
        bandwidth = float(d[iu[0], iu[1]].median())
        bandwidth = bandwidth if bandwidth > 0 else 1.0
    gamma = 1.0 / (2.0 * bandwidth**2)
    k_aa, k_bb, k_ab = (-gamma * d_aa).exp(), (-gamma * d_bb).exp(), (-gamma * d_ab).exp()
    m, n = a.shape[0], b.shape[0]
    term_aa = (k_aa.sum() - k_aa.diagonal().sum()) / (m * (m - 1))
    term_bb = (k_bb.sum() - k_bb.diagonal().sum()) / (n * (n - 1))
    return float(term_aa + term_bb - 2.0 * k_ab.mean())
