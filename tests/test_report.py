"""The lecture job end to end in a tiny configuration, hooks, and skipping missing presets."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from invertible.cli import app
from invertible.core import Flow
from invertible.report import LectureContext, Report, run_lecture


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is faster, and immune to oversubscription on busy machines."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


def test_hooks_and_missing_presets(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delitem(Flow.registry, "IAF")
    seen: list[LectureContext] = []

    def distillation(report: Report, context: LectureContext) -> None:
        seen.append(context)
        report.add_section("Distillation", "student goes here")

    report = run_lecture(
        tmp_path,
        budget_minutes=0.05,
        models=["nice", "iaf"],
        tiny=True,
        progress=False,
        hooks=[distillation],
    )
    text = (tmp_path / "report.md").read_text()
    assert "## Distillation" in text and "student goes here" in text
    assert "**iaf skipped**" in text and "IAF preset" in text
    assert [r.note for r in report.rows] == [pytest.approx(report.rows[0].note), "skipped"]
    assert set(seen[0].flows) == {"nice"} and seen[0].data.features == 63
