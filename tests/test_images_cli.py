"""Image training end to end: dequantized batches, bits/dim, CLI train → eval → sample."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import invertible
from invertible.cli import app
from invertible.data import load_dataset
from invertible.evaluation import evaluate
from invertible.training import TrainConfig, Trainer

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits-images")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("img") / "digits"
    result = invoke(
        "train",
        "--model",
        "realnvp-image",
        "--data",
        "digits-images",
        "--size",
        "tiny",
        "--steps",
        "20",
        "--batch-size",
        "64",
        "--eval-every",
        "10",
        "--out",
        out,
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def _test_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("test log-likelihood:")]
    assert len(lines) == 1, output
    return lines[0]


def test_train_writes_checkpoint_metrics_and_pictures(trained, digits) -> None:
    out, output = trained
    for name in (
        "model/config.json",
        "metrics.jsonl",
        "results.json",
        "bits_per_dim.png",
        "samples_T1.0.png",
        "samples_T0.7.png",
    ):
        assert (out / name).is_file(), name
    test = json.loads((out / "results.json").read_text())["test"]
    bpd = test["bits_per_dim"]
    # finite and better than the uniform density over the pixel values (log2(levels))
    assert math.isfinite(bpd) and 0 < bpd < math.log2(digits.levels)
    assert f"test bits/dim: {bpd:.4f}" in output
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["val_bits_per_dim"]) for r in evals if r.get("event") == "eval")


def test_eval_reproduces_the_trained_number(trained) -> None:
    out, output = trained
    result = invoke("eval", out / "model", "--data", "digits-images")
    assert result.exit_code == 0, result.output
    assert _test_line(result.output) == _test_line(output)
    bpd = re.search(r"test bits/dim: (\S+)", output)
    assert bpd is not None and f"test bits/dim: {bpd.group(1)}" in result.output


def test_sample_writes_uint8_pixels_and_grid(trained, tmp_path) -> None:
    out, _ = trained
    target = tmp_path / "s.npy"
    result = invoke("sample", out / "model", "-n", 10, "--temperature", 0.7, "--out", target)
    assert result.exit_code == 0, result.output
    pixels = np.load(target)
    assert pixels.dtype == np.uint8 and pixels.shape == (10, 1, 8, 8)
    assert int(pixels.max()) <= 16  # 17 levels
    assert target.with_suffix(".png").is_file()


def test_vector_model_on_images_is_a_clean_error(tmp_path) -> None:
    result = invoke("train", "--model", "maf", "--data", "digits-images", "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert result.output.startswith("error:") and "Traceback" not in result.output


def test_image_batches_are_a_pure_function_of_seed_and_step(digits) -> None:
    def trainer() -> Trainer:
        flow = invertible.RealNVPImage((1, 8, 8), num_scales=1, channels=4, levels=17)
        return Trainer(flow, digits, TrainConfig(steps=5, batch_size=32), progress=False)

    a, b = trainer(), trainer()
    x3, y3 = a.sample_batch(3), b.sample_batch(3)
    assert x3.dtype == torch.float32 and bool(((x3 >= 0) & (x3 < 1)).all())
    assert torch.equal(x3, y3)  # the same on another trainer (e.g. after resume)
    assert torch.equal(x3, a.sample_batch(3))
    # fresh noise every step, even for the same pixels
    first = a.sample_batch(0)
    again = a.prepare_batch(a.train_x[a.batch_indices(0)], 1)
    assert not torch.equal(first, again)
    assert torch.equal((first * 17).floor(), (again * 17).floor())


def test_image_evaluation_does_not_depend_on_the_batch_size(digits) -> None:
    flow = invertible.RealNVPImage((1, 8, 8), num_scales=1, channels=4, levels=17).eval()
    small, big = evaluate(flow, digits, batch_size=50), evaluate(flow, digits, batch_size=4096)
    assert small.bits_per_dim is not None and big.bits_per_dim is not None
    assert small.bits_per_dim == pytest.approx(big.bits_per_dim, abs=1e-5)
    assert small.n == len(digits.test) and small.features == 64
