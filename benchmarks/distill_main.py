"""Distillation variants against one fixed teacher: ``python -m benchmarks distill-main``.

The main job (``invertible lecture``) distils its MAF into an IAF student in about two
minutes of CPU. This benchmark replays that stage for several variants of the objective
against the **same** teacher checkpoint (e.g. ``runs/lecture/maf/model`` of one main-job
run), each for the same wall-clock cap, with the main job's student size, start
(:func:`invertible.distillation.init_data_scale`) and options
(:data:`invertible.reports.distillation.OPTIONS`) unless the variant changes them. Every
finished run is one JSON line in ``<out>/runs.jsonl`` (``--resume`` skips the variant and
seed pairs already there); ``<out>/results.json`` (all lines) and ``<out>/table.md``
(:func:`markdown`: mean ± sd per variant, then every run) are rewritten after each.

Each invocation first writes ``<out>/teacher.json`` (:func:`describe_teacher`: the
teacher's entropy and the spread of its samples next to the data's, which say how hard a
target it is for a mode-seeking KL(S‖T)).

Measured per run: the final KL(S‖T) training estimate (mean of its last 50 steps) and a
fresh Monte-Carlo estimate on 4,000 student samples; the teacher's log-likelihood of 50,000
student samples against that of 50,000 of its own (median, their ratio and its bootstrap
standard error: the target is within 5%); MMD² against test rows, mean of 4 blocks of 2,000
(one kernel for both models: :func:`invertible.distillation.evaluate_student`; the ratio to
the teacher's: the target is ≤ 1.2); the exact test log-likelihood of both models on the
first 2,000 test rows.

Usage::

    python -m benchmarks distill-main --teacher runs/lecture/maf/model \\
        --variants kl contrast-30 --seeds 0 1 2 --seconds 150 --threads 1
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import invertible
from invertible.data import load_data
from invertible.distillation import distill, distillation_losses, evaluate_student, frozen
from invertible.distillation.students import init_data_scale
from invertible.reports.distillation import OPTIONS, STUDENT

__all__ = ["VARIANTS", "add_parser", "describe_teacher", "main", "markdown", "run_variant"]

DEFAULT_OUT = Path("benchmarks/results/distill-main")
#: Samples of each model behind the teacher log-likelihood ratio (s.e. near 1.2%).
SAMPLES = 50_000
#: Teacher samples drawn once for a ``"contrast_source": "teacher"`` variant's target.
TEACHER_ROWS = 20_000

#: Named variants: options of :func:`invertible.distill` over the main job's
#: :data:`~invertible.reports.distillation.OPTIONS`.
VARIANTS: dict[str, dict[str, Any]] = {
    "kl": {},
    "contrast-2": {"data_anchor": 2.0, "anchor": "contrast"},
    "contrast-3": {"data_anchor": 3.0, "anchor": "contrast"},
    "contrast-5": {"data_anchor": 5.0, "anchor": "contrast"},
    "contrast-10": {"data_anchor": 10.0, "anchor": "contrast"},
    "contrast-30": {"data_anchor": 30.0, "anchor": "contrast"},
    "contrast-100": {"data_anchor": 100.0, "anchor": "contrast"},
    "contrast-5-bound-2": {
        "data_anchor": 5.0,
        "anchor": "contrast",
        "student": {"log_scale_bound": 2.0},
    },
    "teacher-contrast-5": {"data_anchor": 5.0, "anchor": "contrast", "contrast_source": "teacher"},
    "latent-0.1": {"data_anchor": 0.1, "anchor": "teacher-latent", "anchor_batch_size": 128},
}
"""A ``"student"`` entry overrides the main job's student arguments
(:data:`~invertible.reports.distillation.STUDENT`)."""


def run_variant(
    teacher: invertible.Flow,
    data: Any,
    name: str,
    seed: int,
    seconds: float,
    samples: int = SAMPLES,
) -> dict[str, Any]:
    """Distil one student with variant ``name`` for ``seconds``; measure it (``samples``
    of each model behind the teacher log-likelihood ratio)."""
    options = {**OPTIONS, "data_anchor": None, **VARIANTS[name]}
    sizes = {**STUDENT, **options.pop("student", {})}
    source = options.pop("contrast_source", "data")
    if options["data_anchor"] and source == "teacher":
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2000)
            options["data"] = teacher.sample(TEACHER_ROWS)
    elif options["data_anchor"]:
        options["data"] = torch.as_tensor(data.train)
    student = invertible.IAF(data.features, seed=seed, **sizes)
    init_data_scale(student, torch.as_tensor(data.train))
    result = distill(
        teacher, student, **options, max_time=seconds, progress=False, seed=seed
    )  # fmt: skip
    with torch.no_grad(), frozen(teacher), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1000)
        kl_fresh = float(distillation_losses(teacher, student, 4000, "mc")["kl"])
    m = evaluate_student(
        teacher, student, data, n_samples=samples, throughput_batch=100, repeats=1,
        test_rows=2000, seed=seed,
    )  # fmt: skip
    t_own = m["teacher_ll_teacher_samples_median"]
    return {
        "name": name,
        "seed": seed,
        "options": {k: v for k, v in options.items() if k != "data"},
        "student": sizes,
        "contrast_source": source,
        "seconds": seconds,
        "steps": len(result.history["kl"]),
        "train_s": result.wall_time,
        "kl_train": result.final("kl"),
        "kl_fresh": kl_fresh,
        "anchor_final": _finite_or_none(result.final("anchor")),
        "t_ll_student_median": m["teacher_ll_student_samples_median"],
        "t_ll_teacher_median": t_own,
        "ratio": m["teacher_ll_ratio"],
        "ratio_se": m["teacher_ll_ratio_se"],
        "samples": samples,
        "mmd_student": m["mmd_student"],
        "mmd_teacher": m["mmd_teacher"],
        "mmd_ratio": m["mmd_student"] / m["mmd_teacher"],
        "student_test_ll": m["student_test_ll"],
        "teacher_test_ll": m["teacher_test_ll"],
        "threads": torch.get_num_threads(),
        "load": os.getloadavg()[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(rows: list[dict[str, Any]]) -> list[str]:
    """Mean ± sd over seeds per variant, in the order the variants first appear."""
    lines = [
        "| variant | seeds | steps | KL fresh | teacher LL ratio (median) | MMD² ratio | "
        "student test LL | runs meeting all three targets |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def stat(values: list[float], digits: int) -> str:
        mean = statistics.fmean(values)
        if len(values) < 2:
            return f"{mean:.{digits}f}"
        return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"

    for name in dict.fromkeys(r["name"] for r in rows):
        group = [r for r in rows if r["name"] == name]
        lines.append(
            f"| {name} | {len(group)} | {stat([r['steps'] for r in group], 0)} | "
            f"{stat([r['kl_fresh'] for r in group], 2)} | "
            f"{stat([r['ratio'] for r in group], 3)} | "
            f"{stat([r['mmd_ratio'] for r in group], 2)} | "
            f"{stat([r['student_test_ll'] for r in group], 1)} | "
            f"{sum(all(_met(r)) for r in group)}/{len(group)} |"
        )
    return lines


def _describe(teacher: dict[str, Any] | None) -> list[str]:
    """The teacher's summary (:func:`describe_teacher`) as a paragraph, if the run has one."""
    if not teacher:
        return []
    return [
        f"The teacher: entropy {teacher['entropy']:.1f} nats, test log-likelihood "
        f"{teacher['test_ll']:.2f}, median log-likelihood of its own samples "
        f"{teacher['own_log_prob_median']:.1f}; per-coordinate sd of its samples "
        f"{teacher['sample_sd']:.3f} against the data's {teacher['data_sd']:.3f}.",
        "",
    ]


def _met(row: dict[str, Any]) -> list[bool]:
    """The issue's three targets: KL ≤ 3 nats, ratio within 5%, MMD² ≤ 1.2× the teacher's."""
    return [row["kl_fresh"] <= 3.0, abs(row["ratio"] - 1) <= 0.05, row["mmd_ratio"] <= 1.2]


def markdown(payload: dict[str, Any]) -> str:
    """The section of ``results.json``: the summary per variant, then every run."""
    rows = payload["runs"]
    first = rows[0] if rows else {}
    lines = [
        f"# Distillation variants against one teacher (`{first.get('teacher', '?')}`)",
        "",
        f"Teacher `{first.get('teacher', '?')}` (a main-job MAF on `patches`, D = 63); "
        f"each run trains the main job's student for {first.get('seconds', 0):g} s on "
        f"{first.get('threads', '?')} thread(s), then measures it (KL fresh: 4,000 "
        f"samples; teacher log-likelihood of {first.get('samples', 2000):,} samples, median, "
        "over that of as many of its own, ± bootstrap s.e.; MMD² to test rows over the "
        "teacher's, 4 blocks of 2,000, one kernel). Targets: KL ≤ 3, "
        "ratio within 5%, MMD² ratio ≤ 1.2. Command: `python -m benchmarks distill-main "
        "--teacher runs/lecture/maf/model --variants ... --seeds 0 1 2`.",
        "",
        *_describe(payload.get("teacher")),
        *_summary(rows),
        "",
        "| variant | seed | steps | KL train | KL fresh | teacher LL of samples, median: "
        "student / teacher's (ratio) | MMD² student / teacher (ratio) | student test LL "
        "(teacher) | targets met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['steps']:,} | {r['kl_train']:.2f} | "
            f"{r['kl_fresh']:.2f} | {r['t_ll_student_median']:.1f} / "
            f"{r['t_ll_teacher_median']:.1f} ({r['ratio']:.3f} ± {r['ratio_se']:.3f}) | "
            f"{r['mmd_student']:.2e} / "
            f"{r['mmd_teacher']:.2e} ({r['mmd_ratio']:.2f}) | {r['student_test_ll']:.1f} "
            f"({r['teacher_test_ll']:.1f}) | {sum(_met(r))}/3 |"
        )
    return "\n".join(lines) + "\n"


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@torch.no_grad()
def describe_teacher(
    teacher: invertible.Flow, test: torch.Tensor, n: int = 20_000
) -> dict[str, float]:
    """How concentrated ``teacher`` is: entropy and tails from ``n`` of its samples (seed 0).

    ``entropy`` is −mean log T(x) over its own samples; ``sample_sd`` the mean over
    coordinates of their standard deviation, next to the test rows' ``data_sd`` (a
    heavy-tailed teacher has ``sample_sd`` well above it); ``test_ll`` the mean
    log-likelihood of ``test``.
    """
    torch.manual_seed(0)
    x = teacher.eval().sample(n)
    own = teacher.log_prob(x)
    return {
        "entropy": float(-own.mean()),
        "own_log_prob_median": float(own.median()),
        "own_log_prob_sd": float(own.std()),
        "sample_sd": float(x.std(0).mean()),
        "data_sd": float(test.std(0).mean()),
        "test_ll": float(teacher.log_prob(test).mean()),
    }


def main(args: argparse.Namespace) -> int:
    """Run every requested variant and seed; append each result and rewrite the table."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.jsonl"
    teacher = invertible.load(args.teacher)
    data, _ = load_data(args.dataset, seed=args.data_seed)
    test = torch.as_tensor(data.test[:5000], dtype=torch.float32)
    summary = {"teacher": str(args.teacher), **describe_teacher(teacher, test)}
    (out / "teacher.json").write_text(json.dumps(summary, indent=1) + "\n")

    def write() -> None:
        payload = {"teacher": summary, "runs": _read(runs)}
        (out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
        (out / "table.md").write_text(markdown(payload))

    done = {(r["name"], r["seed"]) for r in _read(runs)} if args.resume else set()
    for seed in args.seeds:
        for name in args.variants:
            if (name, seed) in done:
                continue
            row = run_variant(teacher, data, name, seed, args.seconds, args.samples)
            row["teacher"] = str(args.teacher)
            with runs.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps({k: row[k] for k in ("name", "seed", "steps", "kl_fresh",
                                                  "ratio", "mmd_ratio")}), flush=True)  # fmt: skip
            write()
    write()
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``distill-main``."""
    p = subparsers.add_parser("distill-main", help="distillation variants against one teacher")
    p.add_argument("--teacher", required=True, help="MAF checkpoint, e.g. runs/lecture/maf/model")
    p.add_argument("--dataset", default="patches")
    p.add_argument("--data-seed", type=int, default=0, help="the main job's --seed (its split)")
    p.add_argument("--variants", nargs="+", default=["kl"], choices=sorted(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--seconds", type=float, default=150.0, help="training cap of each run")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--samples", type=int, default=SAMPLES, help="samples of each model for the LL ratio"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--resume", action="store_true", help="skip variant/seed pairs already run")
    p.set_defaults(func=main)
    return p
