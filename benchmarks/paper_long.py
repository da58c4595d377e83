"""BSDS300 at the MAF paper's setting, resumable: ``python -m benchmarks paper --long``.

The short ``paper`` benchmark trains each model for a few minutes; this mode trains them the
way the paper did, which takes days on a CPU, so it runs in pieces:

- models: MAF(5), MAF MoG(5) (10 components), RealNVP(10), MADE MoG (10 components), the
  paper's 2 × 1024 hidden units in every MADE (and in RealNVP's coupling networks), batch
  norm between the layers of MAF and RealNVP.
- data: the loader's full BSDS300 rebuild, the paper's counts: 1,000,000 train, 50,000
  validation and 250,000 test patches (``--n-train``/``--n-val``/``--n-test`` for less).
- training: Adam at the paper's constant learning rate 1e-4, batch 100, weight decay 1e-6
  (``fit``'s gradient-norm clip at 5 is kept: with Adam it only matters on outlier batches),
  validation ``--evals-per-epoch`` times per epoch (default 5, so a kill loses at most a
  fifth of an epoch: the resumable state is saved at every validation), early stopping after
  the paper's 30 epochs without improvement expressed in evaluations (150), best validation
  weights kept, at most ``--max-epochs`` epochs.
- budget: ``--minutes`` of wall clock per invocation, spent on the models in order: each
  trains until it early-stops (then it is *finished*, and skipped by later invocations) or
  the budget ends (then it is *in progress*, and ``--resume`` continues it from its state in
  ``--run-dir``/<model> with the same batches, optimiser and patience count). Loading the
  data and the final test evaluations come on top of the budget. A stop by the budget adds
  one validation off the every-fifth-of-an-epoch grid (``fit`` validates where it stops), so
  each interruption can bring the early stop at most one evaluation forward.

After each invocation every model that has trained at all is scored on the test set with
its best validation weights, and ``long.json`` and ``long.md`` are written (atomically) to
``--out``: status, steps, epochs, cumulative training time over invocations, the hardware of
each invocation, best validation, test log-likelihood ± 2 s.e., the paper's figure and the
gap, and the validation curve.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

__all__ = ["LONG_DEFAULTS", "add_arguments", "long_settings", "markdown", "run_long"]

#: The paper's setting: the long mode's defaults of the flags it shares with ``paper``.
LONG_DEFAULTS: dict[str, Any] = {
    "hidden": [1024, 1024],
    "lr": 1e-4,
    "n_train": 1_000_000,
    "n_val": 50_000,
    "n_test": 250_000,
}

RESULT_FILE = "long-result.json"
"""Per model, in ``--run-dir``/<model>: its latest evaluation and its invocations."""

CONFIG_FILE = "long-config.json"
"""In ``--run-dir``: the settings a resumed run must share."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the long mode (the shared ones are ``paper``'s)."""
    group = parser.add_argument_group("long mode (--long)")
    group.add_argument(
        "--long", action="store_true", help="the paper's setting, resumable (see benchmarks/README)"
    )
    group.add_argument("--resume", action="store_true", help="continue the runs in --run-dir")
    group.add_argument("--minutes", type=float, default=120.0, help="training budget per call")
    group.add_argument("--run-dir", type=Path, default=Path("runs/paper-long"))
    group.add_argument("--evals-per-epoch", type=int, default=5)
    group.add_argument("--patience-epochs", type=float, default=30.0)
    group.add_argument("--max-epochs", type=int, default=1000)
    group.add_argument("--device", default="cpu", help="training device (cpu, cuda, ...)")


def long_settings(args: argparse.Namespace, n_train: int) -> dict[str, Any]:
    """What every invocation of one long run must agree on (saved in the run directory)."""
    steps_per_epoch = max(1, n_train // args.batch_size)
    eval_every = max(1, steps_per_epoch // args.evals_per_epoch)
    return {
        "data_dir": str(args.data_dir),
        "n_train": args.n_train,
        "n_val": args.n_val,
        "n_test": args.n_test,
        "seed": args.seed,
        "hidden": list(args.hidden),
        "components": args.components,
        "lr": args.lr,
        "schedule": "constant",
        "batch_size": args.batch_size,
        "weight_decay": args.weight_decay,
        "grad_clip": 5.0,
        "steps_per_epoch": steps_per_epoch,
        "eval_every": eval_every,
        "patience_epochs": args.patience_epochs,
        # the paper counts epochs without improvement; fit counts evaluations
        "patience": max(1, math.ceil(args.patience_epochs * steps_per_epoch / eval_every)),
        "max_epochs": args.max_epochs,
    }


def hardware(args: argparse.Namespace, precision: str) -> dict[str, Any]:
    """The machine of this invocation and ``precision``, the one its steps ran in."""
    device = str(args.device)
    if device.startswith("cuda") and torch.cuda.is_available():
        device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {
        "device": device,
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "precision": precision,
        "torch": torch.__version__,
    }


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _write_json(path: Path, payload: Any) -> None:
    from invertible.files import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=1, default=str) + "\n")


def _check_run_dir(args: argparse.Namespace) -> str | None:
    """Why this invocation cannot start (one line), or ``None``; checked before the data
    load, which takes minutes at the paper's counts."""
    from invertible.training import existing_run

    taken = [k for k in args.models if existing_run(args.run_dir / k)]
    if taken and not args.resume:
        return (
            f"{args.run_dir} already holds runs of {', '.join(taken)}: pass --resume to "
            "continue them, or choose another --run-dir"
        )
    return None


def _check_settings(args: argparse.Namespace, settings: dict[str, Any]) -> str | None:
    """Refuse to resume with other settings than the run was started with."""
    path = args.run_dir / CONFIG_FILE
    saved = _read_json(path)
    if saved is None or not args.resume:
        _write_json(path, settings)
        return None
    changed = [k for k in settings if saved.get(k) != settings[k]]
    if changed:
        diffs = ", ".join(f"{k} {saved.get(k)!r} -> {settings[k]!r}" for k in changed)
        return f"{path}: the run was started with other settings ({diffs}); use the same flags"
    return None


def _load_data(args: argparse.Namespace) -> Any:
    """BSDS300 at the requested counts; a missing data set exits with one line."""
    from invertible.data import DatasetNotFoundError, load_dataset

    try:
        return load_dataset(
            "bsds300",
            data_dir=args.data_dir,
            seed=0,
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
        )
    except DatasetNotFoundError as e:
        where = "; ".join(f"put {m.filename} (from {m.url}) at {m.destination}" for m in e.missing)
        first = str(e).splitlines()[0]
        raise SystemExit(f"error: {first} {where}") from None


def _saved_progress(model_dir: Path) -> dict[str, Any]:
    """Training seconds, steps and evaluations without improvement in ``model_dir``'s
    resumable state (zeros without one).

    Read from the state itself, not from the last record: a killed invocation saved
    progress there (at each validation) without writing a record."""
    from invertible.checkpoint import load_training_state, recover_checkpoint

    state_dir = model_dir / "training"
    recover_checkpoint(state_dir)  # a save killed between its renames: take the old one
    if not (state_dir / "config.json").is_file():
        return {"train_time": 0.0, "step": 0, "bad_evals": 0}
    loop = load_training_state(state_dir)[1]["loop"]
    return {k: loop[k] for k in ("train_time", "step", "bad_evals")}


def _val_curve(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"step": r["step"], "epoch": r.get("epoch"), "val": r["val_log_prob"]}
        for r in history
        if r.get("event") == "eval" and r.get("val_log_prob") is not None
    ]


def _last_epoch_gain(curve: list[dict[str, Any]], steps_per_epoch: int) -> float | None:
    """How much the best validation rose over the last epoch (what the curve still gives)."""
    if not curve:
        return None
    end = curve[-1]["step"]
    before = [c["val"] for c in curve if c["step"] <= end - steps_per_epoch]
    if not before:
        return None
    return max(c["val"] for c in curve) - max(before)


def _fit(
    flow: Any, data: Any, args: argparse.Namespace, settings: dict[str, Any], **run: Any
) -> Any:
    """``invertible.fit`` at the paper's optimiser settings; ``run``: steps, max_time,
    out_dir, resume."""
    from invertible.training import fit

    return fit(
        flow,
        data,
        batch_size=settings["batch_size"],
        lr=settings["lr"],
        schedule="constant",
        weight_decay=settings["weight_decay"],
        grad_clip=settings["grad_clip"],
        patience=settings["patience"],
        eval_every=settings["eval_every"],
        val_max_rows=None,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
        progress=False,
        **run,
    )


def _invocations(
    old: dict[str, Any] | None, saved: dict[str, Any], now: dict[str, Any]
) -> list[dict[str, Any]]:
    """The model's invocations so far: the recorded ones, one for progress that a killed
    invocation saved without recording it, and this one (``now``)."""
    done = list(old["invocations"]) if old else []
    recorded_steps = sum(i["steps"] for i in done)
    if saved["step"] > recorded_steps:
        done.append(
            {
                "started": None,
                "note": "interrupted (killed) invocation: progress up to its last validation",
                "train_s": saved["train_time"] - sum(i["train_s"] for i in done),
                "steps": saved["step"] - recorded_steps,
                "hardware": None,
            }
        )
    return [*done, now]


def _record(
    key: str, tr: Any, ev: Any, stopped: str, settings: dict[str, Any], n_params: int
) -> dict[str, Any]:
    """The JSON record of a model after training ``tr`` and the test evaluation ``ev``."""
    from benchmarks.paper import MODELS, PAPER_TABLE

    spe = settings["steps_per_epoch"]
    curve = _val_curve(tr.history)
    paper = PAPER_TABLE[MODELS[key]]
    return {
        "model": MODELS[key],
        "status": "finished" if stopped in ("early_stopping", "steps") else "in progress",
        "stopped": stopped,
        "steps": tr.steps,
        "epochs": tr.steps / spe,
        "train_time": tr.train_time,
        "best_step": tr.best_step,
        "best_epoch": tr.best_step / spe,
        "best_val_ll": tr.best_val_log_prob,
        "evals_since_best": sum(1 for c in curve if c["step"] > tr.best_step),
        "val_gain_last_epoch": _last_epoch_gain(curve, spe),
        "test_ll": ev.log_prob,
        "test_two_se": ev.two_se,
        "test_median": ev.median,
        "test_min": ev.minimum,
        "test_eval_s": ev.seconds,
        "paper": paper,
        "gap": ev.log_prob - paper,
        "num_params": n_params,
        "skipped_steps": tr.skipped_steps,
        "val_curve": curve,
    }


def train_model(
    key: str, data: Any, args: argparse.Namespace, settings: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """Train (or continue) ``key`` for at most ``seconds`` more, score it on the test set
    with its best validation weights; its record (also saved in its run directory)."""
    from benchmarks.paper import MODELS, build
    from invertible.evaluation import evaluate
    from invertible.training import existing_run

    model_dir = args.run_dir / key
    resume = args.resume and bool(existing_run(model_dir))
    saved = _saved_progress(model_dir) if resume else {"train_time": 0.0, "step": 0}
    # killed after early stopping but before the record was written: finish, don't train
    stopped_early = saved.get("bad_evals", 0) >= settings["patience"]
    torch.manual_seed(args.seed)
    flow = build(key, data.features, settings["hidden"], settings["components"])
    n_params = sum(p.numel() for p in flow.parameters() if p.requires_grad)
    print(f"{MODELS[key]}: {n_params:,} parameters, {seconds / 60:.1f} min ...", flush=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    tr = _fit(
        flow,
        data,
        args,
        settings,
        steps=saved["step"]
        if stopped_early
        else settings["max_epochs"] * settings["steps_per_epoch"],
        max_time=saved["train_time"] + seconds,  # fit's clock counts earlier invocations
        out_dir=model_dir,
        resume=resume,
    )
    stopped = "early_stopping" if stopped_early else tr.stopped
    ev = evaluate(flow, data, split="test")
    record = _record(key, tr, ev, stopped, settings, n_params)
    now = {
        "started": started,
        "train_s": tr.train_time - saved["train_time"],
        "steps": tr.steps - saved["step"],
        "hardware": hardware(args, tr.precision),
    }
    old = _read_json(model_dir / RESULT_FILE) if resume else None
    record["invocations"] = _invocations(old, saved, now)
    _write_json(model_dir / RESULT_FILE, record)
    print(
        f"{MODELS[key]}: {record['status']} ({stopped}), {tr.steps} steps "
        f"({record['epochs']:.2f} epochs, {_duration(tr.train_time)} in all), best val "
        f"{tr.best_val_log_prob or math.nan:.2f} at epoch {record['best_epoch']:.2f}; test "
        f"{ev.log_prob:.2f} ± {ev.two_se:.2f} (paper {record['paper']:.2f})",
        flush=True,
    )
    return record


def _train_all(
    data: Any, args: argparse.Namespace, settings: dict[str, Any], deadline: float
) -> dict[str, Any]:
    """The models in order, each until it finishes or the shared budget ends; the records
    of every model that has trained at all (earlier invocations' for those not run now)."""
    from benchmarks.paper import MODELS

    results: dict[str, Any] = {}
    for key in args.models:
        old = _read_json(args.run_dir / key / RESULT_FILE) if args.resume else None
        if old is not None and old["status"] == "finished":
            print(f"{MODELS[key]}: finished in an earlier invocation, skipped")
            results[key] = old
            continue
        left = deadline - time.perf_counter()
        if left <= 0:
            print(f"{MODELS[key]}: no budget left in this invocation")
            if old is not None:
                results[key] = old
            continue
        results[key] = train_model(key, data, args, settings, left)
    return results


def run_long(args: argparse.Namespace) -> int:
    """The long mode of ``python -m benchmarks paper`` (see the module docstring)."""
    from benchmarks.paper import DEFAULT_OUT
    from invertible.files import atomic_write_text

    deadline = time.perf_counter() + args.minutes * 60
    torch.set_num_threads(args.threads)
    problem = _check_run_dir(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    data = _load_data(args)
    print(f"BSDS300: {data}", flush=True)
    settings = long_settings(args, len(data.train))
    args.run_dir.mkdir(parents=True, exist_ok=True)
    problem = _check_settings(args, settings)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    results = _train_all(data, args, settings, deadline)
    payload = {
        "settings": settings,
        "data": {k: len(v) for k, v in data.splits.items()},
        "budget_minutes": args.minutes,
        "run_dir": str(args.run_dir),
        "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "results": results,
    }
    out = Path(args.out or DEFAULT_OUT)
    _write_json(out / "long.json", payload)
    atomic_write_text(out / "long.md", markdown(payload))
    print(f"wrote {out / 'long.json'} and {out / 'long.md'}")
    return 0


def _duration(seconds: float) -> str:
    """``42 s``, ``12.5 min`` or ``3.20 h``."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.2f} h"


def _hardware_line(record: dict[str, Any]) -> str:
    """The machines a model trained on, with the training time on each."""
    seconds: dict[str, float] = {}
    for inv in record["invocations"]:
        hw = inv["hardware"]
        name = (
            "not recorded (killed invocations)"
            if hw is None
            else f"{hw['device']} ({hw['processor']}, {hw['cpus']} CPUs), {hw['threads']} thread(s)"
            + (f", {hw['precision']}" if "precision" in hw else "")
        )
        seconds[name] = seconds.get(name, 0.0) + inv["train_s"]
    return "; ".join(f"{name}: {_duration(t)}" for name, t in seconds.items())


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _row(name: str, paper: float, r: dict[str, Any] | None, patience: int) -> str:
    if r is None:
        return f"| {name} | {paper:.2f} | not run | — | — | — | — | — | — | — |"
    gain = r["val_gain_last_epoch"]
    gain_s = "—" if gain is None else f"{gain:+.2f}"
    return (
        f"| {name} | {paper:.2f} | {r['test_ll']:.2f} ± {r['test_two_se']:.2f} "
        f"| {r['gap']:+.2f} | {r['status']} | {r['epochs']:.2f} ({r['steps']:,}) "
        f"| {_num(r['best_val_ll'])} ({r['best_epoch']:.2f}) | {gain_s} "
        f"| {r['evals_since_best']}/{patience} | {_duration(r['train_time'])} "
        f"({len(r['invocations'])}) |"
    )


def markdown(payload: dict[str, Any]) -> str:
    """The long run's table next to the paper's figures (for ``docs/benchmarks.md``)."""
    from benchmarks.paper import MODELS, PAPER_TABLE

    s = payload["settings"]
    data = payload["data"]
    lines = [
        "# BSDS300 at the MAF paper's setting (long, resumable run)",
        "",
        "Test log-likelihood in nats (higher is better), ± 2 standard errors over test "
        "patches, with the best validation weights; *in progress* rows are where the run "
        "had got to, not final figures.",
        "",
        "| model | paper | here | here − paper | status | epochs (steps) "
        "| best val (epoch) | val gain, last epoch | evals since best / patience "
        "| train time (invocations) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in MODELS.items():
        lines.append(_row(name, PAPER_TABLE[name], payload["results"].get(key), s["patience"]))
    lines += [
        "",
        "*val gain, last epoch*: how much the best validation log-likelihood rose over the "
        "last epoch trained (what the curve says is still to come); *evals since best / "
        "patience*: how near the early stop is.",
        "",
        "Hardware per model (training time on each):",
        "",
    ]
    for r in payload["results"].values():
        lines.append(f"- {r['model']}: {_hardware_line(r)}")
    lines += [
        "",
        "## Protocol",
        "",
        f"- data: BSDS300 rebuilt from the images (MAF protocol, D = 63, not standardised); "
        f"{data['train']:,} train / {data['val']:,} validation / {data['test']:,} test "
        "patches (paper: 1,000,000 / 50,000 / 250,000), matching the paper's only in "
        "distribution.",
        f"- models: hidden layers {s['hidden']} (paper: 2 × 1024), {s['components']} "
        "mixture components for the MoG models, batch norm between the layers of MAF and "
        "RealNVP.",
        f"- training: `invertible.fit`, Adam lr {s['lr']:g} ({s['schedule']}), batch "
        f"{s['batch_size']}, weight decay {s['weight_decay']:g}, gradient norm clipped at "
        f"{s['grad_clip']:g}; validation every {s['eval_every']:,} steps "
        f"({s['steps_per_epoch']:,} steps per epoch); early stopping after "
        f"{s['patience']} evaluations without improvement (= {s['patience_epochs']:g} "
        f"epochs; the paper: 30); at most {s['max_epochs']} epochs.",
        f"- budget: {payload['budget_minutes']:g} min of training per invocation, shared by "
        "the models in order; `--resume` continues each model from its saved state.",
        "- command: `python -m benchmarks paper --long --minutes 120 --resume` (repeat "
        "until every row is finished).",
    ]
    return "\n".join(lines) + "\n"
