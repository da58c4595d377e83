"""The benchmark harness runs (smoke only: no figure is asserted, timings are not tests)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchmarks.adapter import architecture, make_optimizer
from benchmarks.invertible_adapter import build_invertible

ROOT = Path(__file__).resolve().parents[1]


def test_ours_adapter_matches_the_benchmark_architectures() -> None:
    maf = build_invertible("maf", 8)
    assert architecture("maf") == (5, (512, 512))
    # dense count D*512 + 512*512 + 512*2D weights plus biases, 5 layers (as the peers),
    # and the data-end ActNorm's shift and log-scale (2D)
    assert maf.num_params() == 5 * (8 * 512 + 512 + 512 * 512 + 512 + 512 * 16 + 16) + 2 * 8
    assert isinstance(make_optimizer(maf), torch.optim.Adam)
    small = build_invertible("coupling", 6, layers=2, hidden=(16,), batch_norm=True)
    assert small.name == "invertible-bn"
    x = small.sample(5)
    assert small.log_prob(x).shape == (5,)


def test_quality_redo_reruns_one_library_and_keeps_the_others(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "benchmarks", "quality", "--quick", "--steps", "3",
        "--datasets", "moons", "--kinds", "maf", "--libs", "invertible", "--out", str(tmp_path),
    ]  # fmt: skip
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stdout + first.stderr
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert "0 runs to do (1 already" in again.stdout, again.stdout + again.stderr
    redo = subprocess.run(
        [*command, "--redo", "invertible"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert "1 runs to do (0 already" in redo.stdout, redo.stdout + redo.stderr
    runs = json.loads((tmp_path / "quality.json").read_text())["runs"]
    assert [r["library"] for r in runs] == ["invertible"]


def test_speed_harness_quick_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "benchmarks", "speed", "--quick", "--libs", "invertible",
        "--dims", "2", "--target-seconds", "0.02", "--memory", "none", "--no-plot",
        "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    table = (tmp_path / "speed.md").read_text()
    assert "MAF D=2" in table and "coupling D=2" in table
    payload = json.loads((tmp_path / "speed.json").read_text())
    assert payload  # every timed block is recorded


BSDS300_DIR = Path("/work/shared/data")
TINY_LONG = [
    "paper", "--long", "--hidden", "8", "8", "--n-train", "2000", "--n-val", "500",
    "--n-test", "500", "--threads", "1",
]  # fmt: skip


def _paper_long(tmp_path: Path, *flags: str) -> int:
    """``python -m benchmarks paper --long`` at a tiny size, in this process."""
    from benchmarks.__main__ import main

    threads = torch.get_num_threads()
    try:
        return main(
            [*TINY_LONG, "--run-dir", str(tmp_path / "run"), "--out", str(tmp_path), *flags]
        )
    finally:
        torch.set_num_threads(threads)  # the benchmark sets its own


def test_paper_long_resumes_and_accumulates(tmp_path: Path) -> None:
    if not (BSDS300_DIR / "bsds300").is_dir():
        pytest.skip(f"BSDS300 images not in {BSDS300_DIR}")
    # patience beyond the budget: the model must still be in progress after the first call
    flags = ["--data-dir", str(BSDS300_DIR), "--models", "maf5", "mademog"]
    flags += ["--minutes", "0.05", "--patience-epochs", "1000"]
    assert _paper_long(tmp_path, *flags) == 0
    first = json.loads((tmp_path / "long.json").read_text())["results"]
    assert set(first) == {"maf5"}  # the shared budget went to the first model
    assert first["maf5"]["status"] == "in progress" and first["maf5"]["steps"] > 0
    assert _paper_long(tmp_path, *flags) == 2  # a second run there needs --resume
    assert _paper_long(tmp_path, *flags, "--resume") == 0
    payload = json.loads((tmp_path / "long.json").read_text())
    again = payload["results"]["maf5"]
    assert again["steps"] > first["maf5"]["steps"]
    assert again["train_time"] > first["maf5"]["train_time"]
    assert again["invocations"][0]["steps"] == first["maf5"]["steps"]
    assert sum(i["steps"] for i in again["invocations"]) == again["steps"]
    assert again["val_curve"] and again["test_two_se"] > 0
    assert again["paper"] == 155.69 and "MAF(5)" in (tmp_path / "long.md").read_text()


def test_paper_long_finished_models_are_skipped(tmp_path: Path) -> None:
    if not (BSDS300_DIR / "bsds300").is_dir():
        pytest.skip(f"BSDS300 images not in {BSDS300_DIR}")
    # a large step and one evaluation of patience: MADE MoG stops early within the budget
    flags = ["--data-dir", str(BSDS300_DIR), "--models", "mademog", "--lr", "0.05"]
    flags += ["--patience-epochs", "0.2", "--minutes", "0.2"]
    assert _paper_long(tmp_path, *flags) == 0
    done = json.loads((tmp_path / "long.json").read_text())["results"]["mademog"]
    assert done["status"] == "finished"
    assert _paper_long(tmp_path, *flags, "--resume") == 0
    assert json.loads((tmp_path / "long.json").read_text())["results"]["mademog"] == done


def test_paper_long_missing_data_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        _paper_long(tmp_path, "--data-dir", str(tmp_path / "empty"), "--minutes", "0.01")
    message = str(info.value)
    assert message.startswith("error: Dataset 'bsds300'") and "\n" not in message
    assert "put BSDS300-images.tgz" in message


def test_steps_grid_smoke_run(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "benchmarks", "steps", "--libs", "invertible", "--kinds",
        "coupling", "--dims", "4", "--batches", "64", "--optimizers", "adam", "fused",
        "--repeats", "1", "--target-seconds", "0.01", "--threads", "1", "--out", str(tmp_path),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    payload = json.loads((tmp_path / "steps.json").read_text())
    cells = {(r["precision"], r["optimizer"]) for r in payload["results"] if r["step_ms"]}
    assert cells == {("fp32", "adam"), ("fp32", "fused"), ("bf16", "adam"), ("bf16", "fused")}
    assert all(r["flops_per_s"] > 0 for r in payload["results"])
    assert set(payload["matmul_peak_flops_per_s"]) == {"fp32", "bf16"}
    assert "coupling D=4, batch 64" in (tmp_path / "steps.md").read_text()


def test_steps_table_compares_ours_with_the_best_peer_configuration() -> None:
    from benchmarks.steps import make_markdown

    def rec(lib: str, precision: str, ms: float) -> dict:
        return {"library": lib, "kind": "maf", "dim": 8, "batch": 512, "precision": precision,
                "optimizer": "fused", "mode": "eager", "step_ms": ms, "flops_per_s": 1e9,
                "fraction_of_peak": 0.5, "error": None}  # fmt: skip

    meta = {"date": "today", "device_name": "cpu", "device": "cpu", "threads": 2,
            "versions": {"torch": "x"}, "repeats": 1, "target_s": 0.1}  # fmt: skip
    data = {
        "meta": meta, "libraries": ["zuko", "invertible"], "ours": ["invertible"],
        "matmul_peak_flops_per_s": {"fp32": 2e9, "bf16": 4e9}, "param_parity": {},
        "results": [rec("zuko", "fp32", 40.0), rec("zuko", "bf16", 20.0),
                    rec("invertible", "fp32", 30.0), rec("invertible", "bf16", 10.0)],
    }  # fmt: skip
    table = make_markdown(data)
    assert "| maf D=8 b=512 | zuko (bf16 / fused / eager) | 20.00 |" in table
    assert "| bf16 / fused / eager | 10.00 | 2.00× |" in table  # summary: 20 ms / 10 ms
    assert "| fp32 / fused / eager | 40.00 | 30.00 | 0.67× | 1.0 (50%) |" in table


def test_precision_benchmark_smoke_run(tmp_path: Path) -> None:
    from benchmarks.__main__ import main
    from benchmarks.precision import MODES, markdown

    threads = torch.get_num_threads()
    try:
        flags = ["precision", "--quick", "--steps", "8", "--threads", "1", "--out", str(tmp_path)]
        assert main(flags) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark sets its own
    payload = json.loads((tmp_path / "precision.json").read_text())
    runs = payload["runs"]
    assert {(r["model"], r["mode"]) for r in runs} == {
        (m, mode) for m in ("maf", "realnvp") for mode in MODES
    }
    assert all(r["dataset"] == "gmm8" and r["seed"] == 0 for r in runs)
    for r in runs:
        assert r["precision"] == MODES[r["mode"]] and r["seconds"] > 0
        assert r["steps"] == 8 or r["mode"] == "bf16-time"
    timed = [r for r in runs if r["mode"] == "bf16-time"]
    assert all(r["max_time"] > 0 and r["stopped"] in ("max_time", "steps") for r in timed)
    rows = payload["summary"]
    assert [(r["dataset"], r["model"]) for r in rows] == [("gmm8", "maf"), ("gmm8", "realnvp")]
    for key in ("fp32", "bf16-steps", "bf16-time", "gap_percent", "speedup", "time_beats_fp32"):
        assert all(key in r for r in rows)
    assert {"processor", "threads", "torch"} <= set(payload["environment"])
    table = markdown(payload)
    assert table == (tmp_path / "precision.md").read_text()
    assert "| gmm8 | maf | 8 |" in table and "| gmm8 | realnvp | 8 |" in table


def test_distill_main_runs_variants_against_one_teacher_and_resumes(tmp_path: Path) -> None:
    import invertible

    teacher = invertible.MAF(63, num_layers=1, hidden_features=(8,))
    invertible.save(teacher, tmp_path / "teacher")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable, "-m", "benchmarks", "distill-main", "--teacher",
        str(tmp_path / "teacher"), "--variants", "kl", "contrast-5", "teacher-contrast-5",
        "--seconds", "0.5", "--samples", "2000",
        "--out", str(tmp_path / "out"), "--resume",
    ]  # fmt: skip
    for _ in range(2):  # the second run finds both pairs done and adds nothing
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["kl", "contrast-5", "teacher-contrast-5"]
    assert rows[0]["options"]["data_anchor"] is None and rows[0]["anchor_final"] is None
    assert rows[1]["options"]["anchor"] == "contrast" and rows[1]["anchor_final"] > 0
    assert [r["contrast_source"] for r in rows] == ["data", "data", "teacher"]
    assert all(0 < r["ratio_se"] < 0.1 for r in rows)
    assert "| contrast-5 | 0 |" in (tmp_path / "out" / "table.md").read_text()
    summary = json.loads((tmp_path / "out" / "teacher.json").read_text())
    assert summary["teacher"] == str(tmp_path / "teacher")
    assert 0 < summary["data_sd"] < summary["sample_sd"]  # the fresh teacher is N(0, I)
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["teacher"] == summary
    assert (
        f"against the data's {summary['data_sd']:.3f}"
        in (tmp_path / "out" / "table.md").read_text()
    )


def test_describe_teacher_measures_entropy_and_spread() -> None:
    """For N(0, I) in 2-D: entropy log(2πe) ≈ 2.838 and unit spread, from samples."""
    from benchmarks.distill_main import describe_teacher

    import invertible

    flow = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
    summary = describe_teacher(flow, 0.5 * torch.randn(1000, 2))
    assert summary["entropy"] == pytest.approx(math.log(2 * math.pi * math.e), abs=0.03)
    assert summary["sample_sd"] == pytest.approx(1.0, abs=0.02)
    assert summary["data_sd"] == pytest.approx(0.5, abs=0.05)
