"""Containers, errors and file helpers shared by every dataset loader.

Nothing here imports more than numpy and the standard library.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from invertible.files import atomic_save_npy

__all__ = [
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "ChecksumWarning",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetStatus",
    "ImageData",
    "RequiredFile",
    "TabularData",
    "atomic_save_npy",
    "nonfinite_rows",
    "resolve_data_dir",
]

#: Environment variable that overrides the default data directory.
DATA_DIR_ENV = "INVERTIBLE_DATA_DIR"
#: Environment variable that overrides where derived arrays are cached.
CACHE_DIR_ENV = "INVERTIBLE_CACHE_DIR"
#: Data directory used when neither an argument nor ``INVERTIBLE_DATA_DIR`` is given.
DEFAULT_DATA_DIR = "~/.local/share/invertible/data"


# --------------------------------------------------------------------------- containers


def _summary(a: np.ndarray | None) -> str:
    if a is None:
        return "None"
    return f"array(shape={tuple(a.shape)}, dtype={a.dtype})"


@dataclass(repr=False)
class TabularData:
    """A vector dataset split into train / validation / test arrays.

    Attributes:
        name: Registry name of the dataset.
        train: ``float32`` array ``[N_train, D]``.
        val: ``float32`` array ``[N_val, D]``.
        test: ``float32`` array ``[N_test, D]``.
        mean: Per-feature shift that was subtracted (``x = (raw - mean) / std``), or ``None``
            when the arrays are not standardised. Unless ``info["standardization"]`` says
            otherwise (the MAF-paper loaders reproduce the paper, which for some sets uses
            train+validation statistics), these are statistics of the training split only.
        std: Per-feature scale that was divided by, or ``None``.
        true_log_prob: Closed-form log-density of the data-generating process, evaluated in
            the same space as the arrays (standardisation included), or ``None`` when it is
            not known in closed form. Takes and returns numpy arrays (``[N, D] -> [N]``).
        info: JSON-serialisable notes: source, preprocessing, license, citation, ...
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    true_log_prob: Callable[[np.ndarray], np.ndarray] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arrays = []
        for split in ("train", "val", "test"):
            a = np.ascontiguousarray(getattr(self, split), dtype=np.float32)
            if a.ndim != 2:
                raise ValueError(f"{self.name}.{split} must be 2-D [N, D], got shape {a.shape}")
            setattr(self, split, a)
            arrays.append(a)
        if len({a.shape[1] for a in arrays}) != 1:
            shapes = [a.shape for a in arrays]
            raise ValueError(f"{self.name}: splits disagree on the feature count: {shapes}")

    @property
    def features(self) -> int:
        """Number of dimensions ``D``."""
        return int(self.train.shape[1])

    @property
    def splits(self) -> dict[str, np.ndarray]:
        """The three splits by name (``"train"``, ``"val"``, ``"test"``)."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def unstandardize(self, x: np.ndarray) -> np.ndarray:
        """Map arrays (e.g. model samples) back to the unstandardised space."""
        if self.mean is None or self.std is None:
            return np.asarray(x)
        return np.asarray(x) * self.std + self.mean

    def __repr__(self) -> str:
        return (
            f"TabularData(name={self.name!r}, features={self.features}, "
            f"train={_summary(self.train)}, val={_summary(self.val)}, "
            f"test={_summary(self.test)}, standardized={self.mean is not None}, "
            f"true_log_prob={'yes' if self.true_log_prob is not None else 'no'})"
        )


@dataclass(repr=False)
class ImageData:
    """An image dataset of raw integer pixels.

    Attributes:
        name: Registry name.
        train, val, test: ``uint8`` arrays ``[N, C, H, W]`` of raw pixel values in
            ``0 .. levels - 1`` (no dequantisation, no scaling: that is the job of the flow's
            preprocessing transforms).
        shape: ``(C, H, W)``.
        info: JSON-serialisable notes (source, split protocol, license, ...).
        levels: Number of quantisation levels of the pixel values (256 for 8-bit images; 17
            for the scikit-learn digits, whose values are ``0..16``).
        labels: Optional class labels per split (``{"train": int64 [N], ...}``), where known.
    """

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    shape: tuple[int, int, int]
    info: dict[str, Any] = field(default_factory=dict)
    levels: int = 256
    labels: dict[str, np.ndarray] | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(s) for s in self.shape)  # type: ignore[assignment]
        for split in ("train", "val", "test"):
            a = getattr(self, split)
            if a.dtype != np.uint8 or a.ndim != 4 or tuple(a.shape[1:]) != self.shape:
                raise ValueError(
                    f"{self.name}.{split} must be uint8 [N, *{self.shape}], got {a.dtype} {a.shape}"
                )

    @property
    def features(self) -> int:
        """Number of pixels times channels, ``C * H * W``."""
        c, h, w = self.shape
        return c * h * w

    @property
    def splits(self) -> dict[str, np.ndarray]:
        """The three splits by name (``"train"``, ``"val"``, ``"test"``)."""
        return {"train": self.train, "val": self.val, "test": self.test}

    def __repr__(self) -> str:
        return (
            f"ImageData(name={self.name!r}, shape={self.shape}, levels={self.levels}, "
            f"train={_summary(self.train)}, val={_summary(self.val)}, "
            f"test={_summary(self.test)})"
        )


@dataclass(frozen=True)
class RequiredFile:
    """One file a dataset needs: what it is called, where it comes from, where it goes."""

    filename: str
    url: str
    destination: Path
    note: str = ""

    def describe(self, indent: str = "  ") -> str:
        """A bullet naming the file, where to get it and where to put it."""
        lines = [
            f"{indent}- {self.filename}",
            f"{indent}    get it from: {self.url}",
            f"{indent}    put it at:   {self.destination}",
        ]
        if self.note:
            lines.append(f"{indent}    note: {self.note}")
        return "\n".join(lines)


@dataclass(frozen=True)
class DatasetStatus:
    """Whether a dataset can be loaded from a data directory, and what is missing if not.

    Attributes:
        name: Registry name (what :func:`~invertible.data.load_dataset` takes).
        kind: ``"toy"`` (generated), ``"embedded"`` (ships with a dependency, e.g.
            scikit-learn) or ``"file"`` (needs downloaded files).
        available: True when :func:`~invertible.data.load_dataset` would find its inputs.
        description: One line about the dataset.
        found: The files that would be used (empty for toy/embedded sets).
        missing: The files to download for the recommended route (empty when available).
        message: Human-readable instructions (empty when available); includes alternatives.
    """

    name: str
    kind: str
    available: bool
    description: str
    found: tuple[Path, ...] = ()
    missing: tuple[RequiredFile, ...] = ()
    message: str = ""


# --------------------------------------------------------------------------- errors


class DatasetNotFoundError(FileNotFoundError):
    """A file a dataset needs is absent. The message says which, from where, and where to.

    Attributes:
        dataset: Registry name of the dataset.
        missing: The missing files of the recommended route.
    """

    def __init__(self, dataset: str, message: str, missing: Sequence[RequiredFile] = ()) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.missing = tuple(missing)

    def __str__(self) -> str:  # FileNotFoundError would otherwise print errno-style text
        return str(self.args[0])


class DatasetFormatError(ValueError):
    """A dataset file exists but is corrupt, truncated, or holds invalid (NaN/inf) values."""


class ChecksumWarning(UserWarning):
    """A file's checksum differs from the published one (a different copy, or corrupt)."""


@dataclass
class Located:
    """Result of looking for a dataset's files in a data directory.

    Attributes:
        found: The files to use, by role (e.g. ``{"train": path}``); complete when
            ``routes`` is empty.
        routes: When not available: the acceptable alternatives, each the list of files
            still missing for it (the first is the recommended route).
        note: Extra text for the error message (e.g. why a present file is not usable).
    """

    found: dict[str, Path] = field(default_factory=dict)
    routes: list[list[RequiredFile]] = field(default_factory=list)
    note: str = ""

    @property
    def available(self) -> bool:
        return not self.routes

    def require(self, dataset: str, data_dir: Path) -> dict[str, Path]:
        """The found files, or raise :class:`DatasetNotFoundError` naming what is missing."""
        if self.routes:
            msg = missing_message(dataset, self.routes, data_dir, self.found.values())
            if self.note:
                msg += "\n" + self.note
            raise DatasetNotFoundError(dataset, msg, self.routes[0])
        return self.found


def missing_message(
    dataset: str,
    routes: Sequence[Sequence[RequiredFile]],
    data_dir: Path,
    found: Iterable[Path] = (),
) -> str:
    """Build the text of a :class:`DatasetNotFoundError` from the acceptable routes.

    ``routes`` lists alternatives; each is the list of files *still missing* for it. The
    first route is the recommended one.
    """
    lines = [f"Dataset {dataset!r} needs file(s) that are not in the data directory {data_dir}."]
    for i, route in enumerate(routes):
        lines.append("Missing:" if i == 0 else "Or, instead:")
        lines.extend(f.describe() for f in route)
    found = list(found)
    if found:
        lines.append("Found (usable once the rest is there): " + ", ".join(map(str, found)))
    lines.append(
        f"The data directory is the data_dir argument, else ${DATA_DIR_ENV}, "
        f"else {DEFAULT_DATA_DIR}. Run `invertible datasets` to see every dataset's status."
    )
    return "\n".join(lines)


# --------------------------------------------------------------------------- paths


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the data directory.

    Order: the explicit argument, else the ``INVERTIBLE_DATA_DIR`` environment variable,
    else ``~/.local/share/invertible/data``. The directory need not exist.

    Example:
        >>> resolve_data_dir("/tmp/mydata")
        PosixPath('/tmp/mydata')
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(os.path.expanduser(os.fspath(data_dir)))


def find_first(candidates: Iterable[Path]) -> Path | None:
    """The first existing file among ``candidates``."""
    for c in candidates:
        if c.is_file():
            return c
    return None


def candidates(data_dir: Path, subdirs: Sequence[str], names: Sequence[str]) -> list[Path]:
    """``data_dir/sub/name`` for every sub-directory and name, in order."""
    return [data_dir / sub / name for sub in subdirs for name in names]


def resolve_cache_dir(data_dir: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where derived arrays (e.g. rebuilt BSDS300 patches) are cached.

    Order: explicit ``cache_dir``; ``$INVERTIBLE_CACHE_DIR``; ``<data_dir>/cache`` when the
    data directory is writable; else ``~/.cache/invertible``.
    """
    if cache_dir is not None:
        return Path(os.path.expanduser(os.fspath(cache_dir)))
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(os.path.expanduser(env))
    own = data_dir / "cache"
    if (own.is_dir() and os.access(own, os.W_OK)) or (
        data_dir.is_dir() and os.access(data_dir, os.W_OK)
    ):
        return own
    return Path(os.path.expanduser("~/.cache/invertible"))


def load_cached_npy(path: Path, mmap: bool = False) -> np.ndarray | None:
    """Load a cached ``.npy`` written by :func:`atomic_save_npy`; ``None`` if absent/broken."""
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except (OSError, ValueError, EOFError):
        warnings.warn(f"ignoring unreadable cache file {path}", stacklevel=3)
        return None


def try_save_cache(path: Path, array: np.ndarray) -> bool:
    """Save a cache file, warning instead of failing when the location is not writable."""
    try:
        atomic_save_npy(path, array)
    except OSError as e:
        warnings.warn(f"could not write cache file {path}: {e}", stacklevel=3)
        return False
    return True


def file_key(path: Path) -> str:
    """A cheap identity for a source file (name, size, mtime) used in cache keys."""
    st = path.stat()
    return f"{path.name}:{st.st_size}:{int(st.st_mtime)}"


def hash_key(*parts: object, length: int = 16) -> str:
    """A short hex digest of ``parts`` (for cache file names)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:length]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, expected: str | Iterable[str], what: str = "") -> bool:
    """Compare a file's sha256 with the published value(s); warn on a mismatch.

    Returns True on a match. A mismatch is not fatal (re-compressed copies are common) but
    emits a :class:`ChecksumWarning` that names the file and both digests.
    """
    expected_set = {expected} if isinstance(expected, str) else set(expected)
    got = sha256_file(path)
    if got in expected_set:
        return True
    warnings.warn(
        f"checksum mismatch for {path}{' (' + what + ')' if what else ''}: sha256 {got}, "
        f"expected {' or '.join(sorted(expected_set))}. The file may be a different copy "
        "(e.g. re-compressed) or corrupt; results may not match published numbers.",
        ChecksumWarning,
        stacklevel=3,
    )
    return False


# --------------------------------------------------------------------------- array helpers


def nonfinite_rows(array: Any) -> np.ndarray:
    """Indices of the rows of ``array`` (numpy, or anything ``np.asarray`` takes, e.g. a CPU
    tensor) holding NaN or inf; empty for integer arrays.

    Example:
        >>> nonfinite_rows(np.array([[0.0, 1.0], [np.nan, 2.0], [3.0, np.inf]])).tolist()
        [1, 2]
    """
    if hasattr(array, "detach"):  # a torch tensor: read it without importing torch here
        array = array.detach().cpu().numpy()
    arr = np.asarray(array)
    if arr.dtype.kind not in "fc" or arr.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    finite = np.isfinite(arr.reshape(arr.shape[0], -1)).all(axis=1)
    return np.flatnonzero(~finite)


def check_finite(
    array: np.ndarray, source: str | Path, line_numbers: np.ndarray | int | None = None
) -> None:
    """Raise :class:`DatasetFormatError` if any row of ``array`` holds NaN or inf.

    The message gives the number of bad rows and the index of the first one: its 0-based
    data row, and its 1-based line in the file when ``line_numbers`` is given (an array
    mapping rows to lines, or the line number of row 0 for files without skipped lines).
    """
    rows = nonfinite_rows(array)
    if rows.size:
        first = int(rows[0])
        where = f"data row {first} (0-based)"
        if line_numbers is not None:
            line = (
                line_numbers + first
                if isinstance(line_numbers, int)
                else int(np.asarray(line_numbers)[first])
            )
            where += f", line {line} of the file"
        raise DatasetFormatError(
            f"{source}: {rows.size} row(s) contain NaN or inf values; the first is {where}. "
            "Fix or remove those rows; invalid values are never passed on silently."
        )


def split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items by ``fractions`` (train, val, test) with the remainder to train."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    n_val = round(n * fractions[1])
    n_test = round(n * fractions[2])
    return [n - n_val - n_test, n_val, n_test]


def maf_tail_split(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's split: the last 10% is test, the last 10% of the rest validation, in order."""
    n_test = int(0.1 * data.shape[0])
    test = data[-n_test:] if n_test else data[:0]
    rest = data[: data.shape[0] - n_test]
    n_val = int(0.1 * rest.shape[0])
    val = rest[-n_val:] if n_val else rest[:0]
    train = rest[: rest.shape[0] - n_val]
    return train, val, test


def subset_rows(
    array: np.ndarray, n: int | None, rng: np.random.Generator, split: str
) -> np.ndarray:
    """A seeded random subset of ``n`` rows (kept in their original order); all when None."""
    if n is None or n >= array.shape[0]:
        if n is not None and n > array.shape[0]:
            warnings.warn(
                f"requested n_{split}={n} but only {array.shape[0]} rows exist; using all",
                stacklevel=3,
            )
        return array
    if n < 0:
        raise ValueError(f"n_{split} must be non-negative, got {n}")
    idx = np.sort(rng.choice(array.shape[0], size=n, replace=False))
    return array[idx]


def seeded_rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator from ``seed`` and extra keys (strings are hashed stably)."""
    entropy: list[int] = [int(seed)]
    for k in keys:
        if isinstance(k, str):
            entropy.append(int.from_bytes(hashlib.sha256(k.encode()).digest()[:4], "little"))
        else:
            entropy.append(int(k))
    return np.random.default_rng(np.random.SeedSequence(entropy))


# --------------------------------------------------------------------------- reading files


def read_bytes(path: Path, member: str | None = None) -> bytes:
    """Read a file's bytes, un-gzipping ``.gz`` and extracting ``member`` from a ``.zip``.

    ``member`` is matched by base name. Truncated or corrupt archives raise
    :class:`DatasetFormatError` (zip members are CRC-checked by :mod:`zipfile`).
    """
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if member is not None:
                    names = [n for n in names if os.path.basename(n) == member]
                if not names:
                    raise DatasetFormatError(f"{path}: the zip archive holds no {member!r}")
                return zf.read(names[0])
        if path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DatasetFormatError(
            f"{path} is corrupt or truncated ({type(e).__name__}: {e}); download it again"
        ) from e


def zip_has_member(path: Path, member: str) -> bool:
    """True if the zip at ``path`` holds a file whose base name is ``member``."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(os.path.basename(n) == member for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


_ARCHIVE_ERRORS = (zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error)


@contextmanager
def open_binary(path: Path, member: str | None = None) -> Iterator[IO[bytes]]:
    """Open a file for streaming binary reads, un-gzipping ``.gz`` and opening ``member``
    (matched by base name) inside a ``.zip``. Archive errors met while reading inside the
    ``with`` block (truncation, bad CRC) become :class:`DatasetFormatError`.
    """
    try:
        if path.suffix.lower() == ".zip":
            with zipfile.ZipFile(path) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if member is not None:
                    names = [n for n in names if os.path.basename(n) == member]
                if not names:
                    raise DatasetFormatError(f"{path}: the zip archive holds no {member!r}")
                with zf.open(names[0]) as fh:
                    yield fh
        elif path.suffix.lower() == ".gz":
            with gzip.open(path, "rb") as fh:
                yield fh  # type: ignore[misc]
        else:
            with open(path, "rb") as fh:
                yield fh
    except _ARCHIVE_ERRORS as e:
        raise DatasetFormatError(
            f"{path} is corrupt or truncated ({type(e).__name__}: {e}); download it again"
        ) from e


def read_head(path: Path, n_lines: int, member: str | None = None) -> list[str]:
    """The first ``n_lines`` lines of a (possibly compressed) text file, without newlines."""
    out = []
    with open_binary(path, member) as fh:
        for _ in range(n_lines):
            line = fh.readline()
            if not line:
                break
            out.append(line.decode("latin-1").rstrip("\r\n"))
    return out


def parse_numeric_file(
    path: Path,
    member: str | None = None,
    delimiter: str | None = None,
    skiprows: int = 0,
    usecols: Sequence[int] | None = None,
) -> np.ndarray:
    """Stream a numeric text file (plain, ``.gz`` or a ``.zip`` member) into float64 with
    ``np.loadtxt``, without holding the text in memory; errors become
    :class:`DatasetFormatError`.
    """
    with open_binary(path, member) as fh:
        try:
            return np.loadtxt(
                fh,
                dtype=np.float64,
                delimiter=delimiter,
                skiprows=skiprows,
                usecols=usecols,
                ndmin=2,
                encoding="latin-1",
            )
        except ValueError as e:
            raise DatasetFormatError(f"{path}: cannot parse as numbers: {e}") from e


def parse_numeric(
    text: str | bytes | IO[bytes],
    source: Path | str,
    delimiter: str | None = None,
    skiprows: int = 0,
    usecols: Sequence[int] | None = None,
    ndmin: int = 2,
) -> np.ndarray:
    """``np.loadtxt`` (float64) of text, bytes or a binary file object, whose parse errors
    become :class:`DatasetFormatError`.
    """
    if isinstance(text, bytes):
        text = io.BytesIO(text)
    elif isinstance(text, str):
        text = io.StringIO(text)
    try:
        return np.loadtxt(
            text,
            encoding="latin-1",
            dtype=np.float64,
            delimiter=delimiter,
            skiprows=skiprows,
            usecols=usecols,
            ndmin=ndmin,
        )
    except ValueError as e:
        raise DatasetFormatError(f"{source}: cannot parse as numbers: {e}") from e
