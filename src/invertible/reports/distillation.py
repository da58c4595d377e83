"""Distillation in reports: the markdown comparison of a student with its teacher
(:func:`distillation_report`) and the lecture's last act (:func:`add_distillation`).

The lecture job (:func:`invertible.reports.lecture.run_lecture`) reserves :data:`RESERVE`
of its budget for :func:`add_distillation`, which takes the trained MAF as the teacher,
starts an IAF student at the data's diagonal Gaussian
(:func:`~invertible.distillation.init_data_scale`), trains it on KL(student ‖ teacher)
plus the contrast term (:data:`OPTIONS`) until a wall-clock cap (:func:`train_seconds`),
evaluates it, and adds a table row and the distillation section (speed-ups against both
teacher samplers, exact test log-likelihoods, teacher log-likelihood of student samples,
MMD, KL curve).

Why the contrast term: reverse KL alone is mode seeking, and image patches are a scale
mixture (most nearly flat, a few of high contrast). Against one fixed teacher (``python -m
benchmarks distill-main``, 150 s, one thread; docs/distillation.md) KL alone left the
student on a narrow band of high contrasts: KL 3.0 nats, the teacher's median
log-likelihood of its samples 0.53 of that of its own samples, MMD² to test 7.7 times the
teacher's. Matching the spread of the samples' log-norms to the data's
(:class:`~invertible.distillation.ContrastTarget`: parallel, one sort per step, no extra
pass) at weight 3 met all three targets on 5 seeds of 5 against a teacher without the
data-end ActNorm: KL 1.97, ratio 0.99 ± 0.02, MMD² 0.91 times the teacher's. Against the
main job's current teacher (with the ActNorm; more concentrated, lighter tails) weight 2
is the best (3 seeds each): KL 2.43 against 2.51, ratio 1.01 ± 0.01 against 0.97 ± 0.02,
MMD² 0.84 against 0.91 times the teacher's. Larger weights pull the student towards the
data's contrast and away from the teacher's (ratio 0.94 at weight 5). The exact data
likelihood (the student's sequential inverse) would cost most of the steps.
``"analytic-entropy"`` has the gradient of ``"mc"`` but a steadier KL figure; a learning
rate of 3e-3 with a 100-step warm-up beat 1e-3.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from invertible.checkpoint import save
from invertible.core import Flow
from invertible.distillation import DistillResult, distill, evaluate_student
from invertible.distillation.students import init_data_scale
from invertible.evaluation import density_throughput, evaluate_array
from invertible.presets import IAF
from invertible.reports.markdown import ModelRow, Report
from invertible.reports.plots import kl_curve_figure

__all__ = [
    "OPTIONS",
    "RESERVE",
    "STUDENT",
    "TRAIN_SHARE",
    "add_distillation",
    "distillation_report",
    "train_seconds",
]

#: Fraction of the main job's budget reserved for distillation and its evaluation.
RESERVE = 0.3
#: Share of the distillation's time left (non-tiny) spent training; the rest is for the
#: evaluation, whose teacher peer-style sampler and student test likelihood are sequential.
TRAIN_SHARE = 0.67
#: Student size for the main job (CPU budget).
STUDENT = {"num_layers": 5, "hidden_features": (256, 256)}
#: The main job's distillation: reverse KL plus the contrast term against the training
#: rows (see the module docstring; :func:`add_distillation` passes the rows as ``data``).
#: ``distill`` stops at its ``max_time``, which also drives the cosine schedule; the step
#: count is only a ceiling that a CPU never reaches in the main job's share.
OPTIONS: dict[str, Any] = {
    "batch_size": 256,
    "loss": "analytic-entropy",
    "lr": 3e-3,
    "lr_warmup_steps": 100,
    "steps": 1_000_000,
    "data_anchor": 2.0,
    "anchor": "contrast",
}


def distillation_report(
    teacher: Flow,
    student: Flow,
    data: Any,
    *,
    results: Sequence[DistillResult] = (),
    n_samples: int = 50_000,
    throughput_batch: int = 1000,
    repeats: int = 3,
    test_rows: int | None = None,
    mmd_rows: int = 2000,
    seed: int = 0,
) -> tuple[str, dict[str, Any]]:
    """Markdown section and figures comparing a distilled student with its teacher.

    Measures, on this machine in one run: sampling throughput (same batch) of the student,
    of the teacher sampled the peer way (``sequential="naive"``: D full MADE passes per
    layer) and with the library's exact incremental sampler; the exact test log-likelihood
    of both (the student's through its sequential inverse); the teacher's log-likelihood
    of student samples (and of its own samples, for reference); MMD² of student and of
    teacher samples against test data (Gaussian kernel, median heuristic); KL curves of
    ``results``.

    Args:
        teacher: the teacher flow.
        student: the distilled student.
        data: a dataset with ``.test`` (numpy ``[N, D]``), or a test array/tensor.
        results: :class:`DistillResult` s to plot (e.g. one per loss variant).
        n_samples: samples drawn from each model for the log-likelihood rows (see
            :func:`~invertible.distillation.evaluate_student`).
        throughput_batch: batch size of the throughput measurement.
        repeats: timed repetitions (best kept).
        test_rows: evaluate log-likelihoods on the first ``test_rows`` test rows
            (``None``: all).
        mmd_rows: rows of each sample used for MMD.
        seed: seed of the sampling.

    Returns:
        ``(markdown, figures)``: figures maps a name (``"distill_kl"``) to a matplotlib
        figure; the markdown refers to it as ``distill_kl.png``. Also the numbers in
        ``figures["metrics"]`` (a dict) for programmatic use.
    """
    metrics = evaluate_student(
        teacher, student, data, n_samples=n_samples, throughput_batch=throughput_batch,
        repeats=repeats, test_rows=test_rows, mmd_rows=mmd_rows, seed=seed,
    )  # fmt: skip
    m = metrics
    lines = [
        "## Probability density distillation",
        "",
        f"Teacher: {type(teacher).__name__} ({_count(teacher):,} parameters); student: "
        f"{type(student).__name__} ({_count(student):,} parameters); D = {int(m['features'])}. "
        "Student trained on KL(S‖T) (van den Oord et al. 2017; Ping et al. 2018).",
        "",
        "| model | samples/s (batch "
        f"{throughput_batch}) | student speed-up | test log-lik (nats) | teacher log-lik of "
        "its samples: mean | median | MMD² vs test |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| teacher, peer sampler (D full passes/layer) | {m['teacher_naive_sps']:,.0f} | "
        f"{m['speedup_naive']:.1f}× | {m['teacher_test_ll']:.3f} | "
        f"{m['teacher_ll_teacher_samples']:.4g} | {m['teacher_ll_teacher_samples_median']:.3f} | "
        f"{m['mmd_teacher']:.2e} |",
        f"| teacher, incremental exact sampler | {m['teacher_best_sps']:,.0f} | "
        f"{m['speedup_best']:.1f}× | | | | |",
        f"| student (one pass/layer) | {m['student_sps']:,.0f} | 1.0× | "
        f"{m['student_test_ll']:.3f} | {m['teacher_ll_student_samples']:.4g} | "
        f"{m['teacher_ll_student_samples_median']:.3f} | {m['mmd_student']:.2e} |",
        "",
        "The median is the robust figure: a MAF's sequential sampler maps a few tail draws "
        "far outside the data, where the teacher's log-density is hugely negative, and "
        "those few samples decide the mean.",
        "",
        f"Median teacher log-likelihood of student samples over that of its own samples: "
        f"{m['teacher_ll_ratio']:.3f} ± {m['teacher_ll_ratio_se']:.3f} (bootstrap s.e.; "
        f"{n_samples:,} samples of each model). MMD² against test rows: student "
        f"{_with_se(m['mmd_student'], m['mmd_student_se'])}, teacher "
        f"{_with_se(m['mmd_teacher'], m['mmd_teacher_se'])} (mean ± s.e. over blocks of "
        f"{mmd_rows:,} rows, one kernel for both), ratio "
        f"{m['mmd_student'] / m['mmd_teacher']:.2f}.",
        "",
        f"The student's test log-likelihood is {abs(m['ll_gap_pct']):.2f}% "
        f"{'below' if m['ll_gap_pct'] < 0 else 'above'} the teacher's "
        f"((student − teacher)/|teacher|); MMD permutation p-value of student vs test samples "
        f"{m['mmd_student_p']:.3f} (teacher: {m['mmd_teacher_p']:.3f}).",
    ]
    if results:
        lines += [
            "",
            "| loss | steps | final KL estimate | H(S,T) | H(S) | wall time (s) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            lines.append(
                f"| {r.loss} | {len(r.history['kl'])} | {r.final('kl'):.4f} | "
                f"{r.final('cross_entropy'):.3f} | {r.final('entropy'):.3f} | "
                f"{r.wall_time:.1f} |"
            )
        lines += ["", "![KL curves](distill_kl.png)"]
    figures: dict[str, Any] = {"metrics": metrics}
    if results:
        figures["distill_kl"] = kl_curve_figure(results)
    return "\n".join(lines) + "\n", figures


def _count(flow: torch.nn.Module) -> int:
    return sum(p.numel() for p in flow.parameters())


def train_seconds(seconds_left: float, tiny: bool) -> float:
    """The training time cap of :func:`add_distillation`: :data:`TRAIN_SHARE` of what is
    left of the budget (0.3 of it for tiny runs, whose evaluation is relatively dearer).
    """
    return seconds_left * (0.3 if tiny else TRAIN_SHARE)


def _with_se(value: float, se: float) -> str:
    """``value ± se`` (just ``value`` where the standard error is undefined: one block)."""
    return f"{value:.2e}" if math.isnan(se) else f"{value:.2e} ± {se:.1e}"


def add_distillation(
    report: Report,
    teacher: Flow | None,
    data: Any,
    *,
    out_dir: Path,
    seconds_left: float,
    tiny: bool,
    seed: int,
    progress: bool = False,
) -> Flow | None:
    """Distil ``teacher`` (the lecture's MAF) into an IAF student, add its row and the
    distillation section to ``report``, save it to ``out_dir/iaf-distilled/model`` and
    return it (``None`` without a teacher).
    """
    # Long on purpose: one linear sequence (initialise, train, measure, save, add the row)
    # whose steps share the budget and the student; split, it would pass a dozen values.
    if teacher is None:
        report.add_section(
            "Probability density distillation", "Skipped: the main job trained no MAF teacher."
        )
        return None
    sizes: dict[str, Any] = {"num_layers": 2, "hidden_features": (16, 16)}
    if not tiny:
        sizes = dict(STUDENT)
    student = IAF(data.features, seed=seed, **sizes)
    train = torch.as_tensor(data.train)
    init_data_scale(student, train)
    # A wall-clock cap: any step count fixed in advance overruns the share when the
    # machine gets busier during the run (the steps slow down, the count does not).
    started = time.perf_counter()
    max_time = train_seconds(seconds_left, tiny)
    result = distill(
        teacher, student, **OPTIONS, data=train, max_time=max_time, progress=progress, seed=seed
    )  # fmt: skip
    train_time = time.perf_counter() - started
    if progress:
        print("distillation: measuring the student (samples, speed, exact test likelihood)",
              file=sys.stderr)  # fmt: skip

    test_rows = 300 if tiny else 2000
    markdown, figures = distillation_report(
        teacher,
        student,
        data,
        results=[result],
        n_samples=500 if tiny else 50_000,
        throughput_batch=100 if tiny else 500,
        repeats=1,
        test_rows=test_rows,
        mmd_rows=300 if tiny else 2000,
        seed=seed,
    )
    metrics = figures["metrics"]
    test = evaluate_array(student, data.test[:test_rows], what=f"dataset {data.name!r} (test)")
    if "distill_kl" in figures:
        figures["distill_kl"].savefig(out_dir / "distill_kl.png", dpi=110)
    save(student, out_dir / "iaf-distilled" / "model")
    report.meta["distillation"] = metrics
    report.add_row(
        ModelRow(
            name="iaf (distilled)",
            preset="IAF",
            parameters=sum(p.numel() for p in student.parameters()),
            test_log_prob=test.log_prob,
            two_se=test.two_se,
            train_time=train_time,
            density_per_s=density_throughput(student, data.test, n=200, repeats=1),
            sampling_per_s=metrics["student_sps"],
            note=(
                f"{len(result.history['kl'])} distillation steps from the MAF (KL(S‖T) and "
                f"the contrast term, {max_time:.0f} s cap); test LL on the first "
                f"{test_rows:,} test points"
            ),
            steps=len(result.history["kl"]),
            stopped="max_time",
            test_points=test_rows,
        )
    )
    body = markdown.split("\n", 1)[1] if markdown.startswith("## ") else markdown
    report.add_section("Probability density distillation", body.strip())
    return student
