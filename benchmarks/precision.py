"""What bf16 mixed precision costs in quality: ``python -m benchmarks precision``.

For each (dataset, model, seed) three runs of :func:`invertible.fit` on the same data, from
the same initial weights (``torch.manual_seed(seed)`` before building the flow) with the
same batch order (``fit(seed=seed)``):

- ``fp32``: ``precision="fp32"`` for N steps; its loop time is t32.
- ``bf16-steps``: ``precision="bf16"`` for the same N steps (equal steps); loop time t16.
- ``bf16-time``: ``precision="bf16"`` with ``max_time=t32`` and a step cap far beyond
  what fits (equal wall clock; the cosine schedule follows the time budget).

Everything else is the library's defaults (Adam lr 1e-3, cosine schedule, gradient
clipping at 5, the best weights by validation, batch-norm statistics refreshed at the
end), except that early stopping is off (``patience=None``) so every run uses its whole
budget. The test log-likelihood is :func:`invertible.evaluate`, always in float32.

Models: ``maf`` is ``invertible.MAF`` (5 MADE layers, batch norm between them), ``realnvp``
is ``invertible.RealNVP`` (10 affine couplings, batch norm between them); both with
``--hidden`` units (default 2 × 256). Datasets: ``gmm8`` (D = 8), ``patches`` (D = 63, the
embedded photographs) and ``bsds300`` (D = 63, rebuilt from the BSDS300 images in
``--data-dir``; skipped with a note when they are missing).

Per row the table shows mean ± s.e. over seeds of the three test log-likelihoods, the
paired gap of bf16 equal-steps to fp32 (nats, and % of |fp32|; target within 0.5 %),
whether bf16 equal-time beats fp32 (paired mean difference > 0), and the speed-up
t32 / t16 of the equal-steps runs. ``precision.json`` is rewritten after every run.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DATASETS", "MODELS", "MODES", "add_parser", "markdown", "run", "summarize"]

DEFAULT_OUT = Path("benchmarks/results/precision")
DATA_DIR = "/work/shared/data"
DATASETS: tuple[str, ...] = ("gmm8", "patches", "bsds300")
MODELS: tuple[str, ...] = ("maf", "realnvp")
#: run name -> training precision
MODES: dict[str, str] = {"fp32": "fp32", "bf16-steps": "bf16", "bf16-time": "bf16"}
#: the equal-time run's step cap, as a multiple of N (the time budget ends it first)
TIME_STEP_FACTOR = 20


def load(name: str, args: argparse.Namespace) -> Any:
    """The dataset ``name`` (data seed 0) at the sizes of ``args``."""
    from invertible import data as datasets

    sizes = {"n_train": args.n_train, "n_val": args.n_val, "n_test": args.n_test}
    if name == "bsds300":
        return datasets.load_dataset(name, data_dir=args.data_dir, seed=0, **sizes)
    if args.quick:
        return datasets.load_dataset(name, seed=0, **sizes)
    return datasets.load_dataset(name, seed=0)  # the embedded sizes


def build(model: str, dim: int, hidden: Sequence[int]) -> torch.nn.Module:
    """A fresh ``invertible.MAF`` (``"maf"``) or ``invertible.RealNVP`` (``"realnvp"``)."""
    import invertible

    if model == "maf":
        return invertible.MAF(dim, num_layers=5, hidden_features=tuple(hidden))
    if model == "realnvp":
        return invertible.RealNVP(dim, num_layers=10, hidden_features=tuple(hidden))
    raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")


def train_one(
    model: str, data: Any, seed: int, mode: str, steps: int, args: argparse.Namespace,
    max_time: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One run of ``fit`` and its float32 test evaluation, as a JSON record."""
    import invertible

    torch.manual_seed(seed)
    flow = build(model, data.features, args.hidden)
    cap = steps * TIME_STEP_FACTOR if max_time else steps
    result = invertible.fit(
        flow, data, steps=cap, batch_size=args.batch_size, patience=None,
        eval_every=max(1, steps // 4), val_max_rows=args.val_rows, seed=seed,
        max_time=max_time, precision=MODES[mode], progress=False, save_model=False,
    )  # fmt: skip
    test = invertible.evaluate(flow, data)
    return {
        "model": model, "seed": seed, "mode": mode, "precision": MODES[mode],
        "steps": result.steps, "seconds": result.train_time, "max_time": max_time,
        "stopped": result.stopped, "skipped_steps": result.skipped_steps,
        "test_ll": test.log_prob, "test_two_se": test.two_se,
    }  # fmt: skip


def run_triple(
    dataset: str, model: str, data: Any, seed: int, steps: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """fp32 for N steps, bf16 for N steps, bf16 for fp32's wall time."""
    fp32 = train_one(model, data, seed, "fp32", steps, args)
    bf16 = train_one(model, data, seed, "bf16-steps", steps, args)
    timed = train_one(model, data, seed, "bf16-time", steps, args, max_time=fp32["seconds"])
    return [{"dataset": dataset, **r} for r in (fp32, bf16, timed)]


# --------------------------------------------------------------------------------------
# summary and table
# --------------------------------------------------------------------------------------


def _mean_se(values: Sequence[float]) -> tuple[float, float | None]:
    mean = float(np.mean(values))
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else None
    return mean, se


def _by_seed(runs: list[dict[str, Any]], mode: str, key: str) -> dict[int, float]:
    return {r["seed"]: r[key] for r in runs if r["mode"] == mode}


def summarize_row(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of one (dataset, model) from its runs (seeds paired)."""
    ll = {m: _by_seed(runs, m, "test_ll") for m in MODES}
    secs = {m: _by_seed(runs, m, "seconds") for m in MODES}
    seeds = sorted(set.intersection(*(set(v) for v in ll.values())))
    row: dict[str, Any] = {"seeds": len(seeds)}
    if not seeds:
        return row
    for m in MODES:
        row[m] = _mean_se([ll[m][s] for s in seeds])
    gap = [ll["fp32"][s] - ll["bf16-steps"][s] for s in seeds]
    gain = [ll["bf16-time"][s] - ll["fp32"][s] for s in seeds]
    row["gap_nats"] = _mean_se(gap)
    row["gap_percent"] = 100.0 * row["gap_nats"][0] / abs(row["fp32"][0])
    row["within_half_percent"] = row["gap_percent"] <= 0.5
    row["time_gain_nats"] = _mean_se(gain)
    row["time_beats_fp32"] = row["time_gain_nats"][0] > 0
    row["speedup"] = float(np.mean([secs["fp32"][s] / secs["bf16-steps"][s] for s in seeds]))
    row["time_steps"] = float(np.mean([r["steps"] for r in runs if r["mode"] == "bf16-time"]))
    return row


def summarize(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One summary row per (dataset, model) present in ``payload["runs"]``."""
    rows = []
    for ds in DATASETS:
        for model in MODELS:
            runs = [r for r in payload["runs"] if r["dataset"] == ds and r["model"] == model]
            if runs:
                rows.append({"dataset": ds, "model": model, **summarize_row(runs)})
    return rows


def _cell(value: tuple[float, float | None] | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    mean, se = value
    if not math.isfinite(mean):
        return "diverged"
    return f"{mean:.{digits}f}" if se is None else f"{mean:.{digits}f} ± {se:.{digits}f}"


def _table_line(row: dict[str, Any], steps: dict[str, int]) -> str:
    if not row["seeds"]:
        cells = [row["dataset"], row["model"], str(steps.get(row["dataset"], "")), "incomplete"]
        return "| " + " | ".join(cells + ["—"] * 8) + " |"
    cells = [
        row["dataset"], row["model"], str(steps.get(row["dataset"], "")),
        _cell(row["fp32"]), _cell(row["bf16-steps"]), _cell(row["bf16-time"]),
        f"{_cell(row['gap_nats'])} ({row['gap_percent']:+.2f} %)",
        "yes" if row["within_half_percent"] else "**no**",
        f"{'yes' if row['time_beats_fp32'] else '**no**'} ({_cell(row['time_gain_nats'])})",
        f"{row['speedup']:.2f}x", f"{row['time_steps']:.0f}", str(row["seeds"]),
    ]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def markdown(payload: dict[str, Any]) -> str:
    """The table of ``precision.json``."""
    cfg, env = payload["config"], payload["environment"]
    peaks = env.get("matmul_peak_flops_per_s", {})
    peak_text = ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()) or "—"
    header = [
        "data", "model", "N", "fp32", "bf16 equal steps", "bf16 equal time",
        "gap fp32 − bf16 (steps)", "≤ 0.5 %", "bf16 equal time > fp32 (gain)",
        "speed-up t32/t16", "bf16 steps in t32", "seeds",
    ]  # fmt: skip
    lines = [
        "# Mixed precision: bf16 against fp32",
        "",
        "Test log-likelihood in nats (higher is better), mean ± standard error over seeds; "
        "evaluation always in float32. Per seed: fp32 for N steps (loop time t32), bf16 for "
        "the same N steps (t16), bf16 for t32 seconds (`max_time`). Same data, initial "
        "weights and batch order per seed; `invertible.fit` defaults (Adam lr 1e-3, cosine "
        f"schedule, best weights by validation) without early stopping; batch "
        f"{cfg['batch_size']}, hidden {' × '.join(map(str, cfg['hidden']))}; MAF: 5 MADE "
        "layers, RealNVP: 10 couplings, batch norm between layers. Gaps are paired over "
        "seeds (% of |fp32|; the target is ≤ 0.5 %).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *(_table_line(row, cfg["steps"]) for row in summarize(payload)),
        "",
        f"Machine: {env['processor']}, {env['threads']} threads, torch {env['torch']}; "
        f"matmul peak {peak_text}. {env.get('date', '')}",
    ]
    lines += [f"- {note}" for note in payload.get("notes", [])]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


def _environment(threads: int, quick: bool) -> dict[str, Any]:
    from benchmarks.steps import _cpu_name, _peaks

    peaks = {} if quick else _peaks(torch.device("cpu"), ("fp32", "bf16"))
    return {
        "processor": _cpu_name(), "threads": threads, "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M %z"), "matmul_peak_flops_per_s": peaks,
    }  # fmt: skip


def _steps(args: argparse.Namespace) -> dict[str, int]:
    steps = {ds: args.steps for ds in args.datasets}
    for item in args.dataset_steps or []:
        name, _, value = item.partition("=")
        steps[name] = int(value)
    return steps


def _write(payload: dict[str, Any], out: Path) -> None:
    payload["summary"] = summarize(payload)
    (out / "precision.json").write_text(json.dumps(payload, indent=1))
    (out / "precision.md").write_text(markdown(payload))


def run(args: argparse.Namespace) -> int:
    """Run the grid described by ``args``; writes ``precision.json`` and ``precision.md``."""
    torch.set_num_threads(args.threads)
    out = Path(args.out or (str(DEFAULT_OUT) + ("-quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    keys = ("batch_size", "hidden", "n_train", "n_val", "n_test", "val_rows", "models", "seeds")
    config = {k: getattr(args, k) for k in keys}
    config |= {"steps": _steps(args), "quick": args.quick, "data_dir": args.data_dir}
    payload: dict[str, Any] = {"config": config, "runs": [], "datasets": {}, "notes": []}
    payload["environment"] = _environment(args.threads, args.quick)
    start = time.perf_counter()
    for ds in args.datasets:
        try:
            data = load(ds, args)
        except Exception as err:  # a missing dataset skips its rows, with a note
            payload["notes"].append(f"{ds} skipped: {str(err).splitlines()[0]}")
            print(payload["notes"][-1], flush=True)
            continue
        payload["datasets"][ds] = {"features": data.features} | {
            k: len(v) for k, v in data.splits.items()
        }
        for model in args.models:
            for seed in range(args.seeds):
                runs = run_triple(ds, model, data, seed, config["steps"][ds], args)
                payload["runs"] += runs
                _write(payload, out)
                print(" | ".join(_log(r) for r in runs), flush=True)
    _write(payload, out)
    print(f"done in {time.perf_counter() - start:.0f} s; wrote {out / 'precision.md'}")
    return 0


def _log(r: dict[str, Any]) -> str:
    return (
        f"{r['dataset']} {r['model']} s{r['seed']} {r['mode']}: {r['test_ll']:.3f} "
        f"({r['steps']} steps, {r['seconds']:.1f} s)"
    )


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``precision`` subcommand."""
    p = subparsers.add_parser(
        "precision",
        help="bf16 against fp32 in test log-likelihood, at equal steps and equal time",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument("--quick", action="store_true", help="smoke run: gmm8, tiny splits, 1 seed")
    p.add_argument("--datasets", nargs="*", choices=DATASETS, default=None)
    p.add_argument("--models", nargs="*", choices=MODELS, default=list(MODELS))
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..n-1 (default 3)")
    p.add_argument("--steps", type=int, default=None, help="N per run (default 500)")
    p.add_argument("--dataset-steps", nargs="*", metavar="NAME=N", help="e.g. gmm8=400")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=None, help="BSDS300 rows (default 50000)")
    p.add_argument("--n-val", type=int, default=None, help="BSDS300 rows (default 5000)")
    p.add_argument("--n-test", type=int, default=None, help="BSDS300 rows (default 10000)")
    p.add_argument("--val-rows", type=int, default=2000, help="validation rows per check")
    p.add_argument("--data-dir", default=DATA_DIR, help=f"BSDS300 images (default {DATA_DIR})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT})")
    p.set_defaults(func=lambda args: run(resolve_defaults(args)))
    return p


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on ``--quick``."""
    quick = args.quick
    args.datasets = args.datasets or (["gmm8"] if quick else list(DATASETS))
    args.seeds = args.seeds if args.seeds is not None else (1 if quick else 3)
    args.steps = args.steps if args.steps is not None else (20 if quick else 500)
    args.n_train = args.n_train or (1000 if quick else 50000)
    args.n_val = args.n_val or (200 if quick else 5000)
    args.n_test = args.n_test or (500 if quick else 10000)
    if quick:
        args.hidden = args.hidden if args.hidden != [256, 256] else [16, 16]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.precision`` (= ``python -m benchmarks precision``)."""
    from benchmarks.__main__ import main as suite_main

    return suite_main(["precision", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
