"""The numbers that compare a distilled student with its teacher."""

from __future__ import annotations

from typing import Any

import torch

from invertible.core import Flow, validation
from invertible.evaluation.speed import sampling_throughput
from invertible.evaluation.stats import mmd_test
from invertible.tensors import as_tensor, dtype_device

__all__ = ["evaluate_student"]


def evaluate_student(
    teacher: Flow,
    student: Flow,
    data: Any,
    *,
    n_samples: int = 2000,
    throughput_batch: int = 1000,
    repeats: int = 3,
    test_rows: int | None = None,
    mmd_rows: int = 2000,
    seed: int = 0,
    chunk_size: int = 2048,
) -> dict[str, float]:
    """Compare a distilled student with its teacher, on this machine in one run.

    Returns a dict: sampling throughput (same batch) of the student
    (``student_sps``), of the teacher sampled the peer way (``teacher_naive_sps``:
    ``sequential="naive"``, D full MADE passes per layer) and with the library's exact
    incremental sampler (``teacher_best_sps``), the speed-ups; the exact test
    log-likelihood of both (the student's through its sequential inverse) and their gap in
    percent; the teacher's log-likelihood of student samples and of its own samples (mean,
    and median in ``*_median``: a MAF's sequential sampler maps a few tail draws of u far
    outside the data, where the teacher's log-density is hugely negative, and those few
    samples decide a mean); MMD² and permutation p-values of student and teacher samples
    against test data.

    Args:
        teacher: the teacher flow.
        student: the distilled student.
        data: a dataset with ``.test`` (numpy ``[N, D]``), or a test array/tensor.
        n_samples: samples drawn from each model for the log-likelihood and MMD rows.
        throughput_batch: batch size of the throughput measurement.
        repeats: timed repetitions (best kept).
        test_rows: evaluate on the first ``test_rows`` test rows (``None``: all).
        mmd_rows: rows of each sample used for MMD.
        seed: seed of the sampling.
        chunk_size: rows per density or sampling pass.
    """
    dtype, device = dtype_device(teacher)
    test = as_tensor(getattr(data, "test", data), device, dtype)
    if test_rows is not None:
        test = test[:test_rows]
    teacher.eval()
    student.eval()
    out: dict[str, float] = {"features": float(teacher.features)}
    out["teacher_naive_sps"] = sampling_throughput(
        teacher, throughput_batch, repeats=repeats, sequential="naive"
    )
    out["teacher_best_sps"] = sampling_throughput(
        teacher, throughput_batch, repeats=repeats, sequential="incremental"
    )
    out["student_sps"] = sampling_throughput(student, throughput_batch, repeats=repeats)
    out["speedup_naive"] = out["student_sps"] / out["teacher_naive_sps"]
    out["speedup_best"] = out["student_sps"] / out["teacher_best_sps"]
    with torch.no_grad(), validation(False), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        out["teacher_test_ll"] = float(teacher.log_prob_chunked(test, chunk_size=chunk_size).mean())
        out["student_test_ll"] = float(student.log_prob_chunked(test, chunk_size=chunk_size).mean())
        s_samples = student.sample(n_samples, chunk_size=chunk_size)
        t_samples = teacher.sample(n_samples, chunk_size=chunk_size)
        for name, samples in (("student", s_samples), ("teacher", t_samples)):
            log_t = teacher.log_prob_chunked(samples, chunk_size=chunk_size).double()
            out[f"teacher_ll_{name}_samples"] = float(log_t.mean())
            out[f"teacher_ll_{name}_samples_median"] = float(log_t.median())
    ref = test[torch.randperm(test.shape[0], generator=torch.Generator().manual_seed(seed))]
    ref = ref[:mmd_rows]
    out["mmd_student"], out["mmd_student_p"] = mmd_test(s_samples[:mmd_rows], ref, seed=seed)
    out["mmd_teacher"], out["mmd_teacher_p"] = mmd_test(t_samples[:mmd_rows], ref, seed=seed)
    out["ll_gap_pct"] = (
        100 * (out["student_test_ll"] - out["teacher_test_ll"]) / abs(out["teacher_test_ll"])
    )
    return out
