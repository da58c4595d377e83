"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _fp32_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``precision="auto"`` resolves by the hardware (bf16 where it is fast); the suite must
    not depend on the machine it runs on, so "auto" means fp32 here. The tests of "auto"
    itself stub the probe (``tests/test_precision.py``)."""
    from invertible.training import precision

    monkeypatch.setattr(precision, "fast_bf16", lambda device: False)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Tiny models: one thread is faster, and immune to oversubscription on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
