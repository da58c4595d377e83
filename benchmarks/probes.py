"""Measurement helpers shared by the benchmarks: the peak resident memory of a call, in a
fresh interpreter (Linux ``/proc``)."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

__all__ = ["peak_rss_kib", "proc_status_kib", "run_fresh"]


def proc_status_kib(field_name: str) -> int:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def peak_rss_kib(fn: Callable[[], Any]) -> tuple[int, int, Any]:
    """Run ``fn`` with the kernel's peak-RSS counter reset just before it.

    Returns ``(rss before, peak rss during, fn's result)`` in KiB: the rise of the peak is
    the memory the call needed (keep the result alive to count it).
    """
    gc.collect()
    before = proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    result = fn()
    return before, proc_status_kib("VmHWM"), result


def run_fresh(code: str, args: Sequence[str]) -> dict[str, Any]:
    """Run ``python -c code *args`` with the repository importable; returns the JSON object
    its last line of output prints (one measurement per interpreter, so that one peak
    cannot hide another)."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
        env=env, cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])
