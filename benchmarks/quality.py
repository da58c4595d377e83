"""Density-estimation quality with an equal budget: ``python -m benchmarks quality``.

Every library trains the same architecture on the same data with the same plain training
loop (:func:`train_and_evaluate`): Adam (lr 1e-3, no weight decay, no gradient clipping, no
schedule), batch 256, a fixed number of steps, no early stopping; the *final* model is
evaluated on the test split. Batches are drawn by a seeded generator, so every library sees
the same batches in the same order for a given seed; the seed also fixes the initial weights
(``torch.manual_seed`` before building the model).

Models (sizes set here, not by the speed configuration of :mod:`benchmarks.adapter`):

- ``maf``: 5 affine MADE layers D -> 64 -> 64 -> 2D (ReLU), order reversed between layers,
  standard normal base, **no batch norm** for every library (the peers have none).
- ``coupling``: 10 affine coupling layers with 64 -> 64 MLP conditioners (ReLU), the
  conditioning half alternating, standard normal base, no batch norm.
- ours, both models: with the presets' default ActNorm next to the data (2D parameters,
  started by the first training batch).
- ``invertible-bn`` (extra row, MAF only): our MAF with its defaults (batch norm between
  layers); batch-norm statistics are the running averages of training (no refresh), since
  the loop is the same for everyone.

Each run's test log-likelihood is the mean over the test split with a 2 standard-error
interval; over seeds the table shows the mean and the standard deviation of the per-seed
means. A few test points far outside the training data can dominate a mean, so the median
and the minimum of the per-point test log-likelihoods are recorded too (their own table),
and each row says whether ours is at least the best peer's mean within one standard error
of the difference of the seed means. Where the dataset has a closed-form density
(``true_log_prob``) the oracle test log-likelihood (the true density on the same test
points) is listed with the gap.

Results are written to ``quality.json`` after every run (a rerun with the same ``--out``
skips finished runs) and ``quality.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import invertible
from benchmarks.adapter import FlowAdapter

__all__ = [
    "DATASETS",
    "LIBRARIES",
    "QualityConfig",
    "RunResult",
    "add_parser",
    "build_model",
    "evaluate_test",
    "load_quality_data",
    "main",
    "train_and_evaluate",
]

DEFAULT_OUT = Path("benchmarks/results/quality")
LIBRARIES: tuple[str, ...] = ("invertible", "zuko", "nflows", "normflows", "invertible-bn")
"""Library columns; ``invertible-bn`` is our MAF with batch norm (its default), MAF only."""

DATASETS: tuple[str, ...] = ("moons", "8gaussians", "checkerboard", "gmm8", "patches", "bsds300")
DATA_DIR = "/work/shared/data"
"""Where ``bsds300`` finds the BSDS300 images (``--data-dir``); see docs/datasets.md."""
#: Rows of the 63-D image-patch sets (``patches`` embeds these sizes; ``bsds300`` gets them).
PATCH_SIZES = {"n_train": 40000, "n_val": 5000, "n_test": 10000}


@dataclass
class QualityConfig:
    """The equal budget shared by every library.

    Attributes:
        steps: Adam steps per run (per dataset: ``steps_override`` wins).
        batch_size: Mini-batch size.
        lr: Adam learning rate.
        seeds: Model/batch-order seeds (the data seed is fixed at 0).
        maf_layers, maf_hidden: MAF architecture.
        coupling_layers, coupling_hidden: coupling architecture.
        steps_override: Per-dataset step counts (e.g. fewer for ``patches``).
        data_dir: where ``bsds300``'s images are.
    """

    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    seeds: tuple[int, ...] = (0, 1, 2)
    maf_layers: int = 5
    maf_hidden: tuple[int, ...] = (64, 64)
    coupling_layers: int = 10
    coupling_hidden: tuple[int, ...] = (64, 64)
    steps_override: dict[str, int] = field(default_factory=dict)
    data_dir: str = DATA_DIR

    def steps_for(self, dataset: str) -> int:
        """Number of steps for ``dataset``."""
        return self.steps_override.get(dataset, self.steps)


@dataclass
class RunResult:
    """One (library, model, dataset, seed) run."""

    library: str
    kind: str
    dataset: str
    seed: int
    steps: int
    test_ll: float
    test_two_se: float
    test_median: float
    test_min: float
    nonfinite_test: int
    final_train_loss: float
    diverged_at: int | None
    num_params: int
    train_seconds: float


# --------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------


def load_quality_data(name: str, *, quick: bool = False, data_dir: str = DATA_DIR) -> Any:
    """The dataset ``name`` as used here (data seed 0).

    2-D toys are standardised with training statistics (``true_log_prob`` follows), ``gmm8``
    is in its generating space (as in ``/work/shared/PEERS.md``), ``patches`` and
    ``bsds300`` (rebuilt from the BSDS300 photographs in ``data_dir``, at the sizes of
    ``patches``) as the loaders give them (not standardised, as in the MAF paper's
    BSDS300). ``quick`` uses smaller splits.
    """
    from invertible.data import load_dataset

    sizes: dict[str, int] = {}
    if quick:
        sizes = {"n_train": 2000, "n_val": 200, "n_test": 1000}
    if name == "bsds300":
        return load_dataset(name, seed=0, data_dir=data_dir, **(sizes or PATCH_SIZES))
    if name in ("moons", "8gaussians", "checkerboard", "rings"):
        return load_dataset(name, seed=0, standardize=True, **sizes)
    return load_dataset(name, seed=0, **sizes)


# --------------------------------------------------------------------------------------
# models (sized builders; same peer APIs as benchmarks.peers)
# --------------------------------------------------------------------------------------


def build_model(library: str, kind: str, dim: int, cfg: QualityConfig) -> FlowAdapter:
    """A fresh model of ``kind`` (``"maf"``/``"coupling"``) from ``library`` for D = ``dim``:
    the speed benchmark's builders (:mod:`benchmarks.peers`,
    :mod:`benchmarks.invertible_adapter`) at this benchmark's sizes."""
    from benchmarks.invertible_adapter import build_invertible
    from benchmarks.peers import PEER_BUILDERS

    if kind not in ("maf", "coupling"):
        raise ValueError(f"unknown kind {kind!r}")
    if kind == "maf":
        size = {"layers": cfg.maf_layers, "hidden": cfg.maf_hidden}
    else:
        size = {"layers": cfg.coupling_layers, "hidden": cfg.coupling_hidden}
    if library in ("invertible", "invertible-bn"):
        return build_invertible(kind, dim, batch_norm=library == "invertible-bn", **size)
    if library not in PEER_BUILDERS:
        raise ValueError(f"unknown library {library!r}; known: {', '.join(LIBRARIES)}")
    return PEER_BUILDERS[library](kind, dim, **size)  # type: ignore[call-arg]


# --------------------------------------------------------------------------------------
# the one training loop
# --------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_test(model: FlowAdapter, x: np.ndarray, batch_size: int = 4096) -> dict[str, float]:
    """Mean test log-likelihood ± 2 s.e., median and minimum over the points (eval mode);
    non-finite rows are counted and make the mean non-finite."""
    model.module.eval()
    values = torch.cat(
        [
            model.log_prob(torch.from_numpy(x[i : i + batch_size]))
            for i in range(0, len(x), batch_size)
        ]
    ).double()
    nonfinite = int((~torch.isfinite(values)).sum())
    mean = float(values.mean())
    two_se = float(2 * values.std() / math.sqrt(len(values))) if len(values) > 1 else 0.0
    return {
        "mean": mean,
        "two_se": two_se,
        "median": float(values.median()),
        "min": float(values.min()),
        "nonfinite": nonfinite,
    }


def train_and_evaluate(
    library: str, kind: str, dataset: str, data: Any, seed: int, cfg: QualityConfig
) -> RunResult:
    """Train a fresh model with the common loop and evaluate the final weights on test.

    Loop: ``torch.manual_seed(seed)``; build the model; Adam(lr); for each step draw
    ``batch_size`` training rows uniformly with replacement from a generator seeded with
    ``seed`` (identical batches for every library), minimise ``-log_prob(x).mean()``.
    A non-finite loss stops training (recorded as ``diverged_at``); the model is then
    evaluated as it is.
    """
    torch.manual_seed(seed)
    model = build_model(library, kind, data.features, cfg)
    train = torch.from_numpy(data.train)
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.module.parameters(), lr=cfg.lr)
    steps = cfg.steps_for(dataset)
    model.module.train()
    diverged_at: int | None = None
    loss_value = float("nan")
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(len(train), (cfg.batch_size,), generator=gen)
        loss = -model.log_prob(train[idx]).mean()
        if not torch.isfinite(loss):
            diverged_at = step
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    seconds = time.perf_counter() - start
    ev = evaluate_test(model, data.test)
    return RunResult(
        library=library,
        kind=kind,
        dataset=dataset,
        seed=seed,
        steps=steps,
        test_ll=ev["mean"],
        test_two_se=ev["two_se"],
        test_median=ev["median"],
        test_min=ev["min"],
        nonfinite_test=int(ev["nonfinite"]),
        final_train_loss=loss_value,
        diverged_at=diverged_at,
        num_params=model.num_params(),
        train_seconds=seconds,
    )


# --------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(obj))


def _key(r: dict[str, Any]) -> tuple[str, str, str, int]:
    return (r["library"], r["kind"], r["dataset"], int(r["seed"]))


def _available(libraries: Sequence[str]) -> list[str]:
    import importlib.util

    modules = {"zuko": "zuko", "nflows": "nflows", "normflows": "normflows"}
    return [
        lib for lib in libraries if lib not in modules or importlib.util.find_spec(modules[lib])
    ]


def _oracle(data: Any) -> float | None:
    if getattr(data, "true_log_prob", None) is None:
        return None
    return float(np.mean(data.true_log_prob(data.test)))


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    if not all(math.isfinite(v) for v in values):
        return f"diverged ({sum(not math.isfinite(v) for v in values)}/{len(values)})"
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ± {float(np.std(values, ddof=1)):.3f}"


def _test_lls(
    runs: list[dict[str, Any]], library: str, kind: str, dataset: str, key: str = "test_ll"
) -> list[float]:
    """``key`` (default: the mean test log-likelihood) of every seed of one (library, kind,
    dataset) that recorded it."""
    return [
        r[key]
        for r in runs
        if r["library"] == library and r["kind"] == kind and r["dataset"] == dataset and key in r
    ]


PEERS: tuple[str, ...] = ("zuko", "nflows", "normflows")


def verdict(runs: list[dict[str, Any]], kind: str, dataset: str) -> str:
    """Ours against the best peer (highest mean over seeds) on one row: the difference of
    the seed means ± its standard error, whether ours is at least the best peer's within
    one standard error, and whether our seed spread is no wider."""
    ours = _test_lls(runs, "invertible", kind, dataset)
    peers = {p: _test_lls(runs, p, kind, dataset) for p in PEERS}
    peers = {p: v for p, v in peers.items() if len(v) > 1 and all(map(math.isfinite, v))}
    if len(ours) < 2 or not peers or not all(map(math.isfinite, ours)):
        return "— | — | —"
    best = max(peers, key=lambda p: float(np.mean(peers[p])))
    diff = float(np.mean(ours) - np.mean(peers[best]))
    se = math.sqrt(
        np.var(ours, ddof=1) / len(ours) + np.var(peers[best], ddof=1) / len(peers[best])
    )
    level = "yes" if diff >= -se else "no"
    spread = "yes" if np.std(ours, ddof=1) <= np.std(peers[best], ddof=1) else "no"
    return f"{best}: {diff:+.3f} ± {se:.3f} | {level} | {spread}"


def _tails(runs: list[dict[str, Any]], lib: str, kind: str, dataset: str) -> str:
    """Mean over seeds of the per-point median, and the lowest per-point minimum."""
    medians = _test_lls(runs, lib, kind, dataset, "test_median")
    minima = _test_lls(runs, lib, kind, dataset, "test_min")
    if not medians:
        return "—"
    return f"{float(np.mean(medians)):.2f} / {min(minima):.1f}"


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    """Write the result table(s) of ``payload`` (as in ``quality.json``) to ``path``."""
    cfg = payload["config"]
    runs = payload["runs"]
    libs = [lib for lib in LIBRARIES if any(r["library"] == lib for r in runs)]
    lines = [
        "# Density-estimation quality with an equal budget",
        "",
        f"Test log-likelihood in nats (higher is better), mean ± standard deviation over seeds "
        f"(seeds run: see the n column). Every library: the same data, the same plain loop "
        f"(Adam lr {cfg['lr']}, batch {cfg['batch_size']}, no clipping, no schedule, no early "
        f"stopping; the final model is evaluated), the same batches per seed.",
        "",
        f"- MAF: {cfg['maf_layers']} MADE layers D → {' → '.join(map(str, cfg['maf_hidden']))}"
        " → 2D, order reversed between layers, standard normal base, no batch norm "
        "(`invertible-bn`: ours with its default batch norm between layers, running averages)."
        + (
            " Ours (both models) with its default ActNorm next to the data, started by the "
            "first batch."
            if payload["environment"].get("invertible_actnorm")
            else ""
        ),
        f"- coupling: {cfg['coupling_layers']} affine couplings, MLP "
        f"{' × '.join(map(str, cfg['coupling_hidden']))} (ReLU), alternating halves, "
        "no batch norm.",
        f"- steps: {cfg['steps']} unless stated per dataset: {cfg['steps_override'] or 'none'}.",
        "- oracle: mean log density of the true distribution on the same test points.",
        "",
    ]
    for kind in ("maf", "coupling"):
        kind_libs = [
            lib for lib in libs if any(r["library"] == lib and r["kind"] == kind for r in runs)
        ]
        if not kind_libs:
            continue
        lines += [f"## {kind.upper() if kind == 'maf' else 'Coupling (RealNVP-style)'}", ""]
        header = ["data", "D", "steps", *kind_libs, "oracle", "n (seeds)"]
        header += ["ours − best peer ± s.e.", "≥ best (1 s.e.)", "spread ≤ best"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for ds, info in payload["datasets"].items():
            cells = []
            ns = []
            for lib in kind_libs:
                vals = _test_lls(runs, lib, kind, ds)
                ns.append(len(vals))
                cells.append(_fmt(vals))
            if not any(ns):
                continue
            oracle = info.get("oracle")
            oracle_cell = "—" if oracle is None else f"{oracle:.3f}"
            n_cell = "/".join(str(n) for n in ns)
            steps = cfg["steps_override"].get(ds, cfg["steps"])
            lines.append(
                f"| {ds} | {info['features']} | {steps} | "
                + " | ".join(cells)
                + f" | {oracle_cell} | {n_cell} | {verdict(runs, kind, ds)} |"
            )
        lines += [""]
        tails = [
            f"| {ds} | " + " | ".join(_tails(runs, lib, kind, ds) for lib in kind_libs) + " |"
            for ds in payload["datasets"]
            if any(_test_lls(runs, lib, kind, ds, "test_median") for lib in kind_libs)
        ]
        if tails:
            lines += [
                "Median / minimum of the per-point test log-likelihoods (mean of the seeds' "
                "medians / lowest point over the seeds):",
                "",
                "| data | " + " | ".join(kind_libs) + " |",
                "|" + "---|" * (len(kind_libs) + 1),
                *tails,
                "",
            ]
        gaps = []
        for ds, info in payload["datasets"].items():
            if info.get("oracle") is None:
                continue
            row = []
            for lib in kind_libs:
                vals = _test_lls(runs, lib, kind, ds)
                ok = vals and all(math.isfinite(v) for v in vals)
                row.append(f"{info['oracle'] - float(np.mean(vals)):.3f}" if ok else "—")
            gaps.append(f"| {ds} | " + " | ".join(row) + " |")
        if gaps:
            lines += [
                "Gap to the oracle (nats, oracle − model; lower is better):",
                "",
                "| data | " + " | ".join(kind_libs) + " |",
                "|" + "---|" * (len(kind_libs) + 1),
                *gaps,
                "",
            ]
    params: dict[tuple[str, str, str], int] = {}
    for r in runs:
        params[(r["kind"], r["dataset"], r["library"])] = r["num_params"]
    lines += ["## Parameter counts", "", "| model | data | " + " | ".join(libs) + " |"]
    lines += ["|" + "---|" * (len(libs) + 2)]
    for kind in ("maf", "coupling"):
        for ds in payload["datasets"]:
            row = [str(params.get((kind, ds, lib), "—")) for lib in libs]
            if all(c == "—" for c in row):
                continue
            lines.append(f"| {kind} | {ds} | " + " | ".join(row) + " |")
    problems = [
        r
        for r in runs
        if r["diverged_at"] is not None or r["nonfinite_test"] or not math.isfinite(r["test_ll"])
    ]
    if problems:
        lines += ["", "## Failed runs", ""]
        for r in problems:
            lines.append(
                f"- {r['library']} {r['kind']} {r['dataset']} seed {r['seed']}: "
                f"diverged at step {r['diverged_at']}, {r['nonfinite_test']} non-finite test "
                "log-likelihoods"
            )
    total = sum(r["train_seconds"] for r in runs)
    lines += [
        "",
        f"Training time, all runs: {total / 60:.1f} min on {payload['environment']['machine']} "
        f"({payload['environment']['threads']} thread per run; shared machine, wall times are "
        "indicative only). Per-run values, 2 s.e. of each test mean and train losses: "
        "`quality.json`.",
        "",
    ]
    path.write_text("\n".join(lines))


def _run_job(job: tuple[str, str, str, int, dict[str, Any], bool]) -> dict[str, Any]:
    library, kind, dataset, seed, cfg_dict, quick = job
    torch.set_num_threads(1)
    cfg = QualityConfig(**cfg_dict)
    data = load_quality_data(dataset, quick=quick, data_dir=cfg.data_dir)
    return asdict(train_and_evaluate(library, kind, dataset, data, seed, cfg))


def _ours_has_actnorm() -> bool:
    """Whether our benchmark models end in the presets' data-end ActNorm (what the table's
    text says about them), read from a model as built."""
    model = build_model("invertible", "maf", 2, QualityConfig())
    return any(isinstance(m, invertible.ActNorm) for m in model.module.modules())


def run(args: argparse.Namespace) -> int:
    """Run the benchmark described by the parsed command line ``args``."""
    torch.set_num_threads(1)
    out = Path(args.out or (str(DEFAULT_OUT) + ("-quick" if args.quick else "")))
    out.mkdir(parents=True, exist_ok=True)
    overrides: dict[str, int] = {}
    for item in args.dataset_steps or []:
        name, _, value = item.partition("=")
        overrides[name] = int(value)
    cfg = QualityConfig(
        steps=args.steps if args.steps is not None else (300 if args.quick else 3000),
        seeds=tuple(range(args.seeds if args.seeds is not None else (1 if args.quick else 3))),
        steps_override=overrides,
        data_dir=args.data_dir,
    )
    datasets = args.datasets or (["moons", "gmm8"] if args.quick else list(DATASETS))
    libraries = _available(args.libs or list(LIBRARIES))
    kinds = args.kinds or ["maf", "coupling"]
    json_path = out / "quality.json"
    previous: list[dict[str, Any]] = []
    if json_path.exists() and not args.fresh:
        old = json.loads(json_path.read_text())
        same = {k: v for k, v in old.get("config", {}).items() if k != "seeds"}
        if same == {k: v for k, v in _jsonable(asdict(cfg)).items() if k != "seeds"}:
            redo = set(args.redo or ())
            previous = [
                r for r in old["runs"] if r["seed"] in cfg.seeds and r["library"] not in redo
            ]
    done = {_key(r) for r in previous}
    dataset_info: dict[str, Any] = {}
    for ds in datasets:
        data = load_quality_data(ds, quick=args.quick, data_dir=cfg.data_dir)
        dataset_info[ds] = {
            "features": data.features,
            "sizes": {k: len(v) for k, v in data.splits.items()},
            "oracle": _oracle(data),
            "standardized": data.mean is not None,
        }
    jobs = [
        (lib, kind, ds, seed, asdict(cfg), bool(args.quick))
        for seed in cfg.seeds
        for ds in datasets
        for kind in kinds
        for lib in libraries
        if not (lib == "invertible-bn" and kind != "maf") and (lib, kind, ds, seed) not in done
    ]
    payload: dict[str, Any] = {
        "config": asdict(cfg) | {"seeds": list(cfg.seeds)},
        "datasets": dataset_info,
        "runs": previous,
        "environment": {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": 1,
            "torch": torch.__version__,
            "jobs": args.jobs,
            "invertible_actnorm": _ours_has_actnorm(),
        },
    }
    try:
        from benchmarks.peers import peer_versions

        payload["environment"]["peers"] = peer_versions()
    except Exception:  # pragma: no cover - version lookup is informative only
        pass

    def record(result: dict[str, Any]) -> None:
        payload["runs"].append(result)
        json_path.write_text(json.dumps(payload, indent=1))
        write_markdown(payload, out / "quality.md")
        print(
            f"{result['library']:14s} {result['kind']:8s} {result['dataset']:12s} "
            f"seed {result['seed']}: test LL {result['test_ll']:.3f} ± "
            f"{result['test_two_se']:.3f} ({result['train_seconds']:.0f} s)",
            flush=True,
        )

    print(f"{len(jobs)} runs to do ({len(done)} already in {json_path})", flush=True)
    start = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for result in pool.imap_unordered(_run_job, jobs):
                record(result)
    else:
        for job in jobs:
            record(_run_job(job))
    json_path.write_text(json.dumps(payload, indent=1))
    write_markdown(payload, out / "quality.md")
    print(f"done in {time.perf_counter() - start:.0f} s; wrote {out / 'quality.md'}")
    return 0


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``quality`` subcommand."""
    parser = subparsers.add_parser(
        "quality",
        help="test log-likelihood of every library with an equal training budget",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: small data, 300 steps")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default 3000)")
    parser.add_argument(
        "--dataset-steps",
        nargs="*",
        metavar="NAME=STEPS",
        help="per-dataset step counts, e.g. patches=1000",
    )
    parser.add_argument("--datasets", nargs="*", choices=DATASETS, default=None)
    parser.add_argument("--libs", nargs="*", choices=LIBRARIES, default=None)
    parser.add_argument("--kinds", nargs="*", choices=("maf", "coupling"), default=None)
    parser.add_argument("--jobs", type=int, default=1, help="parallel processes (1 thread each)")
    parser.add_argument("--fresh", action="store_true", help="ignore results already in --out")
    parser.add_argument(
        "--redo",
        nargs="*",
        choices=LIBRARIES,
        default=None,
        help="libraries whose runs already in --out are dropped and run again (after a change "
        "to that library; the others' runs are kept)",
    )
    parser.add_argument(
        "--data-dir", default=DATA_DIR, help=f"BSDS300 images for bsds300 (default {DATA_DIR})"
    )
    parser.add_argument("--out", default=None, help=f"output directory (default {DEFAULT_OUT})")
    parser.set_defaults(func=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for ``python -m benchmarks.quality`` (= ``python -m benchmarks quality``)."""
    from benchmarks.__main__ import main as suite_main

    return suite_main(["quality", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
