"""The options of a training run and what it returns."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from invertible.training.precision import check_precision
from invertible.training.schedule import lr_factor

__all__ = ["TrainConfig", "TrainResult", "TrainingWarning"]


class TrainingWarning(UserWarning):
    """A run finished, but it skipped steps, halved its learning rate or its loss exploded."""


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
    seed: int | None = 0  # None: leave the global RNGs as they are
    max_time: float | None = None
    max_bad_steps: int = 10
    refresh_bn_rows: int | None = 20000
    val_refresh_bn_rows: int | None = 4096
    checkpoint_every: int = 1
    compile: bool | str = False  # True: torch.compile's default backend; a str: that backend
    precision: str = "auto"  # "bf16" / "fp16": autocast of each step's forward pass and loss

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
        check_precision(self.precision)  # the device is checked where it is known: Trainer
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Refuse values that would train silently wrong (a negative clip ascends)."""
        if self.grad_clip is not None and not self.grad_clip >= 0:
            raise ValueError(
                f"grad_clip must be a positive gradient norm (0 or None: no clipping), got "
                f"{self.grad_clip}"
            )
        positive = {
            "eval_every": self.eval_every,
            "max_time": self.max_time,
            "val_max_rows": self.val_max_rows,
        }
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 (or None), got {value}")
        at_least_one = {
            "eval_batch_size": self.eval_batch_size,
            "checkpoint_every": self.checkpoint_every,
            "max_bad_steps": self.max_bad_steps,
        }
        for name, value in at_least_one.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")


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
        warnings: what went wrong without stopping the run (skipped steps, learning-rate
            halvings, an exploding loss), one sentence each; also issued as
            :class:`TrainingWarning`.
        precision: the precision the training steps ran in (``"fp32"``, ``"bf16"``,
            ``"fp16"``; ``"auto"`` resolved); validation always ran in float32.
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
    warnings: list[str] = field(default_factory=list)
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """The result as a JSON-serialisable dict."""
        return asdict(self)
