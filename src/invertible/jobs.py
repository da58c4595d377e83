"""The workflows behind the command line: load → build → fit → evaluate → save, once.

:func:`train_job` fits a catalogue model (:mod:`invertible.catalog`) to a dataset and
:func:`distill_job` distils a teacher checkpoint into an IAF student. Each writes its
checkpoint exactly once, with everything the run measured in its ``extra`` entry, and a
``results.json`` next to it; figures and printing are the callers' business
(:mod:`invertible.reports`, :mod:`invertible.cli`).

Example:
    >>> import tempfile
    >>> job = train_job("nice", "moons", size="tiny", out=tempfile.mkdtemp(), steps=20,
    ...                 progress=False, option={"n_train": 500, "n_val": 100, "n_test": 100})
    >>> job.result.steps, (job.out / "model" / "config.json").is_file()
    (20, True)
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from invertible import files
from invertible.catalog import build_model, initialize_from_data, model_spec
from invertible.checkpoint import data_metadata, load, save
from invertible.core import Flow
from invertible.data import ImageData, SpeechData, TabularData, check_finite_splits, load_data
from invertible.distillation import DistillResult, distill, make_student
from invertible.evaluation import EvalResult, check_data_matches, evaluate, evaluate_array
from invertible.evaluation.audio import evaluate_speech
from invertible.files import atomic_write_text
from invertible.presets import IAF
from invertible.training import DivergedError, RunExistsError, TrainResult, check_precision, fit
from invertible.version import __version__

__all__ = [
    "DistillJob",
    "DivergedError",
    "TrainJob",
    "checkpoint_dataset",
    "distill_job",
    "train_job",
    "write_json",
]

#: Training images used to refresh batch-norm statistics at the end of image training
#: (each flow batch-norm layer costs a pass over them; convolutions are slow on CPUs).
IMAGE_REFRESH_BN_ROWS = 2000


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON (atomically; non-JSON values as strings)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _count(flow: torch.nn.Module) -> int:
    return sum(p.numel() for p in flow.parameters())


@dataclass
class TrainJob:
    """What :func:`train_job` did: the trained flow, its data and its numbers."""

    model: str
    flow: Flow
    data: TabularData | ImageData
    result: TrainResult
    test: EvalResult | None
    out: Path | None
    parameters: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> bool:
        """Whether the data are images (``uint8`` pixels)."""
        return self.data.train.dtype == np.uint8


def _dataset(
    data: str | TabularData | ImageData,
    *,
    data_dir: str | None,
    seed: int,
    option: Mapping[str, Any] | None,
) -> tuple[TabularData | ImageData, dict[str, Any]]:
    """A loaded dataset and its reload options (a loaded one is used as it is)."""
    if isinstance(data, str):
        return load_data(data, data_dir=data_dir, seed=seed, options=dict(option or {}))
    return data, {"seed": seed, **dict(option or {})}


def train_job(
    model: str,
    data: str | TabularData | ImageData,
    *,
    size: str = "default",
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    data_dir: str | None = None,
    option: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = True,
    is_main: bool = True,
    test_rows: int | None = None,
    announce: Callable[[str], None] | None = None,
    **train_options: Any,
) -> TrainJob:
    """Fit catalogue model ``model`` to ``data`` and save it once to ``out/model``.

    Args:
        model: a catalogue name (``nice``, ``maf``, ...; see :mod:`invertible.catalog`).
        data: a dataset name, an ``[N, D]`` file, or a loaded dataset.
        size: ``tiny``, ``small`` or ``default`` networks.
        seed: seed of the data split, the weights and the batches.
        out: run directory (metrics, ``training/``, ``model/``, ``results.json``).
        data_dir: where dataset files live.
        option: dataset options (e.g. ``n_train``).
        overrides: constructor arguments replacing the catalogue's defaults.
        resume: continue from ``out/training``.
        device: training device.
        progress: show a progress bar.
        is_main: this process saves and evaluates (rank 0 under ``torchrun``).
        test_rows: evaluate on the first ``test_rows`` test points only.
        announce: called with a one-line description of the model before training.
        **train_options: options of :func:`invertible.fit` (e.g. ``precision="bf16"``;
            it is recorded in ``results.json`` under ``training``).

    Returns:
        a :class:`TrainJob`; its ``test`` is ``None`` on processes other than the main one.
    """
    model_spec(model)  # validates the name before anything is loaded
    check_precision(train_options.get("precision", "fp32"), device or "cpu")
    dataset, reload = _dataset(data, data_dir=data_dir, seed=seed, option=option)
    check_finite_splits(dataset)
    speech = isinstance(dataset, SpeechData)  # whole utterances; crops of any length
    image = not speech and dataset.train.dtype == np.uint8  # ImageData: uint8, bits/dim
    extra_args: dict[str, Any] = dict(overrides or {})
    if speech:
        features: int | tuple[int, ...] = dataset.crop
    elif image:
        features = tuple(dataset.shape)
        extra_args["levels"] = dataset.levels
        train_options.setdefault("refresh_bn_rows", IMAGE_REFRESH_BN_ROWS)
    else:
        features = dataset.features
    flow = build_model(model, features, size=size, seed=seed, **extra_args)
    if not resume and not image:
        initialize_from_data(flow, dataset.eval_utterances("train") if speech else dataset.train)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    if device:
        flow.to(torch.device(device))
    meta = data_metadata(dataset, options=reload)
    n_params = _count(flow)
    if announce is not None:
        shape = f"{dataset.seconds('train'):.1f} s" if speech else f"D={dataset.features}"
        announce(
            f"{model}: {type(flow).__name__} with {n_params:,} parameters on "
            f"{dataset.name} ({shape}, N_train={len(dataset.train)})"
        )
    result = fit(
        flow, dataset, out_dir=out_dir, progress=progress, resume=resume, data_meta=meta,
        seed=seed, save_model=False, **train_options,
    )  # fmt: skip
    if progress and is_main:
        print(f"{model}: evaluating the test split", file=sys.stderr)
    job = TrainJob(model, flow, dataset, result, None, out_dir, n_params)
    if not is_main:
        return job  # rank 0 evaluates, saves and reports
    if speech:  # whole test utterances, next to the least-squares baselines
        job.test = evaluate_speech(flow, dataset)  # type: ignore[assignment]
    elif test_rows is not None and len(dataset.test) > test_rows:
        job.test = evaluate_array(
            flow, dataset.test[:test_rows], what=f"dataset {dataset.name!r} (test)"
        )
    else:
        job.test = evaluate(flow, dataset)
    training = {k: v for k, v in result.to_dict().items() if k != "history"}
    job.summary = {
        "model": model,
        "preset": type(flow).__name__,
        "parameters": n_params,
        "data": dataset.name,
        "test": job.test.to_dict(),
        "training": training,
        "invertible": __version__,
    }
    if out_dir is not None:
        extra = {"test": job.test.to_dict(), "training": training, "cli_model": model}
        save(flow, out_dir / "model", data=meta, extra=extra)
        write_json(out_dir / "results.json", job.summary)
    return job


# --------------------------------------------------------------------------- distillation


@dataclass
class DistillJob:
    """What :func:`distill_job` did."""

    teacher: Flow
    student: Flow
    data: TabularData | ImageData
    result: DistillResult
    test: EvalResult
    teacher_test: EvalResult
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)


def checkpoint_dataset(
    flow: Flow,
    data: str | None,
    *,
    data_dir: str | None = None,
    option: Mapping[str, Any] | None = None,
    what: str = "checkpoint",
) -> tuple[TabularData | ImageData, dict[str, Any]]:
    """The dataset a loaded checkpoint was trained on (or ``data`` instead), with the
    same split seed and options when it is the same dataset; returns ``(data, reload)``.

    Raises:
        ValueError: the checkpoint does not record its dataset and ``data`` is ``None``.
    """
    meta = getattr(flow, "checkpoint_meta", {}).get("data") or {}
    stored = meta.get("options") or {}
    name = data or stored.get("path") or meta.get("name")
    if name is None:
        raise ValueError(f"{what} does not record its dataset; pass --data NAME")
    same = data is None or data == meta.get("name") or data == stored.get("path")
    options = {k: v for k, v in stored.items() if k not in ("seed", "path")} if same else {}
    options.update(option or {})
    seed = int(stored.get("seed", 0)) if same else 0
    return load_data(name, data_dir=data_dir, seed=seed, options=options)


def check_student_size(features: int, layers: int, hidden: Sequence[int]) -> None:
    """Refuse a student whose weights, gradients and Adam states would not fit in memory."""
    widths = [features, *hidden, 2 * features]
    params = layers * sum(a * b + b for a, b in itertools.pairwise(widths))
    need, memory = 16 * params, files.physical_memory()  # float32 weights, gradients, two moments
    if memory is not None and need > memory / 2:
        raise ValueError(
            f"a student of {layers} layers with hidden widths {list(hidden)} has about "
            f"{params:.2g} parameters ({need / 1e9:.0f} GB to train), more than this machine's "
            f"memory allows; choose smaller --hidden or --layers"
        )


def check_distill_out(out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Refuse to replace a previous distillation run in ``out`` without ``overwrite``."""
    out_dir = Path(out)
    found = [name for name in ("model", "results.json") if (out_dir / name).exists()]
    if found and not overwrite:
        raise RunExistsError(
            f"{out_dir} already holds a distilled model ({', '.join(found)}); pass --overwrite "
            "to replace it, or choose another --out"
        )


def check_distill_converged(result: DistillResult, lr: float) -> None:
    """Raise :class:`DivergedError` if the KL estimate ends non-finite or above its start."""
    kl = [v for v in result.history["kl"] if not np.isnan(v)]
    if not kl:
        return
    first = float(kl[0])  # the initial student's (the first estimate precedes any update)
    final = result.final("kl")
    if not np.isfinite(final) or (np.isfinite(first) and final > first + 1 + abs(first) / 2):
        raise DivergedError(
            f"distillation diverged: the KL estimate went from {first:.4g} to {final:.4g} "
            f"nats; nothing was saved; lower the learning rate (now {lr:g})"
        )


def distill_job(
    teacher: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    data: str | None = None,
    steps: int = 2000,
    loss: str = "analytic-entropy",
    layers: int = 5,
    hidden: Sequence[int] = (512, 512),
    batch_size: int = 256,
    lr: float = 1e-3,
    same_ordering: bool = False,
    data_anchor: float = 0.0,
    anchor_every: int = 1,
    anchor_batch_size: int = 64,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    precision: str = "fp32",
) -> DistillJob:
    """Distil the teacher checkpoint ``teacher`` into an IAF student saved to ``out/model``.

    Loads the teacher and its dataset, trains the student on KL(student ‖ teacher) (plus
    the student's exact negative log-likelihood of training rows with weight
    ``data_anchor``), evaluates both exactly on the test split, and saves the student once
    with ``out/results.json``. See :func:`invertible.distill` for the options
    (``precision``: of the training steps, ``"fp32"``, ``"bf16"`` or ``"fp16"``). An ``out``
    that holds a previous run raises :class:`~invertible.training.RunExistsError` unless
    ``overwrite``; a run whose KL estimate ends higher than it started (or non-finite)
    raises :class:`DivergedError` and saves nothing.
    """
    check_distill_out(out, overwrite=overwrite)
    check_precision(precision, device)  # before the teacher and its data are loaded
    teacher_flow = load(teacher, map_location=device)
    dataset, reload = checkpoint_dataset(teacher_flow, data, data_dir=data_dir, what=str(teacher))
    check_data_matches(teacher_flow, dataset.test[:1], f"dataset {dataset.name!r}")
    check_student_size(teacher_flow.features, layers, hidden)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    hidden_features = tuple(hidden)
    if same_ordering or loss == "closed-form":
        student = make_student(teacher_flow, layers, hidden_features, seed=seed)
    else:
        student = IAF(teacher_flow.features, num_layers=layers, hidden_features=hidden_features)
    student.to(torch.device(device))
    anchor: dict[str, Any] = {}
    if data_anchor > 0:  # the student's exact likelihood of real rows (sequential inverse)
        anchor = {
            "data_anchor": data_anchor,
            "data": torch.as_tensor(dataset.train),
            "anchor_every": anchor_every,
            "anchor_batch_size": anchor_batch_size,
        }
    result = distill(
        teacher_flow, student, steps=steps, batch_size=batch_size, loss=loss, lr=lr,
        progress=progress, seed=seed, precision=precision, **anchor,
    )  # fmt: skip
    check_distill_converged(result, lr)
    test = evaluate(student, dataset)
    teacher_test = evaluate(teacher_flow, dataset)
    summary = {
        "teacher": str(teacher),
        "student": type(student).__name__,
        "student_config": student.config,
        "data": dataset.name,
        "distill": result.config,
        "final_kl": result.final("kl"),
        "wall_time_s": result.wall_time,
        "student_test": test.to_dict(),
        "teacher_test": teacher_test.to_dict(),
    }
    meta = data_metadata(dataset, options=reload)
    save(student, out_dir / "model", data=meta, extra={"distill": summary})
    write_json(out_dir / "results.json", summary)
    return DistillJob(teacher_flow, student, dataset, result, test, teacher_test, out_dir, summary)
