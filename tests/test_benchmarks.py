"""The benchmark harness runs (smoke only: no figure is asserted, timings are not tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from benchmarks.adapter import architecture, make_optimizer
from benchmarks.invertible_adapter import build_invertible

ROOT = Path(__file__).resolve().parents[1]


def test_ours_adapter_matches_the_benchmark_architectures() -> None:
    maf = build_invertible("maf", 8)
    assert architecture("maf") == (5, (512, 512))
    # dense count D*512 + 512*512 + 512*2D weights plus biases, 5 layers (as the peers)
    assert maf.num_params() == 5 * (8 * 512 + 512 + 512 * 512 + 512 + 512 * 16 + 16)
    assert isinstance(make_optimizer(maf), torch.optim.Adam)
    small = build_invertible("coupling", 6, layers=2, hidden=(16,), batch_norm=True)
    assert small.name == "invertible-bn"
    x = small.sample(5)
    assert small.log_prob(x).shape == (5,)


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
