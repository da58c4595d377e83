"""What the training loop minimises: a loss object called on each batch.

An objective is any object with ``__call__(model, batch, step) -> (loss, parts)``, where
``loss`` is the scalar tensor to minimise and ``parts`` a dict of scalar tensors recorded
with the step (the distillation losses report their KL, cross-entropy and entropy there),
and an attribute ``refresh_batchnorm``: whether the loop should set batch-norm statistics
from the training data at the end (true when the batches are data the flow models).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MaximumLikelihood"]


class MaximumLikelihood:
    """The mean negative log-likelihood ``-model(batch).mean()`` (``Flow.__call__`` returns
    log-densities), the objective of :func:`invertible.fit`.
    """

    refresh_batchnorm = True

    def __call__(self, model: nn.Module, batch: Tensor, step: int) -> tuple[Tensor, dict]:
        """The loss of one batch, and no extra parts."""
        return -model(batch).mean(), {}
