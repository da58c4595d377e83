"""The lecture's main job: fit NICE, RealNVP, MAF and IAF on 8x8 patches in a time budget,
distil the MAF into a fast IAF, and write ``report.md`` (a comparison table and figures).

:func:`run_lecture` splits the wall-clock budget between the models (weights in
:data:`TIME_WEIGHTS`, re-balanced after each model so that time left over by early
stopping goes to the next ones), trains each with :func:`invertible.jobs.train_job`
(``max_time`` and early stopping; test mean log-likelihood ± 2 s.e., nats), measures
density and sampling throughput, and draws training curves and sample patches.

IAF fit by maximum likelihood has to invert its autoregressive map for every training
point: D = 63 sequential MADE passes per layer per step. It therefore gets a small budget
(and few, small validation evaluations) and its row says how far it got. The fast way to
get a good IAF is probability-density distillation from the MAF teacher, which the job
runs last (:func:`invertible.reports.distillation.add_distillation`, with
:data:`~invertible.reports.distillation.RESERVE` of the budget).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from invertible.catalog import ModelUnavailableError, model_spec
from invertible.data import load_data
from invertible.evaluation import density_throughput, sampling_throughput
from invertible.jobs import TrainJob, train_job
from invertible.reports.distillation import RESERVE, add_distillation
from invertible.reports.markdown import ModelRow, Report
from invertible.reports.plots import plot_patch_grid, plot_samples, plot_training_curves
from invertible.training import RunExistsError, existing_run

__all__ = ["LECTURE_OPTIONS", "LECTURE_OVERRIDES", "TIME_WEIGHTS", "run_lecture"]

#: Share of the training time of each model (re-normalised over the models that run).
TIME_WEIGHTS = {"nice": 0.22, "realnvp": 0.26, "maf": 0.34, "iaf": 0.18}
#: Training options per model for the lecture (on top of the common ones).
LECTURE_OPTIONS: dict[str, dict[str, Any]] = {
    "iaf": {"val_max_rows": 500, "eval_every": 20, "batch_size": 128},
}
#: Model-size overrides for the lecture (CPU-sized networks).
LECTURE_OVERRIDES: dict[str, dict[str, Any]] = {
    "iaf": {"num_layers": 2, "hidden_features": [128, 128]},
}
#: What the table's note says about how a run stopped.
STOPPED = {"max_time": "time cap", "early_stopping": "early stop", "steps": "all steps"}


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):
        return "n/a"


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


def _intro(data: Any, budget_minutes: float) -> str:
    return (
        f"Each model was fit by maximum likelihood (Adam, cosine schedule, early stopping "
        f"on the validation log-likelihood, best weights restored, batch-norm statistics "
        f"recomputed on the training set; NICE's rescaling initialised from the data scale, "
        f"the ActNorm next to the data of RealNVP and MAF from the first batch) "
        f"within a total wall-clock budget of "
        f"{budget_minutes:g} min on {os.cpu_count()} CPU core(s), "
        f"{torch.get_num_threads()} torch thread(s), load average "
        f"{_load_average()} at the start "
        f"(torch {torch.__version__}, {platform.machine()}). Data: {len(data.train):,} "
        f"training, {len(data.val):,} validation and {len(data.test):,} test points; "
        f"test log-likelihoods are means in nats with ± 2 standard errors."
    )


def _train_options(key: str, max_time: float, tiny: bool) -> dict[str, Any]:
    options: dict[str, Any] = {
        "steps": 200_000,
        "batch_size": 256,
        "lr": 1e-3,
        "patience": 15,
        "eval_every": 25 if tiny else 150,
        "max_time": max_time,
        "refresh_bn_rows": 20000,
    }
    options.update(LECTURE_OPTIONS.get(key, {}))
    if tiny:
        options["eval_every"] = 10
    return options


def _model_row(name: str, job: TrainJob, note: str, tiny: bool) -> ModelRow:
    """Throughputs of a trained model and its table row."""
    flow, data, result, test = job.flow, job.data, job.result, job.test
    assert test is not None
    key = name.lower()
    n_density = 200 if key == "iaf" or tiny else 1000
    repeats = 1 if tiny else 2
    dens = density_throughput(flow, data.test, n=n_density, repeats=repeats)
    samp = sampling_throughput(flow, n=200 if tiny else 1000, repeats=repeats)
    plural = "" if result.steps == 1 else "s"
    text = f"{result.steps} step{plural}, {STOPPED.get(result.stopped, result.stopped)}"
    if key == "iaf":
        text += "; MLE via sequential inverse (63 passes/layer/step), small net"
    return ModelRow(
        name=name,
        preset=type(flow).__name__,
        parameters=job.parameters,
        test_log_prob=test.log_prob,
        two_se=test.two_se,
        train_time=result.train_time,
        density_per_s=dens,
        sampling_per_s=samp,
        note=text + note,
        steps=result.steps,
        stopped=result.stopped,
        test_points=test.n,
        bits_per_dim=test.bits_per_dim,
    )


def _figures(out: Path, data: Any, jobs: dict[str, TrainJob], samples: dict[str, Any]) -> list[str]:
    figures: list[str] = []
    if jobs:
        plot_training_curves(
            {n: j.result.history for n, j in jobs.items()}, out / "training_curves.png"
        )
        figures.append("training_curves.png")
    d = data.features
    if jobs and d in (63, 64):
        plot_patch_grid({"data (test)": data.test[:64], **samples}, out / "samples.png")
        figures.append("samples.png")
    elif jobs and d == 2:
        for name, job in jobs.items():
            key = name.lower()
            plot_samples(job.flow, data, out / f"density_{key}.png", title=key)
            figures.append(f"density_{key}.png")
    return figures


READING = (
    "- Log-likelihoods are in nats per patch (higher is better); ± is two standard "
    "errors of the test mean.\n"
    "- Density throughput is `log_prob` on a batch of test points; sampling throughput is "
    "`sample(1000)`. NICE and RealNVP are one parallel pass both ways. MAF's density is "
    "one pass but its sampling is sequential (D passes per layer); IAF is the mirror "
    "image: parallel sampling, sequential density — which is also why fitting IAF by "
    "maximum likelihood is slow and it gets little training here. Distilling a MAF "
    "teacher into an IAF student gives fast sampling and a good model.\n"
    "- Each model was trained with a time cap (its share of the budget) and early "
    "stopping, so these are budget-limited numbers, not converged ones. The MAF paper "
    "reports about 157 nats on BSDS300 (a different, larger set of images) for converged "
    "models."
)


def _fit_models(
    report: Report,
    data: Any,
    out: Path,
    models: Sequence[str],
    budget: float,
    deadline: float,
    options: dict[str, Any],
    *,
    tiny: bool,
    seed: int,
    progress: bool,
    overwrite: bool = False,
) -> tuple[dict[str, TrainJob], dict[str, Any], list[str]]:
    """Train each model with its share of the time left before ``deadline``; add its row.

    Returns the jobs, 64 samples of each model and the notes for skipped models.
    """
    # reserve time after training for evaluation, throughput and figures
    eval_reserve = {"iaf": 0.05 * budget} if not tiny else {}
    reserve_each = 0.035 * budget
    final_reserve = 0.04 * budget
    jobs: dict[str, TrainJob] = {}
    samples: dict[str, Any] = {}
    notes: list[str] = []
    pending = list(models)
    for name in models:
        pending.remove(name)
        key = name.lower()
        remaining = [key, *[p.lower() for p in pending]]
        left = deadline - time.perf_counter() - final_reserve
        left -= sum(eval_reserve.get(m, reserve_each) for m in remaining)
        weights = [TIME_WEIGHTS.get(m, 0.2) for m in remaining]
        max_time = max(1.0, left * weights[0] / sum(weights))
        # test log-likelihood; IAF's density of outside data is sequential: cap its test set
        capped = key == "iaf" and not tiny and len(data.test) > 2000
        try:
            job = train_job(
                key, data, size="tiny" if tiny else "small", seed=seed, out=out / key,
                option=options, overrides=None if tiny else LECTURE_OVERRIDES.get(key),
                overwrite=overwrite,
                progress=progress, test_rows=2000 if capped else None,
                **_train_options(key, max_time, tiny),
            )  # fmt: skip
        except ModelUnavailableError as e:
            notes.append(f"**{name} skipped**: {e}.")
            report.add_row(ModelRow(name, "—", 0, None, None, 0.0, None, None, note="skipped"))
            continue
        jobs[name] = job
        note = "; test LL on the first 2,000 test points (sequential inverse)" if capped else ""
        report.add_row(_model_row(name, job, note, tiny))
        with torch.no_grad():
            samples[name] = job.flow.sample(64).cpu().numpy()

    return jobs, samples, notes


def check_lecture_out(
    out_dir: str | os.PathLike[str], models: Sequence[str], *, overwrite: bool = False
) -> None:
    """Check the model names, and refuse a previous report in ``out_dir`` (unless
    ``overwrite``).
    """
    for name in models:
        model_spec(name.lower())
    out = Path(out_dir)
    found = [p.name for p in (out / "report.md", out / "results.json") if p.exists()]
    found += [f"{m.lower()}/" for m in models if existing_run(out / m.lower())]
    if found and not overwrite:
        raise RunExistsError(
            f"{out} already holds a lecture report ({', '.join(found)}); pass --overwrite to "
            "replace it, or choose another --out"
        )


def run_lecture(
    out_dir: str | os.PathLike[str],
    *,
    budget_minutes: float = 10.0,
    dataset: str = "patches",
    models: Sequence[str] = ("nice", "realnvp", "maf", "iaf"),
    tiny: bool = False,
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool = True,
    distillation: bool = True,
    overwrite: bool = False,
) -> Report:
    """Fit and compare the lecture's models within ``budget_minutes`` of wall time.

    Writes ``report.md``, ``results.json``, ``training_curves.png``, ``samples.png`` and
    one checkpoint per model (``<out>/<model>/model``) into ``out_dir``, then (with
    ``distillation``) distils the MAF into an IAF student. Models whose preset is not
    installed are skipped with a note. ``tiny`` uses tiny networks and a small subset of
    the data (a smoke test). Unknown model names raise before anything trains; an
    ``out_dir`` holding a previous report raises
    :class:`~invertible.training.RunExistsError` unless ``overwrite``.
    """
    check_lecture_out(out_dir, models, overwrite=overwrite)
    t0 = time.perf_counter()
    budget = budget_minutes * 60.0
    distill_reserve = budget * RESERVE if distillation else 0.0
    deadline = t0 + budget
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options = {"n_train": 1000, "n_val": 200, "n_test": 300} if tiny else {}
    data, _ = load_data(dataset, data_dir=data_dir, seed=seed, options=options)
    load_time = time.perf_counter() - t0
    report = Report(f"Normalizing flows on {data.name} (D = {data.features})")
    report.intro = _intro(data, budget_minutes)
    report.meta = {
        "dataset": data.name,
        "features": data.features,
        "budget_minutes": budget_minutes,
        "tiny": tiny,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "data_load_s": load_time,
    }
    deadline_for_models = deadline - distill_reserve
    jobs, samples, notes = _fit_models(
        report, data, out, models, budget, deadline_for_models, options,
        tiny=tiny, seed=seed, progress=progress, overwrite=overwrite,
    )  # fmt: skip
    figures = _figures(out, data, jobs, samples)
    if distillation:
        maf = next((j.flow for n, j in jobs.items() if n.lower() == "maf"), None)
        try:
            seconds_left = max(0.0, deadline - time.perf_counter())
            add_distillation(
                report,
                maf,
                data,
                out_dir=out,
                seconds_left=seconds_left,
                tiny=tiny,
                seed=seed,
                progress=progress,
            )
        except Exception as e:  # the distillation must not lose the report of the others
            notes.append(f"distillation failed: {e}")
    report.add_section("Reading the table", READING)
    if figures:
        report.add_section(
            "Figures",
            "Training curves (left: training log-likelihood, right: validation "
            "log-likelihood) and, for patch data, test patches next to each model's samples.",
            figures,
        )
    total = time.perf_counter() - t0
    notes.append(
        f"Total wall time {_fmt_seconds(total)} (budget {budget_minutes:g} min; data loading "
        f"{_fmt_seconds(load_time)})."
    )
    report.add_section("Notes", "\n".join(f"- {n}" for n in notes))
    report.meta["wall_time_s"] = total
    report.write(out)
    return report
