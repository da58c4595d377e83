"""Multi-process (data-parallel) training on PyTorch's own engine: ``torchrun`` + DDP.

``invertible train`` (and :func:`invertible.fit`) detect a ``torchrun`` launch from the
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` environment variables; :func:`init_distributed`
then joins the process group (NCCL on CUDA, gloo on CPU) and :class:`DistributedTrainer`
trains with :class:`~torch.nn.parallel.DistributedDataParallel`:

* **data**: ``batch_size`` is the *global* batch. Every process computes the global batch
  of ``step`` exactly as a single process would (a pure function of ``(seed, step)``,
  including any per-batch randomness such as dequantization) and keeps its contiguous
  slice of rows, so rank ``r`` of ``W`` gets rows ``[r N / W, (r + 1) N / W)``. Hence a run
  can be resumed with another number of processes, and 2 processes with global batch 2B
  take the same steps as 1 process with batch 2B;
* **loss**: each process minimises ``-(W / N) * sum(log p(shard))``; DDP averages the
  gradients, so the update is that of the global mean ``-(1/N) sum(log p(batch))`` even
  when ``N`` is not divisible by ``W``;
* **batch norm**: the flow's :class:`~invertible.BatchNorm` layers are switched to
  :class:`SyncBatchNorm`, whose training-mode statistics are those of the global batch
  (one differentiable all-reduce of per-feature sums and sums of squares per layer);
  :class:`~invertible.ActNorm`'s data-dependent initialisation uses the global first batch
  (:class:`SyncActNorm`); ``nn.BatchNorm*d`` inside networks becomes
  :class:`torch.nn.SyncBatchNorm` on CUDA (on CPU, where PyTorch's SyncBatchNorm does not
  run, those keep per-process statistics, with a warning);
* **decisions** that must agree across processes are made on all-reduced values: whether
  a step's loss or gradients are finite, the validation likelihood (each process evaluates
  its slice of the validation set), early stopping, and the ``max_time`` clock (rank 0's);
* **I/O**: only rank 0 logs, shows progress and writes metrics and checkpoints; resuming
  reads ``OUT/training`` on every process (so on several nodes ``OUT`` must be on a shared
  file system).

Launch (see ``docs/distributed.md``)::

    torchrun --standalone --nproc_per_node=4 -m invertible train --model maf --out runs/maf

Example:
    >>> from invertible.distributed import shard_bounds
    >>> [shard_bounds(10, r, 3) for r in range(3)]
    [(0, 3), (3, 6), (6, 10)]
"""

from __future__ import annotations

import datetime
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from invertible.core import Flow
from invertible.training import TrainConfig, Trainer
from invertible.transforms.normalization import ActNorm, BatchNorm, _broadcast, _reduce_dims

__all__ = [
    "DistributedContext",
    "DistributedTrainer",
    "SyncActNorm",
    "SyncBatchNorm",
    "all_reduce_sum",
    "convert_sync_norm",
    "env_world_size",
    "init_distributed",
    "is_distributed",
    "shard_bounds",
]


# --------------------------------------------------------------------------- process group


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in the group (what :func:`init_distributed` returns)."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (set by ``torchrun``), 1 when absent."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_distributed() -> bool:
    """Whether a process group with more than one process is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def init_distributed(
    device: str | torch.device | None = None, *, timeout_s: float = 1800.0
) -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` come from
    ``torchrun``. The backend is NCCL when training on CUDA, gloo otherwise. With
    ``device`` ``None`` or ``"cuda"`` and GPUs present, each process takes GPU
    ``LOCAL_RANK``. Calling it again returns the context of the existing group.

    Args:
        device: ``None`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or
            ``"cuda:K"`` (an explicit index is kept: one GPU per process is the user's job).
        timeout_s: how long collectives wait for the other processes.
    """
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; train in one process")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = env_world_size()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
    else:
        backend = str(dist.get_backend())
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistributedContext(rank, local_rank, world, dev, backend)


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of an ``n``-row global batch that ``rank`` of ``world_size`` takes.

    Contiguous, covering every row exactly once; sizes differ by at most one.
    """
    return n * rank // world_size, n * (rank + 1) // world_size


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is again the sum over processes of the gradients
    (the gradient of ``sum_r f_r(S)`` with respect to each process's contribution to S)."""

    @staticmethod
    def forward(ctx: Any, tensor: Tensor) -> Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Differentiable sum of ``tensor`` over all processes (identity without a group)."""
    if not is_distributed():
        return tensor
    return _AllReduceSum.apply(tensor)


# --------------------------------------------------------------------------- normalization


class SyncBatchNorm(BatchNorm):
    """:class:`~invertible.BatchNorm` whose training statistics are those of the global batch.

    Same parameters, buffers and state-dict keys as ``BatchNorm`` (a checkpoint does not
    know the difference). In training mode under an initialised process group, the mean and
    (biased) variance are computed from per-feature sums of ``x - running_mean`` and of its
    square, all-reduced (differentiably) over the processes, so gradients flow through the
    statistics exactly as in one process holding the whole batch; the shift by the running
    mean (identical on every process) keeps ``E[x^2] - E[x]^2`` accurate in float32.
    Without a group, or in eval mode, it is ``BatchNorm``.
    """

    def _statistics(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if not (self.training and is_distributed()):
            return super()._statistics(x)
        dims = _reduce_dims(x)
        shift = _broadcast(self.running_mean.detach(), x)
        centred = x - shift
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        local = torch.cat([centred.sum(dim=dims), (centred * centred).sum(dim=dims), count])
        total = all_reduce_sum(local)
        k = self.running_mean.numel()
        n = total[-1].detach()
        mean_c = total[:k] / n
        var = (total[k : 2 * k] / n - mean_c * mean_c).clamp_min(0.0)
        mean = mean_c + self.running_mean.detach()
        with torch.no_grad():
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach(), self.momentum)
        return mean, var


class SyncActNorm(ActNorm):
    """:class:`~invertible.ActNorm` whose data-dependent initialisation uses the global batch
    (mean and unbiased standard deviation over all processes' first batches)."""

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        if not is_distributed():
            return super()._initialize(x)
        dims = _reduce_dims(x)
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        xd = x.double()
        local = torch.cat([count, xd.sum(dim=dims)])
        dist.all_reduce(local)
        n, mean = local[0], local[1:] / local[0]
        m2 = ((xd - _broadcast(mean, xd)) ** 2).sum(dim=dims)
        dist.all_reduce(m2)
        std = (m2 / (n - 1).clamp_min(1)).sqrt()
        self.shift.copy_(mean.to(self.shift))
        self.log_scale.copy_(std.clamp_min(1e-6).log().to(self.log_scale))
        self.initialized.fill_(True)
        return None


def convert_sync_norm(flow: nn.Module) -> int:
    """Switch normalization layers of ``flow`` to their synchronised versions, in place.

    ``BatchNorm`` → :class:`SyncBatchNorm`, ``ActNorm`` → :class:`SyncActNorm` (same state
    dicts; they behave as before without a process group). ``nn.BatchNorm{1,2,3}d`` inside
    networks become :class:`torch.nn.SyncBatchNorm` when the flow is on CUDA; on CPU they
    are kept (PyTorch's SyncBatchNorm needs a GPU) with a warning. Returns how many layers
    were converted.
    """
    converted = 0
    for module in flow.modules():
        if type(module) is BatchNorm:
            module.__class__ = SyncBatchNorm
            converted += 1
        elif type(module) is ActNorm:
            module.__class__ = SyncActNorm
            converted += 1
    torch_bn = [m for m in flow.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    torch_bn = [m for m in torch_bn if not isinstance(m, nn.SyncBatchNorm)]
    if torch_bn:
        on_cuda = any(p.is_cuda for p in flow.parameters())
        if on_cuda:
            for _name, child in list(flow.named_modules()):
                for cname, grandchild in list(child.named_children()):
                    if grandchild in torch_bn:
                        setattr(child, cname, nn.SyncBatchNorm.convert_sync_batchnorm(grandchild))
                        converted += 1
        else:
            warnings.warn(
                f"{len(torch_bn)} torch BatchNorm layer(s) inside the networks keep "
                "per-process batch statistics: torch.nn.SyncBatchNorm needs CUDA",
                stacklevel=2,
            )
    return converted


# --------------------------------------------------------------------------- the trainer


def _find_unused_parameters(flow: Flow, x: Tensor) -> bool:
    """Whether some trainable parameter gets no gradient from ``-log p(x)`` (a dry run on a
    copy, so the flow's buffers and data-dependent initialisation are untouched)."""
    import copy

    probe = copy.deepcopy(flow)
    probe.train()
    with torch.enable_grad():
        (-probe.log_prob(x).sum()).backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())


class DistributedTrainer(Trainer):
    """:class:`~invertible.training.Trainer` under DDP (see the module docs for semantics).

    Needs an initialised process group (:func:`init_distributed`). Every process must be
    built with the same flow, data and config; ``config.batch_size`` is the global batch.

    Args:
        flow, data, config, out_dir, progress, device, data_meta, callbacks: as for
            :class:`~invertible.training.Trainer` (``out_dir`` is written by rank 0 only).
        find_unused_parameters: passed to DDP (``None``: detected by a dry run).
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
        find_unused_parameters: bool | None = None,
    ) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "DistributedTrainer needs a process group: launch with torchrun and call "
                "invertible.distributed.init_distributed() first"
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        super().__init__(
            flow,
            data,
            config,
            out_dir=out_dir,
            progress=progress,
            device=device,
            data_meta=data_meta,
            callbacks=callbacks,
        )
        if find_unused_parameters is None:
            find_unused_parameters = _find_unused_parameters(self.flow, self.train_x[:2])
        convert_sync_norm(self.flow)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        self.model = DistributedDataParallel(
            self.flow,
            device_ids=ids,
            output_device=self.device.index if ids else None,
            find_unused_parameters=find_unused_parameters,
        )
        self._global_rows = self.config.batch_size

    # -- hooks of Trainer -----------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    def _shard(self, x: Tensor) -> Tensor:
        start, stop = shard_bounds(x.shape[0], self.rank, self.world_size)
        return x[start:stop]

    def sample_batch(self, step: int) -> Tensor:
        """This process's slice of the global batch of ``step`` (what one process would use)."""
        batch = super().sample_batch(step)
        self._global_rows = batch.shape[0]
        return self._shard(batch)

    def reduce_mean(self, value: float, count: int = 1) -> float:
        """Count-weighted mean of ``value`` over the processes."""
        t = torch.tensor([value * count, float(count)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0] / t[1]) if float(t[1]) > 0 else float("nan")

    def shared_elapsed(self, elapsed: float) -> float:
        """Rank 0's clock, so that ``max_time`` stops every process at the same step and the
        time-based learning-rate schedule agrees (a broadcast only when ``max_time`` is set)."""
        if self.config.max_time is None:
            return elapsed
        t = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t[0])

    def train_step(self, batch: Tensor, lr: float) -> float | None:
        """One DDP step on this process's shard; skipped on every process if any loss or the
        (all-reduced) gradient norm is not finite. Returns the global mean loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        log_p = self.model(batch)
        local_sum = log_p.sum()
        loss = -local_sum * (self.world_size / max(1, self._global_rows))
        flags = torch.stack(
            [
                local_sum.detach().double().nan_to_num(0.0, 0.0, 0.0),
                (~torch.isfinite(local_sum.detach())).double(),
            ]
        )
        dist.all_reduce(flags)
        # backward always runs (DDP expects one per forward); a bad step's gradients are dropped
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = self.config.grad_clip if self.config.grad_clip else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(params, clip)
        if bool(flags[1] > 0) or not bool(torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return None
        self.optimizer.step()
        return float(-flags[0] / max(1, self._global_rows))

    @torch.no_grad()
    def evaluate(self, x: Tensor | None = None) -> float | None:
        """Mean log-likelihood of ``x`` (default: validation split): each process evaluates
        its slice, the means are combined weighted by row counts."""
        x = self.val_x if x is None else x
        if x is None:
            return None
        return super().evaluate(self._shard(x))
