"""Data-parallel training: 2 gloo processes with global batch 2B == 1 process with batch 2B.

Two processes are started with ``torch.multiprocessing.spawn`` on 127.0.0.1 (a free port);
each builds the same float64 RealNVP with a BatchNorm layer and trains with
:class:`~invertible.training.ddp.DistributedTrainer`; rank 0 writes what it got, which the
test compares with a single-process :class:`~invertible.training.Trainer`.
"""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import invertible
from invertible.catalog import build_model
from invertible.training import TrainConfig, Trainer

STEP_CONFIG = dict(batch_size=64, lr=1e-2, grad_clip=None, seed=5)
RUN_CONFIG = dict(steps=40, batch_size=64, eval_every=20, lr=5e-3, patience=None, seed=5)


def _data() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(640, 2)) * [1.0, 0.3] + rng.choice([-2.0, 2.0], size=(640, 1))
    return SimpleNamespace(train=mix[:512], val=mix[512:])


def _flow() -> invertible.Flow:
    flow = build_model("realnvp", 2, size="tiny", seed=0, num_layers=4).double()
    assert any(type(m).__name__ == "BatchNorm" for m in flow.modules())
    return flow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _state(flow: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Floating-point parameters and buffers (masks and permutations are constants)."""
    return {k: v.detach().clone() for k, v in flow.state_dict().items() if v.is_floating_point()}


def _grads(flow: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.grad.detach().clone() for k, p in flow.named_parameters() if p.grad is not None}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One process of the group: one step, then a short run; rank 0 saves the results."""
    import os

    from invertible.training.ddp import DistributedTrainer, init_distributed

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    ctx = init_distributed("cpu", timeout_s=60)
    try:
        data = _data()
        trainer = DistributedTrainer(
            _flow(), data, TrainConfig(steps=1, **STEP_CONFIG), progress=False
        )
        batch = trainer.sample_batch(0)
        loss = trainer.train_step(batch, STEP_CONFIG["lr"])
        step = {
            "rows": batch.shape[0],
            "loss": loss,
            "state": _state(trainer.flow),
            "grads": _grads(trainer.flow),
        }
        run_dir = Path(out).parent / "ddp_run"
        flow = _flow()
        result = DistributedTrainer(
            flow, data, TrainConfig(**RUN_CONFIG), out_dir=run_dir, progress=False
        ).run()
        if ctx.is_main:
            torch.save({"step": step, "run": result.to_dict(), "state": _state(flow)}, out)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _spawn(out: Path, world: int = 2, timeout: float = 90.0) -> dict[str, Any]:
    context = mp.spawn(_worker, args=(world, _free_port(), str(out)), nprocs=world, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for p in context.processes:
                p.kill()
            pytest.fail(f"distributed workers did not finish within {timeout:.0f}s")
    return torch.load(out, weights_only=False)


@pytest.fixture(scope="module")
def two_process(tmp_path_factory) -> dict[str, Any]:
    return _spawn(tmp_path_factory.mktemp("ddp") / "result.pt")


def test_one_step_two_processes_equals_one_process(two_process) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(_flow(), _data(), TrainConfig(steps=1, **STEP_CONFIG), progress=False)
    batch = trainer.sample_batch(0)
    loss = trainer.train_step(batch, STEP_CONFIG["lr"])
    got = two_process["step"]
    assert got["rows"] == batch.shape[0] // 2  # each rank took half of the global batch
    assert abs(got["loss"] - loss) < 1e-12
    for name, grad in _grads(trainer.flow).items():  # the strong check: same gradients
        assert torch.allclose(got["grads"][name], grad, rtol=1e-10, atol=1e-12), name
    state = _state(trainer.flow)  # parameters and synchronised BatchNorm running statistics
    diff = max(float((got["state"][k] - v).abs().max()) for k, v in state.items())
    print(f"one step: max |param difference| {diff:.2e}")
    # Adam's first step is lr * g / (|g| + eps): for parameters whose exact gradient is 0
    # (g is float64 round-off, ~1e-17) it amplifies round-off up to ~1e-9 * lr/1e-2
    assert diff < 1e-9, diff


def test_short_run_two_processes_matches_one_process(two_process, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    flow = _flow()
    single = Trainer(flow, _data(), TrainConfig(**RUN_CONFIG), progress=False).run()
    got = two_process["run"]
    assert got["steps"] == single.steps == RUN_CONFIG["steps"]
    assert abs(got["final_val_log_prob"] - single.final_val_log_prob) < 1e-9
    assert abs(got["best_val_log_prob"] - single.best_val_log_prob) < 1e-9
    evals = [r["val_log_prob"] for r in single.history if r["event"] == "eval"]
    got_evals = [r["val_log_prob"] for r in got["history"] if r["event"] == "eval"]
    assert np.allclose(got_evals, evals, rtol=0, atol=1e-9)
    diff = max(float((two_process["state"][k] - v).abs().max()) for k, v in _state(flow).items())
    print(f"run: val {got['final_val_log_prob']!r} vs {single.final_val_log_prob!r}")
    print(f"run: max |param difference| {diff:.2e}")
    assert diff < 1e-7, diff  # 40 Adam steps of ~lr each; round-off amplified as above


def test_rank0_wrote_the_run(two_process, tmp_path_factory) -> None:
    run_dir = next(Path(p) for p in tmp_path_factory.getbasetemp().glob("ddp*/ddp_run"))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one record per evaluation: written once, by rank 0
    loaded = invertible.load(run_dir / "model")
    assert type(loaded).__name__ == "RealNVP"


def test_sharding_and_sync_layers_without_group() -> None:
    from invertible.training.ddp import SyncBatchNorm, convert_sync_norm, shard_bounds

    bounds = [shard_bounds(65, r, 4) for r in range(4)]
    assert bounds[0][0] == 0 and bounds[-1][1] == 65
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    flow = _flow()
    x = torch.from_numpy(_data().train[:64])
    expected = flow.log_prob(x)
    assert convert_sync_norm(flow) >= 1
    assert any(isinstance(m, SyncBatchNorm) for m in flow.modules())
    assert torch.equal(flow.log_prob(x), expected)  # no group: plain BatchNorm behaviour
