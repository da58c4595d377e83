"""The training loop: :class:`Trainer`, shared by maximum likelihood and distillation.

The loop minimises an objective (:mod:`~invertible.training.objective`; by default the
mean negative log-likelihood ``-flow(x).mean()``) with Adam (fused kernels where the
device supports them, else ``foreach``), and

* samples mini-batches as a pure function of ``(seed, step)`` (a fresh permutation of the
  training set per epoch), so a resumed run sees exactly the batches an uninterrupted one
  would. A data object with a method ``train_batch(batch_size, generator)`` supplies its
  own batches instead (the generator is seeded by ``(seed, step)``), and may supply
  validation batches with ``val_batches()``;
* evaluates the mean validation log-likelihood every ``eval_every`` steps (batch-norm
  layers first get the statistics of a fixed training subset, so that validation measures
  the current weights, not the trailing running averages), keeps the best
  weights (restored at the end: best-model selection) and stops early after ``patience``
  evaluations without improvement;
* schedules the learning rate (:func:`~invertible.training.schedule.lr_factor`). With
  ``max_time`` the schedule follows whichever budget runs out first (steps or time);
* skips steps whose loss or gradient norm is not finite; after ``max_bad_steps`` such steps
  in a row it restores the last good state (taken at the last evaluation) and halves the
  learning rate, and logs that;
* writes metrics as JSONL and CSV (and TensorBoard when installed) and, with ``out_dir``,
  a resumable checkpoint (``out_dir/training``, see :mod:`invertible.checkpoint`) at each
  evaluation and the final model (``out_dir/model``);
* at the end, restores the best weights and sets batch-norm running statistics to the exact
  statistics of (a subset of) the training set (:func:`refresh_batchnorm`).

How the steps run across processes is the job of a strategy object
(:mod:`~invertible.training.strategy`): it wraps the model, shards batches, takes the
optimisation step, averages validation numbers and agrees on the clock. The loop only
knows the strategy interface; :func:`~invertible.training.fit` picks single-process or DDP.

Example:
    >>> import numpy as np, invertible
    >>> from types import SimpleNamespace
    >>> rng = np.random.default_rng(0)
    >>> data = SimpleNamespace(train=rng.normal(size=(512, 2)).astype("float32"),
    ...                        val=rng.normal(size=(128, 2)).astype("float32"))
    >>> flow = invertible.RealNVP(2, num_layers=2, hidden_features=(16,))
    >>> result = invertible.fit(flow, data, steps=60, batch_size=64, progress=False)
    >>> result.steps, result.best_step > 0
    (60, True)
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from invertible.checkpoint import (
    NonFiniteStateError,
    data_metadata,
    load_training_state,
    load_weights,
    read_metadata,
    recover_checkpoint,
    save,
)
from invertible.core import Flow
from invertible.data import nonfinite_rows
from invertible.evaluation.dequantize import dequantize_eval, dequantize_step
from invertible.presets.wavenet import SequenceFlow
from invertible.tensors import as_tensor, dtype_device, full_precision, seed_from
from invertible.training.batchnorm import batchnorm_layers, refresh_batchnorm
from invertible.training.compile import CompiledModule
from invertible.training.config import TrainConfig, TrainingWarning, TrainResult
from invertible.training.metrics import MetricsLogger
from invertible.training.objective import MaximumLikelihood
from invertible.training.precision import autocast, make_scaler, resolve_precision
from invertible.training.schedule import adam, lr_factor
from invertible.training.state import (
    load_optimizer_state,
    load_rng_state,
    optimizer_state,
    rng_state,
    seed_everything,
)
from invertible.training.strategy import SingleProcess
from invertible.transforms.preprocessing import bits_per_dim

__all__ = ["MODEL_DIR", "TRAINING_DIR", "DivergedError", "Trainer"]

TRAINING_DIR = "training"
MODEL_DIR = "model"


def _image_levels(data: Any) -> int | None:
    """Quantisation levels of image data (uint8 ``train`` pixels, e.g. ``ImageData``), else
    ``None``.
    """
    train = getattr(data, "train", None)
    if getattr(train, "dtype", None) in (np.uint8, torch.uint8):
        return int(getattr(data, "levels", 256))
    return None


#: A mean training loss above this many nats per dimension marks a run as unstable.
LOSS_EXPLOSION = 1000.0


class DivergedError(ValueError):
    """No validation log-likelihood of the run was finite."""


#: Largest magnitude accepted in training data: squares of larger float32 values overflow
#: (batch-norm variances, Gaussian log-densities), so every step would be skipped.
MAX_MAGNITUDE = 1e15


def _check_magnitude(x: Tensor, name: str) -> None:
    """Refuse finite values so large that training cannot be finite."""
    if not x.is_floating_point() or x.numel() == 0:
        return
    big = (x.abs() > MAX_MAGNITUDE).flatten(1).any(dim=1)
    if bool(big.any()):
        first = int(big.nonzero()[0, 0])
        raise ValueError(
            f"{name} data: {int(big.sum())} row(s) hold values beyond ±{MAX_MAGNITUDE:.0e} "
            f"(first: row {first}, largest {float(x[first].abs().max()):.3g}); they overflow "
            "float32 in training: fix, remove or rescale them"
        )


def check_data_object(data: Any) -> None:
    """Raise a one-line ``TypeError`` unless ``data`` has ``train`` rows or batches."""
    if hasattr(data, "train") or callable(getattr(data, "train_batch", None)):
        return
    raise TypeError(
        f"data must have a train split (and optionally val), got a {type(data).__name__}; "
        "wrap arrays as invertible.data.TabularData(name, train, val, test) or "
        "types.SimpleNamespace(train=x_train, val=x_val)"
    )


class Trainer:
    """The training loop of :func:`~invertible.fit` and :func:`~invertible.distill`.

    Args:
        flow: the flow to train (modified in place).
        data: an object with ``train`` and (optionally) ``val`` arrays ``[N, D]``
            (a ``TabularData``), or an ``ImageData`` (uint8 pixels ``[N, C, H, W]`` and
            ``levels``): images are dequantized with fresh noise per batch
            (:meth:`prepare_batch`), evaluated with fixed noise, and logged in bits/dim too.
            Or an object with ``train_batch(batch_size, generator) -> Tensor`` that
            supplies its own batches (optionally ``val_batches()`` or ``val``).
        config: a :class:`~invertible.training.config.TrainConfig`.
        out_dir: where metrics, the resumable state and the final model go (``None``:
            nothing is written).
        progress: show a tqdm progress bar.
        device: where to train (default: where the flow's parameters are).
        data_meta: the ``"data"`` entry of saved checkpoints (default: from ``data``).
        callbacks: functions called with each logged record (main process only).
        strategy: how steps run across processes (default: one process).
        objective: what to minimise (default: the negative log-likelihood).
        step_callbacks: functions ``fn(step, record)`` called after every step with the
            step's numbers (``lr``, and unless skipped ``loss``, ``grad_norm`` and the
            objective's parts).
        desc: label of the progress bar (default: the flow's class name).
        save_model: with ``out_dir``, save the final model to ``out_dir/model`` (a caller
            that adds its own measurements saves it once itself).
    """

    def __init__(
        self,
        flow: Flow,
        data: Any,
        config: TrainConfig | None = None,
        *,
        out_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        device: str | torch.device | None = None,
        data_meta: Mapping[str, Any] | None = None,
        callbacks: list[Callable[[dict[str, Any]], None]] | None = None,
        strategy: SingleProcess | None = None,
        objective: Any = None,
        step_callbacks: list[Callable[[int, dict[str, Any]], None]] | None = None,
        desc: str | None = None,
        save_model: bool = True,
    ) -> None:
        self.config = config or TrainConfig()
        self.flow = flow
        self.strategy = strategy or SingleProcess()
        self.objective = objective or MaximumLikelihood()
        dtype, flow_device = dtype_device(flow)
        self.device = torch.device(device) if device is not None else flow_device
        #: the precision the steps run in (``config.precision`` with "auto" resolved)
        self.precision = resolve_precision(self.config.precision, self.device)
        self.flow.to(self.device)
        self.model: nn.Module = flow  # the strategy may replace it by a wrapper (DDP)
        self.dtype = dtype
        self.data = data
        check_data_object(data)
        self._load_splits(data)
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.desc = desc or type(flow).__name__
        self.save_model = save_model
        self.callbacks = list(callbacks or [])
        self.step_callbacks = list(step_callbacks or [])
        if data_meta is None:
            try:
                data_meta = data_metadata(data)
            except (AttributeError, TypeError):
                data_meta = None
        self.data_meta = data_meta
        self.optimizer = self.make_optimizer()
        #: the loss scaler of ``precision="fp16"`` (``None`` otherwise)
        self.scaler = make_scaler(self.precision, self.device)
        self._set_lengths()
        self._reset_loop_state()
        self.strategy.setup(self)

    def _load_splits(self, data: Any) -> None:
        """Store the training and validation rows on the device (or note the batch source)."""
        #: quantisation levels of image data (``ImageData``: uint8 pixels, dequantized per
        #: batch by :meth:`prepare_batch`); ``None`` for real-valued data.
        self.levels: int | None = _image_levels(data)
        store = torch.uint8 if self.levels is not None else self.dtype
        #: a data object that supplies its own batches (``train_batch``), else ``None``
        self.source: Any = data if callable(getattr(data, "train_batch", None)) else None
        self.train_x: Tensor | None = None
        if self.source is None:
            self.train_x = as_tensor(data.train, self.device, store)
        # a source with its own validation batches (e.g. SpeechData: fixed-noise crops of
        # utterances of any length) is validated on those, never on its raw ``val``
        own_val = self.source is not None and callable(getattr(data, "val_batches", None))
        val = None if own_val else getattr(data, "val", None)
        self.val_x: Tensor | None = None
        if val is not None and len(val) > 0:
            if self.config.val_max_rows is not None:
                val = val[: self.config.val_max_rows]
            self.val_x = as_tensor(val, self.device, store)
        self._check_data()

    def _set_lengths(self) -> None:
        cfg = self.config
        if self.train_x is not None:
            n = self.train_x.shape[0]
        else:
            n = len(self.source) if hasattr(self.source, "__len__") else cfg.batch_size
        self.batches_per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
        if cfg.steps is not None:
            self.total_steps = int(cfg.steps)
        elif cfg.epochs is not None:
            self.total_steps = max(1, math.ceil(cfg.epochs * self.batches_per_epoch))
        else:
            self.total_steps = 2000
        self.eval_every = cfg.eval_every or int(min(1000, max(50, self.batches_per_epoch)))

    def _reset_loop_state(self) -> None:
        """Everything resume needs, besides weights and optimizer."""
        self.step = 0
        self.best_value = -math.inf
        self.best_step = 0
        self.bad_evals = 0
        self.skipped = 0
        self.consecutive_bad = 0
        self.lr_scale = 1.0
        self.lr_halvings = 0
        self.train_time = 0.0
        self.loss_sum = 0.0
        self.loss_count = 0
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, Tensor] | None = None
        self.last_step: dict[str, float] = {}
        self.global_rows = self.config.batch_size
        self._good_state: tuple[dict, dict] | None = None
        self._perm_epoch = -1
        self._perm: Tensor | None = None
        self._logger: MetricsLogger | None = None

    # -- what the strategy decides ------------------------------------------------------
    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows progress and writes files (rank 0)."""
        return self.strategy.is_main

    def reduce_mean(self, value: float, count: int = 1) -> float:
        """Average a scalar over processes (see the strategy)."""
        return self.strategy.reduce_mean(value, count)

    def shared_elapsed(self, elapsed: float) -> float:
        """Training time all processes agree on (see the strategy)."""
        return self.strategy.shared_elapsed(elapsed)

    def autocast(self) -> Any:
        """The context of a training step's forward pass and loss (``precision``): autocast
        in bf16 / fp16, or nothing in fp32. Backward and the optimizer step run outside it.
        """
        return autocast(self.precision, self.device)

    def make_optimizer(self) -> torch.optim.Optimizer:
        """Adam over the trainable parameters (see :func:`adam`)."""
        params = [p for p in self.flow.parameters() if p.requires_grad]
        return adam(params, lr=self.config.lr, weight_decay=self.config.weight_decay)

    # -- the pieces -----------------------------------------------------------------------
    def _check_data(self) -> None:
        for name, x in (("train", self.train_x), ("val", self.val_x)):
            if x is None:
                continue
            event = self.flow.event_shape
            if isinstance(self.flow, SequenceFlow) and x.dim() == 2:
                pass  # a sequence flow models waveforms [batch, T] of any length T
            elif tuple(x.shape[1:]) != tuple(event):
                raise ValueError(
                    f"{name} data has shape {list(x.shape)} but the flow models events of shape "
                    f"{list(event)}; build the model with features={x.shape[1]}"
                )
            bad = nonfinite_rows(x)
            if bad.size:
                raise ValueError(
                    f"{name} data: {len(bad)} row(s) contain NaN or inf (first: row "
                    f"{int(bad[0])}); remove or impute them before training"
                )
            _check_magnitude(x, name)

    @property
    def _seed(self) -> int:
        return self.config.seed if self.config.seed is not None else 0

    def batch_indices(self, step: int) -> Tensor:
        """Row indices of the mini-batch of ``step``: a pure function of (seed, step)."""
        assert self.train_x is not None, "a batch source has no stored rows"
        n = self.train_x.shape[0]
        bs = self.config.batch_size
        if n <= bs:
            return torch.arange(n)
        epoch, pos = divmod(step, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self._seed * 1_000_003 + epoch)
            self._perm = torch.randperm(n, generator=gen)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm[pos * bs : (pos + 1) * bs]

    def global_batch(self, step: int) -> Tensor:
        """The whole (all processes') mini-batch of ``step`` on the training device."""
        if self.source is not None:
            gen = torch.Generator().manual_seed(seed_from(self._seed, step, 3))
            batch = self.source.train_batch(self.config.batch_size, gen)
            return as_tensor(batch, self.device, self.dtype)
        assert self.train_x is not None
        rows = self.train_x[self.batch_indices(step).to(self.train_x.device)]
        return self.prepare_batch(rows, step)

    def sample_batch(self, step: int) -> Tensor:
        """This process's rows of the mini-batch of ``step``."""
        batch = self.global_batch(step)
        self.global_rows = batch.shape[0]
        return self.strategy.shard(batch)

    def prepare_batch(self, rows: Tensor, step: int) -> Tensor:
        """Model input from stored rows: identity for real-valued data; for images, uniform
        dequantization x = (pixels + u) / levels with noise drawn from a generator seeded by
        ``(seed, step)`` (fresh noise every step, and exact on resume).
        """
        if self.levels is None:
            return rows
        return dequantize_step(rows, self.levels, seed=self._seed, step=step, dtype=self.dtype)

    def bits_per_dim(self, log_prob: float) -> float:
        """Bits/dim of image data from a mean log-density in nats (D = C·H·W), using the
        convention of :func:`invertible.transforms.preprocessing.bits_per_dim`.
        """
        assert self.levels is not None, "bits/dim is defined for image data only"
        return float(bits_per_dim(log_prob, math.prod(self.flow.event_shape), self.levels))

    @property
    def has_validation(self) -> bool:
        """Whether there are validation rows or batches."""
        return self.val_x is not None or callable(getattr(self.data, "val_batches", None))

    def _refresh_for_validation(self) -> None:
        """Give batch-norm layers the statistics of a fixed training subset before a
        validation pass. The running averages trail the weights they normalise for (they
        average batches of earlier steps). On BSDS300 (``python -m benchmarks paper``: batch
        100, lr 1e-3) they put validation 15 nats or more below the refreshed figure of the
        same weights, and early stopping stopped MAF(5), MAF MoG(5) and RealNVP(10) after
        250-500 of 6000 steps (test 141.2, 137.5, 137.1 nats); validating with refreshed
        statistics they ran all 6000 steps (150.4, 151.3, 149.5). Training-mode steps use
        batch statistics and are unaffected.
        """
        rows = self.config.val_refresh_bn_rows
        if not rows or not self.has_validation or not self._refreshes_batchnorm():
            return
        with full_precision():
            refresh_batchnorm(self.flow, self._refresh_rows(rows), max_rows=rows, seed=self._seed)

    def _refreshes_batchnorm(self) -> bool:
        return bool(getattr(self.objective, "refresh_batchnorm", True)) and bool(
            batchnorm_layers(self.flow)
        )

    def _refresh_rows(self, cap: int | None) -> Tensor:
        """The training rows for :func:`refresh_batchnorm`: for images, a seeded subset of
        at most ``refresh_bn_rows`` images, dequantized with fixed noise; for a batch source,
        batches drawn with fixed seeds (about ``cap`` rows).
        """
        if self.train_x is None:
            wanted = cap or self.config.batch_size
            batches = []
            for k in range(max(1, math.ceil(wanted / self.config.batch_size))):
                gen = torch.Generator().manual_seed(seed_from(self._seed, k, 4))
                batch = self.source.train_batch(self.config.batch_size, gen)
                batches.append(as_tensor(batch, self.device, self.dtype))
            return torch.cat(batches)
        if self.levels is None:
            return self.train_x
        rows = self.train_x
        cap = self.config.refresh_bn_rows
        if cap is not None and rows.shape[0] > cap:
            gen = torch.Generator().manual_seed(self._seed)
            idx = torch.randperm(rows.shape[0], generator=gen)[:cap].sort().values
            rows = rows[idx.to(rows.device)]
        return dequantize_eval(rows, self.levels, dtype=self.dtype)

    def current_lr(self, elapsed: float | None = None) -> float:
        """The learning rate of the current step (schedule, time budget, halvings)."""
        cfg = self.config
        progress = self.step / max(1, self.total_steps)
        if cfg.max_time and elapsed is not None:
            progress = max(progress, elapsed / cfg.max_time)
        factor = lr_factor(
            progress,
            self.step,
            schedule=cfg.schedule,
            min_lr_ratio=cfg.min_lr_ratio,
            step_size=cfg.step_size,
            gamma=cfg.gamma,
            warmup_steps=cfg.warmup_steps,
        )
        return cfg.lr * factor * self.lr_scale

    def train_step(self, batch: Tensor, lr: float) -> float | None:
        """One optimiser step on ``batch`` (see the strategy); ``None`` if it was skipped."""
        self.last_step = {}
        return self.strategy.train_step(self, batch, lr)

    def _validation_chunks(self, x: Tensor | None) -> Iterator[Tensor]:
        """Model-ready chunks of ``x`` (default: the validation rows or batches)."""
        if x is None and self.val_x is None:
            for batch in self.data.val_batches():
                yield as_tensor(batch, self.device, self.dtype)
            return
        x = self.strategy.shard(self.val_x if x is None else x)
        size = self.config.eval_batch_size
        for start in range(0, x.shape[0], size):
            chunk = x[start : start + size]
            if self.levels is not None:  # images: fixed noise, reproducible numbers
                chunk = dequantize_eval(chunk, self.levels, start=start, dtype=self.dtype)
            yield chunk

    @torch.no_grad()
    def evaluate(self, x: Tensor | None = None) -> float | None:
        """Mean log-likelihood (nats) of ``x`` (default: the validation split), eval mode,
        in float32 whatever the training ``precision``.

        Under several processes each evaluates its shard and the means are combined,
        weighted by row counts.
        """
        if x is None and not self.has_validation:
            return None
        was_training = self.flow.training
        self.flow.eval()
        total, count = 0.0, 0
        try:
            with full_precision():  # whatever the training precision
                for chunk in self._validation_chunks(x):
                    total += float(self.flow.log_prob(chunk).double().sum())
                    count += chunk.shape[0]
        finally:
            self.flow.train(was_training)
        value = self.reduce_mean(total / max(1, count), count)
        return value if math.isfinite(value) else -math.inf

    def log(self, record: dict[str, Any]) -> None:
        """Record metrics: history (all ranks), files and callbacks (main process only)."""
        self.history.append(record)
        if not self.is_main:
            return
        if self._logger is not None:
            self._logger.write(record)
        for cb in self.callbacks:
            cb(record)

    # -- state ----------------------------------------------------------------------------
    def _snapshot(self) -> tuple[dict, dict]:
        return (
            {k: v.detach().clone() for k, v in self.flow.state_dict().items()},
            copy.deepcopy(self.optimizer.state_dict()),
        )

    def _loop_state(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "best_value": self.best_value if math.isfinite(self.best_value) else None,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "skipped": self.skipped,
            "consecutive_bad": self.consecutive_bad,
            "lr_scale": self.lr_scale,
            "lr_halvings": self.lr_halvings,
            "train_time": self.train_time,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "total_steps": self.total_steps,
            "config": asdict(self.config),
            "history": self.history,
            "data": self._data_fingerprint(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "precision": self.precision,
        }

    def _data_fingerprint(self) -> dict[str, Any] | None:
        """Row counts and sums of the splits: a resumed run must see the same data."""
        if self.train_x is None:
            return None
        if getattr(self, "_fingerprint", None) is None:
            splits = {"train": self.train_x, "val": self.val_x}
            self._fingerprint = {
                name: [int(x.shape[0]), float(x.sum(dtype=torch.float64))]
                for name, x in splits.items()
                if x is not None
            }
        return self._fingerprint

    def _check_same_data(self, path: Path, saved: dict[str, Any] | None) -> None:
        """Refuse to resume on other data than the run was trained on."""
        now = self._data_fingerprint()
        if saved is None or now is None:
            return
        for name, (rows, total) in saved.items():
            if name not in now:
                continue
            rows_now, total_now = now[name]
            if rows != rows_now or not math.isclose(total, total_now, rel_tol=1e-6, abs_tol=1e-6):
                raise ValueError(
                    f"cannot resume from {path}: its {name} split had {rows} rows, this data's "
                    f"has {rows_now} (or other values); resume with the same --data and "
                    "options, or start a new run in another output directory"
                )

    def save_state(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write a resumable checkpoint (weights + optimizer + RNG + loop state)."""
        if not self.is_main:
            return
        path = Path(path) if path is not None else self._training_dir()
        if path is None:
            return
        opt_tensors, opt_meta = optimizer_state(self.optimizer)
        rng_tensors, rng_meta = rng_state()
        tensors = {**opt_tensors, **rng_tensors}
        if self.best_state is not None:
            tensors.update({f"best.{k}": v for k, v in self.best_state.items()})
        meta = {"loop": self._loop_state(), "optimizer": opt_meta, "rng": rng_meta}
        try:
            save(self.flow, path, data=self.data_meta, training_state=(tensors, meta))
        except NonFiniteStateError as e:  # never over a good checkpoint; training goes on
            self.log({"step": self.step, "event": f"checkpoint skipped: {e}"})
        except OSError as e:  # disk full, unwritable: the atomic write left the old one intact
            raise OSError(
                e.errno,
                f"could not write the training checkpoint {path}: {e.strerror or e}; the "
                "previous checkpoint there is intact: free space (or fix permissions) and "
                "continue with resume",
            ) from e

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Restore everything :meth:`save_state` wrote (weights must match the flow)."""
        path = Path(path)
        meta = read_metadata(path)
        if meta["model"] != type(self.flow).__name__ or meta["config"] != self.flow.config:
            raise ValueError(
                f"cannot resume from {path}: it holds a {meta['model']} with config "
                f"{meta['config']}, not this {type(self.flow).__name__}; use the same model "
                "options or another output directory"
            )
        load_weights(self.flow, path)
        tensors, state = load_training_state(path, "cpu")
        load_optimizer_state(self.optimizer, tensors, state["optimizer"])
        load_rng_state(tensors, state["rng"])
        best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        loop = state["loop"]
        self._check_same_data(path, loop.get("data"))
        self.step = int(loop["step"])
        self.best_value = -math.inf if loop["best_value"] is None else float(loop["best_value"])
        self.best_step = int(loop["best_step"])
        self.bad_evals = int(loop["bad_evals"])
        self.skipped = int(loop["skipped"])
        self.consecutive_bad = int(loop["consecutive_bad"])
        self.lr_scale = float(loop["lr_scale"])
        self.lr_halvings = int(loop["lr_halvings"])
        self.train_time = float(loop["train_time"])
        self.loss_sum = float(loop["loss_sum"])
        self.loss_count = int(loop["loss_count"])
        self.history = list(loop["history"])
        if self.config.precision == "auto" and loop.get("precision") in ("fp32", "bf16"):
            self.precision = loop["precision"]  # "auto" resolved when the run started
        if self.scaler is not None and loop.get("scaler"):
            self.scaler.load_state_dict(loop["scaler"])

    def _training_dir(self) -> Path | None:
        return self.out_dir / TRAINING_DIR if self.out_dir is not None else None

    # -- the loop -------------------------------------------------------------------------
    def _evaluate_and_log(self, elapsed: float, interval: tuple[float, int]) -> bool:
        """Evaluate, update best/patience, log, checkpoint. Returns True to stop early."""
        self._refresh_for_validation()
        value = self.evaluate()
        improved = value is not None and value > self.best_value
        if improved:
            self.best_value = float(value)  # type: ignore[arg-type]
            self.best_step = self.step
            self.bad_evals = 0
            self.best_state = {k: v.detach().clone() for k, v in self.flow.state_dict().items()}
        elif value is not None:
            self.bad_evals += 1
        if value is None or math.isfinite(value):
            self._good_state = self._snapshot()
        seconds, samples = interval
        record = {
            "step": self.step,
            "epoch": round(self.step / self.batches_per_epoch, 3),
            "train_loss": self.loss_sum / self.loss_count if self.loss_count else None,
            "val_log_prob": value if value is None or math.isfinite(value) else None,
            "best_val_log_prob": self.best_value if math.isfinite(self.best_value) else None,
            "lr": self.current_lr(elapsed),
            "samples_per_s": samples / seconds if seconds > 0 else None,
            "elapsed_s": round(elapsed, 3),
            "skipped_steps": self.skipped,
            "event": "eval",
        }
        if self.levels is not None and record["val_log_prob"] is not None:
            record["val_bits_per_dim"] = self.bits_per_dim(record["val_log_prob"])
        self.loss_sum, self.loss_count = 0.0, 0
        self.log(record)
        evals = sum(1 for r in self.history if r.get("event") == "eval")
        if self.out_dir is not None and evals % max(1, self.config.checkpoint_every) == 0:
            self.save_state()
        patience = self.config.patience
        return patience is not None and value is not None and self.bad_evals >= patience

    def _handle_bad_step(self, elapsed: float) -> None:
        self.skipped += 1
        self.consecutive_bad += 1
        if self.consecutive_bad < self.config.max_bad_steps:
            return
        if self._good_state is not None:
            weights, opt = self._good_state
            self.flow.load_state_dict(weights)
            self.optimizer.load_state_dict(copy.deepcopy(opt))
        self.lr_scale *= 0.5
        self.lr_halvings += 1
        self.consecutive_bad = 0
        self.log(
            {
                "step": self.step,
                "event": f"{self.config.max_bad_steps} non-finite steps in a row: restored the "
                "last good state and halved the learning rate",
                "lr": self.current_lr(elapsed),
                "skipped_steps": self.skipped,
            }
        )

    def _start(self, resume: bool) -> None:
        """Seed, resume, open the metric files and compile the model if asked to."""
        cfg = self.config
        if cfg.seed is not None:
            seed_everything(cfg.seed)
        if resume:
            path = self._training_dir()
            if path is None:
                raise ValueError("resume=True needs out_dir (where the training state is)")
            if self.is_main:
                recover_checkpoint(path)  # a save killed between its two renames
            if (path / "config.json").is_file():
                self.load_state(path)
            elif self.is_main:
                warnings.warn(
                    f"resume: no saved training state in {path}; starting from step 0",
                    stacklevel=2,
                )
        if self.out_dir is not None and self.is_main:
            self._logger = MetricsLogger(self.out_dir, self.history)
        if self._good_state is None:
            self._good_state = self._snapshot()
        if cfg.compile and not isinstance(self.model, CompiledModule):
            backend = {} if cfg.compile is True else {"backend": cfg.compile}
            self.model = CompiledModule(self.model, **backend)  # eager fallback, with a warning
        self.flow.train()

    def _one_step(self, elapsed: float) -> int:
        """Draw the batch of the current step, take the step, book-keep; returns its rows
        (0 if the step was skipped).
        """
        batch = self.sample_batch(self.step)
        lr = self.current_lr(elapsed)
        loss = self.train_step(batch, lr)
        step = self.step
        self.step += 1
        if loss is None and "scaler_overflow" in self.last_step:
            self.skipped += 1  # fp16: the scaler lowered its scale; the lr stays
        elif loss is None:
            self._handle_bad_step(elapsed)
        else:
            self.consecutive_bad = 0
            self.loss_sum += loss
            self.loss_count += 1
        if self.step_callbacks:
            record = {"step": step, "lr": lr, **self.last_step}
            for cb in self.step_callbacks:
                cb(step, record)
        return 0 if loss is None else batch.shape[0]

    def _loop(self, stop_at: int, bar: Any) -> str:
        """Steps until ``stop_at``, the time cap or early stopping; returns why it stopped.

        ``self._clock`` is the loop's start (minus the time of earlier, resumed runs) and
        ``self._interval`` the start and the samples of the current evaluation interval.
        """
        cfg = self.config
        start = self._clock
        while self.step < stop_at:
            elapsed = self.shared_elapsed(time.perf_counter() - start)
            if cfg.max_time is not None and elapsed >= cfg.max_time:
                return "max_time"
            rows = self._one_step(elapsed)
            self._interval = (self._interval[0], self._interval[1] + rows)
            self._advance(bar, elapsed)
            if self.step % self.eval_every == 0 or self.step == self.total_steps:
                stop = self._evaluate_now()
                bar.set_postfix(self._postfix())
                if stop:
                    return "early_stopping"
        return "steps"

    def _advance(self, bar: Any, elapsed: float) -> None:
        """Move the bar: by one step, or with a time cap to the share of whichever budget
        (steps or seconds) is nearer its end, so its total and ETA follow the real budget.
        """
        if not self.config.max_time:
            bar.update(1)
            return
        done = max(self.step / max(1, self.total_steps), elapsed / self.config.max_time)
        bar.update(max(0.0, min(100.0, round(100.0 * done, 2)) - bar.n))

    def _postfix(self) -> dict[str, str]:
        """The bar's figures: step, training loss, latest and best validation, speed."""
        last = self.history[-1]
        val = last.get("val_log_prob")
        latest = f"{val:.3f}" if val is not None else "n/a"
        figures = {
            "step": str(self.step),
            "loss": f"{last.get('train_loss') or float('nan'):.3f}",
            "val": f"{latest} (best {self.best_value:.3f})",
            "sps": f"{last.get('samples_per_s') or 0:.0f}",
        }
        if not self.has_validation:
            del figures["val"]
        return figures

    def _bar(self) -> Any:
        """The progress bar: steps, or percent of the budget under a time cap."""
        timed = bool(self.config.max_time)
        return tqdm(
            total=100.0 if timed else self.total_steps,
            initial=0 if timed else self.step,
            disable=not (self.progress and self.is_main),
            dynamic_ncols=True,
            leave=False,
            desc=self.desc,
            unit="%" if timed else "it",
            bar_format="{l_bar}{bar}| {n:.0f}% of the budget [{elapsed}<{remaining}{postfix}]"
            if timed
            else None,
        )

    def status(self, message: str) -> None:
        """A one-line note of a long stage (with progress on, main process only)."""
        if self.progress and self.is_main:
            tqdm.write(f"{self.desc}: {message}", file=sys.stderr)

    def _evaluate_now(self) -> bool:
        """Evaluate at the current step, start a new interval; True to stop early."""
        now = time.perf_counter()
        self.train_time = now - self._clock
        interval_start, samples = self._interval
        stop = self._evaluate_and_log(now - self._clock, (now - interval_start, samples))
        self._last_eval_step = self.step
        self._interval = (time.perf_counter(), 0)
        return stop

    def run(self, *, resume: bool = False, until: int | None = None) -> TrainResult:
        """Train; ``resume`` continues from ``out_dir/training``; ``until`` pauses at a step
        (saving a resumable state) without finishing the run.
        """
        self._start(resume)
        stop_at = self.total_steps if until is None else min(until, self.total_steps)
        bar = self._bar()
        self._clock = time.perf_counter() - self.train_time
        self._interval = (time.perf_counter(), 0)
        self._last_eval_step = self.history[-1]["step"] if self.history else -1
        try:
            stopped = self._loop(stop_at, bar)
        except KeyboardInterrupt:
            self.train_time = time.perf_counter() - self._clock
            if self.out_dir is not None:
                self.save_state()
            raise
        finally:
            bar.close()
        self.train_time = time.perf_counter() - self._clock
        if until is not None and self.step >= until and self.step < self.total_steps:
            if self.out_dir is not None:
                self.save_state()
            return self._result("paused", None)
        if self.step > 0 and self._last_eval_step != self.step:
            self._evaluate_now()
        return self.finish(stopped)

    def finish(self, stopped: str) -> TrainResult:
        """Restore the best weights, refresh batch norm, save the final model."""
        if self.best_state is not None:
            self.flow.load_state_dict(self.best_state)
        if self._refreshes_batchnorm():
            cap = self.config.refresh_bn_rows
            self.status("refreshing batch-norm statistics from the training data")
            with full_precision():
                refresh_batchnorm(self.flow, self._refresh_rows(cap), max_rows=cap)
        self.flow.eval()
        if self.has_validation:
            self.status("final validation pass")
        final = self.evaluate()
        if self._logger is not None:
            self._logger.close()
        result = self._result(stopped, final)
        self._check_outcome(result)
        if self.out_dir is not None and self.is_main and self.save_model:
            save(
                self.flow,
                self.out_dir / MODEL_DIR,
                data=self.data_meta,
                extra={"training": {k: v for k, v in result.to_dict().items() if k != "history"}},
            )
        return result

    def _check_outcome(self, result: TrainResult) -> None:
        """Raise if validation never gave a finite number; else list (and warn about) what
        went wrong without stopping the run: skipped steps, halvings, an exploding loss.
        """
        evals = [r for r in self.history if r.get("event") == "eval"]
        if self.has_validation and evals and result.best_val_log_prob is None:
            raise DivergedError(
                f"training diverged: no validation log-likelihood in {self.step} steps was "
                f"finite ({self.skipped} steps skipped as non-finite); lower the learning rate "
                f"(now {self.config.lr:g}) and check the data for extreme values"
            )
        messages = []
        if self.skipped:
            messages.append(
                f"{self.skipped} of {self.step} steps were skipped (non-finite loss or "
                f"gradient) and the learning rate was halved {self.lr_halvings} time(s); "
                "a lower learning rate may train better"
            )
        losses = [(r["train_loss"], r["step"]) for r in evals if r.get("train_loss") is not None]
        limit = LOSS_EXPLOSION * max(1, math.prod(self.flow.event_shape))
        worst = max(losses, default=None)
        if worst is not None and worst[0] > limit:
            messages.append(
                f"training was unstable: the mean training loss reached {worst[0]:.3g} nats "
                f"per point (before step {worst[1]}); lower the learning rate (now "
                f"{self.config.lr:g})"
            )
        result.warnings = messages
        for message in messages if self.is_main else []:
            warnings.warn(message, TrainingWarning, stacklevel=3)

    def _result(self, stopped: str, final: float | None) -> TrainResult:
        sps = [r["samples_per_s"] for r in self.history if r.get("samples_per_s")]
        return TrainResult(
            history=list(self.history),
            best_val_log_prob=self.best_value if math.isfinite(self.best_value) else None,
            best_step=self.best_step,
            final_val_log_prob=final if final is None or math.isfinite(final) else None,
            train_time=self.train_time,
            steps=self.step,
            stopped=stopped,
            skipped_steps=self.skipped,
            lr_halvings=self.lr_halvings,
            samples_per_s=float(np.mean(sps)) if sps else 0.0,
            precision=self.precision,
        )
