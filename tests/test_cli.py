"""The command line: train → eval reproduces the number; every bad input is one clear line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from invertible.checkpoint import FORMAT_VERSION
from invertible.cli import app

runner = CliRunner()
SMALL = ["--option", "n_train=1000", "--option", "n_val=200", "--option", "n_test=300"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, pattern: str) -> None:
    """Non-zero exit, one ``error:`` line matching ``pattern``, no traceback."""
    text = result.output
    assert result.exit_code == 1, text
    assert ("Traceback" not in text and result.exception is None) or isinstance(
        result.exception, SystemExit
    ), text
    first = [line for line in text.splitlines() if line.startswith("error:")]
    assert first, text
    assert re.search(pattern, first[0]), first[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("run") / "moons"
    result = invoke(
        "train",
        "--model",
        "realnvp",
        "--data",
        "moons",
        "--steps",
        "60",
        "--batch-size",
        "128",
        "--size",
        "tiny",
        "--out",
        out,
        "--no-progress",
        *SMALL,
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("test log-likelihood:"))
    return out, line.split(":", 1)[1].strip()


def test_train_writes_run_and_eval_reproduces_the_number(trained) -> None:
    out, number = trained
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "metrics.jsonl",
        "metrics.csv",
        "results.json",
        "training_curves.png",
        "samples.png",
        "training/config.json",
    ):
        assert (out / name).exists(), name
    result = invoke("eval", out / "model")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"test log-likelihood: {number}"
    result = invoke("eval", out / "model", "--data", "moons", *[])
    # named explicitly: default moons options (a different test set), same dimension
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "results.json").read_text())["test"]
    assert f"{stored['log_prob']:.3f}" in number


def test_sample_writes_npy(trained, tmp_path: Path) -> None:
    out, _ = trained
    result = invoke("sample", out / "model", "-n", "50", "--out", tmp_path / "s.npy")
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "s.npy").shape == (50, 2)


def test_datasets_lists_available_and_missing() -> None:
    result = invoke("datasets", "--verbose")
    assert result.exit_code == 0, result.output
    assert re.search(r"^moons\s+toy\s+available", result.output, re.M)
    assert "MISSING" in result.output and "put it at" in result.output


def test_help_shows_examples() -> None:
    for args in ([], ["train"], ["eval"], ["sample"], ["lecture"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0 and "Examples" in result.output, args


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "invertible", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and "train" in proc.stdout


# ---------------------------------------------------------------------------- bad input


def test_nan_rows_in_data(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    x[7, 1] = np.nan
    np.save(tmp_path / "bad.npy", x)
    result = invoke(
        "train",
        "--data",
        tmp_path / "bad.npy",
        "--out",
        tmp_path / "r",
        "--steps",
        "5",
        "--no-progress",
    )
    assert_clean_error(result, "NaN or inf")
    assert not (tmp_path / "r" / "model").exists()


def test_wrong_dimensionality_for_checkpoint(trained, tmp_path: Path) -> None:
    out, _ = trained
    np.save(tmp_path / "three.npy", np.zeros((30, 3), np.float32))
    result = invoke("eval", out / "model", "--data", tmp_path / "three.npy")
    assert_clean_error(result, "has 3 features per point but the model was trained on 2")


def test_missing_dataset_file(tmp_path: Path) -> None:
    result = invoke(
        "train",
        "--data",
        "bsds300",
        "--data-dir",
        tmp_path / "empty",
        "--out",
        tmp_path / "r",
        "--no-progress",
    )
    assert_clean_error(result, "bsds300")
    assert "put it at" in result.output  # where to put the file


def test_unknown_model_and_dataset(tmp_path: Path) -> None:
    assert_clean_error(
        invoke("train", "--model", "glow", "--out", tmp_path / "r"), "unknown model 'glow'"
    )
    assert_clean_error(
        invoke("train", "--data", "nosuch", "--out", tmp_path / "r"), "unknown dataset 'nosuch'"
    )
    assert not (tmp_path / "r").exists()


def _copy_ckpt(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_corrupt_truncated_and_newer_checkpoints(trained, tmp_path: Path) -> None:
    out, _ = trained
    samples = tmp_path / "samples.npy"
    np.save(samples, np.arange(3.0))
    before = samples.read_bytes()

    trunc = _copy_ckpt(out / "model", tmp_path / "trunc")
    w = trunc / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    corrupt = _copy_ckpt(out / "model", tmp_path / "corrupt")
    (corrupt / "model.safetensors").write_bytes(os.urandom(300))
    newer = _copy_ckpt(out / "model", tmp_path / "newer")
    meta = json.loads((newer / "config.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (newer / "config.json").write_text(json.dumps(meta))

    for ckpt, pattern in (
        (trunc, "corrupt or truncated"),
        (corrupt, "corrupt or truncated"),
        (newer, "newer invertible; upgrade"),
    ):
        assert_clean_error(invoke("eval", ckpt), pattern)
        assert_clean_error(invoke("sample", ckpt, "--out", samples, "--overwrite"), pattern)
    assert_clean_error(invoke("eval", tmp_path / "nope"), "not found")
    assert samples.read_bytes() == before  # nothing overwritten


def test_unwritable_output_directory(trained, tmp_path: Path) -> None:
    out, _ = trained
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = invoke(
        "train",
        "--data",
        "moons",
        "--out",
        blocker / "run",
        "--steps",
        "5",
        "--no-progress",
        *SMALL,
    )
    assert_clean_error(result, "cannot write to output directory")
    result = invoke("sample", out / "model", "--out", blocker / "s.npy")
    assert_clean_error(result, "cannot write to output directory")
    if os.geteuid() != 0:  # root ignores permissions
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            result = invoke("train", "--data", "moons", "--out", locked / "run", "--steps", "5")
            assert_clean_error(result, "cannot write")
        finally:
            locked.chmod(0o700)


def test_existing_run_not_overwritten(trained) -> None:
    out, _ = trained
    before = (out / "model" / "model.safetensors").read_bytes()
    result = invoke(
        "train",
        "--data",
        "moons",
        "--model",
        "realnvp",
        "--out",
        out,
        "--steps",
        "5",
        "--size",
        "tiny",
        "--no-progress",
        *SMALL,
    )
    assert_clean_error(result, "already holds a trained model")
    assert (out / "model" / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("anchor", ["likelihood", "contrast"])
def test_distill_from_a_teacher_checkpoint(tmp_path: Path, anchor: str) -> None:
    """train a MAF teacher → distill an IAF student with a data term → eval the student."""
    teacher = tmp_path / "maf"
    result = invoke(
        "train", "--model", "maf", "--data", "moons", "--steps", "40", "--batch-size", "128",
        "--size", "tiny", "--out", teacher, "--no-progress", *SMALL,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "student"
    result = invoke(
        "distill", "--teacher", teacher / "model", "--out", out, "--steps", "15",
        "--layers", "2", "--hidden", "8", "--batch-size", "64", "--loss", "mc",
        "--data-anchor", "0.5", "--anchor", anchor, "--anchor-every", "3", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "student test log-likelihood" in result.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["distill"]["data_anchor"] == 0.5
    assert summary["distill"]["anchor"] == anchor
    assert summary["distill"]["anchor_every"] == 3
    assert np.isfinite(summary["student_test"]["log_prob"])
    assert (out / "distill_kl.png").exists()
    result = invoke("eval", out / "model")  # the student is saved like any flow
    assert result.exit_code == 0, result.output
    assert result.output.startswith("test log-likelihood:")
    result = invoke("distill", "--teacher", teacher / "model", "--out", tmp_path / "bad",
                    "--data-anchor", "-1")  # fmt: skip
    assert_clean_error(result, "data-anchor")
    assert not (tmp_path / "bad").exists()
    result = invoke("distill", "--teacher", teacher / "model", "--out", tmp_path / "bad",
                    "--data-anchor", "1", "--anchor", "radial")  # fmt: skip
    assert_clean_error(result, "unknown --anchor 'radial'")
    assert not (tmp_path / "bad").exists()


def test_default_threads_leave_the_cores_other_processes_keep_busy(monkeypatch, capsys) -> None:
    import torch

    from invertible.cli import common

    monkeypatch.setattr(common.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(common.os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    torch.set_num_threads(2)
    common.set_threads(None)  # one core busy: one thread, and a note that says why
    assert torch.get_num_threads() == 1
    assert "note: 1 torch thread(s), not 2" in capsys.readouterr().err
    torch.set_num_threads(2)
    common.set_threads(2)  # an explicit --threads wins
    assert torch.get_num_threads() == 2
    monkeypatch.setattr(common.os, "getloadavg", lambda: (0.3, 0.2, 0.1))
    common.set_threads(None)  # idle: torch's default stays
    assert torch.get_num_threads() == 2 and capsys.readouterr().err == ""
