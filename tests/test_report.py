"""The lecture job end to end in a tiny configuration, and skipping missing presets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from invertible.cli import app
from invertible.core import Flow
from invertible.reports import run_lecture


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
