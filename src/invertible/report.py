"""The lecture's main job: fit NICE, RealNVP, MAF and IAF on 8x8 patches in a time budget
and write ``report.md`` (a comparison table and figures).

:func:`run_lecture` splits the wall-clock budget between the models (weights in
:data:`TIME_WEIGHTS`, re-balanced after each model so that time left over by early
stopping goes to the next ones), trains each with ``max_time`` and early stopping,
evaluates it on the test split (mean log-likelihood ± 2 s.e., nats), measures density and
sampling throughput, and draws training curves and sample patches.

IAF fit by maximum likelihood has to invert its autoregressive map for every training
point: D = 63 sequential MADE passes per layer per step. It therefore gets a small budget
(and few, small validation evaluations) and its row says how far it got. The fast way to
get a good IAF is probability-density distillation from the MAF teacher; a distillation
module adds its row and section through :func:`register_report_hook`.

Extending the report: a hook is ``fn(report, context)``, called after the models are
trained, where ``context`` (:class:`LectureContext`) holds the data, the trained flows by
name, the output directory and the seconds left; it may call :meth:`Report.add_row`
(a :class:`ModelRow`) and :meth:`Report.add_section`.

Example:
    >>> r = Report("demo")
    >>> r.add_row(ModelRow("maf", "MAF", 10, -1.0, 0.1, 2.0, 100.0, 10.0))
    >>> print(r.table_markdown().splitlines()[2])
    | maf | MAF | 10 | -1.00 ± 0.10 | 2.0 | 100 | 10 | |
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "REPORT_HOOKS",
    "LectureContext",
    "ModelRow",
    "Report",
    "Section",
    "register_report_hook",
    "run_lecture",
]

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


@dataclass
class ModelRow:
    """One row of the report table."""

    name: str
    preset: str
    parameters: int
    test_log_prob: float | None
    two_se: float | None
    train_time: float
    density_per_s: float | None
    sampling_per_s: float | None
    note: str = ""
    steps: int = 0
    stopped: str = ""
    test_points: int = 0
    bits_per_dim: float | None = None

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "n/a" if v is None or not math.isfinite(v) else format(v, fmt)

        ll = (
            "n/a"
            if self.test_log_prob is None or not math.isfinite(self.test_log_prob)
            else f"{self.test_log_prob:.2f} ± {self.two_se or 0:.2f}"
        )
        return [
            self.name,
            self.preset,
            f"{self.parameters:,}",
            ll,
            f"{self.train_time:.1f}",
            num(self.density_per_s, ",.0f"),
            num(self.sampling_per_s, ",.0f"),
            self.note,
        ]


@dataclass
class Section:
    """A titled block of markdown, with figures (paths relative to the report)."""

    title: str
    body: str
    figures: list[str] = field(default_factory=list)


class Report:
    """A report: a table of :class:`ModelRow` and a list of :class:`Section` s."""

    HEADER = (
        "model",
        "preset",
        "parameters",
        "test log-likelihood (nats, ± 2 s.e.)",
        "training time (s)",
        "density (samples/s)",
        "sampling (samples/s)",
        "note",
    )

    def __init__(self, title: str, intro: str = "") -> None:
        self.title = title
        self.intro = intro
        self.rows: list[ModelRow] = []
        self.sections: list[Section] = []
        self.meta: dict[str, Any] = {}

    def add_row(self, row: ModelRow) -> None:
        self.rows.append(row)

    def add_section(self, title: str, body: str, figures: Sequence[str] = ()) -> None:
        self.sections.append(Section(title, body, list(figures)))

    def table_markdown(self) -> str:
        lines = [
            "| " + " | ".join(self.HEADER) + " |",
            "|" + "|".join("---" for _ in self.HEADER) + "|",
        ]
        for row in self.rows:
            lines.append(("| " + " | ".join(row.cells()) + " |").replace("|  |", "| |"))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        parts = [f"# {self.title}", ""]
        if self.intro:
            parts += [self.intro, ""]
        parts += [self.table_markdown(), ""]
        for s in self.sections:
            parts += [f"## {s.title}", "", s.body.rstrip(), ""]
            parts += [f"![{s.title}]({fig})" for fig in s.figures]
            if s.figures:
                parts.append("")
        return "\n".join(parts)

    def write(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``report.md`` and ``results.json`` into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "report.md"
        tmp = out / ".report.md.tmp"
        tmp.write_text(self.to_markdown())
        os.replace(tmp, path)
        results = {
            "title": self.title,
            "meta": self.meta,
            "rows": [asdict(r) for r in self.rows],
            "sections": [asdict(s) for s in self.sections],
        }
        (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
        return path


@dataclass
class LectureContext:
    """What a report hook gets: the data, the trained flows, where to write, time left."""

    data: Any
    flows: dict[str, Any]
    out_dir: Path
    deadline: float
    seed: int
    tiny: bool
    progress: bool = False
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds_left(self) -> float:
        return max(0.0, self.deadline - time.perf_counter())


#: Functions ``fn(report, context)`` run after the models are trained (see module docs).
REPORT_HOOKS: list[Callable[[Report, LectureContext], None]] = []


def register_report_hook(fn: Callable[[Report, LectureContext], None]) -> None:
    """Append a section/row producer to the lecture report (e.g. distillation)."""
    if fn not in REPORT_HOOKS:
        REPORT_HOOKS.append(fn)


def _load_average() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f}"
    except (OSError, AttributeError):
        return "n/a"


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"


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
    hooks: Sequence[Callable[[Report, LectureContext], None]] = (),
) -> Report:
    """Fit and compare the lecture's models within ``budget_minutes`` of wall time.

    Writes ``report.md``, ``results.json``, ``training_curves.png``, ``samples.png`` and
    one checkpoint per model (``<out>/<model>/model``) into ``out_dir``. Models whose preset
    is not installed are skipped with a note. ``tiny`` uses tiny networks and a small subset
    of the data (a smoke test).
    """
    from invertible.checkpoint import data_metadata
    from invertible.cli import load_data
    from invertible.evaluation import density_throughput, evaluate_array, sampling_throughput
    from invertible.models import ModelUnavailableError, build_model, initialize_from_data
    from invertible.plots import plot_patch_grid, plot_samples, plot_training_curves
    from invertible.training import fit

    import_extensions()
    t0 = time.perf_counter()
    budget = budget_minutes * 60.0
    # Hooks (e.g. distillation) declare the share of the budget they need as `fn.reserve`.
    hooks_reserve = budget * sum(getattr(h, "reserve", 0.0) for h in [*REPORT_HOOKS, *hooks])
    deadline = t0 + budget
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if tiny:
        options = {"n_train": 1000, "n_val": 200, "n_test": 300}
    data, reload = load_data(dataset, data_dir=data_dir, seed=seed, options=options)
    meta = data_metadata(data, options=reload)
    load_time = time.perf_counter() - t0
    d = data.features
    size = "tiny" if tiny else "small"

    report = Report(
        f"Normalizing flows on {data.name} (D = {d})",
        intro=(
            f"Each model was fit by maximum likelihood (Adam, cosine schedule, early stopping "
            f"on the validation log-likelihood, best weights restored, batch-norm statistics "
            f"recomputed on the training set; NICE's rescaling initialised from the data scale) "
            f"within a total wall-clock budget of "
            f"{budget_minutes:g} min on {os.cpu_count()} CPU core(s), "
            f"{torch.get_num_threads()} torch thread(s), load average "
            f"{_load_average()} at the start "
            f"(torch {torch.__version__}, {platform.machine()}). Data: {len(data.train):,} "
            f"training, {len(data.val):,} validation and {len(data.test):,} test points; "
            f"test log-likelihoods are means in nats with ± 2 standard errors."
        ),
    )
    report.meta = {
        "dataset": data.name,
        "features": d,
        "budget_minutes": budget_minutes,
        "tiny": tiny,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "data_load_s": load_time,
    }

    # reserve time after training for evaluation, throughput and figures
    eval_reserve = {"iaf": 0.05 * budget} if not tiny else {}
    reserve_each = 0.035 * budget
    final_reserve = 0.04 * budget
    histories: dict[str, list[dict[str, Any]]] = {}
    flows: dict[str, Any] = {}
    samples: dict[str, Any] = {}
    notes: list[str] = []
    pending = list(models)
    for name in models:
        pending.remove(name)
        key = name.lower()
        try:
            flow = build_model(
                key, d, size=size, seed=seed, **({} if tiny else LECTURE_OVERRIDES.get(key, {}))
            )
        except ModelUnavailableError as e:
            notes.append(f"**{name} skipped**: {e}.")
            report.add_row(ModelRow(name, "—", 0, None, None, 0.0, None, None, note="skipped"))
            continue
        initialize_from_data(flow, data.train)
        remaining = [key, *[p.lower() for p in pending]]
        left = deadline - time.perf_counter() - final_reserve - hooks_reserve
        left -= sum(eval_reserve.get(m, reserve_each) for m in remaining)
        weights = [TIME_WEIGHTS.get(m, 0.2) for m in remaining]
        max_time = max(1.0, left * weights[0] / sum(weights))
        train_opts: dict[str, Any] = {
            "steps": 200_000,
            "batch_size": 256,
            "lr": 1e-3,
            "patience": 15,
            "eval_every": 25 if tiny else 150,
            "seed": seed,
            "max_time": max_time,
            "refresh_bn_rows": 20000,
        }
        train_opts.update(LECTURE_OPTIONS.get(key, {}))
        if tiny:
            train_opts["eval_every"] = 10
        run_dir = out / key
        result = fit(flow, data, out_dir=run_dir, progress=progress, data_meta=meta, **train_opts)
        histories[name] = result.history
        flows[key] = flow
        # test log-likelihood; IAF's density of outside data is sequential: cap its test set
        test = data.test
        eval_note = ""
        if key == "iaf" and not tiny and len(test) > 2000:
            test = test[:2000]
            eval_note = f"; test LL on the first {len(test):,} test points (sequential inverse)"
        res = evaluate_array(flow, test, what=f"dataset {data.name!r} (test)")
        n_density = 200 if key == "iaf" or tiny else 1000
        repeats = 1 if tiny else 2
        dens = density_throughput(flow, data.test, n=n_density, repeats=repeats)
        samp = sampling_throughput(flow, n=200 if tiny else 1000, repeats=repeats)
        with torch.no_grad():
            samples[name] = flow.sample(64).cpu().numpy()
        stopped = {"max_time": "time cap", "early_stopping": "early stop", "steps": "all steps"}
        plural = "" if result.steps == 1 else "s"
        note = f"{result.steps} step{plural}, {stopped.get(result.stopped, result.stopped)}"
        if key == "iaf":
            note += "; MLE via sequential inverse (63 passes/layer/step), small net"
        report.add_row(
            ModelRow(
                name=name,
                preset=type(flow).__name__,
                parameters=sum(p.numel() for p in flow.parameters()),
                test_log_prob=res.log_prob,
                two_se=res.two_se,
                train_time=result.train_time,
                density_per_s=dens,
                sampling_per_s=samp,
                note=note + eval_note,
                steps=result.steps,
                stopped=result.stopped,
                test_points=res.n,
                bits_per_dim=res.bits_per_dim,
            )
        )

    figures: list[str] = []
    if histories:
        plot_training_curves(histories, out / "training_curves.png")
        figures.append("training_curves.png")
    if samples and d in (63, 64):
        plot_patch_grid({"data (test)": data.test[:64], **samples}, out / "samples.png")
        figures.append("samples.png")
    elif flows and d == 2:
        for key, flow in flows.items():
            plot_samples(flow, data, out / f"density_{key}.png", title=key)
            figures.append(f"density_{key}.png")

    context = LectureContext(data, flows, out, deadline, seed, tiny, progress)
    for hook in [*REPORT_HOOKS, *hooks]:
        try:
            hook(report, context)
        except Exception as e:  # a broken extension must not lose the report
            notes.append(f"report hook {getattr(hook, '__name__', hook)} failed: {e}")

    report.add_section(
        "Reading the table",
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
        "models.",
    )
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


def import_extensions() -> None:
    """Import modules that register report hooks (e.g. distillation), if present."""
    import contextlib
    import importlib

    for name in ("invertible.distill_report",):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
