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

#: The fewest rows a data file may have: 2 validation and 2 test rows, the rest training.
MIN_ROWS = 10

#: Largest magnitude accepted in data: squares of larger float32 values overflow (batch
#: norm variances, Gaussian log-densities), so training would skip every step.
MAX_MAGNITUDE = 1e15


def _check_magnitude(arr: np.ndarray, what: str) -> None:
    """Refuse values whose squares overflow float32 (they make every step non-finite)."""
    if arr.dtype.kind != "f" or arr.size == 0:
        return
    big = np.abs(arr) > MAX_MAGNITUDE
    if big.any():
        rows = np.flatnonzero(big.any(axis=tuple(range(1, arr.ndim))))
        raise DatasetFormatError(
            f"{what}: {rows.size} row(s) hold values beyond ±{MAX_MAGNITUDE:.0e} (first: row "
            f"{int(rows[0])}, {float(arr[rows[0]].flat[np.abs(arr[rows[0]]).argmax()]):.3g}); "
            "such values overflow float32 in training: fix, remove or rescale them"
        )


def _read_array(path: Path) -> np.ndarray:
    """The array in a ``.npy`` or text file, or one clear :class:`DatasetFormatError`."""
    if path.suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError):
            raise DatasetFormatError(
                f"cannot read data file {path}: not a numeric .npy array (made by np.save); "
                "if it is text, rename it .csv or .txt"
            ) from None
    delimiter = "," if path.suffix == ".csv" else None
    try:
        with open(path) as fh:
            first = fh.readline()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"cannot read data file {path}: {e}") from None
    if ";" in first and delimiter == ",":
        raise DatasetFormatError(
            f"cannot read data file {path}: values are separated by ';'; a .csv file here "
            "uses commas (or save the data with np.save as .npy)"
        )
    tokens = first.replace(",", " ").split()
    header = bool(tokens) and not all(_is_number(t) for t in tokens)
    try:
        return np.loadtxt(path, delimiter=delimiter, ndmin=2, skiprows=1 if header else 0)
    except (ValueError, OSError, EOFError) as e:
        raise DatasetFormatError(
            f"cannot read data file {path}: {e}; expect numbers only, one row per point (an "
            "optional header line is skipped)"
        ) from None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names a file (a known suffix or a path separator), not a dataset."""
    return spec.endswith(FILE_SUFFIXES) or os.sep in spec


def load_array_file(path: str | os.PathLike[str], seed: int = 0) -> TabularData:
    """Read an ``[N, D]`` float array (N >= ``MIN_ROWS``) and split it 80/10/10 (test, val, train).

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetFormatError: unreadable, not 2-D, too short, or rows with NaN/inf.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetFormatError(
            f"data {path} is a directory; pass an [N, D] .npy/.csv file, or a dataset name "
            "with --data-dir for where dataset files live"
        )
    if not path.is_file():
        raise DatasetNotFoundError(str(path), f"data file {path} not found; check the path")
    arr = np.asarray(_read_array(path), dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < MIN_ROWS:
        raise DatasetFormatError(
            f"data file {path}: expected a 2-D array [N, D] with N >= {MIN_ROWS} rows (for "
            f"train, validation and test splits), got shape {arr.shape}"
        )
    _check_magnitude(arr, str(path))
    rows = nonfinite_rows(arr)
    if rows.size:
        raise DatasetFormatError(
            f"data file {path}: {rows.size} row(s) contain NaN or inf (first: row {rows[0]}); "
            "remove or impute them"
        )
    perm = np.random.default_rng(seed).permutation(arr.shape[0])
    n_val = n_test = max(2, arr.shape[0] // 10)
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
    _check_options(options)
    if is_file_spec(spec):
        path = Path(spec).expanduser().resolve()
        return load_array_file(path, seed), {"seed": seed, "path": str(path)}
    data = load_dataset(spec, data_dir=data_dir, seed=seed, **options)
    return data, {"seed": seed, **options}


def _check_options(options: dict[str, Any]) -> None:
    """Refuse row counts (``n_train=...``) that are not positive integers."""
    for key, value in options.items():
        if not key.startswith("n_") or value is None:
            continue
        least = 1 if key == "n_train" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DatasetFormatError(
                f"dataset option {key}={value!r}: expected a whole number of rows >= {least}"
            )


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
        if isinstance(getattr(data, split), np.ndarray):  # not the waveform lists of speech
            _check_magnitude(getattr(data, split), f"dataset {data.name!r} ({split})")
