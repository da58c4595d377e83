"""Audio evaluation helpers: units, spectral distances, level checks, AR baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible.data import SpeechData
from invertible.evaluation.audio import (
    ar_least_squares,
    ar_log_likelihood,
    bits_per_sample,
    clipped_fraction,
    log_mel_distance,
    log_mel_spectrogram,
    long_term_spectrum_distance,
    mean_2se,
    mel_cepstral_distortion,
    mel_filterbank,
    nats_per_sample,
    rms_ratio,
)
from invertible.reports.plots import save_spectrogram_png


def _ar2(rng: np.random.Generator, n: int, a1: float, a2: float, sigma: float) -> np.ndarray:
    e = rng.normal(0.0, sigma, n + 1000)
    x = np.zeros_like(e)
    for t in range(2, e.size):  # a plain loop: an independent check of the fitted filter
        x[t] = a1 * x[t - 1] + a2 * x[t - 2] + e[t]
    return x[1000:]  # drop the start-up transient: the process is then stationary


def _quantise(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x * 32768), -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def ar2_data() -> tuple[SpeechData, float, float]:
    """AR(2) speech-like data at a level where 16-bit quantisation is negligible."""
    rng = np.random.default_rng(0)
    a1, a2, sigma = 1.3, -0.6, 300 / 32768  # complex poles of modulus sqrt(0.6): stable
    clips = [_quantise(_ar2(rng, 40000, a1, a2, sigma)) for _ in range(8)]
    data = SpeechData("ar2", clips[:4], [], clips[4:])
    var_x = sigma**2 * (1 - a2) / ((1 + a2) * ((1 - a2) ** 2 - a1**2))
    return data, sigma, var_x


def test_ar2_fit_recovers_the_entropy_rate(ar2_data: tuple[SpeechData, float, float]) -> None:
    data, sigma, _ = ar2_data
    fit = ar_least_squares(data.eval_utterances("train"), order=2)
    np.testing.assert_allclose(fit.coefficients, [1.3, -0.6], atol=0.01)
    assert abs(fit.intercept) < 1e-4 and fit.scale == pytest.approx(sigma, rel=0.01)
    test = data.eval_utterances("test")
    ll = np.concatenate([ar_log_likelihood(x, *fit[:3]) for x in test])
    entropy_rate = 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    assert -ll.mean() == pytest.approx(entropy_rate, abs=0.01)
    # Gaussian residuals: the Laplace model must be worse, by about the known gap
    ll_lap = np.concatenate([ar_log_likelihood(x, *fit[:2], fit.laplace_scale, "laplace")
                             for x in test])  # fmt: skip
    gap = 0.5 + math.log(2 / math.pi)  # KL(Gaussian || Laplace with b = E|e|) per sample
    assert ll.mean() - ll_lap.mean() == pytest.approx(gap, abs=0.01)


def test_iid_gaussian_baseline(ar2_data: tuple[SpeechData, float, float]) -> None:
    data, _, var_x = ar2_data
    fit = ar_least_squares(data.eval_utterances("train"), order=0)
    assert fit.coefficients.shape == (0,)
    assert fit.scale == pytest.approx(math.sqrt(var_x), rel=0.05)
    ll = np.concatenate([ar_log_likelihood(x, *fit[:3]) for x in data.eval_utterances("test")])
    assert -ll.mean() == pytest.approx(0.5 * math.log(2 * math.pi * math.e * var_x), abs=0.05)


def test_ar_log_likelihood_from_zero_history() -> None:
    x = np.array([0.5, 0.25, 0.0])
    ll = ar_log_likelihood(x, np.array([0.5]), 0.0, 1.0)
    resid = np.array([0.5, 0.0, -0.125])  # x[0] is predicted from silence
    np.testing.assert_allclose(ll, -0.5 * resid**2 - 0.5 * math.log(2 * math.pi))
    lap = ar_log_likelihood(x, np.array([0.5]), 0.0, 2.0, distribution="laplace")
    np.testing.assert_allclose(lap, -np.abs(resid) / 2.0 - math.log(4.0))
    with pytest.raises(ValueError, match="distribution"):
        ar_log_likelihood(x, np.zeros(1), 0.0, 1.0, distribution="cauchy")
    with pytest.raises(ValueError, match="too few"):
        ar_least_squares([np.zeros(3)], 4)


def test_units() -> None:
    # i.i.d. uniform over all 65,536 levels: density 1/2 on [-1, 1] -> 16 bits/sample
    assert bits_per_sample(-math.log(2.0)) == pytest.approx(16.0)
    assert bits_per_sample(0.0, bit_depth=8) == pytest.approx(7.0)
    np.testing.assert_allclose(bits_per_sample(np.array([0.0, math.log(4)])), [15.0, 13.0])
    assert nats_per_sample(-50.0, 25) == -2.0
    m, two_se = mean_2se([1.0, 3.0])
    assert m == 2.0 and two_se == pytest.approx(2.0)
    assert math.isnan(mean_2se([1.0])[1])
    with pytest.raises(ValueError):
        mean_2se([])


def test_mel_features_and_distances() -> None:
    fb = mel_filterbank(n_mels=10, n_fft=256, sample_rate=8000)
    assert fb.shape == (10, 129) and np.allclose(fb.max(axis=1), 1.0, atol=0.2)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.05, 16000)
    spec = log_mel_spectrogram(x)
    assert spec.shape == (80, 63) and torch.isfinite(spec).all()
    torch.testing.assert_close(log_mel_spectrogram(torch.tensor(x)), spec)  # torch input
    assert log_mel_spectrogram(np.zeros(100)).shape[0] == 80  # shorter than a frame
    y = x + rng.normal(0, 0.05, x.size)
    assert log_mel_distance(x, x) == 0.0 < log_mel_distance(x, y)
    assert log_mel_distance(x, 2 * x) == pytest.approx(math.log(2.0), abs=1e-6)
    assert mel_cepstral_distortion(x, 2 * x) < 1e-6 < mel_cepstral_distortion(x, y)
    assert long_term_spectrum_distance(x, 0.1 * x) == pytest.approx(20.0, abs=1e-6)
    assert long_term_spectrum_distance([x[:8000], x[8000:]], x) < 1.0  # lists, any lengths
    assert rms_ratio(0.5 * x, x) == pytest.approx(0.5)
    assert clipped_fraction(np.array([1.0, -1.0, 0.999, 0.0])) == 0.5


def test_spectrogram_png(tmp_path: Path) -> None:
    x = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * 0.3
    path = save_spectrogram_png(x, tmp_path / "sub" / "spec.png", title="440 Hz")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
