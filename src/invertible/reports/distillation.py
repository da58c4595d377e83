"""Distillation in reports: the markdown comparison of a student with its teacher
(:func:`distillation_report`) and the lecture's last act (:func:`add_distillation`).

The lecture job (:func:`invertible.reports.lecture.run_lecture`) reserves :data:`RESERVE`
of its budget for :func:`add_distillation`, which takes the trained MAF as the teacher,
trains an IAF student on KL(student ‖ teacher) plus a data-anchored term (the student's
exact likelihood of a few training rows, every :data:`ANCHOR_EVERY` steps), evaluates it,
and adds a table row and the distillation section (speed-ups against both teacher
samplers, exact test log-likelihoods, teacher log-likelihood of student samples, MMD, KL
curve).

Why the data term: the KL(S‖T) objective is mode seeking. With the budget of the main
job, a student fit on KL alone matches the teacher on the teacher's own samples but
assigns low density to parts of the real data (on ``patches``, 1500 steps: KL 3.9 nats,
student test log-likelihood 166 against the teacher's 213); adding the data term at
weight 1 brings the student to 208 (2.5% below the teacher). See the README.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from invertible.checkpoint import save
from invertible.core import Flow
from invertible.distillation import DistillResult, distill, evaluate_student
from invertible.evaluation import density_throughput, evaluate_array
from invertible.presets import IAF
from invertible.reports.markdown import ModelRow, Report
from invertible.reports.plots import kl_curve_figure

__all__ = ["ANCHOR_BATCH", "ANCHOR_EVERY", "RESERVE", "add_distillation", "distillation_report"]

#: Fraction of the main job's budget reserved for distillation and its evaluation.
RESERVE = 0.3
#: The data term runs the student's sequential inverse; add it every this many steps, on
#: this many rows. Measured on ``patches`` (MAF teacher, 1500 steps): every step on 64 rows
#: reached a 2.5% gap to the teacher in 273 s; every 4th step on 256 rows a 6% gap in 359 s.
ANCHOR_EVERY = 1
ANCHOR_BATCH = 64
#: Student size for the main job (CPU budget).
STUDENT = {"num_layers": 5, "hidden_features": (256, 256)}


def distillation_report(
    teacher: Flow,
    student: Flow,
    data: Any,
    *,
    results: Sequence[DistillResult] = (),
    n_samples: int = 2000,
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
        n_samples: samples drawn from each model for the log-likelihood and MMD rows.
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
        "its samples | MMD² vs test |",
        "|---|---:|---:|---:|---:|---:|",
        f"| teacher, peer sampler (D full passes/layer) | {m['teacher_naive_sps']:,.0f} | "
        f"{m['speedup_naive']:.1f}× | {m['teacher_test_ll']:.3f} | "
        f"{m['teacher_ll_teacher_samples']:.3f} | {m['mmd_teacher']:.2e} |",
        f"| teacher, incremental exact sampler | {m['teacher_best_sps']:,.0f} | "
        f"{m['speedup_best']:.1f}× | | | |",
        f"| student (one pass/layer) | {m['student_sps']:,.0f} | 1.0× | "
        f"{m['student_test_ll']:.3f} | {m['teacher_ll_student_samples']:.3f} | "
        f"{m['mmd_student']:.2e} |",
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


def _steps_for(seconds: float, seconds_per_step: float) -> int:
    """Steps that fit in ``seconds`` at ``seconds_per_step`` (at least 20)."""
    return max(20, int(seconds / max(seconds_per_step, 1e-6)))


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
    # Long on purpose: one linear sequence (calibrate, train, measure, save, add the row)
    # whose steps share the budget and the student; split, it would pass a dozen values.
    if teacher is None:
        report.add_section(
            "Probability density distillation", "Skipped: the main job trained no MAF teacher."
        )
        return None
    train = torch.as_tensor(data.train)
    sizes: dict[str, Any] = {"num_layers": 2, "hidden_features": (16, 16)}
    if not tiny:
        sizes = dict(STUDENT)
    student = IAF(data.features, seed=seed, **sizes)
    options: dict[str, Any] = {
        "batch_size": 256,
        "loss": "mc",
        "lr": 1e-3,
        "data_anchor": 1.0,
        "data": train,
        "anchor_batch_size": ANCHOR_BATCH,
        "anchor_every": ANCHOR_EVERY,
        "progress": False,
        "seed": seed,
    }
    # Calibrate the step time on a few real steps, then fill what is left of the budget
    # (keeping a third of it for the evaluation below: the teacher's peer-style sampler
    # and the student's exact likelihood of test data are both sequential).
    started = time.perf_counter()
    warmup_steps = max(4, 2 * ANCHOR_EVERY)
    warmup = distill(teacher, student, steps=warmup_steps, **options)
    per_step = warmup.wall_time / warmup_steps
    train_seconds = seconds_left * (0.3 if tiny else 0.67)
    steps = _steps_for(train_seconds, per_step)
    result = distill(teacher, student, steps=steps, **{**options, "progress": progress})
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
        n_samples=500 if tiny else 2000,
        throughput_batch=100 if tiny else 500,
        repeats=1,
        test_rows=test_rows,
        mmd_rows=300 if tiny else 1000,
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
                f"{len(result.history['kl'])} distillation steps from the MAF (KL + data term "
                f"every {ANCHOR_EVERY} steps); test LL on the first {test_rows:,} test points"
            ),
            steps=len(result.history["kl"]),
            stopped="steps",
            test_points=test_rows,
        )
    )
    body = markdown.split("\n", 1)[1] if markdown.startswith("## ") else markdown
    report.add_section("Probability density distillation", body.strip())
    return student
