"""Sequence flows end to end: fit on SpeechData crops, CLI train → eval → sample on speech."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import invertible as inv
from invertible.cli import app
from invertible.data import SpeechData
from invertible.data.speech import read_wav

runner = CliRunner()


def _options(cache: Path) -> list[str]:
    """A tiny build (three prompts' worth of seconds of audio) and short crops."""
    out = []
    for item in ("n_prompts=6", "variants=1", "crop=1024", f"cache_dir={cache}"):
        out += ["--option", item]
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    pytest.importorskip("espeakng_loader")
    root = tmp_path_factory.mktemp("speech-cli")
    out = root / "runs" / "wavenet"
    args = ["train", "--model", "wavenet", "--data", "speech", "--size", "tiny", "--steps", "6",
            "--eval-every", "3", "--batch-size", "2", "--out", str(out), "--data-dir", str(root),
            "--no-progress", *_options(root)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_train_reports_teacher_next_to_the_baselines(trained: tuple[Path, str]) -> None:
    out, output = trained
    for name in ("teacher", "gaussian-ar32", "laplace-ar32", "iid-gaussian", "bits/sample"):
        assert name in output
    assert "PASSED" in output or "FAILED" in output
    summary = json.loads((out / "results.json").read_text())
    assert summary["test"]["status"] in ("PASSED", "FAILED")
    assert set(summary["test"]["baselines"]) == {"gaussian-ar32", "laplace-ar32", "iid-gaussian"}
    assert (out / "model" / "config.json").is_file()


def test_eval_prints_the_baselines(trained: tuple[Path, str]) -> None:
    out, _ = trained
    result = runner.invoke(app, ["eval", str(out / "model"), "--data", "speech"])
    assert result.exit_code == 0, result.output
    assert "nats/sample" in result.output and "gaussian-ar32" in result.output
    assert "laplace-ar32" in result.output and "iid-gaussian" in result.output


def test_sample_writes_a_wav_and_refuses_to_overwrite(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = trained
    wav = tmp_path / "speech.wav"
    args = ["sample", str(out / "model"), "--seconds", "0.05", "--out", str(wav)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    x, rate = read_wav(wav)
    assert (x.dtype, x.size, rate) == (np.int16, 800, 16000)
    before = wav.read_bytes()
    again = runner.invoke(app, args)
    assert again.exit_code == 1 and "--overwrite" in again.output
    assert wav.read_bytes() == before
    assert runner.invoke(app, [*args, "--overwrite", "--seed", "1"]).exit_code == 0


def test_missing_audio_extra_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # makes the import fail
    args = ["train", "--model", "wavenet", "--data", "speech", "--size", "tiny", "--steps", "1",
            "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path),
            *_options(tmp_path)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "invertible[audio]" in lines[-1]
    assert "Traceback" not in result.output


def _synthetic_speech(crop: int = 256) -> SpeechData:
    rng = np.random.default_rng(0)

    def clip(n: int) -> np.ndarray:
        e = rng.normal(0, 300, n)
        x = np.zeros(n)
        for t in range(2, n):
            x[t] = 1.3 * x[t - 1] - 0.6 * x[t - 2] + e[t]
        return np.clip(np.rint(x), -32768, 32767).astype(np.int16)

    clips = [clip(n) for n in (3000, 2000, 2500, 1800, 1200)]
    return SpeechData("synthetic", clips[:3], clips[3:4], clips[4:], crop=crop)


class _Recording:
    """A SpeechData that remembers the shapes of the batches it hands out."""

    def __init__(self, data: SpeechData) -> None:
        self.data, self.shapes = data, []

    def train_batch(self, batch_size: int, generator: object) -> np.ndarray:
        batch = self.data.train_batch(batch_size, generator)
        self.shapes.append(batch.shape)
        return batch

    def val_batches(self) -> list[np.ndarray]:
        return self.data.val_batches()


def test_fit_sequence_flow_on_speech_crops() -> None:
    data = _synthetic_speech()
    assert [b.shape for b in data.val_batches()] == [(7, 256)]  # fixed crops of val
    np.testing.assert_array_equal(data.val_batches()[0], data.val_batches()[0])
    source = _Recording(data)
    torch.manual_seed(0)
    flow = inv.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1, 2], length=99)
    with torch.no_grad():
        start = float(flow.log_prob(torch.as_tensor(data.val_batches()[0])).mean())
    result = inv.fit(flow, source, steps=30, batch_size=4, eval_every=10, progress=False)
    assert set(source.shapes) == {(4, 256)}  # crops, not the flow's default length 99
    assert result.steps == 30 and np.isfinite(result.best_val_log_prob)
    assert result.best_val_log_prob > start  # the validation likelihood went up
    assert all(np.isfinite(r["train_loss"]) for r in result.history if r.get("train_loss"))


def test_sequence_flow_accepts_stored_rows_of_another_length() -> None:
    from types import SimpleNamespace

    rng = np.random.default_rng(0)
    rows = (rng.normal(size=(16, 40)) * 0.1).astype("float32")
    data = SimpleNamespace(train=rows, val=rows[:4])
    flow = inv.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1], length=99)
    result = inv.fit(flow, data, steps=4, batch_size=8, eval_every=2, progress=False)
    assert result.steps == 4 and np.isfinite(result.best_val_log_prob)
