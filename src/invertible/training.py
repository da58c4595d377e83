"""Maximum-likelihood training of flows: :func:`fit` and the reusable :class:`Trainer`.

The loop minimises the mean negative log-likelihood ``-flow(x).mean()`` with Adam (fused
kernels where the device supports them, else ``foreach``), and

* samples mini-batches as a pure function of ``(seed, step)`` (a fresh permutation of the
  training set per epoch), so a resumed run sees exactly the batches an uninterrupted one
  would;
* evaluates the mean validation log-likelihood every ``eval_every`` steps (batch-norm
  layers first get the statistics of a fixed training subset, so that validation measures
  the current weights, not the trailing running averages), keeps the best
  weights (restored at the end: best-model selection) and stops early after ``patience``
  evaluations without improvement;
* schedules the learning rate: ``"cosine"`` (default; from ``lr`` to ``lr * min_lr_ratio``
  over the run), ``"step"`` (times ``gamma`` every ``step_size`` steps) or ``"constant"``.
  With ``max_time`` the schedule follows whichever budget runs out first (steps or time);
* skips steps whose loss or gradient norm is not finite; after ``max_bad_steps`` such steps
  in a row it restores the last good state (taken at the last evaluation) and halves the
  learning rate, and logs that;
* writes metrics as JSONL and CSV (and TensorBoard when installed) and, with ``out_dir``,
  a resumable checkpoint (``out_dir/training``, see :mod:`invertible.checkpoint`) at each
  evaluation and the final model (``out_dir/model``);
* at the end, restores the best weights and sets batch-norm running statistics to the exact
  statistics of (a subset of) the training set (:func:`refresh_batchnorm`).

Distributed training reuses :class:`Trainer`: data sampling (:meth:`Trainer.sample_batch`),
the optimisation step (:meth:`Trainer.train_step`), evaluation (:meth:`Trainer.evaluate`),
checkpointing (:meth:`Trainer.save_state` / :meth:`Trainer.load_state`) and logging
(:meth:`Trainer.log`, only on the main process, ``is_main``) are separate methods. A DDP
subclass sets ``self.model`` to the wrapped module (``Flow.__call__`` returns log-densities,
so DDP wraps the density), overrides ``sample_batch`` to shard, ``reduce_mean`` to
all-reduce, and ``is_main`` to ``rank == 0``.

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

import contextlib
import copy
import csv
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from invertible.checkpoint import (
    NonFiniteStateError,
    data_metadata,
    load_tensors,
    read_metadata,
    save,
)
from invertible.core import Flow, Transform
from invertible.evaluation import dequantize_eval, dequantize_step

__all__ = [
    "CompiledFlow",
    "CompiledModule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "adam",
    "compile_flow",
    "fit",
    "lr_factor",
    "refresh_batchnorm",
    "seed_everything",
]

TRAINING_DIR = "training"
MODEL_DIR = "model"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
CSV_COLUMNS = (
    "step",
    "epoch",
    "train_loss",
    "val_log_prob",
    "best_val_log_prob",
    "lr",
    "samples_per_s",
    "elapsed_s",
    "skipped_steps",
    "event",
    "val_bits_per_dim",
)


# --------------------------------------------------------------------------- small helpers


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA).

    Example:
        >>> seed_everything(0); a = torch.rand(1)
        >>> seed_everything(0); bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(
    progress: float,
    step: int,
    *,
    schedule: str = "cosine",
    min_lr_ratio: float = 0.0,
    step_size: int = 1000,
    gamma: float = 0.5,
    warmup_steps: int = 0,
) -> float:
    """Multiplier of the base learning rate at ``step`` (``progress`` in [0, 1] of the run).

    ``"cosine"``: ``min + (1 - min) (1 + cos(pi progress)) / 2``; ``"step"``:
    ``gamma ** (step // step_size)``; ``"constant"``: 1. A linear warm-up over
    ``warmup_steps`` multiplies any of them.

    Example:
        >>> lr_factor(0.0, 0), lr_factor(1.0, 100), lr_factor(0.5, 50, schedule="constant")
        (1.0, 0.0, 1.0)
        >>> lr_factor(0.0, 2500, schedule="step", step_size=1000)
        0.25
    """
    if schedule == "cosine":
        p = min(max(progress, 0.0), 1.0)
        factor = min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif schedule == "step":
        factor = gamma ** (step // max(1, step_size))
    elif schedule == "constant":
        factor = 1.0
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}; use 'cosine', 'step' or 'constant'")
    if warmup_steps > 0 and step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def _as_tensor(x: Any, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype)
    array = np.asarray(x)
    if not array.flags.writeable:  # e.g. memory-mapped pixels: torch would share them
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


def _image_levels(data: Any) -> int | None:
    """Quantisation levels of image data (uint8 ``train`` pixels, e.g. ``ImageData``), else
    ``None``."""
    train = getattr(data, "train", None)
    if getattr(train, "dtype", None) in (np.uint8, torch.uint8):
        return int(getattr(data, "levels", 256))
    return None


def _flow_dtype_device(flow: nn.Module) -> tuple[torch.dtype, torch.device]:
    for p in flow.parameters():
        return p.dtype, p.device
    for b in flow.buffers():
        if b.is_floating_point():
            return b.dtype, b.device
    return torch.float32, torch.device("cpu")


# --------------------------------------------------------------------------- batch norm


def _batchnorm_layers(flow: nn.Module) -> list[nn.Module]:
    return [
        m
        for m in flow.modules()
        if isinstance(m, Transform) and hasattr(m, "running_mean") and hasattr(m, "running_var")
    ]


class _Stop(Exception):
    pass


@torch.no_grad()
def refresh_batchnorm(
    flow: Flow,
    data: Any,
    *,
    max_rows: int | None = 20000,
    batch_size: int = 4096,
    seed: int = 0,
) -> int:
    """Set every batch-norm layer's running statistics to the exact statistics of the data.

    During training the running averages are exponential moving averages of batch
    statistics of *changing* weights. Before evaluation (as in the MAF code) we replace them
    by the statistics of the training set under the final weights. Layers are processed in
    the normalizing order (x → z), one pass per layer over at most ``max_rows`` training
    rows (a seeded random subset) in batches of ``batch_size`` (memory bounded): the layer's
    inputs are computed with every earlier layer already refreshed, in eval mode, and their
    mean and (biased) variance accumulated exactly in float64 — the statistics are those of
    the whole subset, not an average of batch statistics. Layers are recognised as
    transforms with ``running_mean`` and ``running_var`` buffers.

    Args:
        flow: the flow (its train/eval mode is preserved).
        data: a ``TabularData`` (its ``train`` split is used), an array or a tensor ``[N, D]``.
        max_rows: cap on the number of rows used (``None``: all).
        batch_size: rows per forward pass.
        seed: seed of the subset.

    Returns:
        the number of layers refreshed.

    Example:
        >>> import torch, invertible
        >>> flow = invertible.RealNVP(2, num_layers=2, hidden_features=(8,))
        >>> x = torch.randn(500, 2) * 3 + 1
        >>> refresh_batchnorm(flow, x)
        1
        >>> bn = [m for m in flow.modules() if hasattr(m, "running_mean")][0]
        >>> z = flow.transform.transforms[2].inverse(x)[0]  # what the BN layer sees
        >>> torch.allclose(bn.running_mean, z.mean(0), atol=1e-4)
        True
    """
    layers = _batchnorm_layers(flow)
    if not layers:
        return 0
    x = getattr(data, "train", data)
    dtype, device = _flow_dtype_device(flow)
    n = len(x)
    if max_rows is not None and n > max_rows:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(n, generator=gen)[:max_rows].sort().values.numpy()
        x = x[idx]
    x = _as_tensor(x, "cpu", dtype)
    was_training = flow.training
    flow.eval()
    done: set[int] = set()
    try:
        for _ in range(len(layers)):
            state: dict[str, Any] = {"target": None, "n": 0, "mean": None, "m2": None}
            originals = {}

            def make_hook(
                layer: nn.Module, original: Callable[..., Any], state: dict[str, Any]
            ) -> Callable[..., Any]:
                def hook(inp: Tensor, context: Tensor | None = None) -> Any:
                    if state["target"] is None:
                        state["target"] = layer
                    if layer is not state["target"]:
                        return original(inp, context)
                    dims = [0, *range(2, inp.dim())]
                    vals = inp.double()
                    count = inp.numel() // inp.shape[1]
                    mean = vals.mean(dim=dims)
                    m2 = ((vals - vals.mean(dim=dims, keepdim=True)) ** 2).sum(dim=dims)
                    if state["mean"] is None:
                        state.update(n=count, mean=mean, m2=m2)
                    else:  # Chan et al.'s parallel update of mean and sum of squares
                        n_a, total = state["n"], state["n"] + count
                        delta = mean - state["mean"]
                        state["mean"] = state["mean"] + delta * count / total
                        state["m2"] = state["m2"] + m2 + delta**2 * n_a * count / total
                        state["n"] = total
                    raise _Stop

                return hook

            for layer in layers:
                if id(layer) not in done:
                    originals[id(layer)] = layer.inverse
                    layer.inverse = make_hook(layer, layer.inverse, state)  # type: ignore[method-assign]
            try:
                for start in range(0, x.shape[0], batch_size):
                    with contextlib.suppress(_Stop):
                        flow.log_prob(x[start : start + batch_size].to(device))
            finally:
                for layer in layers:
                    if id(layer) in originals:
                        del layer.inverse  # back to the class method
            target = state["target"]
            if target is None:  # remaining layers are not on the density path
                break
            target.running_mean.copy_(state["mean"].to(target.running_mean))
            target.running_var.copy_((state["m2"] / state["n"]).to(target.running_var))
            done.add(id(target))
    finally:
        flow.train(was_training)
    return len(done)


# --------------------------------------------------------------------------- state I/O


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def _load_rng_state(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].cpu())
    if torch.cuda.is_available():
        cuda = [
            tensors[f"rng.cuda.{i}"].cpu()
            for i in range(torch.cuda.device_count())
            if f"rng.cuda.{i}" in tensors
        ]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if "rng.numpy" in tensors and "numpy" in meta:
        name, pos, has_gauss, cached = meta["numpy"]
        arr = tensors["rng.numpy"].cpu().numpy().astype(np.uint32)
        np.random.set_state((name, arr, int(pos), int(has_gauss), float(cached)))
    if "python" in meta:
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------- torch.compile


def _distributed_active() -> bool:
    """Whether an initialised ``torch.distributed`` group has more than one process."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _is_compile_error(error: BaseException) -> bool:
    """Whether ``error`` comes from the compiler stack (dynamo, inductor, the C++ toolchain)
    rather than from the model or its input."""
    module = type(error).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor", "torch._functorch")):
        return True
    return isinstance(error, (OSError, ImportError)) or "compil" in str(error).lower()


def _compile(fn: Callable[..., Any], what: str, **options: Any) -> Callable[..., Any]:
    """``torch.compile(fn, **options)`` that falls back to ``fn`` (warning once) when the
    compiler is unavailable or fails, e.g. without a working C++ toolchain on CPU."""
    try:
        compiled = torch.compile(fn, **options)
    except Exception as e:  # any failure to set up compilation
        warnings.warn(f"torch.compile of {what} unavailable ({e}); running eagerly", stacklevel=3)
        return fn
    state = {"compiled": True}

    def call(*args: Any, **kwargs: Any) -> Any:
        if state["compiled"]:
            try:
                return compiled(*args, **kwargs)
            except Exception as e:
                if not _is_compile_error(e):
                    raise
                state["compiled"] = False
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                warnings.warn(
                    f"torch.compile of {what} failed ({type(e).__name__}: {first}); "
                    "falling back to eager execution",
                    stacklevel=2,
                )
        return fn(*args, **kwargs)

    call.eager = fn  # type: ignore[attr-defined]
    call.is_compiled = lambda: state["compiled"]  # type: ignore[attr-defined]
    return call


class CompiledModule(nn.Module):
    """``module`` (a flow or its DDP wrapper) whose calls run through ``torch.compile``.

    Input validation is switched off inside (the trainer validated the data once), so the
    graph has no data-dependent breaks. Used by the trainer with ``compile=True``.
    """

    def __init__(self, module: nn.Module, **options: Any) -> None:
        super().__init__()
        self.module = module
        self._fn = _compile(self.module.__call__, f"{type(module).__name__} (training)", **options)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from invertible.core import validation

        with validation(False):
            return self._fn(*args, **kwargs)


class CompiledFlow(nn.Module):
    """A view of ``flow`` whose density and sampling passes are compiled (see
    :func:`compile_flow`); the flow itself is untouched and shares the weights.

    ``log_prob`` validates its input once, then runs the compiled x → z pass;
    ``sample`` draws the base noise eagerly (the same random numbers as ``flow.sample``)
    and runs the compiled z → x pass, ``chunk_size`` rows at a time if given.
    """

    def __init__(self, flow: Flow, **options: Any) -> None:
        super().__init__()
        self.flow = flow
        name = type(flow).__name__
        self._density = _compile(self._density_eager, f"{name}.log_prob", **options)
        self._generate = _compile(self._generate_eager, f"{name}.sample", **options)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self.flow.event_shape

    def _density_eager(self, x: Tensor, context: Tensor | None) -> Tensor:
        z, ladj = self.flow.transform.inverse(x, context)
        return self.flow.base.log_prob(z, context) + ladj

    def _generate_eager(self, z: Tensor, context: Tensor | None) -> Tensor:
        return self.flow.transform(z, context)[0]

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Same as ``flow.log_prob``, compiled."""
        from invertible.core import validation

        self.flow._check_x(x)
        context = self.flow._check_context(context, x.shape[0])
        with validation(False):
            return self._density(x, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.log_prob(x, context)

    @torch.no_grad()
    def log_prob_chunked(
        self, x: Tensor, context: Tensor | None = None, *, chunk_size: int = 4096
    ) -> Tensor:
        """``log_prob`` without gradients, ``chunk_size`` rows at a time (bounded memory)."""
        self.flow._check_x(x)
        context = self.flow._check_context(context, x.shape[0])
        out = [
            self._density(
                x[i : i + chunk_size], None if context is None else context[i : i + chunk_size]
            )
            for i in range(0, x.shape[0], chunk_size)
        ]
        return torch.cat(out) if out else x.new_zeros(0)

    @torch.no_grad()
    def sample(
        self, n: int, context: Tensor | None = None, *, chunk_size: int | None = None
    ) -> Tensor:
        """Same as ``flow.sample`` (same random numbers), compiled z → x pass."""
        self.flow._check_n(n)
        context = self.flow._check_context(context, n)
        step = n if chunk_size is None else max(1, chunk_size)
        out = []
        for start in range(0, max(n, 1), step):
            stop = min(start + step, n)
            ctx = None if context is None else context[start:stop]
            out.append(self._generate(self.flow.base.rsample(stop - start, ctx), ctx))
        return torch.cat(out) if len(out) > 1 else out[0]


def compile_flow(flow: Flow, **options: Any) -> CompiledFlow:
    """Compile ``flow``'s ``log_prob`` and ``sample`` with ``torch.compile(**options)``.

    Returns a :class:`CompiledFlow` sharing the flow's weights. If compilation is not
    available (e.g. no C++ compiler for the CPU backend) or fails, it warns once and runs
    eagerly, giving the same numbers. The first call of each pass compiles (slow); later
    calls with new shapes may recompile once with dynamic shapes.

    Example:
        >>> import torch, invertible
        >>> from invertible.training import compile_flow
        >>> flow = invertible.RealNVP(2, num_layers=2, hidden_features=(8,)).eval()
        >>> fast = compile_flow(flow, backend="eager")
        >>> x = torch.randn(5, 2)
        >>> torch.allclose(fast.log_prob(x), flow.log_prob(x))
        True
    """
    return CompiledFlow(flow, **options)


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Options of :class:`Trainer` (see :func:`fit` for their meaning)."""

    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    step_size: int = 1000
    gamma: float = 0.5
    warmup_steps: int = 0
    grad_clip: float | None = 5.0
    patience: int | None = 10
    eval_every: int | None = None
    eval_batch_size: int = 4096
    val_max_rows: int | None = None
    seed: int = 0
    max_time: float | None = None
    max_bad_steps: int = 10
    refresh_bn_rows: int | None = 20000
    val_refresh_bn_rows: int | None = 4096
    checkpoint_every: int = 1
    compile: bool | str = False  # True: torch.compile's default backend; a str: that backend

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 evaluations (or None), got {self.patience}")
        lr_factor(0.0, 0, schedule=self.schedule)  # validates the name


@dataclass
class TrainResult:
    """What :func:`fit` returns.

    Attributes:
        history: one record per evaluation (and per event such as an lr halving).
        best_val_log_prob: best mean validation log-likelihood seen during training (nats).
        best_step: the step it was reached at (its weights are the ones returned).
        final_val_log_prob: validation log-likelihood of the returned flow, after
            :func:`refresh_batchnorm` (``None`` without validation data).
        train_time: seconds spent in the loop (summed over resumed runs).
        steps: optimisation steps taken in total.
        stopped: ``"steps"``, ``"early_stopping"``, ``"max_time"`` or ``"paused"``.
        skipped_steps: steps skipped for a non-finite loss or gradient.
        lr_halvings: times the last good state was restored and the lr halved.
        samples_per_s: mean training throughput.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_log_prob: float | None = None
    best_step: int = 0
    final_val_log_prob: float | None = None
    train_time: float = 0.0
    steps: int = 0
    stopped: str = "steps"
    skipped_steps: int = 0
    lr_halvings: int = 0
    samples_per_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MetricsLogger:
    """Appends metric records to ``metrics.jsonl`` and ``metrics.csv`` (and TensorBoard)."""

    def __init__(self, out_dir: Path, history: list[dict[str, Any]] | None = None) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = out_dir / METRICS_JSONL
        self.csv = out_dir / METRICS_CSV
        # (re)write from the history, so a resumed run has exactly one record per step
        with open(self.jsonl, "w") as fh:
            for rec in history or []:
                fh.write(json.dumps(rec) + "\n")
        with open(self.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for rec in history or []:
                writer.writerow(rec)
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def write(self, record: Mapping[str, Any]) -> None:
        with open(self.jsonl, "a") as fh:
            fh.write(json.dumps(dict(record)) + "\n")
        with open(self.csv, "a", newline="") as fh:
            csv.DictWriter(fh, CSV_COLUMNS, extrasaction="ignore").writerow(dict(record))
        if self.tb is not None:
            for key in ("train_loss", "val_log_prob", "lr", "samples_per_s"):
                value = record.get(key)
                if isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record.get("step", 0))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


# --------------------------------------------------------------------------- the trainer


def adam(
    params: Iterable[Tensor], *, lr: float = 1e-3, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` with fused kernels where torch has them, else ``foreach``.

    The fused implementation updates every parameter in one kernel per tensor instead of a
    chain of elementwise passes; on CPU it exists from torch 2.4 and was measured 4x faster
    than ``foreach`` on a 7.3M-parameter MAF (see ``benchmarks/README.md``). Both give the
    same update up to float rounding. Older torch versions fall back to ``foreach``.

    Example:
        >>> optimizer = adam(torch.nn.Linear(3, 2).parameters(), lr=1e-3)
        >>> optimizer.defaults["lr"]
        0.001
    """
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device/dtype
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


class Trainer:
    """The training loop of :func:`fit`, split into overridable pieces (see module docs).

    Args:
        flow: the flow to train (modified in place).
        data: an object with ``train`` and (optionally) ``val`` arrays ``[N, D]``
            (a ``TabularData``), or an ``ImageData`` (uint8 pixels ``[N, C, H, W]`` and
            ``levels``): images are dequantized with fresh noise per batch
            (:meth:`prepare_batch`), evaluated with fixed noise, and logged in bits/dim too.
        config: a :class:`TrainConfig`.
        out_dir: where metrics, the resumable state and the final model go (``None``:
            nothing is written).
        progress: show a tqdm progress bar.
        device: where to train (default: where the flow's parameters are).
        data_meta: the ``"data"`` entry of saved checkpoints (default: from ``data``).
        callbacks: functions called with each logged record (main process only).
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
    ) -> None:
        self.config = config or TrainConfig()
        self.flow = flow
        dtype, flow_device = _flow_dtype_device(flow)
        self.device = torch.device(device) if device is not None else flow_device
        self.flow.to(self.device)
        self.model: nn.Module = flow  # a distributed subclass replaces this by its wrapper
        self.dtype = dtype
        self.data = data
        #: quantisation levels of image data (``ImageData``: uint8 pixels, dequantized per
        #: batch by :meth:`prepare_batch`); ``None`` for real-valued data.
        self.levels: int | None = _image_levels(data)
        store = torch.uint8 if self.levels is not None else dtype
        self.train_x = _as_tensor(data.train, self.device, store)
        val = getattr(data, "val", None)
        if val is not None and len(val) > 0:
            if self.config.val_max_rows is not None:
                val = val[: self.config.val_max_rows]
            self.val_x: Tensor | None = _as_tensor(val, self.device, store)
        else:
            self.val_x = None
        self._check_data()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.callbacks = list(callbacks or [])
        if data_meta is None:
            try:
                data_meta = data_metadata(data)
            except (AttributeError, TypeError):
                data_meta = None
        self.data_meta = data_meta
        self.optimizer = self.make_optimizer()
        cfg = self.config
        n = self.train_x.shape[0]
        self.batches_per_epoch = max(1, n // cfg.batch_size) if n >= cfg.batch_size else 1
        if cfg.steps is not None:
            self.total_steps = int(cfg.steps)
        elif cfg.epochs is not None:
            self.total_steps = max(1, math.ceil(cfg.epochs * self.batches_per_epoch))
        else:
            self.total_steps = 2000
        self.eval_every = cfg.eval_every or int(min(1000, max(50, self.batches_per_epoch)))
        # loop state (everything resume needs, besides weights and optimizer)
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
        self._good_state: tuple[dict, dict] | None = None
        self._perm_epoch = -1
        self._perm: Tensor | None = None
        self._logger: MetricsLogger | None = None

    # -- hooks a distributed subclass overrides ------------------------------------------
    @property
    def is_main(self) -> bool:
        """Whether this process logs, shows progress and writes files (rank 0)."""
        return True

    def reduce_mean(self, value: float, count: int = 1) -> float:
        """Average a scalar over processes (identity here; all-reduce under DDP)."""
        return value

    def shared_elapsed(self, elapsed: float) -> float:
        """Training time all processes agree on (identity here; rank 0's clock under DDP)."""
        return elapsed

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
            if tuple(x.shape[1:]) != tuple(event):
                raise ValueError(
                    f"{name} data has shape {list(x.shape)} but the flow models events of shape "
                    f"{list(event)}; build the model with features={x.shape[1]}"
                )
            finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
            if not bool(finite.all()):
                bad = (~finite).nonzero().flatten()
                raise ValueError(
                    f"{name} data: {len(bad)} row(s) contain NaN or inf (first: row "
                    f"{int(bad[0])}); remove or impute them before training"
                )

    def batch_indices(self, step: int) -> Tensor:
        """Row indices of the mini-batch of ``step``: a pure function of (seed, step)."""
        n = self.train_x.shape[0]
        bs = self.config.batch_size
        if n <= bs:
            return torch.arange(n)
        epoch, pos = divmod(step, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
            self._perm = torch.randperm(n, generator=gen)
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm[pos * bs : (pos + 1) * bs]

    def sample_batch(self, step: int) -> Tensor:
        """The mini-batch of ``step`` on the training device."""
        rows = self.train_x[self.batch_indices(step).to(self.train_x.device)]
        return self.prepare_batch(rows, step)

    def prepare_batch(self, rows: Tensor, step: int) -> Tensor:
        """Model input from stored rows: identity for real-valued data; for images, uniform
        dequantization x = (pixels + u) / levels with noise drawn from a generator seeded by
        ``(seed, step)`` (fresh noise every step, and exact on resume). A sharding subclass
        calls this on its shard of the rows of ``step``."""
        if self.levels is None:
            return rows
        cfg_seed = self.config.seed
        return dequantize_step(rows, self.levels, seed=cfg_seed, step=step, dtype=self.dtype)

    def bits_per_dim(self, log_prob: float) -> float:
        """Bits/dim of image data from a mean log-density in nats (D = C·H·W), using the
        convention of :func:`invertible.transforms.preprocessing.bits_per_dim`."""
        from invertible.transforms.preprocessing import bits_per_dim

        assert self.levels is not None, "bits/dim is defined for image data only"
        return float(bits_per_dim(log_prob, math.prod(self.flow.event_shape), self.levels))

    def _refresh_for_validation(self) -> None:
        """Give batch-norm layers the statistics of a fixed training subset before a
        validation pass. The running averages trail the weights they normalise for (they
        average batches of earlier steps). On BSDS300 (``python -m benchmarks paper``: batch
        100, lr 1e-3) they put validation 15 nats or more below the refreshed figure of the
        same weights, and early stopping stopped MAF(5), MAF MoG(5) and RealNVP(10) after
        250-500 of 6000 steps (test 141.2, 137.5, 137.1 nats); validating with refreshed
        statistics they ran all 6000 steps (150.4, 151.3, 149.5). Training-mode steps use
        batch statistics and are unaffected."""
        rows = self.config.val_refresh_bn_rows
        if not rows or self.val_x is None or not _batchnorm_layers(self.flow):
            return
        refresh_batchnorm(self.flow, self._refresh_rows(), max_rows=rows, seed=self.config.seed)

    def _refresh_rows(self) -> Tensor:
        """The training rows for :func:`refresh_batchnorm`: for images, a seeded subset of
        at most ``refresh_bn_rows`` images, dequantized with fixed noise."""
        if self.levels is None:
            return self.train_x
        rows = self.train_x
        cap = self.config.refresh_bn_rows
        if cap is not None and rows.shape[0] > cap:
            gen = torch.Generator().manual_seed(self.config.seed)
            idx = torch.randperm(rows.shape[0], generator=gen)[:cap].sort().values
            rows = rows[idx.to(rows.device)]
        return dequantize_eval(rows, self.levels, dtype=self.dtype)

    def current_lr(self, elapsed: float | None = None) -> float:
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
        """One Adam step on ``batch``; returns the loss, or ``None`` if it was skipped."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss = -self.model(batch).mean()
        if not bool(torch.isfinite(loss)):
            return None
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.config.grad_clip if self.config.grad_clip else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not bool(torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        return float(loss.detach())

    @torch.no_grad()
    def evaluate(self, x: Tensor | None = None) -> float | None:
        """Mean log-likelihood (nats) of ``x`` (default: the validation split), eval mode."""
        x = self.val_x if x is None else x
        if x is None:
            return None
        was_training = self.flow.training
        self.flow.eval()
        total, count = 0.0, 0
        try:
            for start in range(0, x.shape[0], self.config.eval_batch_size):
                chunk = x[start : start + self.config.eval_batch_size]
                if self.levels is not None:  # images: fixed noise, reproducible numbers
                    chunk = dequantize_eval(chunk, self.levels, start=start, dtype=self.dtype)
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
        }

    def save_state(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write a resumable checkpoint (weights + optimizer + RNG + loop state)."""
        if not self.is_main:
            return
        path = Path(path) if path is not None else self._training_dir()
        if path is None:
            return
        opt_tensors, opt_meta = self._optimizer_state()
        rng_tensors, rng_meta = _rng_state()
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

    def _optimizer_state(self) -> tuple[dict[str, Tensor], dict]:
        return _optimizer_state(self.optimizer)

    def load_state(self, path: str | os.PathLike[str]) -> None:
        """Restore everything :meth:`save_state` wrote (weights must match the flow)."""
        from invertible.checkpoint import _check_tensors, load_training_state

        path = Path(path)
        meta = read_metadata(path)
        if meta["model"] != type(self.flow).__name__ or meta["config"] != self.flow.config:
            raise ValueError(
                f"cannot resume from {path}: it holds a {meta['model']} with config "
                f"{meta['config']}, not this {type(self.flow).__name__}; use the same model "
                "options or another output directory"
            )
        weights = load_tensors(path / "model.safetensors", self.device)
        _check_tensors(self.flow, weights, path)
        self.flow.load_state_dict(weights)
        tensors, state = load_training_state(path, "cpu")
        _load_optimizer_state(self.optimizer, tensors, state["optimizer"])
        _load_rng_state(tensors, state["rng"])
        best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best.")}
        self.best_state = best or None
        loop = state["loop"]
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

    def run(self, *, resume: bool = False, until: int | None = None) -> TrainResult:
        """Train; ``resume`` continues from ``out_dir/training``; ``until`` pauses at a step
        (saving a resumable state) without finishing the run."""
        from tqdm.auto import tqdm

        cfg = self.config
        seed_everything(cfg.seed)
        if resume:
            path = self._training_dir()
            if path is None:
                raise ValueError("resume=True needs out_dir (where the training state is)")
            if (path / "config.json").is_file():
                self.load_state(path)
        if self.out_dir is not None and self.is_main:
            self._logger = MetricsLogger(self.out_dir, self.history)
        if self._good_state is None:
            self._good_state = self._snapshot()
        if cfg.compile and not isinstance(self.model, CompiledModule):
            backend = {} if cfg.compile is True else {"backend": cfg.compile}
            self.model = CompiledModule(self.model, **backend)  # eager fallback, with a warning
        self.flow.train()
        stopped = "steps"
        stop_at = self.total_steps if until is None else min(until, self.total_steps)
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not (self.progress and self.is_main),
            dynamic_ncols=True,
            leave=False,
            desc=type(self.flow).__name__,
        )
        start = time.perf_counter() - self.train_time
        interval_start, interval_samples = time.perf_counter(), 0
        last_eval_step = self.history[-1]["step"] if self.history else -1
        try:
            while self.step < stop_at:
                elapsed = self.shared_elapsed(time.perf_counter() - start)
                if cfg.max_time is not None and elapsed >= cfg.max_time:
                    stopped = "max_time"
                    break
                batch = self.sample_batch(self.step)
                loss = self.train_step(batch, self.current_lr(elapsed))
                self.step += 1
                bar.update(1)
                if loss is None:
                    self._handle_bad_step(elapsed)
                else:
                    self.consecutive_bad = 0
                    self.loss_sum += loss
                    self.loss_count += 1
                    interval_samples += batch.shape[0]
                if self.step % self.eval_every == 0 or self.step == self.total_steps:
                    now = time.perf_counter()
                    self.train_time = now - start
                    stop = self._evaluate_and_log(
                        now - start, (now - interval_start, interval_samples)
                    )
                    last_eval_step = self.step
                    interval_start, interval_samples = time.perf_counter(), 0
                    bar.set_postfix(
                        loss=f"{self.history[-1].get('train_loss') or float('nan'):.3f}",
                        val=f"{self.best_value:.3f}",
                        sps=f"{self.history[-1].get('samples_per_s') or 0:.0f}",
                    )
                    if stop:
                        stopped = "early_stopping"
                        break
        except KeyboardInterrupt:
            self.train_time = time.perf_counter() - start
            if self.out_dir is not None:
                self.save_state()
            raise
        finally:
            bar.close()
        self.train_time = time.perf_counter() - start
        if until is not None and self.step >= until and self.step < self.total_steps:
            if self.out_dir is not None:
                self.save_state()
            return self._result("paused", None)
        if self.step > 0 and last_eval_step != self.step:
            now = time.perf_counter()
            self._evaluate_and_log(now - start, (now - interval_start, interval_samples))
        return self.finish(stopped)

    def finish(self, stopped: str) -> TrainResult:
        """Restore the best weights, refresh batch norm, save the final model."""
        if self.best_state is not None:
            self.flow.load_state_dict(self.best_state)
        refresh_batchnorm(self.flow, self._refresh_rows(), max_rows=self.config.refresh_bn_rows)
        self.flow.eval()
        final = self.evaluate()
        if self._logger is not None:
            self._logger.close()
        result = self._result(stopped, final)
        if self.out_dir is not None and self.is_main:
            save(
                self.flow,
                self.out_dir / MODEL_DIR,
                data=self.data_meta,
                extra={"training": {k: v for k, v in result.to_dict().items() if k != "history"}},
            )
        return result

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
        )


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
    **options: Any,
) -> TrainResult:
    """Fit ``flow`` to ``data`` by maximum likelihood; returns a :class:`TrainResult`.

    The flow ends in eval mode holding the best weights (by validation log-likelihood),
    with batch-norm statistics refreshed from the training data.

    Args:
        flow: the flow (trained in place).
        data: ``TabularData`` (or anything with ``train``/``val`` arrays ``[N, D]``).
        out_dir: write ``metrics.jsonl``/``metrics.csv``, a resumable ``training/``
            checkpoint and the final ``model/`` checkpoint there.
        progress: tqdm progress bar with loss and samples/s.
        resume: continue from ``out_dir/training`` (same options; the schedule, batches and
            RNG streams continue exactly).
        device: training device (default: the flow's).
        steps, epochs: length of the run (default 2000 steps); an epoch is
            ``N_train // batch_size`` steps.
        batch_size: mini-batch size.
        lr: Adam's base learning rate; ``weight_decay``: its L2 penalty.
        schedule: ``"cosine"`` (default, to ``lr * min_lr_ratio``), ``"step"`` (``gamma``
            every ``step_size`` steps) or ``"constant"``.
        grad_clip: max gradient norm (``None``: off).
        patience: evaluations without improvement before stopping (``None``: off).
        eval_every: steps between evaluations (default: one epoch, within [50, 1000]).
        seed: seeds python, numpy, torch and the batch order.
        max_time: training time cap in seconds (evaluations included).
        **options: further :class:`TrainConfig` fields: ``min_lr_ratio``, ``step_size``,
            ``gamma``, ``warmup_steps``, ``max_bad_steps=10``, ``val_max_rows``,
            ``eval_batch_size``, ``refresh_bn_rows=20000`` (rows for the final batch-norm
            statistics), ``val_refresh_bn_rows=4096`` (rows for the batch-norm statistics
            set before each validation pass; ``None``: validate with the running
            averages), ``checkpoint_every``,
            ``compile=False`` (``torch.compile`` the training forward/backward, see
            :func:`compile_flow`; falls back to eager with a warning if compiling fails).

    Under ``torchrun`` (an initialised ``torch.distributed`` process group with more than
    one process) training is data-parallel: see :mod:`invertible.distributed`.
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
        **options,
    )
    trainer_cls: type[Trainer] = Trainer
    if _distributed_active():  # launched by torchrun: DDP over the process group
        from invertible.distributed import DistributedTrainer

        trainer_cls = DistributedTrainer
    trainer = trainer_cls(
        flow,
        data,
        config,
        out_dir=out_dir,
        progress=progress,
        device=device,
        data_meta=data_meta,
        callbacks=callbacks,
    )
    return trainer.run(resume=resume)
