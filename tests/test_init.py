"""``import invertible``: the OpenMP wait policy it sets for torch, and when it does not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SHOW = "import os; print(os.environ.get('OMP_WAIT_POLICY'))"


def _policy(code: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    result = subprocess.run(
        [sys.executable, "-c", f"{code}; {SHOW}"],
        env=environ, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("code", "env", "expected"),
    [
        ("import invertible", {}, "PASSIVE"),  # before torch: passive waiting
        ("import invertible", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),  # the user's wins
        ("import torch; import invertible", {}, "None"),  # too late to matter: left alone
    ],
)
def test_import_sets_passive_waiting_only_before_torch(
    code: str, env: dict[str, str], expected: str
) -> None:
    assert _policy(code, **env) == expected
