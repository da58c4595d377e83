"""Evaluation of trained flows: likelihood, sampling to files, speed and two-sample stats.

- :mod:`~invertible.evaluation.likelihood`: :func:`evaluate` (mean log-likelihood ± 2 s.e.,
  bits/dim for discrete and image data), :func:`evaluate_array`, :func:`log_likelihoods`;
- :mod:`~invertible.evaluation.dequantize`: the training and evaluation noise of images;
- :mod:`~invertible.evaluation.sampling`: :func:`sample_to_npy`, :func:`sample_images`;
- :mod:`~invertible.evaluation.speed`: :func:`density_throughput`,
  :func:`sampling_throughput`, and for sequence flows :func:`time_samplers` (interleaved),
  :func:`sequence_sampling_speed` and :func:`naive_steady_state_speed`;
- :mod:`~invertible.evaluation.stats`: :func:`mmd`, :func:`mmd_test`.
"""

from invertible.evaluation.dequantize import (
    EVAL_NOISE_SEED,
    NOISE_BLOCK_ROWS,
    dequantize_eval,
    dequantize_step,
)
from invertible.evaluation.likelihood import (
    EvalResult,
    check_data_matches,
    evaluate,
    evaluate_array,
    evaluate_images,
    image_log_likelihoods,
    log_likelihoods,
)
from invertible.evaluation.sampling import sample_images, sample_to_npy
from invertible.evaluation.speed import (
    NAIVE_STEADY_STATE,
    Sampler,
    density_throughput,
    naive_steady_state_speed,
    sampling_throughput,
    sequence_sampling_speed,
    sequential_method,
    time_samplers,
    timed,
)
from invertible.evaluation.stats import median_bandwidth, mmd, mmd_test

__all__ = [
    "EVAL_NOISE_SEED",
    "NAIVE_STEADY_STATE",
    "NOISE_BLOCK_ROWS",
    "EvalResult",
    "Sampler",
    "check_data_matches",
    "density_throughput",
    "dequantize_eval",
    "dequantize_step",
    "evaluate",
    "evaluate_array",
    "evaluate_images",
    "image_log_likelihoods",
    "log_likelihoods",
    "median_bandwidth",
    "mmd",
    "mmd_test",
    "naive_steady_state_speed",
    "sample_images",
    "sample_to_npy",
    "sampling_throughput",
    "sequence_sampling_speed",
    "sequential_method",
    "time_samplers",
    "timed",
]
