"""Audio evaluation: log-mel features and distances, level checks, units, and AR baselines.

Conventions: waveforms are on the ``[-1, 1]`` scale of :class:`~invertible.data.speech.
SpeechData` (``x = (int16 + u) / 32768``), at 16 kHz unless told otherwise. Functions take
numpy arrays or torch tensors (1-D waveforms, or lists of them where noted).

Units. A flow's log-likelihood ``LL`` of a waveform is in nats per sample for densities on
the ``[-1, 1]`` scale. 16-bit audio has ``2^16`` levels over an interval of width 2, so one
quantisation bin is ``2^-15`` wide and the probability of a sample's integer value is about
``p(x) * 2^-15``; its code length is ``-log2(p(x) 2^-15) = 15 - LL / ln 2`` bits per sample
(:func:`bits_per_sample`). For reference, i.i.d. uniform noise over all 65,536 levels costs
16 bits/sample.

Baselines (numpy): :func:`ar_least_squares` fits a linear predictor of order ``p`` (with
intercept) by least squares, :func:`ar_log_likelihood` scores a waveform under it with
Gaussian or Laplace residuals, from zero history. ``order=0`` is the i.i.d. Gaussian (or
Laplace) baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

__all__ = [
    "ARFit",
    "ar_least_squares",
    "ar_log_likelihood",
    "bits_per_sample",
    "clipped_fraction",
    "log_mel_distance",
    "log_mel_spectrogram",
    "long_term_spectrum_distance",
    "mean_2se",
    "mel_cepstral_distortion",
    "mel_filterbank",
    "nats_per_sample",
    "rms_ratio",
]

SAMPLE_RATE = 16000
N_FFT = 1024
HOP = 256
N_MELS = 80
_LN2 = math.log(2.0)


def _wave(x: Any) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    return t.detach().to(torch.float64).reshape(-1)


def _waves(x: Any) -> list[torch.Tensor]:
    """One waveform or a list of them, as a list of float64 tensors."""
    if isinstance(x, (list, tuple)):
        return [_wave(a) for a in x]
    return [_wave(x)]


# --------------------------------------------------------------------------- units


def nats_per_sample(total_log_likelihood: float, n_samples: int) -> float:
    """Average log-likelihood in nats per sample.

    Example:
        >>> nats_per_sample(-300.0, 100)
        -3.0
    """
    return float(total_log_likelihood) / int(n_samples)


def bits_per_sample(ll_nats_per_sample: float | np.ndarray, bit_depth: int = 16) -> Any:
    """Code length of ``bit_depth``-bit audio in bits/sample, from nats/sample on ``[-1, 1]``.

    ``2^bit_depth`` levels over a width-2 interval make bins ``2^-(bit_depth-1)`` wide, so
    ``bits = (bit_depth - 1) - LL / ln 2`` (15 - LL/ln 2 for 16-bit audio).

    Example:
        >>> bits_per_sample(0.0), round(bits_per_sample(math.log(2.0)), 6)
        (15.0, 14.0)
    """
    bits = (bit_depth - 1) - np.asarray(ll_nats_per_sample, dtype=np.float64) / _LN2
    return float(bits) if bits.ndim == 0 else bits


def mean_2se(values: Iterable[float]) -> tuple[float, float]:
    """Mean and two standard errors (``2 s / sqrt(n)``) of per-utterance values.

    Example:
        >>> mean_2se([1.0, 2.0, 3.0])
        (2.0, 1.155)
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_2se needs at least one value")
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else float("nan")
    return float(v.mean()), 2.0 * se


# --------------------------------------------------------------------------- spectra


def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> np.ndarray:
    """Triangular filters equally spaced on the HTK mel scale, ``[n_mels, n_fft // 2 + 1]``.

    ``mel(f) = 2595 log10(1 + f / 700)``; each filter rises from its left neighbour's centre
    to 1 at its own and falls to its right neighbour's (unnormalised, peak 1).

    Example:
        >>> fb = mel_filterbank()
        >>> fb.shape, bool(fb.max() <= 1.0), bool((fb.sum(axis=1) > 0).all())
        ((80, 513), True, True)
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    mel = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    edges = 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rise = (freqs - lo) / (mid - lo)
    fall = (hi - freqs) / (hi - mid)
    return np.clip(np.minimum(rise, fall), 0.0, None)


def _hz_to_mel(f: float) -> float:
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _power_spectrogram(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    """``|STFT|^2`` with a Hann window, ``[n_fft // 2 + 1, frames]``."""
    if x.numel() < n_fft // 2 + 1:  # reflect padding needs more samples than half a frame
        x = torch.nn.functional.pad(x, (0, n_fft // 2 + 1 - x.numel()))
    window = torch.hann_window(n_fft, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop_length=hop, window=window, center=True, return_complex=True)
    return spec.abs().square()


def log_mel_spectrogram(
    x: Any,
    sample_rate: int = SAMPLE_RATE,
    n_fft: int = N_FFT,
    hop: int = HOP,
    n_mels: int = N_MELS,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Natural-log mel magnitude spectrogram ``[n_mels, frames]`` (float64).

    Magnitudes (not powers) of a Hann-windowed, centred STFT go through
    :func:`mel_filterbank`; ``log(max(mel, eps))`` keeps silence finite.

    Example:
        >>> log_mel_spectrogram(np.zeros(16000)).shape
        torch.Size([80, 63])
    """
    mag = _power_spectrogram(_wave(x), n_fft, hop).sqrt()
    fb = torch.as_tensor(mel_filterbank(n_mels, n_fft, sample_rate), dtype=mag.dtype)
    return torch.log(torch.clamp(fb @ mag, min=eps))


def _aligned(x: Any, y: Any, **kw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _wave(x), _wave(y)
    n = min(a.numel(), b.numel())
    return log_mel_spectrogram(a[:n], **kw), log_mel_spectrogram(b[:n], **kw)


def log_mel_distance(x: Any, y: Any, **kw: Any) -> float:
    """Frame-aligned log-mel spectral distance: per-frame RMS over mels, averaged.

    For waveforms that should match sample for sample (e.g. a student and its teacher fed
    the same noise); the longer one is cut to the shorter. In nats of magnitude.

    Example:
        >>> x = np.random.default_rng(0).normal(0, 0.1, 8000)
        >>> log_mel_distance(x, x), round(log_mel_distance(x, 2 * x), 6) == round(math.log(2), 6)
        (0.0, True)
    """
    a, b = _aligned(x, y, **kw)
    return float((a - b).square().mean(dim=0).sqrt().mean())


def mel_cepstral_distortion(x: Any, y: Any, n_ceps: int = 13, **kw: Any) -> float:
    """Mel-cepstral distortion in dB between two frame-aligned waveforms.

    Cepstra are the orthonormal DCT-II of the natural-log mel spectrogram (an MFCC-style
    stand-in for SPTK mel-cepstra); ``MCD = (10 / ln 10) sqrt(2 sum_{k=1}^{K-1} dc_k^2)``
    per frame (``c_0``, the energy, excluded), averaged over frames.

    Example:
        >>> x = np.random.default_rng(0).normal(0, 0.1, 8000)
        >>> mel_cepstral_distortion(x, x), mel_cepstral_distortion(x, 3 * x) < 1e-9
        (0.0, True)
    """
    a, b = _aligned(x, y, **kw)
    dct = torch.as_tensor(_dct_matrix(a.shape[0], n_ceps), dtype=a.dtype)
    d = dct @ (a - b)
    return float((10.0 / math.log(10.0)) * (2.0 * d[1:].square().sum(dim=0)).sqrt().mean())


def _dct_matrix(n: int, k: int) -> np.ndarray:
    """Orthonormal DCT-II rows ``[k, n]``."""
    i = np.arange(n)
    m = np.cos(np.pi / n * (i[None, :] + 0.5) * np.arange(k)[:, None]) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def long_term_spectrum(x: Any, n_fft: int = N_FFT, hop: int = HOP) -> np.ndarray:
    """Average power spectrum over every frame of one waveform or a list, ``[n_fft//2+1]``."""
    frames = [_power_spectrogram(w, n_fft, hop) for w in _waves(x)]
    return torch.cat(frames, dim=1).mean(dim=1).numpy()


def long_term_spectrum_distance(
    x: Any, y: Any, n_fft: int = N_FFT, hop: int = HOP, floor_db: float = -120.0
) -> float:
    """RMS over frequency of the dB difference of two long-term average spectra.

    Lengths need not match and either side may be a list of waveforms (e.g. model samples
    against the test set), so it suits unconditional samples; level differences show up
    as a constant offset (a gain ``g`` gives ``20 log10 g`` dB).

    Example:
        >>> x = np.random.default_rng(0).normal(0, 0.1, 16000)
        >>> round(long_term_spectrum_distance(x, 10 * x), 6)
        20.0
    """

    def db(p: np.ndarray) -> np.ndarray:
        return np.maximum(10.0 * np.log10(np.maximum(p, 1e-30)), floor_db)

    d = db(long_term_spectrum(x, n_fft, hop)) - db(long_term_spectrum(y, n_fft, hop))
    return float(np.sqrt(np.mean(d**2)))


def rms_ratio(x: Any, y: Any) -> float:
    """RMS level of ``x`` over that of ``y`` (each pooled over a list of waveforms).

    Example:
        >>> rms_ratio(np.full(10, 0.2), [np.full(5, 0.1), np.full(5, -0.1)])
        2.0
    """

    def rms(w: list[torch.Tensor]) -> float:
        t = torch.cat(w)
        return float(t.square().mean().sqrt())

    return rms(_waves(x)) / rms(_waves(y))


def clipped_fraction(x: Any, threshold: float = 32767 / 32768) -> float:
    """Fraction of samples with ``|x| >= threshold`` (at or beyond full scale).

    Example:
        >>> clipped_fraction(np.array([0.0, 1.0, -1.0, 0.5]))
        0.5
    """
    t = torch.cat(_waves(x))
    return float((t.abs() >= threshold).to(torch.float64).mean())


# --------------------------------------------------------------------------- AR baselines


class ARFit(NamedTuple):
    """A least-squares linear predictor ``x_t = intercept + sum_k a_k x_{t-1-k} + e_t``.

    Attributes:
        coefficients: ``a`` (float64 ``[order]``); ``a[k]`` multiplies ``x[t - 1 - k]``.
        intercept: Constant term.
        scale: Maximum-likelihood Gaussian residual std, ``sqrt(mean(e^2))``.
        laplace_scale: Maximum-likelihood Laplace residual scale, ``mean(|e|)`` (of the
            least-squares residuals, which is an approximation to the Laplace ML fit).
    """

    coefficients: np.ndarray
    intercept: float
    scale: float
    laplace_scale: float


def _lagged(x: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Design ``[n, order + 1]`` (lags 1..p, then a column of ones) and targets, zero history."""
    x = np.asarray(x, dtype=np.float64)
    padded = np.concatenate([np.zeros(order), x])
    lags = np.lib.stride_tricks.sliding_window_view(padded, order + 1)[:, :order][:, ::-1]
    return np.hstack([lags, np.ones((x.size, 1))]), x


def ar_least_squares(x_list: Sequence[np.ndarray], order: int) -> ARFit:
    """Fit an AR(``order``) predictor with intercept by least squares over utterances.

    Only samples with a full history inside their own utterance are fitted (no prediction
    across utterance boundaries); the normal equations are accumulated per utterance, so
    memory stays ``O(order^2)`` plus one utterance.

    Args:
        x_list: Waveforms (e.g. ``SpeechData.eval_utterances("train")``).
        order: Number of past samples; 0 gives the i.i.d. baseline (mean and std).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> e = rng.normal(0, 0.01, 20000)
        >>> x = np.zeros_like(e)
        >>> for t in range(1, e.size):
        ...     x[t] = 0.9 * x[t - 1] + e[t]
        >>> fit = ar_least_squares([x], 1)
        >>> round(float(fit.coefficients[0]), 2), round(fit.scale, 3)
        (0.9, 0.01)
    """
    if order < 0:
        raise ValueError(f"order must be non-negative, got {order}")
    gram = np.zeros((order + 1, order + 1))
    rhs = np.zeros(order + 1)
    sq, n = 0.0, 0
    for x in x_list:
        design, target = _lagged(x, order)
        design, target = design[order:], target[order:]
        gram += design.T @ design
        rhs += design.T @ target
        sq += float(target @ target)
        n += target.size
    if n <= order + 1:
        raise ValueError(f"too few samples ({n}) for an AR({order}) fit")
    w = np.linalg.solve(gram + 1e-12 * np.trace(gram) / (order + 1) * np.eye(order + 1), rhs)
    abs_sum = 0.0
    for x in x_list:  # second pass: residual statistics of the final predictor
        design, target = _lagged(x, order)
        abs_sum += float(np.abs(target[order:] - design[order:] @ w).sum())
    mse = max((sq - 2 * w @ rhs + w @ gram @ w) / n, 1e-300)
    return ARFit(w[:order].copy(), float(w[order]), float(math.sqrt(mse)), abs_sum / n)


def ar_log_likelihood(
    x: np.ndarray,
    coefficients: np.ndarray,
    intercept: float,
    scale: float,
    distribution: str = "gaussian",
) -> np.ndarray:
    """Per-sample log-density (nats) of one waveform under an AR predictor, from zero history.

    ``x[t]`` for ``t < order`` is predicted from a history padded with zeros, as a model
    evaluated from silence would be.

    Args:
        x: Waveform on the ``[-1, 1]`` scale (dequantised).
        coefficients: ``a`` with ``a[k]`` multiplying ``x[t - 1 - k]``.
        intercept: Constant term of the prediction.
        scale: Gaussian std, or Laplace scale ``b``.
        distribution: ``"gaussian"`` or ``"laplace"``.

    Returns:
        float64 ``[len(x)]``; sum it for the utterance's log-likelihood.

    Example:
        >>> ll = ar_log_likelihood(np.zeros(3), np.zeros(2), 0.0, 1.0)
        >>> bool(np.allclose(ll, -0.5 * math.log(2 * math.pi)))
        True
    """
    a = np.asarray(coefficients, dtype=np.float64)
    design, target = _lagged(x, a.size)
    resid = target - design @ np.append(a, intercept)
    if distribution == "gaussian":
        return -0.5 * (resid / scale) ** 2 - math.log(scale) - 0.5 * math.log(2 * math.pi)
    if distribution == "laplace":
        return -np.abs(resid) / scale - math.log(2 * scale)
    raise ValueError(f"distribution must be 'gaussian' or 'laplace', got {distribution!r}")
