"""Maximum-likelihood training in one call: :func:`fit`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from invertible.core import Flow
from invertible.training.config import TrainConfig, TrainResult
from invertible.training.ddp import DDPStrategy
from invertible.training.loop import Trainer
from invertible.training.strategy import SingleProcess
from invertible.transforms.normalization import is_distributed

__all__ = ["RunExistsError", "existing_run", "fit"]

#: What a run writes into its ``out_dir``: any of them marks the directory as a run.
RUN_ENTRIES = ("model", "training", "metrics.jsonl", "results.json")


class RunExistsError(ValueError):
    """``out_dir`` already holds a run and neither resume nor overwrite was asked for."""


def existing_run(out_dir: str | os.PathLike[str]) -> list[str]:
    """The entries of a previous run in ``out_dir`` (including the state an interrupted
    checkpoint swap left as ``.training.previous-*``); empty if there is none.

    Example:
        >>> import tempfile
        >>> existing_run(tempfile.mkdtemp())
        []
    """
    out = Path(out_dir)
    if not out.is_dir():
        return []
    found = [name for name in RUN_ENTRIES if (out / name).exists()]
    if "training" not in found and any(out.glob(".training.previous-*")):
        found.append("training")
    return found


def _check_out_dir(out_dir: str | os.PathLike[str] | None, resume: bool, overwrite: bool) -> None:
    """Refuse to start a new run over a previous one (``overwrite``: remove its state)."""
    if out_dir is None or resume or is_distributed():  # under torchrun the CLI checks first
        return
    found = existing_run(out_dir)
    if found and not overwrite:
        raise RunExistsError(
            f"{out_dir} already holds a run ({', '.join(found)}); pass resume=True to continue "
            "it, overwrite=True to replace it, or choose another out_dir"
        )
    if found:
        shutil.rmtree(Path(out_dir) / "training", ignore_errors=True)


def fit(
    flow: Flow,
    data: Any,
    *,
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str = "cosine",
    grad_clip: float | None = 5.0,
    patience: int | None = 10,
    eval_every: int | None = None,
    seed: int = 0,
    max_time: float | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    resume: bool = False,
    device: str | torch.device | None = None,
    data_meta: Mapping[str, Any] | None = None,
    callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
    save_model: bool = True,
    overwrite: bool = False,
    precision: str = "auto",
    **options: Any,
) -> TrainResult:
    """Fit ``flow`` to ``data`` by maximum likelihood; returns a :class:`TrainResult`.

    The flow ends in eval mode holding the best weights (by validation log-likelihood),
    with batch-norm statistics refreshed from the training data.

    Args:
        flow: the flow (trained in place).
        data: ``TabularData`` (or anything with ``train``/``val`` arrays ``[N, D]``).
        out_dir: write ``metrics.jsonl``/``metrics.csv``, a resumable ``training/``
            checkpoint and (unless ``save_model=False``) the final ``model/`` checkpoint
            there.
        progress: tqdm progress bar with loss and samples/s.
        resume: continue from ``out_dir/training`` (same options; the schedule, batches and
            RNG streams continue exactly).
        device: training device (default: the flow's).
        steps: length of the run in steps (default 2000).
        epochs: length of the run in passes over the data, if ``steps`` is not given (an
            epoch is ``N_train // batch_size`` steps).
        batch_size: mini-batch size.
        lr: Adam's base learning rate.
        weight_decay: Adam's L2 penalty.
        schedule: ``"cosine"`` (default, to ``lr * min_lr_ratio``), ``"step"`` (``gamma``
            every ``step_size`` steps) or ``"constant"``.
        grad_clip: max gradient norm (``None``: off).
        patience: evaluations without improvement before stopping (``None``: off).
        eval_every: steps between evaluations (default: one epoch, within [50, 1000]).
        seed: seeds python, numpy, torch and the batch order.
        max_time: training time cap in seconds (evaluations included).
        data_meta: the ``"data"`` entry of saved checkpoints (default: from ``data``).
        callbacks: functions called with each logged record.
        save_model: with ``out_dir``, save the final model to ``out_dir/model``.
        overwrite: start a new run in an ``out_dir`` that holds one (its resumable state is
            removed, its model replaced at the end); without it, and without ``resume``,
            such an ``out_dir`` raises :class:`RunExistsError`.
        precision: ``"auto"`` (default: ``"bf16"`` where bf16 products are fast, CUDA
            Ampere or later or a CPU with AVX-512 BF16 / AMX, else ``"fp32"``; see
            :func:`~invertible.training.precision.resolve_precision`), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (CUDA only, with a gradient scaler): the forward
            pass and loss of each training step run under ``torch.autocast`` in that
            dtype, so the conditioner networks' products run in low precision while
            log-scales, elementwise maps, log-determinants, base densities and batch-norm
            statistics stay float32; validation always runs in float32 (see
            :mod:`invertible.training.precision`). Example:
            ``fit(flow, data, precision="bf16")``.
        **options: further :class:`TrainConfig` fields: ``min_lr_ratio``, ``step_size``,
            ``gamma``, ``warmup_steps``, ``max_bad_steps=10``, ``val_max_rows``,
            ``eval_batch_size``, ``refresh_bn_rows=20000`` (rows for the final batch-norm
            statistics), ``val_refresh_bn_rows=4096`` (rows for the batch-norm statistics
            set before each validation pass; ``None``: validate with the running
            averages), ``checkpoint_every``,
            ``compile=False`` (``torch.compile`` the training forward/backward, see
            :func:`compile_flow`; falls back to eager with a warning if compiling fails).

    Under ``torchrun`` (an initialised ``torch.distributed`` process group with more than
    one process) training is data-parallel: see :mod:`invertible.training.ddp`.
    """
    config = TrainConfig(
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        grad_clip=grad_clip,
        patience=patience,
        eval_every=eval_every,
        seed=seed,
        max_time=max_time,
        precision=precision,
        **options,
    )
    _check_out_dir(out_dir, resume, overwrite)
    # the one place that picks how the loop runs: DDP when launched by torchrun
    strategy = DDPStrategy() if is_distributed() else SingleProcess()
    trainer = Trainer(
        flow,
        data,
        config,
        out_dir=out_dir,
        progress=progress,
        device=device,
        data_meta=data_meta,
        callbacks=callbacks,
        strategy=strategy,
        save_model=save_model,
    )
    return trainer.run(resume=resume)
