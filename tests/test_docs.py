"""Generated documentation stays in step with what generates it."""

from __future__ import annotations

from benchmarks import tables


def test_benchmark_page_is_generated_from_the_results() -> None:
    assert tables.main(["--check"]) == 0, "run: python -m benchmarks.tables"
