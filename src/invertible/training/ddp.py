"""Multi-process (data-parallel) training on PyTorch's own engine: ``torchrun`` + DDP.

``invertible train`` (and :func:`invertible.fit`) detect a ``torchrun`` launch from the
``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` environment variables; :func:`init_distributed`
then joins the process group (NCCL on CUDA, gloo on CPU) and the training loop runs with
the :class:`DDPStrategy` (:class:`~torch.nn.parallel.DistributedDataParallel`):

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
  :class:`~invertible.SyncBatchNorm`, whose training-mode statistics are those of the
  global batch
  (one differentiable all-reduce of per-feature sums and sums of squares per layer);
  :class:`~invertible.ActNorm`'s data-dependent initialisation uses the global first batch
  (:class:`~invertible.SyncActNorm`); ``nn.BatchNorm*d`` inside networks becomes
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
    >>> from invertible.training.ddp import shard_bounds
    >>> [shard_bounds(10, r, 3) for r in range(3)]
    [(0, 3), (3, 6), (6, 10)]
"""

from __future__ import annotations

import copy
import datetime
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from invertible.core import Flow
from invertible.training.config import TrainConfig
from invertible.training.loop import Trainer
from invertible.training.strategy import SingleProcess, apply_update, clip_gradients
from invertible.transforms.normalization import (
    ActNorm,
    BatchNorm,
    SyncActNorm,
    SyncBatchNorm,
    all_reduce_sum,
    is_distributed,
)

__all__ = [
    "DDPStrategy",
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


# --------------------------------------------------------------------------- the strategy


def _find_unused_parameters(flow: Flow, x: Tensor) -> bool:
    """Whether some trainable parameter gets no gradient from ``-log p(x)`` (a dry run on a
    copy, so the flow's buffers and data-dependent initialisation are untouched).
    """
    probe = copy.deepcopy(flow)
    probe.train()
    with torch.enable_grad():
        (-probe.log_prob(x).sum()).backward()
    return any(p.requires_grad and p.grad is None for p in probe.parameters())


class DDPStrategy(SingleProcess):
    """The training loop under DDP (see the module docs for the semantics).

    Needs an initialised process group (:func:`init_distributed`). Every process must be
    built with the same flow, data and config; ``config.batch_size`` is the global batch.
    Only the maximum-likelihood objective is supported.

    Args:
        find_unused_parameters: passed to DDP (``None``: detected by a dry run).
    """

    def __init__(self, find_unused_parameters: bool | None = None) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed training needs a process group: launch with torchrun and call "
                "invertible.training.ddp.init_distributed() first"
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.find_unused_parameters = find_unused_parameters
        self.device = torch.device("cpu")
        self.max_time: float | None = None

    @property
    def is_main(self) -> bool:  # type: ignore[override]
        """Rank 0 logs, shows progress and writes files."""
        return self.rank == 0

    def setup(self, trainer: Trainer) -> None:
        """Switch to synchronised normalization and wrap ``trainer.model`` in DDP."""
        self.device = trainer.device
        self.max_time = trainer.config.max_time
        find_unused = self.find_unused_parameters
        if find_unused is None:
            find_unused = _find_unused_parameters(trainer.flow, trainer.global_batch(0)[:2])
        convert_sync_norm(trainer.flow)
        ids = [trainer.device.index] if trainer.device.type == "cuda" else None
        trainer.model = DistributedDataParallel(
            trainer.flow,
            device_ids=ids,
            output_device=trainer.device.index if ids else None,
            find_unused_parameters=find_unused,
        )

    def shard(self, x: Tensor) -> Tensor:
        """This process's contiguous slice of a global batch (:func:`shard_bounds`)."""
        start, stop = shard_bounds(x.shape[0], self.rank, self.world_size)
        return x[start:stop]

    def reduce_mean(self, value: float, count: int = 1) -> float:
        """Count-weighted mean of ``value`` over the processes."""
        t = torch.tensor([value * count, float(count)], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t[0] / t[1]) if float(t[1]) > 0 else float("nan")

    def shared_elapsed(self, elapsed: float) -> float:
        """Rank 0's clock, so that ``max_time`` stops every process at the same step and the
        time-based learning-rate schedule agrees (a broadcast only when ``max_time`` is set).
        """
        if self.max_time is None:
            return elapsed
        t = torch.tensor([elapsed], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t[0])

    def train_step(self, trainer: Trainer, batch: Tensor, lr: float) -> float | None:
        """One DDP step on this process's shard; skipped on every process if any loss or the
        (all-reduced) gradient norm is not finite. Returns the global mean loss.
        """
        optimizer = trainer.optimizer
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        global_rows = max(1, trainer.global_rows)
        with trainer.autocast():  # the precision option: forward pass and loss only
            log_p = trainer.model(batch)
            local_sum = log_p.sum()
            loss = -local_sum * (self.world_size / global_rows)
        flags = torch.stack(
            [
                local_sum.detach().double().nan_to_num(0.0, 0.0, 0.0),
                (~torch.isfinite(local_sum.detach())).double(),
            ]
        )
        dist.all_reduce(flags)
        # backward always runs (DDP expects one per forward); a bad step's gradients are dropped
        scaler = trainer.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        norm = clip_gradients(trainer, optimizer)
        if bool(flags[1] > 0):  # a non-finite loss on some process: the model's, not the scale's
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.update()
            return None
        if not apply_update(trainer, optimizer, scaler, norm):
            return None
        value = float(-flags[0] / global_rows)
        trainer.last_step = {"loss": value, "grad_norm": float(norm)}
        return value


def DistributedTrainer(
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
) -> Trainer:
    """A :class:`~invertible.training.loop.Trainer` running the :class:`DDPStrategy`."""
    return Trainer(
        flow,
        data,
        config,
        out_dir=out_dir,
        progress=progress,
        device=device,
        data_meta=data_meta,
        callbacks=callbacks,
        strategy=DDPStrategy(find_unused_parameters),
    )
