"""Training: likelihood improves, early stopping, exact resume, non-finite steps, batch norm."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import invertible
from invertible.catalog import build_model
from invertible.data import load_dataset
from invertible.training import TrainConfig, Trainer, fit, refresh_batchnorm


@pytest.fixture(scope="module")
def moons():
    return load_dataset("moons", n_train=2000, n_val=500, n_test=500)


def test_fit_improves_validation_and_writes_metrics(moons, tmp_path: Path) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    before = invertible.evaluate(flow, moons, split="val").log_prob
    result = fit(
        flow,
        moons,
        steps=200,
        batch_size=128,
        eval_every=40,
        lr=3e-3,
        patience=None,
        out_dir=tmp_path,
        progress=False,
    )
    assert result.steps == 200 and result.stopped == "steps"
    evals = [r["val_log_prob"] for r in result.history if r["event"] == "eval"]
    assert len(evals) == 5
    assert result.best_val_log_prob > before + 0.5
    assert result.best_val_log_prob >= evals[0]
    assert not flow.training  # returned in eval mode, best weights restored
    assert (
        abs(result.final_val_log_prob - invertible.evaluate(flow, moons, split="val").log_prob)
        < 1e-9
    )
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 5 and json.loads(lines[-1])["step"] == 200
    assert (tmp_path / "metrics.csv").read_text().startswith("step,epoch,train_loss")
    loaded = invertible.load(tmp_path / "model")
    x = torch.from_numpy(moons.test[:50])
    assert torch.allclose(loaded.log_prob(x), flow.log_prob(x))


def test_early_stopping_triggers(moons) -> None:
    flow = build_model("nice", 2, size="tiny", seed=0)
    result = fit(
        flow,
        moons,
        steps=3000,
        batch_size=64,
        eval_every=10,
        lr=1e-2,
        patience=2,
        schedule="constant",
        progress=False,
    )
    assert result.stopped == "early_stopping"
    assert result.steps < 3000
    evals = [r for r in result.history if r["event"] == "eval"]
    assert evals[-1]["step"] - result.best_step == 2 * 10


def _params(flow) -> torch.Tensor:
    return torch.cat([t.flatten().double() for t in flow.state_dict().values()])


def test_resume_matches_uninterrupted_run(moons, tmp_path: Path) -> None:
    opts = dict(steps=60, batch_size=64, eval_every=15, seed=3, patience=None, lr=2e-3)
    full = build_model("realnvp", 2, size="tiny", seed=0)
    fit(full, moons, out_dir=tmp_path / "a", progress=False, **opts)

    first = build_model("realnvp", 2, size="tiny", seed=0)
    paused = Trainer(first, moons, TrainConfig(**opts), out_dir=tmp_path / "b", progress=False)
    res = paused.run(until=30)
    assert res.stopped == "paused" and res.steps == 30
    torch.manual_seed(12345)  # resuming restores the RNG state; the global one must not matter
    second = build_model("realnvp", 2, size="tiny", seed=7)  # fresh weights, overwritten
    result = fit(second, moons, out_dir=tmp_path / "b", progress=False, resume=True, **opts)
    assert result.steps == 60
    assert torch.equal(_params(full), _params(second))
    a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda lines: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "samples_per_s")}
        for line in lines
    ]
    assert strip(a) == strip(b)


class _Flaky(torch.nn.Module):
    """Returns NaN log-densities for a window of calls (a diverging model, simulated)."""

    def __init__(self, flow, bad: range) -> None:
        super().__init__()
        self.flow, self.bad, self.calls = flow, bad, 0

    def forward(self, x):
        self.calls += 1
        out = self.flow(x)
        return out * float("nan") if self.calls in self.bad else out


def test_non_finite_steps_skipped_then_lr_halved(moons) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    trainer = Trainer(
        flow,
        moons,
        TrainConfig(steps=80, batch_size=64, eval_every=20, max_bad_steps=5, patience=None),
        progress=False,
    )
    trainer.model = _Flaky(flow, range(30, 41))
    result = trainer.run()
    assert result.skipped_steps == 11
    assert result.lr_halvings == 2
    events = [r["event"] for r in result.history if r["event"] != "eval"]
    assert len(events) == 2 and "halved the learning rate" in events[0]
    assert all(torch.isfinite(t).all() for t in flow.state_dict().values())


def test_refresh_batchnorm_gives_full_set_statistics() -> None:
    torch.manual_seed(0)
    flow = build_model("realnvp", 3, size="tiny", seed=0, num_layers=4)
    x = torch.randn(3000, 3) * torch.tensor([1.0, 3.0, 0.5]) + 2
    flow.train().log_prob(x[:256])  # as after training: the data-end ActNorm has started
    assert refresh_batchnorm(flow, x, batch_size=256, max_rows=None) == 3
    refreshed = {k: v.clone() for k, v in flow.state_dict().items() if "running" in k}
    # reference: one full-batch pass in train mode with momentum 1 (running = batch stats)
    bns = [m for m in flow.modules() if hasattr(m, "running_mean")]
    for bn in bns:
        bn.momentum = 1.0
    flow.train()
    with torch.no_grad():
        flow.log_prob(x)
    for k, v in flow.state_dict().items():
        if "running" in k:
            assert torch.allclose(refreshed[k], v, rtol=1e-4, atol=1e-5), k


def test_bad_data_rejected() -> None:
    flow = build_model("nice", 2, size="tiny")
    from types import SimpleNamespace

    bad = np.zeros((10, 2), "float32")
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fit(flow, SimpleNamespace(train=bad, val=None), steps=1, progress=False)
    with pytest.raises(ValueError, match="features=3"):
        fit(flow, SimpleNamespace(train=np.zeros((10, 3), "float32")), steps=1, progress=False)


class _Crops:
    """A toy data object that supplies its own batches (like random crops of long audio)."""

    def __init__(self) -> None:
        self.signal = torch.randn(4000) * 0.5 + 1.0
        self.calls: list[int] = []
        self.val = self.signal[:600].reshape(-1, 2).numpy()

    def train_batch(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        self.calls.append(batch_size)
        start = torch.randint(0, self.signal.numel() - 2, (batch_size,), generator=generator)
        return torch.stack([self.signal[start], self.signal[start + 1]], dim=1)


def test_data_object_supplies_its_own_batches() -> None:
    data = _Crops()
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    trainer = Trainer(
        flow, data, TrainConfig(steps=40, batch_size=32, eval_every=20), progress=False
    )
    assert torch.equal(trainer.sample_batch(7), trainer.sample_batch(7))  # pure in (seed, step)
    result = trainer.run()
    assert result.steps == 40 and result.best_val_log_prob is not None
    assert data.calls and set(data.calls) == {32}


def test_validation_batches_iterator() -> None:
    class WithValBatches(_Crops):
        def __init__(self) -> None:
            super().__init__()
            del self.val

        def val_batches(self):
            yield self.signal[:200].reshape(-1, 2)
            yield self.signal[200:400].reshape(-1, 2)

    result = fit(build_model("nice", 2, size="tiny", seed=0), WithValBatches(), steps=20,
                 batch_size=16, eval_every=10, progress=False)  # fmt: skip
    assert result.final_val_log_prob is not None
    assert all(r["val_log_prob"] is not None for r in result.history if r["event"] == "eval")
