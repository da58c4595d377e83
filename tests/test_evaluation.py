"""Evaluation: exact log-likelihood summaries, batching, errors, sampling, throughput, MMD."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import invertible
from invertible.checkpoint import CheckpointMismatchError
from invertible.evaluation import (
    density_throughput,
    evaluate,
    evaluate_array,
    log_likelihoods,
    mmd,
    naive_steady_state_speed,
    sample_to_npy,
    sampling_throughput,
    sequence_sampling_speed,
    timed,
)


def _gaussian_flow(d: int = 3, log_scale: float = 0.5) -> invertible.Flow:
    flow = invertible.Flow(invertible.Rescaling(d), invertible.StandardNormal(d))
    torch.nn.init.constant_(flow.transform.log_scale, log_scale)
    return flow


def _reference(x: np.ndarray, log_scale: float) -> np.ndarray:
    s = math.exp(log_scale)
    return (-0.5 * (x / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)).sum(axis=1)


def test_mean_and_two_standard_errors() -> None:
    x = np.random.default_rng(0).normal(size=(1000, 3)).astype(np.float32)
    data = SimpleNamespace(name="g", test=x, info={})
    res = evaluate(_gaussian_flow(), data)
    ref = _reference(x.astype(np.float64), 0.5)
    assert res.log_prob == pytest.approx(ref.mean(), abs=1e-4)
    assert res.two_se == pytest.approx(2 * ref.std(ddof=1) / math.sqrt(1000), rel=1e-4)
    assert res.n == 1000 and res.features == 3 and res.bits_per_dim is None
    assert "nats" in str(res)


def test_batching_does_not_change_the_result() -> None:
    x = np.random.default_rng(1).normal(size=(103, 3)).astype(np.float32)
    flow = _gaussian_flow()
    a = log_likelihoods(flow, x, batch_size=7)
    b = log_likelihoods(flow, x, batch_size=4096)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_bits_per_dim_for_discrete_data() -> None:
    x = np.zeros((10, 3), np.float32)
    data = SimpleNamespace(name="d", test=x, info={"discrete": True, "bin_width": 1 / 256})
    res = evaluate(_gaussian_flow(log_scale=0.0), data)
    expected = (-res.log_prob / 3 + math.log(256)) / math.log(2)
    assert res.bits_per_dim == pytest.approx(expected)


def test_wrong_dimension_and_nan_rows() -> None:
    flow = _gaussian_flow(3)
    with pytest.raises(CheckpointMismatchError, match="has 2 features per point but the model"):
        evaluate_array(flow, np.zeros((4, 2), np.float32))
    bad = np.zeros((4, 3), np.float32)
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate_array(flow, bad)


def test_sampling_to_npy_and_throughput(tmp_path: Path) -> None:
    flow = _gaussian_flow()
    out = tmp_path / "s.npy"
    samples = sample_to_npy(flow, 250, out, batch_size=100, seed=0)
    assert samples.shape == (250, 3) and np.array_equal(np.load(out), samples)
    again = sample_to_npy(flow, 250, tmp_path / "t.npy", batch_size=100, seed=0)
    assert np.array_equal(samples, again)
    assert density_throughput(flow, samples, n=100, repeats=1) > 0
    assert sampling_throughput(flow, n=100, repeats=1) > 0


def test_sequence_sampler_speeds_restore_the_method() -> None:
    teacher = invertible.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1, 2],
                                    length=64)  # fmt: skip
    layer = next(m for m in teacher.modules() if isinstance(m, invertible.WaveNetAutoregressive))
    row = sequence_sampling_speed(teacher, length=64, batch=2, repeats=3, sequential="naive")
    assert layer.sequential == "incremental"  # restored
    assert row["method"] == "naive" and row["samples_per_s"] == pytest.approx(128 / row["seconds"])
    assert row["x_real_time"] == pytest.approx(2 * row["x_real_time_per_stream"])
    steady = naive_steady_state_speed(teacher, batch=2, repeats=1)
    assert steady["samples_per_s"] == pytest.approx(2 / steady["seconds_per_step"])
    with pytest.raises(ValueError, match="statistic"):
        timed(lambda: None, torch.device("cpu"), 1, "mean")


def test_mmd_median_heuristic() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
    same = mmd(a, b)
    shifted = mmd(a, b + 1.0)
    assert abs(same) < 0.01 < shifted
    assert mmd(torch.from_numpy(a), b, bandwidth=2.0) == pytest.approx(mmd(a, b, bandwidth=2.0))
    with pytest.raises(ValueError, match="features"):
        mmd(a, b[:, :2])
