"""Synthetic datasets: six 2-D toys and an 8-D Gaussian mixture with a known density.

Every sample comes from a seeded :class:`numpy.random.Generator`; each split has its own
stream, so changing ``n_train`` does not change the test set. Arrays are returned in the
generating space (not standardised) unless ``standardize=True``, so that ``true_log_prob``
is the exact density of what you get.

Closed-form densities (``TabularData.true_log_prob``):

- ``8gaussians``: equal mixture of 8 isotropic Gaussians, centres on a circle of radius
  ``2*sqrt(2)``, standard deviation ``1/(2*sqrt(2))``.
- ``checkerboard``: uniform (1/32) on the 8 "black" 2x2 cells of a 4x4 board on
  ``[-4, 4)^2``, zero elsewhere (log-density ``-inf`` there).
- ``rings``: 4 concentric rings; angle uniform, signed radius ``N(r_k, 0.1^2)`` with
  weights proportional to ``r_k``. The density is
  ``sum_k w_k [N(|x|; r_k, s) + N(|x|; -r_k, s)] / (2 pi |x|)`` (the second term folds
  negative radii through the origin), exact.
- ``gmm8``: a fixed mixture of 5 full-covariance Gaussians in 8-D.

``moons``, ``pinwheel`` and ``spirals`` have no closed-form density (a noisy curve is a
convolution with no closed form; the pinwheel map has no closed-form inverse), so their
``true_log_prob`` is ``None``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from invertible.data.base import TabularData, seeded_rng

__all__ = ["TOY_2D", "gmm8_parameters", "load_gmm8", "load_toy", "toy_log_prob", "toy_sample"]

TOY_2D: tuple[str, ...] = ("moons", "rings", "8gaussians", "checkerboard", "pinwheel", "spirals")

_LOG_2PI = float(np.log(2.0 * np.pi))

# 8gaussians
_G8_RADIUS = 2.0 * np.sqrt(2.0)
_G8_SIGMA = 1.0 / (2.0 * np.sqrt(2.0))
_G8_CENTERS = _G8_RADIUS * np.stack(
    [np.cos(np.arange(8) * np.pi / 4), np.sin(np.arange(8) * np.pi / 4)], axis=1
)
# rings
_RING_RADII = np.array([0.75, 1.5, 2.25, 3.0])
_RING_SIGMA = 0.1
_RING_WEIGHTS = _RING_RADII / _RING_RADII.sum()
# checkerboard: cells (i, j), i, j in 0..3, cover [-4 + 2i, -2 + 2i) x [-4 + 2j, -2 + 2j);
# the filled ones have i + j even.
_CB_CELLS = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis=axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def _norm_logpdf(x: np.ndarray, mu: np.ndarray | float, sigma: float) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * _LOG_2PI


# --------------------------------------------------------------------------- samplers


def _sample_moons(n: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0.0, np.pi, size=n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    pts = np.stack([x - 0.5, y - 0.25], axis=1)
    return pts + 0.1 * rng.standard_normal((n, 2))


def _sample_8gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    k = rng.integers(0, 8, size=n)
    return _G8_CENTERS[k] + _G8_SIGMA * rng.standard_normal((n, 2))


def _sample_rings(n: int, rng: np.random.Generator) -> np.ndarray:
    k = rng.choice(len(_RING_RADII), size=n, p=_RING_WEIGHTS)
    theta = rng.uniform(0.0, 2.0 * np.pi, size=n)
    rho = _RING_RADII[k] + _RING_SIGMA * rng.standard_normal(n)
    return np.stack([rho * np.cos(theta), rho * np.sin(theta)], axis=1)


def _sample_checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    cell = _CB_CELLS[rng.integers(0, len(_CB_CELLS), size=n)]
    return -4.0 + 2.0 * cell + 2.0 * rng.random((n, 2))


def _sample_pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    k = rng.integers(0, arms, size=n)
    r = 1.0 + radial_std * rng.standard_normal(n)
    t = tangential_std * rng.standard_normal(n)
    angle = 2.0 * np.pi * k / arms + rate * np.exp(r)
    c, s = np.cos(angle), np.sin(angle)
    return 2.0 * np.stack([c * r - s * t, s * r + c * t], axis=1)


def _sample_spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.sqrt(rng.random(n)) * 3.0 * np.pi
    arm = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    pts = arm[:, None] * np.stack([-t * np.cos(t), t * np.sin(t)], axis=1) / 3.0
    return pts + 0.1 * rng.standard_normal((n, 2))


_SAMPLERS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "moons": _sample_moons,
    "rings": _sample_rings,
    "8gaussians": _sample_8gaussians,
    "checkerboard": _sample_checkerboard,
    "pinwheel": _sample_pinwheel,
    "spirals": _sample_spirals,
}


# --------------------------------------------------------------------------- densities


def _logp_8gaussians(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    d2 = ((x[:, None, :] - _G8_CENTERS[None]) ** 2).sum(-1)
    comp = -0.5 * d2 / _G8_SIGMA**2 - 2.0 * np.log(_G8_SIGMA) - _LOG_2PI
    return _logsumexp(comp, axis=1) - np.log(8.0)


def _logp_checkerboard(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    cell = np.floor((x + 4.0) / 2.0)
    inside = np.all((cell >= 0) & (cell <= 3), axis=1) & (cell.sum(axis=1) % 2 == 0)
    return np.where(inside, -np.log(32.0), -np.inf)


def _logp_rings(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    s = np.maximum(np.sqrt((x**2).sum(axis=1)), 1e-300)
    r = _RING_RADII[None, :]
    radial = np.logaddexp(
        _norm_logpdf(s[:, None], r, _RING_SIGMA), _norm_logpdf(s[:, None], -r, _RING_SIGMA)
    )
    mix = _logsumexp(np.log(_RING_WEIGHTS)[None, :] + radial, axis=1)
    return mix - _LOG_2PI - np.log(s)


_LOG_PROBS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "8gaussians": _logp_8gaussians,
    "checkerboard": _logp_checkerboard,
    "rings": _logp_rings,
}

_DESCRIPTIONS = {
    "moons": "two interleaved half circles with N(0, 0.1^2) noise, centred near the origin",
    "rings": "4 concentric rings (radii 0.75..3, radial std 0.1), weights proportional to radius",
    "8gaussians": "equal mixture of 8 isotropic Gaussians on a circle of radius 2*sqrt(2)",
    "checkerboard": "uniform on the 8 black cells of a 4x4 checkerboard on [-4, 4)^2",
    "pinwheel": "5-arm pinwheel (radially warped Gaussians)",
    "spirals": "two interleaved spirals with N(0, 0.1^2) noise",
}


def toy_sample(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` float64 samples ``[n, 2]`` of a 2-D toy from ``rng``.

    Example:
        >>> toy_sample("8gaussians", 3, np.random.default_rng(0)).shape
        (3, 2)
    """
    try:
        sampler = _SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown 2-D toy {name!r}; known: {', '.join(TOY_2D)}") from None
    return sampler(int(n), rng)


def toy_log_prob(name: str) -> Callable[[np.ndarray], np.ndarray] | None:
    """The closed-form log-density of a 2-D toy (``[N, 2] -> [N]``), or None if unknown.

    Example:
        >>> lp = toy_log_prob("checkerboard")
        >>> float(lp(np.array([[-3.0, -3.0]]))[0])  # inside a filled cell: log(1/32)
        -3.4657...
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown 2-D toy {name!r}; known: {', '.join(TOY_2D)}")
    return _LOG_PROBS.get(name)


# --------------------------------------------------------------------------- gmm8


@lru_cache(maxsize=8)
def gmm8_parameters(
    param_seed: int = 20240601, dim: int = 8, n_components: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The fixed mixture behind ``gmm8``: ``(weights [K], means [K, D], covariances [K, D, D])``.

    The parameters depend only on ``param_seed`` (not on the sampling ``seed``), so every
    run benchmarks the same density. Means are ``N(0, 2^2 I)``; each covariance is
    ``Q diag(lambda) Q^T`` with a random rotation ``Q`` and eigenvalues log-uniform in
    ``[0.05, 1]`` (correlated, anisotropic components); weights are Dirichlet(5).
    """
    rng = seeded_rng(param_seed, "gmm8-parameters", dim, n_components)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.normal(0.0, 2.0, size=(n_components, dim))
    covs = np.empty((n_components, dim, dim))
    for k in range(n_components):
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))
        lam = np.exp(rng.uniform(np.log(0.05), np.log(1.0), size=dim))
        covs[k] = (q * lam) @ q.T
        covs[k] = 0.5 * (covs[k] + covs[k].T)
    weights.setflags(write=False)
    means.setflags(write=False)
    covs.setflags(write=False)
    return weights, means, covs


def _gmm_log_prob_fn(
    weights: np.ndarray, means: np.ndarray, covs: np.ndarray
) -> Callable[[np.ndarray], np.ndarray]:
    chol = np.linalg.cholesky(covs)
    chol_inv = np.linalg.inv(chol)
    dim = means.shape[1]
    log_diag = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
    const = np.log(weights) - 0.5 * dim * _LOG_2PI - log_diag

    def log_prob(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        diff = x[:, None, :] - means[None]  # [N, K, D]
        z = np.einsum("kij,nkj->nki", chol_inv, diff)
        return _logsumexp(const[None, :] - 0.5 * (z**2).sum(-1), axis=1)

    return log_prob


def _gmm_sample(
    weights: np.ndarray, means: np.ndarray, covs: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    chol = np.linalg.cholesky(covs)
    k = rng.choice(len(weights), size=n, p=weights)
    z = rng.standard_normal((n, means.shape[1]))
    return means[k] + np.einsum("nij,nj->ni", chol[k], z)


# --------------------------------------------------------------------------- loaders


def _train_mode(standardize: bool | str) -> bool:
    """``standardize`` as a bool: True/"train" (training-split statistics), False/"none"."""
    if isinstance(standardize, str):
        if standardize not in ("train", "none"):
            raise ValueError(
                f"standardize must be True/'train' or False/'none', got {standardize!r}"
            )
        return standardize == "train"
    return bool(standardize)


def _standardized(
    name: str,
    splits: list[np.ndarray],
    log_prob: Callable[[np.ndarray], np.ndarray] | None,
    standardize: bool | str,
    info: dict,
) -> TabularData:
    standardize = _train_mode(standardize)
    train, val, test = splits
    mean = std = None
    if standardize:
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        train, val, test = ((a - mean) / std for a in (train, val, test))
        info["standardization"] = "z-scored with the mean/std of the training split only"
        if log_prob is not None:
            base, m, s = log_prob, mean, std
            log_det = float(np.log(s).sum())

            def log_prob(y: np.ndarray) -> np.ndarray:
                return base(np.asarray(y, dtype=np.float64) * s + m) + log_det

    else:
        info["standardization"] = "none (arrays are in the generating space)"
    data = TabularData(
        name=name,
        train=train,
        val=val,
        test=test,
        mean=None if mean is None else mean.astype(np.float32),
        std=None if std is None else std.astype(np.float32),
        true_log_prob=log_prob,
        info=info,
    )
    if log_prob is not None:
        data.info["oracle_test_log_prob"] = float(np.mean(log_prob(data.test)))
    return data


def load_toy(
    name: str,
    *,
    seed: int = 0,
    n_train: int = 20000,
    n_val: int = 5000,
    n_test: int = 10000,
    standardize: bool | str = False,
) -> TabularData:
    """Generate a 2-D toy dataset.

    Args:
        name: One of ``moons``, ``rings``, ``8gaussians``, ``checkerboard``, ``pinwheel``,
            ``spirals``.
        seed: Sampling seed; each split uses its own stream derived from it.
        n_train: Training split size.
        n_val: Validation split size.
        n_test: Test split size.
        standardize: ``True``/``"train"``: z-score with training-split statistics
            (``true_log_prob`` follows); ``False``/``"none"`` (default): generating space.

    Example:
        >>> data = load_toy("8gaussians", n_train=100, n_val=10, n_test=10)
        >>> data.train.shape, data.train.dtype, data.true_log_prob is not None
        ((100, 2), dtype('float32'), True)
    """
    if name not in _SAMPLERS:
        raise ValueError(f"unknown 2-D toy {name!r}; known: {', '.join(TOY_2D)}")
    splits = [
        toy_sample(name, n, seeded_rng(seed, "toy", name, i))
        for i, n in enumerate((n_train, n_val, n_test))
    ]
    log_prob = _LOG_PROBS.get(name)
    info = {
        "source": "synthetic (invertible.data.toy)",
        "description": _DESCRIPTIONS[name],
        "seed": seed,
        "sizes": {"train": n_train, "val": n_val, "test": n_test},
        "true_log_prob": "closed form, exact" if log_prob else "not available in closed form",
        "license": "generated data; no restrictions",
    }
    return _standardized(name, splits, log_prob, standardize, info)


def load_gmm8(
    *,
    seed: int = 0,
    n_train: int = 20000,
    n_val: int = 5000,
    n_test: int = 10000,
    param_seed: int = 20240601,
    dim: int = 8,
    n_components: int = 5,
    standardize: bool | str = False,
) -> TabularData:
    """An 8-D mixture of 5 full-covariance Gaussians with its exact log-density.

    The mixture is fixed by ``param_seed`` (see :func:`gmm8_parameters`); ``seed`` only
    drives sampling. Compare a model's mean test log-likelihood with
    ``info["oracle_test_log_prob"]`` (the true density on the same test points).

    Example:
        >>> data = load_gmm8(n_train=50, n_val=10, n_test=10)
        >>> data.train.shape, data.true_log_prob(data.test).shape
        ((50, 8), (10,))
    """
    weights, means, covs = gmm8_parameters(param_seed, dim, n_components)
    splits = [
        _gmm_sample(weights, means, covs, n, seeded_rng(seed, "gmm8", param_seed, i))
        for i, n in enumerate((n_train, n_val, n_test))
    ]
    info = {
        "source": "synthetic (invertible.data.toy.gmm8_parameters)",
        "description": f"fixed mixture of {n_components} full-covariance Gaussians in {dim}-D",
        "param_seed": param_seed,
        "seed": seed,
        "sizes": {"train": n_train, "val": n_val, "test": n_test},
        "mixture_weights": [float(w) for w in weights],
        "true_log_prob": "closed form, exact",
        "license": "generated data; no restrictions",
    }
    return _standardized("gmm8", splits, _gmm_log_prob_fn(weights, means, covs), standardize, info)
