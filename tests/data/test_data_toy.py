"""Synthetic datasets: shapes, determinism, and the exactness of ``true_log_prob``."""

from __future__ import annotations

import numpy as np
import pytest

from invertible.data import TabularData, load_dataset
from invertible.data.toy import TOY_2D, gmm8_parameters, toy_log_prob

EXACT_2D = ("8gaussians", "checkerboard", "rings")
SMALL = {"n_train": 300, "n_val": 50, "n_test": 80}


@pytest.mark.parametrize("name", [*TOY_2D, "gmm8"])
def test_shapes_dtypes_determinism(name: str) -> None:
    a = load_dataset(name, **SMALL)
    b = load_dataset(name, **SMALL)
    c = load_dataset(name, seed=1, **SMALL)
    assert isinstance(a, TabularData)
    d = 8 if name == "gmm8" else 2
    assert a.features == d
    for split, n in zip(("train", "val", "test"), (300, 50, 80)):
        arr = getattr(a, split)
        assert arr.shape == (n, d) and arr.dtype == np.float32
        assert np.isfinite(arr).all()
        np.testing.assert_array_equal(arr, getattr(b, split))
        assert not np.array_equal(arr, getattr(c, split))
    assert a.mean is None and a.std is None  # generating space by default
    assert "none" in a.info["standardization"]
    assert (a.true_log_prob is not None) == (name in (*EXACT_2D, "gmm8"))


def test_default_sizes_and_split_independence() -> None:
    d = load_dataset("moons")
    assert (len(d.train), len(d.val), len(d.test)) == (20000, 5000, 10000)
    # each split has its own stream: changing n_train leaves the test set unchanged
    e = load_dataset("moons", n_train=10)
    np.testing.assert_array_equal(d.test, e.test)
    assert not np.array_equal(d.train[:10], d.test[:10])


def _grid(lo: float, hi: float, n: int) -> tuple[np.ndarray, float]:
    h = (hi - lo) / n
    c = lo + h * (np.arange(n) + 0.5)  # cell centres: never exactly 0
    xx, yy = np.meshgrid(c, c, indexing="ij")
    return np.stack([xx.ravel(), yy.ravel()], axis=1), h * h


@pytest.mark.parametrize("name", EXACT_2D)
def test_2d_density_integrates_to_one(name: str) -> None:
    lp = toy_log_prob(name)
    assert lp is not None
    pts, area = _grid(-5.0, 5.0, 700)
    p = np.exp(lp(pts))
    total = p.sum() * area
    assert total == pytest.approx(1.0, abs=2e-3)


@pytest.mark.parametrize("name", EXACT_2D)
def test_2d_density_matches_its_sampler(name: str) -> None:
    """The mean log-density of samples equals the grid integral of p log p (the negative
    entropy): the sampler and the closed form describe the same distribution."""
    lp = toy_log_prob(name)
    data = load_dataset(name, n_train=10, n_val=10, n_test=60000)
    mc = float(np.mean(lp(data.test)))
    assert data.info["oracle_test_log_prob"] == pytest.approx(mc)
    pts, area = _grid(-5.0, 5.0, 700)
    logp = lp(pts)
    p = np.exp(logp)
    neg_entropy = float(np.sum(p[p > 0] * logp[p > 0]) * area)
    se = float(np.std(lp(data.test)) / np.sqrt(len(data.test)))
    assert mc == pytest.approx(neg_entropy, abs=5 * se + 5e-3)


def test_2d_histogram_matches_density() -> None:
    """Coarse histogram of 8gaussians samples against bin probabilities of the density."""
    lp = toy_log_prob("8gaussians")
    x = load_dataset("8gaussians", n_train=10, n_val=10, n_test=50000).test
    edges = np.linspace(-4.5, 4.5, 10)
    counts, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=[edges, edges])
    fine, area = _grid(-4.5, 4.5, 900)  # 100x100 sub-cells per bin
    p = np.exp(lp(fine)).reshape(900, 900) * area
    probs = p.reshape(9, 100, 9, 100).sum(axis=(1, 3))
    expected = probs * len(x)
    mask = expected > 20
    chi2 = float((((counts - expected) ** 2) / expected)[mask].sum())
    assert chi2 < 3 * mask.sum()


def test_checkerboard_support() -> None:
    d = load_dataset("checkerboard")
    lp = d.true_log_prob(d.train)
    np.testing.assert_allclose(lp, -np.log(32.0))
    assert np.isneginf(d.true_log_prob(np.array([[-3.0, -1.0], [5.0, 0.0]]))).all()


def test_gmm8_density_is_normalised_and_correct() -> None:
    from scipy.stats import multivariate_normal

    d = load_dataset("gmm8", n_train=10, n_val=10, n_test=2000)
    w, mu, cov = gmm8_parameters()
    assert w.shape == (5,) and mu.shape == (5, 8) and cov.shape == (5, 8, 8)
    # against scipy
    x = d.test.astype(np.float64)
    ref = np.log(sum(wk * multivariate_normal(m, c).pdf(x) for wk, m, c in zip(w, mu, cov)))
    np.testing.assert_allclose(d.true_log_prob(x), ref, rtol=1e-8, atol=1e-8)
    # Monte Carlo: E_q[p / q] = 1, with q the mixture with covariances inflated 1.5x
    # (drawn with scipy, independent of the loader; p / q <= 1.5^4 keeps the variance low)
    rng = np.random.default_rng(0)
    n = 100000
    comp = rng.choice(len(w), size=n, p=w)
    z = np.empty((n, 8))
    for k in range(len(w)):
        z[comp == k] = multivariate_normal(mu[k], 1.5 * cov[k]).rvs(
            size=int((comp == k).sum()), random_state=rng
        )
    q = sum(wk * multivariate_normal(m, 1.5 * c).pdf(z) for wk, m, c in zip(w, mu, cov))
    ratio = np.exp(d.true_log_prob(z)) / q
    se = ratio.std() / np.sqrt(n)
    assert se < 0.01
    assert ratio.mean() == pytest.approx(1.0, abs=4 * se)
    # the sampler draws from that mixture: exact first and second moments
    big = load_dataset("gmm8", n_train=10, n_val=10, n_test=100000, seed=3).test
    mean = (w[:, None] * mu).sum(0)
    second = sum(wk * (c + np.outer(m, m)) for wk, m, c in zip(w, mu, cov))
    np.testing.assert_allclose(big.mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(big.T, bias=True), second - np.outer(mean, mean), atol=0.08)


def test_gmm8_parameters_fixed_across_seeds() -> None:
    a = load_dataset("gmm8", seed=0, **SMALL)
    b = load_dataset("gmm8", seed=5, **SMALL)
    x = a.test[:5]
    np.testing.assert_allclose(a.true_log_prob(x), b.true_log_prob(x))
    assert a.info["mixture_weights"] == b.info["mixture_weights"]


@pytest.mark.parametrize("name", ["8gaussians", "gmm8", "moons"])
def test_standardize_uses_training_statistics_only(name: str) -> None:
    raw = load_dataset(name, **SMALL)
    std = load_dataset(name, standardize=True, **SMALL)
    np.testing.assert_allclose(std.mean, raw.train.astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(std.std, raw.train.astype(np.float64).std(0), rtol=1e-5)
    np.testing.assert_allclose(std.train.mean(0), 0.0, atol=1e-5)
    # val/test are transformed with the train statistics, not their own
    np.testing.assert_allclose(std.test, (raw.test - std.mean) / std.std, rtol=1e-5, atol=1e-5)
    assert not np.allclose(std.test.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(std.unstandardize(std.test), raw.test, rtol=1e-5, atol=1e-5)
    if raw.true_log_prob is not None:
        # y = (x - mean) / std  =>  log p_y(y) = log p_x(x) + sum(log std)
        expected = raw.true_log_prob(raw.test) + np.log(std.std.astype(np.float64)).sum()
        np.testing.assert_allclose(std.true_log_prob(std.test), expected, rtol=1e-4, atol=1e-4)


def test_standardized_2d_density_still_integrates_to_one() -> None:
    d = load_dataset("rings", standardize=True, **SMALL)
    pts, area = _grid(-5.0, 5.0, 800)
    assert np.exp(d.true_log_prob(pts)).sum() * area == pytest.approx(1.0, abs=3e-3)


def test_standardize_accepts_strings() -> None:
    a = load_dataset("moons", standardize="train", **SMALL)
    b = load_dataset("moons", standardize=True, **SMALL)
    np.testing.assert_array_equal(a.train, b.train)
    assert load_dataset("moons", standardize="none", **SMALL).mean is None
    with pytest.raises(ValueError, match="standardize"):
        load_dataset("moons", standardize="maf", **SMALL)
