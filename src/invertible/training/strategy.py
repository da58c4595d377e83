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

__all__ = ["SingleProcess"]


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

        A step whose loss or gradient norm is not finite changes nothing. The step's
        numbers (loss, gradient norm before clipping, the objective's parts) are left in
        ``trainer.last_step``.
        """
        optimizer = trainer.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss, parts = trainer.objective(trainer.model, batch, trainer.step)
        if not bool(torch.isfinite(loss)):
            return None
        loss.backward()
        params = [p for g in optimizer.param_groups for p in g["params"]]
        clip = trainer.config.grad_clip if trainer.config.grad_clip else math.inf
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if not bool(torch.isfinite(norm)):
            optimizer.zero_grad(set_to_none=True)
            return None
        optimizer.step()
        value = float(loss.detach())
        trainer.last_step = {
            "loss": value,
            "grad_norm": float(norm),
            **{k: float(v.detach()) for k, v in parts.items()},
        }
        return value
