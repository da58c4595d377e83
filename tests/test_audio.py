"""Audio evaluation helpers: units, spectral distances, level checks, AR baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from invertible.data import SpeechData
from invertible.evaluation.audio import (
    SequenceEval,
    bits_per_sample,
    clipped_fraction,
    compare_with_baselines,
    evaluate_sequence,
    fit_baselines,
    frechet_log_mel_distance,
    judge,
    log_mel_distance,
    log_mel_spectrogram,
    long_term_log_mel_distance,
    long_term_mel_cepstral_distortion,
    long_term_spectrum_distance,
    mean_2se,
    mel_cepstral_distortion,
    mel_filterbank,
    nats_per_sample,
    rms_ratio,
    sample_quality,
    sequence_log_likelihoods,
)
from invertible.presets.wavenet import LinearPredictionAR
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
    baselines = fit_baselines(data.eval_utterances("train"), {"ar2": (2, "normal"),
                                                              "lap2": (2, "laplace")})  # fmt: skip
    gaussian = baselines["ar2"]
    np.testing.assert_allclose(gaussian.coefficients.detach(), [1.3, -0.6], atol=0.01)
    assert math.exp(float(gaussian.log_scale.detach())) == pytest.approx(sigma, rel=0.01)
    test = data.eval_utterances("test")
    ll = evaluate_sequence(gaussian, test, "ar2")
    entropy_rate = 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    assert -ll.nats_per_sample == pytest.approx(entropy_rate, abs=0.01)
    assert ll.bits_per_sample == pytest.approx(bits_per_sample(ll.nats_per_sample))
    # Gaussian residuals: the Laplace model must be worse, by about the known gap
    lap = evaluate_sequence(baselines["lap2"], test, "lap2")
    gap = 0.5 + math.log(2 / math.pi)  # KL(Gaussian || Laplace with b = E|e|) per sample
    assert ll.nats_per_sample - lap.nats_per_sample == pytest.approx(gap, abs=0.01)


def test_iid_gaussian_baseline(ar2_data: tuple[SpeechData, float, float]) -> None:
    data, _, var_x = ar2_data
    iid = fit_baselines(data.eval_utterances("train"))["iid-gaussian"]
    assert iid.coefficients.shape == (0,)
    assert math.exp(float(iid.log_scale.detach())) == pytest.approx(math.sqrt(var_x), rel=0.05)
    ll = evaluate_sequence(iid, data.eval_utterances("test"))
    expected = 0.5 * math.log(2 * math.pi * math.e * var_x)
    assert -ll.nats_per_sample == pytest.approx(expected, abs=0.05)


def test_baselines_score_from_zero_history() -> None:
    x = torch.tensor([[0.5, 0.25, 0.0]], dtype=torch.float64)
    model = LinearPredictionAR(1).double()
    model.transform.net.set_linear_prediction(torch.tensor([0.5]), 0.0)
    resid = torch.tensor([0.5, 0.0, -0.125], dtype=torch.float64)  # x[0] from silence
    expected = (-0.5 * resid**2 - 0.5 * math.log(2 * math.pi)).sum()
    torch.testing.assert_close(model.log_prob(x)[0], expected)
    per = sequence_log_likelihoods(model, [x[0].numpy()])
    assert per[0] == pytest.approx(float(expected) / 3)


def test_judge_marks_a_teacher_below_the_best_baseline_failed(
    ar2_data: tuple[SpeechData, float, float],
) -> None:
    data, _, _ = ar2_data
    baselines = fit_baselines(data.eval_utterances("train"))
    test = data.eval_utterances("test")
    # a "teacher" that is the i.i.d. model is worse than AR(32): FAILED, named as such
    weak = compare_with_baselines(baselines["iid-gaussian"], test, baselines, "teacher")
    assert weak["verdict"]["status"] == "FAILED"
    assert weak["verdict"]["best_baseline"] == "gaussian-ar32"
    assert "FAILED" in weak["verdict"]["line"] and weak["verdict"]["margin_nats"] < 0
    # AR(2), the true model class, fitted on the test waveforms themselves beats all three
    true = LinearPredictionAR(2).double()
    true.fit_least_squares([torch.as_tensor(x, dtype=torch.float64) for x in test])
    strong = compare_with_baselines(true, test, baselines, "teacher")
    assert strong["verdict"]["status"] == "PASSED" and strong["verdict"]["margin_nats"] > 0


def test_judge_constructed_case() -> None:
    def ev(name: str, ll: float) -> SequenceEval:
        return SequenceEval(name, ll, 0.1, bits_per_sample(ll), 3, 300, [ll] * 3)

    base = {"gaussian-ar32": ev("gaussian-ar32", 2.0), "laplace-ar32": ev("laplace-ar32", 2.3),
            "iid-gaussian": ev("iid-gaussian", 0.8)}  # fmt: skip
    verdict = judge(ev("teacher", 2.2), base)
    assert (verdict["status"], verdict["best_baseline"]) == ("FAILED", "laplace-ar32")
    assert verdict["margin_nats"] == pytest.approx(-0.1)
    assert judge(ev("teacher", 2.4), base)["status"] == "PASSED"


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


def test_unconditional_sample_distances() -> None:
    rng = np.random.default_rng(1)
    speechlike = [
        np.convolve(rng.laplace(0, 0.02, 16000), [1.0, 0.9, 0.5], "same") for _ in range(4)
    ]
    other = [np.convolve(rng.laplace(0, 0.02, 16000), [1.0, 0.9, 0.5], "same") for _ in range(4)]
    white = [rng.normal(0, 0.02, 16000) for _ in range(4)]
    # the same process scores lower than a different spectrum on every distance
    for distance in (long_term_log_mel_distance, frechet_log_mel_distance,
                     long_term_mel_cepstral_distortion, long_term_spectrum_distance):  # fmt: skip
        assert distance(other, speechlike) < distance(white, speechlike), distance.__name__
    assert frechet_log_mel_distance(speechlike, speechlike) == pytest.approx(0.0, abs=1e-6)
    # a gain g shifts every log-mel bin by ln g, and the cepstral envelope not at all
    loud = [3.0 * x for x in speechlike]
    assert long_term_log_mel_distance(loud, speechlike) == pytest.approx(math.log(3.0), rel=1e-3)
    assert long_term_mel_cepstral_distortion(loud, speechlike) < 1e-6
    q = sample_quality([0.5 * x for x in speechlike], speechlike)
    assert q["rms_ratio"] == pytest.approx(0.5) and q["clipped"] == 0.0


def test_spectrogram_png(tmp_path: Path) -> None:
    x = np.sin(2 * np.pi * 440 * np.arange(8000) / 16000) * 0.3
    path = save_spectrogram_png(x, tmp_path / "sub" / "spec.png", title="440 Hz")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
