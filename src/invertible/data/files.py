"""Datasets from a user's own file, and the one entry point that takes a name or a path.

:func:`load_array_file` reads an ``[N, D]`` array from ``.npy``, ``.csv`` or whitespace-
separated text and splits it 80/10/10 with a seed; :func:`load_data` takes either a dataset
name (see :func:`~invertible.data.load_dataset`) or such a path, and also returns the
options that reload it (what a checkpoint records).

Example:
    >>> import tempfile, numpy as np
    >>> path = tempfile.mkdtemp() + "/x.npy"
    >>> np.save(path, np.arange(40.0).reshape(20, 2))
    >>> data, reload = load_data(path, seed=0)
    >>> data.train.shape, data.val.shape, data.test.shape, reload["seed"]
    ((16, 2), (2, 2), (2, 2), 0)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from invertible.data.base import (
    DatasetFormatError,
    DatasetNotFoundError,
    ImageData,
    TabularData,
    nonfinite_rows,
)
from invertible.data.registry import load_dataset

__all__ = ["check_finite_splits", "is_file_spec", "load_array_file", "load_data"]

FILE_SUFFIXES = (".npy", ".csv", ".txt")


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a file (a known suffix or a path separator), not a dataset."""
    return spec.endswith(FILE_SUFFIXES) or os.sep in spec


def load_array_file(path: str | os.PathLike[str], seed: int = 0) -> TabularData:
    """Read an ``[N, D]`` float array (N >= 3) and split it 80/10/10 (test, val, train).

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetFormatError: unreadable, not 2-D, too short, or rows with NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(str(path), f"data file {path} not found; check the path")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetFormatError(
            f"cannot read data file {path}: {e}; expect an [N, D] .npy/.csv"
        ) from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 3:
        raise DatasetFormatError(
            f"data file {path}: expected a 2-D array [N, D] with N >= 3, got {arr.shape}"
        )
    rows = nonfinite_rows(arr)
    if rows.size:
        raise DatasetFormatError(
            f"data file {path}: {rows.size} row(s) contain NaN or inf (first: row {rows[0]}); "
            "remove or impute them"
        )
    perm = np.random.default_rng(seed).permutation(arr.shape[0])
    n_val = n_test = max(1, arr.shape[0] // 10)
    test, val, train = (
        arr[perm[:n_test]],
        arr[perm[n_test : n_test + n_val]],
        arr[perm[n_test + n_val :]],
    )
    info = {"source": str(path), "splits": "seeded random 80/10/10", "seed": seed}
    return TabularData(str(path), train, val, test, info=info)


def load_data(
    spec: str,
    *,
    data_dir: str | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[TabularData | ImageData, dict[str, Any]]:
    """Load a dataset by name or an ``[N, D]`` array file; returns ``(data, reload options)``.

    The reload options (``seed``, the dataset options, and ``path`` for a file) are what a
    checkpoint records so that ``eval`` and ``distill`` find the same data again.
    """
    options = dict(options or {})
    if is_file_spec(spec):
        path = Path(spec).expanduser().resolve()
        return load_array_file(path, seed), {"seed": seed, "path": str(path)}
    data = load_dataset(spec, data_dir=data_dir, seed=seed, **options)
    return data, {"seed": seed, **options}


def check_finite_splits(data: TabularData | ImageData) -> None:
    """Raise :class:`DatasetFormatError` if a float split of ``data`` has NaN/inf rows."""
    for split in ("train", "val", "test"):
        if isinstance(getattr(data, split), list):
            continue  # whole int16 utterances (SpeechData): always finite
        rows = nonfinite_rows(getattr(data, split))
        if rows.size:
            raise DatasetFormatError(
                f"dataset {data.name!r} ({split}): {rows.size} row(s) contain NaN or inf "
                f"(first: row {int(rows[0])}); remove or impute them"
            )
