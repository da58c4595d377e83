"""The speech job end to end on a few seconds of audio: ``invertible speech`` trains a tiny
teacher, distils a tiny student, and writes the report, WAVs, PNGs and checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import invertible as inv
from invertible.cli import app
from invertible.data.speech import read_wav
from invertible.reports.speech import AUDIO

runner = CliRunner()

#: A tiny build (six prompts, one rendering each), short crops and a short evaluation.
SMALL = {"n_prompts": 6, "variants": 1, "crop": 1024}
EVALUATION = {"clips": 2, "clip_seconds": 0.25, "ll_utterances": 2, "ll_seconds": 0.1,
              "speed_seconds": 0.25, "teacher_speed_seconds": 0.05, "batch": 2,
              "repeats": 1}  # fmt: skip


def _args(out: Path, root: Path, *extra: str) -> list[str]:
    args = ["speech", "--out", str(out), "--budget-minutes", "0.1", "--teacher", "tiny",
            "--size", "tiny", "--data-dir", str(root), "--no-progress", *extra]  # fmt: skip
    for key, value in {**SMALL, "cache_dir": root}.items():
        args += ["--option", f"{key}={value}"]
    for key, value in EVALUATION.items():
        args += ["--evaluation", f"{key}={value}"]
    return args


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    pytest.importorskip("espeakng_loader")
    root = tmp_path_factory.mktemp("speech-job")
    out = root / "run"
    result = runner.invoke(app, _args(out, root))
    assert result.exit_code == 0, result.output
    return out, root, result.output


def test_the_report_has_every_table_and_file(speech_run: tuple[Path, Path, str]) -> None:
    out, _, output = speech_run
    report = (out / "report.md").read_text()
    for heading in ("## Likelihood", "## Sample quality", "## Sampling speed", "## Audio"):
        assert heading in report
    for row in ("| student |", "| teacher |", "| laplace-ar32 |", "| real (val) |",
                "batch 1, over naive (steady state)", "batch 1, over incremental"):  # fmt: skip
        assert row in report
    for name in AUDIO:
        x, rate = read_wav(out / f"{name}.wav")
        assert rate == 16000 and x.size == int(EVALUATION["clip_seconds"] * rate)
        assert (out / f"{name}.png").stat().st_size > 0
    assert (out / "distillation.png").stat().st_size > 0
    assert "KL(student ‖ teacher)" in output and "student speed-up" in output


def test_results_hold_the_figures_and_the_student_loads(speech_run: tuple[Path, Path, str]) -> None:
    out, _, _ = speech_run
    summary = json.loads((out / "results.json").read_text())
    crops = summary["likelihood"]["models"]
    assert {"teacher", "student", "gaussian-ar32", "laplace-ar32", "iid-gaussian"} <= set(crops)
    assert all(row["samples"] > 0 for row in crops.values())
    assert set(summary["quality"]["models"]) == {"teacher", "student", "laplace-ar32", "real (val)"}
    assert all(v > 0 for v in summary["speed"]["speedups"].values())
    assert summary["student"]["steps"] == len(summary["student"]["history"]["kl"]) >= 1
    student = inv.load(out / "student")
    assert isinstance(student, inv.WaveNetIAF) and student.config["num_flows"] == 2
    assert isinstance(inv.load(out / "teacher" / "model"), inv.WaveNetMAF)


def test_a_saved_teacher_is_distilled_again(speech_run: tuple[Path, Path, str]) -> None:
    out, root, _ = speech_run
    again = root / "again"
    teacher = out / "teacher" / "model"
    result = runner.invoke(app, _args(again, root, "--teacher-checkpoint", str(teacher)))
    assert result.exit_code == 0, result.output
    assert "loaded from" in (again / "report.md").read_text()
    assert not (again / "teacher").exists()


def test_refusals(speech_run: tuple[Path, Path, str]) -> None:
    out, root, _ = speech_run
    result = runner.invoke(app, _args(out, root))
    assert result.exit_code == 1 and "already holds a speech run" in result.output
    result = runner.invoke(app, _args(root / "x", root, "--evaluation", "clipz=1"))
    assert result.exit_code == 1 and "unknown --evaluation" in result.output
    result = runner.invoke(app, _args(root / "x", root, "--size", "huge"))
    assert result.exit_code == 1 and "unknown student size" in result.output
    assert not (root / "x").exists()  # nothing written by a refused run
