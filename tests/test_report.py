"""The lecture job end to end in a tiny configuration, skipping missing presets, and its
distillation stage (time cap, options, student start)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import invertible
from invertible.cli import app
from invertible.core import Flow
from invertible.distillation import distill
from invertible.reports import distillation as report_distillation
from invertible.reports import run_lecture
from invertible.reports.distillation import OPTIONS, add_distillation, train_seconds
from invertible.reports.markdown import Report


def test_lecture_cli_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "lecture"
    result = CliRunner().invoke(
        app, ["lecture", "--out", str(out), "--tiny", "--budget-minutes", "0.1", "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    for name in ("nice", "realnvp", "maf", "iaf"):
        assert f"| {name} |" in report
        assert (out / name / "model" / "config.json").is_file()
    assert "test log-likelihood (nats, ± 2 s.e.)" in report
    assert (out / "training_curves.png").stat().st_size > 1000
    assert (out / "samples.png").stat().st_size > 1000
    assert "![Figures](training_curves.png)" in report
    assert (out / "results.json").is_file()


def test_missing_presets_and_no_teacher(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delitem(Flow.registry, "IAF")
    report = run_lecture(
        tmp_path, budget_minutes=0.05, models=["nice", "iaf"], tiny=True, progress=False
    )
    text = (tmp_path / "report.md").read_text()
    assert "## Probability density distillation" in text
    assert "Skipped: the main job trained no MAF teacher." in text
    assert "**iaf skipped**" in text and "IAF preset" in text
    assert [r.note for r in report.rows] == [pytest.approx(report.rows[0].note), "skipped"]
    assert report.meta["features"] == 63


def _toy_data(features: int = 3) -> SimpleNamespace:
    generator = np.random.default_rng(0)
    scale = np.array([0.05, 0.2, 1.0])[:features].astype(np.float32)
    rows = generator.standard_normal((1300, features)).astype(np.float32) * scale
    return SimpleNamespace(name="toy", features=features, train=rows[:1000], test=rows[1000:])


def test_distillation_stays_inside_its_share_when_the_machine_slows_down(
    tmp_path: Path, monkeypatch
) -> None:
    """The teacher's density pass gets slow after a few steps (other work starts on the
    cores): the training must still stop at its time cap, and run with the main job's
    options from the data-scale start.
    """
    data = _toy_data()
    teacher = invertible.MAF(data.features, num_layers=1, hidden_features=(8,)).eval()
    density, calls, seen = teacher.log_prob, [], {}

    def slowing_log_prob(x, context=None):
        calls.append(1)
        if len(calls) > 4:
            time.sleep(0.05)
        return density(x, context)

    def recording_distill(teacher, student, **options):
        seen.update(options)
        with torch.no_grad():
            seen["start_std"] = student.sample(4000).std(0)
        return distill(teacher, student, **options)

    monkeypatch.setattr(teacher, "log_prob", slowing_log_prob)
    monkeypatch.setattr(report_distillation, "distill", recording_distill)
    report = Report("toy")
    seconds_left = 2.0
    student = add_distillation(
        report, teacher, data, out_dir=tmp_path, seconds_left=seconds_left, tiny=True, seed=0
    )
    cap = train_seconds(seconds_left, tiny=True)
    assert student is not None and seen["max_time"] == pytest.approx(cap)
    assert report.rows[-1].train_time < cap + 0.5  # at most the step running at the cap
    assert {k: seen[k] for k in OPTIONS} == OPTIONS
    assert seen["anchor"] == "contrast" and seen["data_anchor"] > 0
    assert torch.equal(seen["data"], torch.as_tensor(data.train))  # the contrast of train rows
    expected = torch.as_tensor(data.train).std(0)
    assert torch.allclose(seen["start_std"], expected, rtol=0.1)
    assert "the contrast term" in report.rows[-1].note
