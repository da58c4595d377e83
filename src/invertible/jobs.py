"""The workflows behind the command line: load → build → fit → evaluate → save, once.

:func:`train_job` fits a catalogue model (:mod:`invertible.catalog`) to a dataset and
:func:`distill_job` distils a teacher checkpoint into an IAF student, and :func:`speech_job`
runs Parallel WaveNet on speech (teacher, student, likelihoods, quality, speed). Each writes its
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
from torch import Tensor

from invertible import files
from invertible.catalog import build_model, initialize_from_data, model_spec
from invertible.checkpoint import data_metadata, load, save
from invertible.core import Flow
from invertible.data import ImageData, SpeechData, TabularData, check_finite_splits, load_data
from invertible.distillation import DistillResult, distill, make_student, make_wavenet_student
from invertible.evaluation import EvalResult, check_data_matches, evaluate, evaluate_array
from invertible.evaluation.audio import (
    evaluate_sequence,
    evaluate_speech,
    fit_baselines,
    sample_quality,
)
from invertible.evaluation.speed import NAIVE_STEADY_STATE, Sampler, time_samplers
from invertible.files import atomic_write_text
from invertible.presets import IAF, WaveNetMAF
from invertible.training import (
    DivergedError,
    RunExistsError,
    TrainResult,
    check_precision,
    fit,
)
from invertible.version import __version__

__all__ = [
    "SPEECH_BUDGET",
    "SPEECH_EVALUATION",
    "DistillJob",
    "DivergedError",
    "SpeechJob",
    "TrainJob",
    "check_speech_out",
    "checkpoint_dataset",
    "distill_job",
    "speech_job",
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
    check_precision(train_options.get("precision", "auto"), device or "cpu")
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
    anchor: str = "likelihood",
    anchor_every: int = 1,
    anchor_batch_size: int = 64,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "cpu",
    progress: bool = True,
    overwrite: bool = False,
    precision: str = "auto",
) -> DistillJob:
    """Distil the teacher checkpoint ``teacher`` into an IAF student saved to ``out/model``.

    Loads the teacher and its dataset, trains the student on KL(student ‖ teacher) (plus
    the data term ``anchor`` on the training rows with weight ``data_anchor``: by default
    the student's exact negative log-likelihood, sequential; ``"contrast"`` is the parallel
    one the main job uses), evaluates both exactly on the test split, and saves the student once
    with ``out/results.json``. See :func:`invertible.distill` for the options
    (``precision``: of the training steps, ``"auto"``, ``"fp32"``, ``"bf16"`` or
    ``"fp16"``). An ``out``
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
    data_term: dict[str, Any] = {}
    if data_anchor > 0:
        data_term = {
            "data_anchor": data_anchor,
            "data": torch.as_tensor(dataset.train),
            "anchor": anchor,
            "anchor_every": anchor_every,
            "anchor_batch_size": anchor_batch_size,
        }
    result = distill(
        teacher_flow, student, steps=steps, batch_size=batch_size, loss=loss, lr=lr,
        progress=progress, seed=seed, precision=precision, **data_term,
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


# --------------------------------------------------------------------------- speech

#: Shares of the speech job's wall-clock budget: teacher training and distillation (the
#: rest goes to the baselines, the evaluation, the samples and the speed table).
SPEECH_BUDGET = {"teacher": 0.5, "student": 0.35}

#: The speech job's evaluation settings (override any with ``evaluation=``): ``clips``
#: samples of ``clip_seconds`` per model for the quality table; the student's exact
#: (sequential) test likelihood on the first ``ll_seconds`` of ``ll_utterances`` test
#: utterances; sampling speed at batch 1 on ``speed_seconds`` of audio (the teacher's
#: incremental sampler, whose cost per sample does not depend on the length, on
#: ``teacher_speed_seconds``) and batched at ``batch`` on one second, median of ``repeats``.
SPEECH_EVALUATION: dict[str, Any] = {
    "clips": 4,
    "clip_seconds": 2.0,
    "ll_utterances": 4,
    "ll_seconds": 1.0,
    "speed_seconds": 5.0,
    "teacher_speed_seconds": 1.0,
    "batch": 16,
    "repeats": 5,
}


@dataclass
class SpeechJob:
    """What :func:`speech_job` did: the models, their numbers and their audio.

    Attributes:
        data: the :class:`~invertible.data.SpeechData`.
        teacher: the teacher's :class:`TrainJob` (its ``test`` holds the whole-utterance
            likelihoods of the teacher and the baselines).
        student: the distilled :class:`~invertible.WaveNetIAF`.
        distillation: its :class:`~invertible.distillation.DistillResult`.
        likelihood: the crops' likelihoods (student through its exact inverse) and the KL.
        quality: :func:`~invertible.evaluation.audio.sample_quality` per model.
        speed: the samplers' rows and the student's speed-ups.
        clips: generated and real waveforms per model (``[clips, samples]`` float arrays).
        out: the run directory.
        summary: everything above as JSON (also ``out/results.json``).
    """

    data: SpeechData
    teacher: TrainJob
    student: Flow
    distillation: DistillResult
    likelihood: dict[str, Any]
    quality: dict[str, Any]
    speed: dict[str, Any]
    clips: dict[str, np.ndarray]
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)


def check_speech_out(out: str | os.PathLike[str], *, overwrite: bool = False) -> None:
    """Refuse to replace a previous speech run in ``out`` without ``overwrite``."""
    out_dir = Path(out)
    found = [n for n in ("teacher", "student", "results.json") if (out_dir / n).exists()]
    if found and not overwrite:
        raise RunExistsError(
            f"{out_dir} already holds a speech run ({', '.join(found)}); pass --overwrite to "
            "replace it, or choose another --out"
        )


def _crops(utterances: Sequence[np.ndarray], length: int, limit: int | None = None) -> Tensor:
    """Consecutive non-overlapping ``length``-sample crops of the utterances, ``[N, length]``."""
    rows = [u[i : i + length] for u in utterances for i in range(0, len(u) - length + 1, length)]
    if not rows:
        raise ValueError(f"no utterance is {length} samples long; use shorter crops")
    return torch.as_tensor(np.stack(rows[:limit]), dtype=torch.float32)


def _distill_student(
    teacher: Flow, data: SpeechData, *, size: str, max_time: float, seed: int,
    progress: bool, **options: Any,
) -> tuple[Flow, DistillResult]:  # fmt: skip
    """The ``size`` student from the AR moving-average start, distilled for ``max_time``."""
    train = data.eval_utterances("train")
    student = make_wavenet_student(
        teacher, size, utterances=[torch.as_tensor(u) for u in train], seed=seed
    )
    length = int(options.pop("length", data.crop))
    result = distill(
        teacher, student, steps=int(options.pop("steps", 1_000_000)), max_time=max_time,
        length=length, real=_crops(train, length), progress=progress, seed=seed, **options,
    )  # fmt: skip
    return student, result


def _crop_likelihoods(
    models: Mapping[str, Flow], data: SpeechData, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """Every model on the same test crops; the student's through its sequential inverse."""
    length = int(settings["ll_seconds"] * data.sample_rate)
    crops = [u[:length] for u in data.eval_utterances("test") if len(u) >= length]
    crops = crops[: int(settings["ll_utterances"])]
    if not crops:
        raise ValueError(f"no test utterance is {settings['ll_seconds']} s long")
    rows = {name: evaluate_sequence(m, crops, name).to_dict() for name, m in models.items()}
    return {"seconds": settings["ll_seconds"], "utterances": len(crops), "models": rows}


def _speech_clips(
    models: Mapping[str, Flow], data: SpeechData, settings: Mapping[str, Any], seed: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``clips`` samples per model, real test and validation crops, and their quality."""
    length = int(settings["clip_seconds"] * data.sample_rate)
    n = int(settings["clips"])
    clips: dict[str, np.ndarray] = {}
    for name, model in models.items():
        torch.manual_seed(seed)
        clips[name] = model.sample(n, length=length).double().cpu().numpy()
    real = data.eval_utterances("test")
    clips["real"] = _crops(real, length, n).double().numpy()
    clips["real (val)"] = _crops(data.eval_utterances("val"), length, n).double().numpy()
    quality = {name: sample_quality(list(x), real) for name, x in clips.items() if name != "real"}
    return clips, {"clip_seconds": settings["clip_seconds"], "clips": n, "models": quality}


def _sampler_speeds(teacher: Flow, student: Flow, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The teacher's naive and incremental samplers and the student's, at batch 1 and
    batched, timed interleaved, and the student's speed-up over each (same batch).
    """
    rate, batch = 16000, int(settings["batch"])
    long = int(settings["speed_seconds"] * rate)
    short = int(settings["teacher_speed_seconds"] * rate)
    samplers = {}
    for b, student_length, teacher_length in ((1, long, short), (batch, rate, max(1, short // 4))):
        samplers[("student", b)] = Sampler(student, b, student_length)
        samplers[("teacher", b, "incremental")] = Sampler(teacher, b, teacher_length, "incremental")
        samplers[("teacher", b, "naive")] = Sampler(teacher, b, method=NAIVE_STEADY_STATE)
    timings = time_samplers(
        {" ".join(map(str, k)): v for k, v in samplers.items()}, repeats=int(settings["repeats"])
    )
    rows = [{"model": key[0], **timings[" ".join(map(str, key))]} for key in samplers]
    speedups = {}
    for b in (1, batch):
        student_rate = timings[f"student {b}"]["samples_per_s"]
        for method in ("incremental", "naive"):
            name = "incremental" if method == "incremental" else NAIVE_STEADY_STATE
            teacher_rate = timings[f"teacher {b} {method}"]["samples_per_s"]
            speedups[f"batch {b}, over {name}"] = student_rate / teacher_rate
    return {"rows": rows, "speedups": speedups, "repeats": int(settings["repeats"]),
            "interleaved": True}  # fmt: skip


def speech_job(
    out: str | os.PathLike[str],
    *,
    budget_minutes: float = 30.0,
    teacher_size: str = "small",
    student_size: str = "fast",
    data_dir: str | None = None,
    option: Mapping[str, Any] | None = None,
    teacher_options: Mapping[str, Any] | None = None,
    distill_options: Mapping[str, Any] | None = None,
    evaluation: Mapping[str, Any] | None = None,
    teacher_checkpoint: str | os.PathLike[str] | None = None,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    announce: Callable[[str], None] | None = None,
) -> SpeechJob:
    """Parallel WaveNet on ``speech``: teacher by maximum likelihood, student by distillation.

    Builds the ``speech`` data, fits the least-squares AR(32) baselines, trains the
    catalogue's ``wavenet`` teacher (:data:`SPEECH_BUDGET` of the budget, early stopping
    on validation), distils a :func:`~invertible.make_wavenet_student` student into it with
    KL(student ‖ teacher) and the power loss, then measures likelihoods, sample quality and
    sampling speed (:data:`SPEECH_EVALUATION`). Saves ``out/teacher``, ``out/student`` and
    ``out/results.json``; writing the report and the audio is :mod:`invertible.reports`'s.

    Args:
        out: run directory (refused if it holds a run, unless ``overwrite``).
        budget_minutes: wall-clock budget of teacher training plus distillation, over the
            shares of :data:`SPEECH_BUDGET`.
        teacher_size: catalogue size of the teacher (``tiny``, ``small``, ``default``).
        student_size: a size of :data:`~invertible.distillation.WAVENET_STUDENT_SIZES`.
        data_dir: where the ``speech`` cache lives.
        option: dataset options (e.g. ``n_prompts``, ``crop``).
        teacher_options: options of :func:`invertible.fit` for the teacher.
        distill_options: options of :func:`invertible.distill` (default: ``batch_size=2``,
            ``loss="conditional-mc"``, ``power_loss=1.0``).
        evaluation: overrides of :data:`SPEECH_EVALUATION`.
        teacher_checkpoint: a teacher saved by an earlier run (``OUT/teacher/model``):
            distil it instead of training a new one (the budget's teacher share is unused).
        seed: seed of the split, the weights and the batches.
        progress: show progress bars.
        overwrite: replace a previous run in ``out``.
        announce: called with one line per stage.
    """
    check_speech_out(out, overwrite=overwrite)
    settings = {**SPEECH_EVALUATION, **dict(evaluation or {})}
    unknown = sorted(set(settings) - set(SPEECH_EVALUATION))
    if unknown:
        known = sorted(SPEECH_EVALUATION)
        raise ValueError(f"evaluation: unknown settings {unknown}; known: {known}")
    say = announce or (lambda line: None)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data, _ = _dataset("speech", data_dir=data_dir, seed=seed, option=option)
    assert isinstance(data, SpeechData)
    budget = 60.0 * budget_minutes
    if teacher_checkpoint is not None:
        teacher = _trained_teacher(teacher_checkpoint, data, say)
    else:
        fit_options = {"steps": 1_000_000, "batch_size": 4, "eval_every": 25, "patience": 10,
                       **dict(teacher_options or {})}  # fmt: skip
        teacher = train_job(
            "wavenet", data, size=teacher_size, seed=seed, out=out_dir / "teacher",
            max_time=SPEECH_BUDGET["teacher"] * budget, progress=progress, announce=say,
            overwrite=overwrite, **fit_options,
        )  # fmt: skip
    teacher.flow.eval()
    say(f"teacher ready; distilling a {student_size!r} student")
    options = {"batch_size": 2, "loss": "conditional-mc", "power_loss": 1.0,
               **dict(distill_options or {})}  # fmt: skip
    student, result = _distill_student(
        teacher.flow, data, size=student_size, max_time=SPEECH_BUDGET["student"] * budget,
        seed=seed, progress=progress, **options,
    )  # fmt: skip
    student.eval()
    say(f"student: {len(result.history['kl'])} steps; evaluating")
    baselines = fit_baselines(data.eval_utterances("train"))
    models = {"teacher": teacher.flow, "student": student, **baselines}
    likelihood = _crop_likelihoods(models, data, settings)
    likelihood |= {"kl_final": result.final("kl"), "kl_first": result.history["kl"][0]}
    clips, quality = _speech_clips(
        {"teacher": teacher.flow, "student": student, "laplace-ar32": baselines["laplace-ar32"]},
        data, settings, seed,
    )  # fmt: skip
    say("timing the samplers")
    speed = _sampler_speeds(teacher.flow, student, settings)
    job = SpeechJob(data, teacher, student, result, likelihood, quality, speed, clips, out_dir)
    job.summary = _speech_summary(job, budget_minutes, student_size)
    meta = data_metadata(data, options={"seed": seed, **dict(option or {})})
    save(student, out_dir / "student", data=meta, extra={"distill": result.config})
    write_json(out_dir / "results.json", job.summary)
    return job


def _trained_teacher(
    path: str | os.PathLike[str], data: SpeechData, say: Callable[[str], None]
) -> TrainJob:
    """A saved WaveNet teacher, re-evaluated on ``data`` next to the baselines."""
    flow = load(path)
    if not isinstance(flow, WaveNetMAF):
        raise ValueError(f"{path}: expected a WaveNetMAF teacher, found {type(flow).__name__}")
    say(f"teacher: {path} ({_count(flow):,} parameters), evaluating")
    stored = flow.checkpoint_meta.get("extra", {})  # type: ignore[attr-defined]
    test = evaluate_speech(flow, data)
    summary = {"model": "wavenet", "preset": type(flow).__name__, "parameters": _count(flow),
               "data": data.name, "test": test.to_dict(), "training": stored.get("training", {}),
               "checkpoint": str(path), "invertible": __version__}  # fmt: skip
    return TrainJob("wavenet", flow, data, None, test, None, _count(flow), summary)  # type: ignore[arg-type]


def _speech_summary(job: SpeechJob, budget_minutes: float, student_size: str) -> dict[str, Any]:
    result, data = job.distillation, job.data
    return {
        "budget_minutes": budget_minutes,
        "budget_shares": SPEECH_BUDGET,
        "data": {"name": data.name, "seconds": {k: data.seconds(k) for k in data.splits}},
        "teacher": job.teacher.summary,
        "student": {
            "size": student_size, "config": job.student.config, "parameters": _count(job.student),
            "steps": len(result.history["kl"]), "wall_time_s": result.wall_time,
            "distill": result.config, "history": result.history,
        },
        "likelihood": job.likelihood,
        "quality": job.quality,
        "speed": job.speed,
        "threads": torch.get_num_threads(),
        "invertible": __version__,
    }  # fmt: skip
