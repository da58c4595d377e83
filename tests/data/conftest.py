"""Fixtures for the dataset tests.

``shared_data_dir`` points at the offline benchmark files (``<repo>/../shared/data``, or
``$INVERTIBLE_TEST_SHARED_DATA``); tests that need them are skipped when they are absent,
so the suite passes on machines without them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _shared_dir() -> Path:
    env = os.environ.get("INVERTIBLE_TEST_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep tests away from the user's data and cache directories."""
    monkeypatch.delenv("INVERTIBLE_DATA_DIR", raising=False)
    monkeypatch.setenv("INVERTIBLE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared offline data directory (skip when it is absent)."""
    d = _shared_dir()
    if not d.is_dir():
        pytest.skip(f"shared data directory {d} not present")
    return d


@pytest.fixture(scope="session")
def shared_bsds300(shared_data_dir: Path) -> Path:
    """The shared data directory, when it holds the BSDS300 images archive."""
    if not (shared_data_dir / "bsds300" / "BSDS300-images-reassembled.tgz").is_file():
        pytest.skip("shared BSDS300 archive not present")
    return shared_data_dir


@pytest.fixture(scope="session")
def shared_mnist(shared_data_dir: Path) -> Path:
    """The shared data directory, when it holds the MNIST test images."""
    if not (shared_data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("shared MNIST test files not present")
    return shared_data_dir


@pytest.fixture(scope="session")
def fashion_system_dir() -> Path:
    """Debian's dataset-fashion-mnist install location (skip when not installed)."""
    from invertible.data.images import FASHION_MNIST_SYSTEM_DIR

    if not (FASHION_MNIST_SYSTEM_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip("dataset-fashion-mnist is not installed")
    return FASHION_MNIST_SYSTEM_DIR
