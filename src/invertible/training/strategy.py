"""How the training loop runs across processes: the single-process strategy.

The loop (:class:`~invertible.training.loop.Trainer`) asks its strategy to wrap the model,
to shard a global batch, to take an optimisation step, to average scalars over processes
and to agree on the clock; :class:`SingleProcess` does all of that for one process. The
data-parallel strategy (:class:`~invertible.training.ddp.DDPStrategy`) implements the same
methods; the loop never imports it (:func:`~invertible.training.fit` picks one).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # annotations only: the loop imports this module, not the reverse
    from invertible.training.loop import Trainer

__all__ = ["SingleProcess", "apply_update", "clip_gradients", "note_overflow"]


class SingleProcess:
    """One process: no sharding, no collectives, this process writes every file."""

    is_main = True

    def setup(self, trainer: Trainer) -> None:
        """Prepare ``trainer.model`` (nothing to do for one process)."""

    def shard(self, x: Tensor) -> Tensor:
        """This process's rows of a global batch: all of them."""
        return x

    def reduce_mean(self, value: float, count: int = 1) -> float:
        """Average a scalar over processes: the value itself."""
        return value

    def shared_elapsed(self, elapsed: float) -> float:
        """Training time all processes agree on: this one's."""
        return elapsed

    def train_step(self, trainer: Trainer, batch: Tensor, lr: float) -> float | None:
        """One optimiser step of ``trainer.objective`` on ``batch``; ``None`` if skipped.

        The forward pass and the loss run under ``trainer.autocast()`` (the ``precision``
        option), backward and the step outside it; under fp16 the loss is scaled by
        ``trainer.scaler`` and the gradients unscaled before clipping. A step whose loss or
        gradient norm is not finite changes nothing (under fp16 the scaler then lowers its
        scale). The step's numbers (loss, gradient norm before clipping, the objective's
        parts) are left in ``trainer.last_step``.
        """
        optimizer, scaler = trainer.optimizer, trainer.scaler
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        with trainer.autocast():
            loss, parts = trainer.objective(trainer.model, batch, trainer.step)
        if not bool(torch.isfinite(loss)):
            return None
        (loss if scaler is None else scaler.scale(loss)).backward()
        norm = clip_gradients(trainer, optimizer)
        if not apply_update(trainer, optimizer, scaler, norm):
            return None
        value = float(loss.detach())
        trainer.last_step = {
            "loss": value,
            "grad_norm": float(norm),
            **{k: float(v.detach()) for k, v in parts.items()},
        }
        return value


def apply_update(
    trainer: Trainer,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    norm: Tensor,
) -> bool:
    """Take the optimizer step (through ``scaler`` when there is one) if the clipped
    gradient norm is finite; otherwise drop the gradients, record the overflow
    (:func:`note_overflow`) and return False.
    """
    if not bool(torch.isfinite(norm)):
        optimizer.zero_grad(set_to_none=True)
        note_overflow(trainer)
        return False
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    return True


def note_overflow(trainer: Trainer) -> None:
    """After a step skipped for a non-finite gradient: under a loss scaler, lower its scale
    and, while the scale is still at least 1 (the overflow is the scale's, not the model's),
    mark the step in ``trainer.last_step`` as a scaler overflow, which the loop does not
    count towards halving the learning rate.
    """
    scaler = trainer.scaler
    if scaler is None:
        return
    scaler.update()
    if scaler.get_scale() >= 1.0:
        trainer.last_step = {"scaler_overflow": 1.0}


def clip_gradients(trainer: Trainer, optimizer: torch.optim.Optimizer) -> Tensor:
    """Unscale the gradients (under a loss scaler), clip them to ``config.grad_clip`` and
    return their norm before clipping (non-finite if any gradient is).
    """
    if trainer.scaler is not None:
        trainer.scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    clip = trainer.config.grad_clip if trainer.config.grad_clip else math.inf
    return torch.nn.utils.clip_grad_norm_(params, clip)
