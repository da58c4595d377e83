"""Faults: SIGKILL then --resume, non-finite steps and states, a full disk, bad checkpoints."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import invertible
from invertible import checkpoint as ckpt
from invertible import files
from invertible.catalog import build_model
from invertible.checkpoint import CheckpointMismatchError, NonFiniteStateError
from invertible.training import TrainConfig, Trainer


def _data() -> SimpleNamespace:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1200, 2)).astype("float32") * [1.0, 0.5]
    return SimpleNamespace(train=x[:1000], val=x[1000:])


# --------------------------------------------------------------------------- SIGKILL + resume

TRAIN = [
    "train",
    "--model",
    "realnvp",
    "--data",
    "moons",
    "--size",
    "tiny",
    "--steps",
    "1200",
    "--batch-size",
    "64",
    "--eval-every",
    "200",
    "--checkpoint-every",
    "1",
    "--patience",
    "0",
    "--threads",
    "1",
    "--no-progress",
    "--option",
    "n_train=1000",
    "--option",
    "n_val=200",
    "--option",
    "n_test=200",
]


def _cli(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "invertible", *TRAIN, "--out", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _final(out: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    results = json.loads((out / "results.json").read_text())
    clock = ("train_time", "samples_per_s", "seconds")  # wall-clock figures
    metrics = {
        part: {k: v for k, v in results[part].items() if k not in clock}
        for part in ("test", "training")
    }
    return metrics, load_file(out / "model" / "model.safetensors")


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(killed), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while not (killed / "training" / "config.json").is_file():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model").exists(), "killed too late: the run had finished"
    state = json.loads((killed / "training" / "training_state.json").read_text())
    killed_at = state["loop"]["step"]
    assert 0 < killed_at < 1200

    resumed = subprocess.run(
        _cli(killed, "--resume"), env=_env(), capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    full = tmp_path / "full"
    done = subprocess.run(_cli(full), env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    metrics_a, weights_a = _final(full)
    metrics_b, weights_b = _final(killed)
    assert metrics_a == metrics_b  # bit-identical: same floats in the JSON
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    strip = lambda path: [  # noqa: E731
        {k: v for k, v in json.loads(line).items() if k not in ("elapsed_s", "samples_per_s")}
        for line in (path / "metrics.jsonl").read_text().splitlines()
    ]
    assert strip(full) == strip(killed)  # one record per evaluation, none duplicated


# --------------------------------------------------------------------------- non-finite values


class _NanGradient(Trainer):
    """Gradients of one parameter become NaN on the listed steps (a loss that stays finite)."""

    def __init__(self, *args, bad_steps: set[int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.bad_steps = bad_steps
        param = next(self.flow.parameters())
        param.register_hook(lambda g: g * float("nan") if self.step in self.bad_steps else g)


def test_non_finite_gradient_step_is_skipped_and_counted() -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    cfg = TrainConfig(steps=30, batch_size=64, eval_every=10, patience=None, max_bad_steps=5)
    trainer = _NanGradient(flow, _data(), cfg, progress=False, bad_steps={3, 4, 12})
    with torch.no_grad():  # start the data-end ActNorm, as the first step would
        flow.train().log_prob(torch.from_numpy(_data().train).float())
    before = {k: v.clone() for k, v in flow.named_parameters()}
    batch = trainer.sample_batch(0)
    trainer.step = 3
    assert trainer.train_step(batch, 1e-3) is None  # skipped: parameters unchanged
    assert all(torch.equal(before[k], v) for k, v in flow.named_parameters())
    trainer.step = 0
    result = trainer.run()
    assert result.skipped_steps == 3 and result.lr_halvings == 0
    assert all(torch.isfinite(t).all() for t in flow.state_dict().values())


class _Diverging(Trainer):
    """After the update of step ``at`` the weights become NaN (a divergence, simulated)."""

    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def train_step(self, batch, lr):
        loss = super().train_step(batch, lr)
        if self.step == self.at:
            with torch.no_grad():
                for p in self.flow.parameters():
                    p.fill_(float("nan"))
        return loss


def test_non_finite_state_never_overwrites_good_checkpoint(tmp_path: Path) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    weights = tmp_path / "training" / "model.safetensors"
    seen: dict[int, bytes] = {}

    def snapshot(record: dict) -> None:  # called before that evaluation's checkpoint
        if weights.is_file():
            seen[len(seen)] = weights.read_bytes()

    cfg = TrainConfig(steps=40, batch_size=64, eval_every=10, patience=None, max_bad_steps=3)
    # weights NaN after step 19: step 20 is bad, its evaluation's checkpoint must be
    # refused; steps 21, 22 are bad too: the good state of step 10 is restored, lr halved
    trainer = _Diverging(
        flow, _data(), cfg, out_dir=tmp_path, progress=False, callbacks=[snapshot], at=18
    )
    result = trainer.run()
    events = [r["event"] for r in result.history if r["event"] != "eval"]
    assert any(e.startswith("checkpoint skipped") and "NaN or inf" in e for e in events), events
    assert any("restored the last good state and halved the learning rate" in e for e in events)
    assert result.lr_halvings == 1 and result.skipped_steps == 3
    assert seen, "callbacks saw no checkpoint"
    records = list(result.history)
    halving = next(i for i, r in enumerate(records) if "halved" in r["event"])
    skipped = next(i for i, r in enumerate(records) if r["event"].startswith("checkpoint"))
    assert skipped < halving
    # every checkpoint written is finite and loadable; the final model is finite
    state = load_file(weights)
    assert all(torch.isfinite(t).all() for t in state.values())
    assert all(torch.isfinite(t).all() for t in flow.state_dict().values())
    assert result.final_val_log_prob is not None


def test_checkpoint_skipped_on_nan_keeps_bytes(tmp_path: Path) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    trainer = Trainer(flow, _data(), TrainConfig(steps=5), out_dir=tmp_path, progress=False)
    trainer.save_state()
    before = (tmp_path / "training" / "model.safetensors").read_bytes()
    with torch.no_grad():
        next(flow.parameters()).view(-1)[0] = float("nan")
    trainer.save_state()  # refused and logged, no exception
    assert (tmp_path / "training" / "model.safetensors").read_bytes() == before
    assert trainer.history[-1]["event"].startswith("checkpoint skipped")
    with pytest.raises(NonFiniteStateError):
        invertible.save(flow, tmp_path / "final")
    assert not (tmp_path / "final").exists()


# --------------------------------------------------------------------------- full disk


def test_disk_full_during_checkpoint_keeps_previous(tmp_path: Path, monkeypatch) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    trainer = Trainer(flow, _data(), TrainConfig(steps=5), out_dir=tmp_path, progress=False)
    trainer.save_state()
    path = tmp_path / "training"
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(1.0)
    real_fsync = os.fsync
    calls = {"n": 0}

    def full_disk(fd: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the weights went through; the training state hits ENOSPC
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(ckpt.os, "fsync", full_disk)
    with pytest.raises(OSError) as info:
        trainer.save_state()
    monkeypatch.undo()
    message = str(info.value)
    assert info.value.errno == errno.ENOSPC
    assert "No space left on device" in message and str(path) in message
    assert "previous checkpoint there is intact" in message and "\n" not in message
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["training"]  # no temporary dirs
    # the intact checkpoint still resumes
    again = Trainer(build_model("realnvp", 2, size="tiny", seed=3), _data(), TrainConfig(steps=5))
    again.load_state(path)


def test_unwritable_checkpoint_directory_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    trainer = Trainer(flow, _data(), TrainConfig(steps=5), out_dir=tmp_path, progress=False)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(files.tempfile, "mkdtemp", denied)
    with pytest.raises(OSError, match=r"Permission denied.*choose a writable location"):
        trainer.save_state()


# --------------------------------------------------------------------------- loading


def test_tensor_not_matching_config_is_named(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    flow = build_model("realnvp", 2, size="tiny", seed=0)
    invertible.save(flow, tmp_path / "c")
    tensors = load_file(tmp_path / "c" / "model.safetensors")
    name = next(k for k, v in tensors.items() if v.dim() == 2)
    tensors[name] = torch.zeros(3, 3)
    save_file(tensors, tmp_path / "c" / "model.safetensors")
    with pytest.raises(CheckpointMismatchError, match=rf"tensor '{name}' has shape \[3, 3\]"):
        invertible.load(tmp_path / "c")
    trainer = Trainer(build_model("realnvp", 2, size="tiny"), _data(), TrainConfig(steps=1))
    with pytest.raises(CheckpointMismatchError, match=rf"tensor '{name}'"):
        trainer.load_state(tmp_path / "c")


def test_only_safetensors_and_json_are_read(tmp_path: Path) -> None:
    flow = build_model("realnvp", 2, size="tiny", seed=0)
    trainer = Trainer(flow, _data(), TrainConfig(steps=5), out_dir=tmp_path, progress=False)
    trainer.save_state()
    names = sorted(p.name for p in (tmp_path / "training").iterdir())
    assert names == [
        "config.json",
        "model.safetensors",
        "training_state.json",
        "training_state.safetensors",
    ]
