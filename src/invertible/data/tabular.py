"""The UCI datasets of the MAF paper: POWER, GAS, HEPMASS, MINIBOONE.

Each loader reproduces the preprocessing and splits of the MAF paper (Papamakarios,
Pavlakou, Murray 2017, code at github.com/gpapamak/maf), reimplemented with numpy from the
recipes recorded in ``/work/shared/data/README.md`` and the paper's code. Nothing is read
with pickle. Every loader accepts:

- ``standardize``: ``"maf"`` (default: exactly as the paper; the statistics come from the
  split(s) the paper used, see ``info["standardization"]``), ``"train"`` (statistics of the
  training split only) or ``"none"``; ``True``/``False`` mean ``"maf"``/``"none"``.
- ``n_train`` / ``n_val`` / ``n_test``: take a seeded random subset (kept in order) of each
  split *after* the full recipe (statistics are those of the full splits). ``None`` = all.

MAF's randomness (``RandomState(42)`` for POWER) is reproduced as is and does not depend on
``seed``; ``seed`` drives only what the paper left unspecified (GAS's 25% sample, POWER's
time dequantisation when rebuilding from the raw text) and the optional subsets.
"""

from __future__ import annotations

import io
import warnings
from array import array
from pathlib import Path

import numpy as np

from invertible.data.base import (
    DatasetFormatError,
    Located,
    RequiredFile,
    TabularData,
    check_finite,
    maf_tail_split,
    open_binary,
    parse_numeric,
    parse_numeric_file,
    read_head,
    seeded_rng,
    subset_rows,
    zip_has_member,
)

__all__ = [
    "gas_recipe",
    "hepmass_recipe",
    "load_gas",
    "load_hepmass",
    "load_miniboone",
    "load_power",
    "locate_gas",
    "locate_hepmass",
    "locate_miniboone",
    "locate_power",
    "miniboone_recipe",
    "power_recipe",
    "read_gas_raw",
    "read_hepmass_csv",
    "read_miniboone_raw",
    "read_power_raw",
]

MAF_DATA_URL = "https://zenodo.org/record/1161203 (data.tar.gz, MAF's preprocessed files)"
POWER_URL = (
    "https://archive.ics.uci.edu/static/public/235/"
    "individual+household+electric+power+consumption.zip"
)
GAS_URL = (
    "https://archive.ics.uci.edu/static/public/322/gas+sensor+array+under+dynamic+gas+mixtures.zip"
)
HEPMASS_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00347/"
MINIBOONE_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/00199/MiniBooNE_PID.txt"

POWER_TXT = "household_power_consumption.txt"
GAS_TXT = "ethylene_CO.txt"
MINIBOONE_TXT = "MiniBooNE_PID.txt"

_MAF_CITATION = (
    "Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density Estimation. "
    "NeurIPS 2017"
)
_UCI_CITATION = "Dua, Graff. UCI Machine Learning Repository. University of California, Irvine"
_STANDARDIZE_MODES = ("maf", "train", "none")


# --------------------------------------------------------------------------- helpers


def _dirs(data_dir: Path, *names: str) -> list[Path]:
    return [data_dir / n for n in names]


def _first_file(dirs: list[Path], names: tuple[str, ...]) -> Path | None:
    for d in dirs:
        for n in names:
            if (d / n).is_file():
                return d / n
    return None


def _first_zip_with(dirs: list[Path], member: str) -> Path | None:
    for d in dirs:
        if d.is_dir():
            for z in sorted(d.glob("*.zip")):
                if zip_has_member(z, member):
                    return z
    return None


def _check_mode(standardize: str | bool) -> str:
    """Normalise ``standardize``: True means the paper's choice ("maf"), False "none"."""
    if standardize is True:
        return "maf"
    if standardize is False:
        return "none"
    if standardize not in _STANDARDIZE_MODES:
        raise ValueError(
            f"standardize must be one of {_STANDARDIZE_MODES} (or True = 'maf', "
            f"False = 'none'), got {standardize!r}"
        )
    return standardize


def _finish(
    name: str,
    splits: tuple[np.ndarray, np.ndarray, np.ndarray],
    standardize: str | bool,
    maf_stats: tuple[np.ndarray, np.ndarray],
    maf_stats_desc: str,
    seed: int,
    n_sizes: tuple[int | None, int | None, int | None],
    info: dict,
) -> TabularData:
    """Standardise (MAF stats, train stats or none), subset, and wrap up."""
    standardize = _check_mode(standardize)
    train, val, test = splits
    mean: np.ndarray | None
    std: np.ndarray | None
    if standardize == "maf":
        mean, std = maf_stats
        info["standardization"] = f"z-score with {maf_stats_desc}, exactly as the MAF paper"
    elif standardize == "train":
        mean, std = train.mean(axis=0), train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        info["standardization"] = "z-score with the mean/std (ddof=0) of the training split only"
    else:
        mean = std = None
        info["standardization"] = "none"
    if mean is not None and std is not None:
        train, val, test = ((a - mean) / std for a in (train, val, test))
    full = {"train": len(train), "val": len(val), "test": len(test)}
    out = []
    for i, (split, a, n) in enumerate(zip(("train", "val", "test"), (train, val, test), n_sizes)):
        out.append(subset_rows(a, n, seeded_rng(seed, name, "subset", i), split))
    info["full_sizes"] = full
    info["sizes"] = {"train": len(out[0]), "val": len(out[1]), "test": len(out[2])}
    if any(n is not None for n in n_sizes):
        info["subset"] = "seeded random subset of each split (statistics from the full splits)"
    info.setdefault("citation", [_MAF_CITATION, _UCI_CITATION])
    return TabularData(
        name,
        *out,
        mean=None if mean is None else np.asarray(mean, dtype=np.float32),
        std=None if std is None else np.asarray(std, dtype=np.float32),
        info=info,
    )


def _train_val_stats(train: np.ndarray, val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    both = np.vstack((train, val))
    return both.mean(axis=0), both.std(axis=0)


def _smallest_value_counts(data: np.ndarray) -> np.ndarray:
    """How often each column's smallest value occurs (MAF's discrete-feature test)."""
    return (data == data.min(axis=0, keepdims=True)).sum(axis=0)


# --------------------------------------------------------------------------- POWER


def locate_power(data_dir: Path) -> Located:
    """Find ``power/data.npy`` (MAF) or the raw UCI text / zip."""
    dirs = _dirs(data_dir, "power", "POWER")
    found: dict[str, Path] = {}
    if npy := _first_file(dirs, ("data.npy",)):
        found["npy"] = npy
    if txt := _first_file(dirs, (POWER_TXT,)):
        found["raw"] = txt
    elif zp := _first_zip_with(dirs, POWER_TXT):
        found["raw"] = zp
    if found:
        return Located(found)
    return Located(
        routes=[
            [
                RequiredFile(
                    "individual+household+electric+power+consumption.zip",
                    POWER_URL,
                    data_dir / "power" / "individual+household+electric+power+consumption.zip",
                    note=f"the UCI zip (any name), or the {POWER_TXT} inside it",
                )
            ],
            [
                RequiredFile(
                    "data.npy",
                    MAF_DATA_URL,
                    data_dir / "power" / "data.npy",
                    note="MAF's copy: data/power/data.npy from data.tar.gz",
                )
            ],
        ]
    )


def read_power_raw(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """Parse the UCI text (or its zip) into MAF's ``data.npy`` column layout.

    Returns ``(data, lines, n_missing)``: ``data`` float64 ``[N, 8]`` = global active power,
    global reactive power, voltage, global intensity, sub-metering 1-3, and time of day in
    minutes (``60 h + m``, integer); ``lines`` the 1-based line of each row in the file;
    ``n_missing`` the rows dropped for missing values (``?`` or empty fields).
    """
    keep = array("q")
    n_missing = 0
    body = io.BytesIO()
    table = bytes.maketrans(b"/:", b";;")
    with open_binary(path, POWER_TXT) as fh:
        header = fh.readline()
        if not header.startswith(b"Date;Time;Global_active_power"):
            raise DatasetFormatError(
                f"{path}: not the UCI household power file (the first line should start with "
                f"'Date;Time;Global_active_power', got {header[:60]!r})"
            )
        for i, line in enumerate(fh, start=2):
            line = line.rstrip()
            if not line:
                continue
            if b"?" in line or b";;" in line or line.endswith(b";"):
                n_missing += 1
                continue
            keep.append(i)
            body.write(line.translate(table))
            body.write(b"\n")
    body.seek(0)
    arr = parse_numeric(body, path, delimiter=";")
    if arr.shape[1] != 13:
        raise DatasetFormatError(
            f"{path}: expected 9 ';'-separated fields per line (date, time, 7 measurements), "
            f"got {arr.shape[1] - 4}"
        )
    minutes = arr[:, 3] * 60.0 + arr[:, 4] + arr[:, 5] / 60.0
    data = np.column_stack([arr[:, 6:13], minutes])
    line_no = np.frombuffer(keep, dtype=np.int64) if len(keep) else np.zeros(0, np.int64)
    check_finite(data, path, line_no)
    return data, line_no, n_missing


def power_recipe(data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MAF's POWER recipe on ``data.npy``-layout rows ``[N, 8]``; returns unscaled splits.

    ``RandomState(42)`` shuffles the rows; columns 3 (global intensity) and 1 (global
    reactive power) are deleted; uniform noise is added from the same generator in the
    paper's order (voltage ``0.01 U``, then active power ``0.001 U``, then sub-meterings
    ``U``; none on time); the last 10% is test, the last 10% of the rest validation.
    """
    if data.ndim != 2 or data.shape[1] != 8:
        raise DatasetFormatError(f"POWER data must have 8 columns, got shape {data.shape}")
    rng = np.random.RandomState(42)
    data = np.array(data, dtype=np.float64, copy=True)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)
    data = np.delete(data, 1, axis=1)
    voltage_noise = 0.01 * rng.rand(n, 1)
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    time_noise = np.zeros((n, 1))
    data += np.hstack((gap_noise, voltage_noise, sm_noise, time_noise))
    return maf_tail_split(data)


def load_power(
    data_dir: Path,
    *,
    seed: int = 0,
    source: str = "auto",
    standardize: str | bool = "maf",
    time_dequantize: bool = True,
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> TabularData:
    """POWER (UCI household electric power consumption), D = 6, MAF protocol.

    Args:
        data_dir: Data directory (looks in ``power/``).
        seed: Seed for the time dequantisation of a raw rebuild and for subsets.
        source: ``"auto"`` (MAF's ``data.npy`` if present, else the raw UCI file), ``"npy"``
            or ``"raw"``.
        standardize: ``"maf"`` (train+validation statistics, as the paper), ``"train"``,
            ``"none"``.
        time_dequantize: Raw rebuild only: add ``U[0, 1)`` minutes to the integer time of
            day. MAF adds no noise to time, so its ``data.npy`` time column is taken to be
            already continuous; without this the column has 1440 atoms.
        n_train: Optional training subset size.
        n_val: Optional validation subset size.
        n_test: Optional test subset size.
    """
    # Long on purpose: the two sources (MAF's .npy, the raw UCI file) share one linear
    # sequence of steps whose intermediate arrays the split and the info both need.
    standardize = _check_mode(standardize)
    found = locate_power(data_dir).require("power", data_dir)
    info: dict = {
        "source": "UCI Individual household electric power consumption (Hebrail, Berard)",
        "url": POWER_URL,
        "license": "CC BY 4.0",
    }
    if source not in ("auto", "npy", "raw"):
        raise ValueError(f"source must be 'auto', 'npy' or 'raw', got {source!r}")
    use_npy = "npy" in found and source in ("auto", "npy")
    if source == "npy" and "npy" not in found:
        raise ValueError(f"source='npy' but no power/data.npy in {data_dir}")
    if source == "raw" and "raw" not in found:
        raise ValueError(f"source='raw' but no {POWER_TXT} (or zip) in {data_dir}")
    if use_npy:
        path = found["npy"]
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetFormatError(f"{path}: not a readable .npy array ({e})") from e
        check_finite(data, path)
        if data.shape[0] != 2049280:
            warnings.warn(
                f"{path} has {data.shape[0]} rows; MAF's power/data.npy has 2,049,280",
                stacklevel=2,
            )
        info["file"] = str(path)
        info["paper_exact"] = True
    else:
        path = found["raw"]
        data, _, n_missing = read_power_raw(path)
        if time_dequantize:
            data[:, 7] += seeded_rng(seed, "power-time").random(data.shape[0])
        info["file"] = str(path)
        info["rows_dropped_missing"] = n_missing
        info["paper_exact"] = False
        info["rebuild_note"] = (
            "rebuilt from the raw UCI text: rows with missing values dropped, columns laid out "
            "as MAF's data.npy (7 measurements + minutes since midnight"
            + (" + U[0,1) dequantisation, seeded" if time_dequantize else "")
            + "). MAF's exact time column is not documented, so the time feature (only) "
            "may differ from the paper's."
        )
    train, val, test = power_recipe(data)
    info["preprocessing"] = [
        "shuffle rows with RandomState(42)",
        "delete columns 3 (global intensity) and 1 (global reactive power)",
        "add uniform noise from the same RandomState: 0.001 U to global active power, "
        "0.01 U to voltage, U to each sub-metering, none to time",
        "split: last 10% test, last 10% of the rest validation",
    ]
    info["columns"] = [
        "global_active_power",
        "voltage",
        "sub_metering_1",
        "sub_metering_2",
        "sub_metering_3",
        "time",
    ]
    return _finish(
        "power",
        (train, val, test),
        standardize,
        _train_val_stats(train, val),
        "the mean/std (ddof=0) of train+validation (MAF's choice)",
        seed,
        (n_train, n_val, n_test),
        info,
    )


# --------------------------------------------------------------------------- GAS


def locate_gas(data_dir: Path) -> Located:
    """Find ``gas/ethylene_CO.txt`` (or a zip holding it). MAF's pickle is never read."""
    dirs = _dirs(data_dir, "gas", "GAS")
    raw = _first_file(dirs, (GAS_TXT,)) or _first_zip_with(dirs, GAS_TXT)
    if raw:
        return Located({"raw": raw})
    note = ""
    if _first_file(dirs, ("ethylene_CO.pickle",)):
        note = (
            "Note: gas/ethylene_CO.pickle (MAF's file) is present but is not loaded: pickles "
            "can run arbitrary code. The loader rebuilds GAS from the raw UCI text instead."
        )
    return Located(
        routes=[
            [
                RequiredFile(
                    GAS_TXT,
                    GAS_URL,
                    data_dir / "gas" / GAS_TXT,
                    note="inside the UCI zip; the zip itself may also be put in gas/",
                )
            ]
        ],
        note=note,
    )


def read_gas_raw(path: Path) -> np.ndarray:
    """Parse ``ethylene_CO.txt``: float64 ``[N, 19]`` (time, CO, ethylene, 16 sensors)."""
    head = read_head(path, 1, GAS_TXT)
    try:
        [float(t) for t in (head[0] if head else "").split()]
        skip = 0
    except ValueError:
        skip = 1
    arr = parse_numeric_file(path, GAS_TXT, skiprows=skip)
    if arr.shape[1] != 19:
        raise DatasetFormatError(
            f"{path}: expected 19 whitespace-separated columns (time, CO, ethylene, 16 "
            f"sensors), got {arr.shape[1]}"
        )
    check_finite(arr, path, skip + 1)
    return arr


def gas_recipe(
    sensors: np.ndarray, threshold: float = 0.98
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[int], np.ndarray, np.ndarray]:
    """MAF's GAS recipe on the 16 sensor columns (rows already sampled and ordered).

    Repeatedly drop the first column whose correlation with some other column exceeds
    ``threshold``; z-score with the mean and std (ddof=1, pandas) of *all* rows; split:
    last 10% test, last 10% of the rest validation.

    Returns ``((train, val, test), kept_columns, mean, std)``: the splits unscaled, and
    the statistics MAF z-scores them with.
    """
    cols = list(range(sensors.shape[1]))
    while True:
        corr = np.corrcoef(sensors[:, cols], rowvar=False)
        counts = (corr > threshold).sum(axis=1)
        over = np.flatnonzero(counts > 1)
        if over.size == 0:
            break
        del cols[int(over[0])]
    data = sensors[:, cols]
    mean, std = data.mean(axis=0), data.std(axis=0, ddof=1)
    return maf_tail_split(data), cols, mean, std


def load_gas(
    data_dir: Path,
    *,
    seed: int = 0,
    fraction: float = 0.25,
    standardize: str | bool = "maf",
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> TabularData:
    """GAS (UCI gas sensor array under dynamic gas mixtures, ``ethylene_CO.txt``), D = 8.

    MAF read a pandas pickle that holds a random 25% of the rows of ``ethylene_CO.txt`` in
    random order (its code shows the ``sample(frac=0.25)`` that made it; 1,052,065 rows:
    852,174 / 94,685 / 105,206). We draw the same number of rows with a seeded generator
    (``fraction``; 1.0 = all rows, shuffled): the recipe and sizes match the paper, the
    particular rows do not. Then: drop the time, CO and ethylene columns, drop correlated
    sensors, z-score (all rows, ddof=1), split from the end.
    """
    standardize = _check_mode(standardize)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    path = locate_gas(data_dir).require("gas", data_dir)["raw"]
    raw = read_gas_raw(path)
    n = round(fraction * raw.shape[0])
    rows = seeded_rng(seed, "gas-sample").choice(raw.shape[0], size=n, replace=False)
    sensors = raw[rows, 3:]
    del raw
    splits, kept, mean, std = gas_recipe(sensors)
    info = {
        "source": "UCI Gas sensor array under dynamic gas mixtures (Fonollosa et al. 2015), "
        "ethylene_CO.txt",
        "url": GAS_URL,
        "license": "CC BY 4.0",
        "file": str(path),
        "paper_exact": False,
        "rebuild_note": "MAF's pickle is a random 25% row sample of unknown seed; this is a "
        f"seeded {fraction:.0%} sample (seed={seed}), same recipe and sizes, other rows",
        "kept_sensor_columns": [int(c) for c in kept],
        "preprocessing": [
            f"random {fraction:.0%} of the rows, in random order (seeded)",
            "drop the time, CO and ethylene concentration columns (16 sensors remain)",
            "repeatedly drop the first sensor correlated > 0.98 with another",
            "split: last 10% test, last 10% of the rest validation",
        ],
    }
    return _finish(
        "gas",
        splits,  # type: ignore[arg-type]
        standardize,
        (mean, std),
        "the mean/std (ddof=1) of all rows before the split (MAF's choice)",
        seed,
        (n_train, n_val, n_test),
        info,
    )


# --------------------------------------------------------------------------- HEPMASS


def locate_hepmass(data_dir: Path) -> Located:
    """Find ``hepmass/1000_train.csv`` and ``hepmass/1000_test.csv`` (or ``.csv.gz``)."""
    dirs = _dirs(data_dir, "hepmass", "HEPMASS")
    found: dict[str, Path] = {}
    missing = []
    for role in ("train", "test"):
        name = f"1000_{role}.csv"
        p = _first_file(dirs, (name, name + ".gz"))
        if p:
            found[role] = p
        else:
            missing.append(
                RequiredFile(
                    name + ".gz",
                    HEPMASS_URL + name + ".gz",
                    data_dir / "hepmass" / (name + ".gz"),
                    note=f"or the uncompressed {name}",
                )
            )
    return Located(found, [missing] if missing else [])


def read_hepmass_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Parse a HEPMASS csv: ``(column names, float64 [N, C])``.

    A trailing empty column (lines ending in ``,``) becomes an all-NaN column, as pandas
    reads it; MAF's test-file fix drops it.
    """
    head = read_head(path, 2)
    if len(head) < 2 or not head[1].strip():
        raise DatasetFormatError(f"{path}: no header line and data rows")
    names = [h.strip() for h in head[0].strip().split(",")]
    first = head[1].strip()
    n_fields = len(first.split(","))
    empty_last = first.endswith(",")
    usecols = list(range(n_fields - 1 if empty_last else n_fields))
    arr = parse_numeric_file(path, delimiter=",", skiprows=1, usecols=usecols)
    if empty_last:
        arr = np.hstack([arr, np.full((arr.shape[0], 1), np.nan)])
    names = names[:n_fields] + [f"Unnamed: {i}" for i in range(len(names), n_fields)]
    return names, arr


def hepmass_recipe(
    train_names: list[str],
    train_raw: np.ndarray,
    test_names: list[str],
    test_raw: np.ndarray,
    source: str = "hepmass",
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], list[str], np.ndarray, np.ndarray]:
    """MAF's HEPMASS recipe.

    Keep rows whose first column (label) is 1 and drop it; drop the test file's last column
    (MAF: "the data set is messed up"); drop features whose smallest value occurs more than
    5 times in the training file; the last 10% of the training rows is validation. MAF
    z-scores with the mean/std (ddof=1) of the whole training file (validation rows
    included). Test columns are matched to training columns by header name, as pandas does
    in MAF's code.

    MAF applies the smallest-value test to the z-scored data; the count is the same on the
    raw values (an affine map keeps ties), except for a constant column, where MAF's
    z-score would divide by zero: testing the raw values drops such a column instead of
    producing NaNs.

    Returns:
        ``((train, val, test), kept_names, mean, std)``: the splits unscaled (kept features
        only) and the statistics MAF z-scores them with.
    """
    tr = train_raw[train_raw[:, 0] == 1][:, 1:]
    tr_names = train_names[1:]
    te = test_raw[test_raw[:, 0] == 1][:, 1:-1]
    te_names = test_names[1:-1]
    check_finite(tr, f"{source} train (class-1 rows, label dropped)")
    keep = np.flatnonzero(_smallest_value_counts(tr) <= 5)
    kept_names = [tr_names[i] for i in keep]
    missing = [n for n in kept_names if n not in te_names]
    if missing:
        raise DatasetFormatError(
            f"{source}: test file lacks feature column(s) {missing} (matched by header name)"
        )
    te_idx = [te_names.index(n) for n in kept_names]
    te_k = te[:, te_idx]
    check_finite(te_k, f"{source} test (class-1 rows, kept features)")
    tr_k = tr[:, keep]
    mean, std = tr_k.mean(axis=0), tr_k.std(axis=0, ddof=1)
    n_val = int(0.1 * tr_k.shape[0])
    val, train = tr_k[tr_k.shape[0] - n_val :], tr_k[: tr_k.shape[0] - n_val]
    return (train, val, te_k), kept_names, mean, std


def load_hepmass(
    data_dir: Path,
    *,
    seed: int = 0,
    standardize: str | bool = "maf",
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> TabularData:
    """HEPMASS (UCI, the ``1000_*`` files), D = 21, MAF protocol (see :func:`hepmass_recipe`)."""
    standardize = _check_mode(standardize)
    found = locate_hepmass(data_dir).require("hepmass", data_dir)
    tr_names, tr_raw = read_hepmass_csv(found["train"])
    te_names, te_raw = read_hepmass_csv(found["test"])
    splits_std, kept, mean, std = hepmass_recipe(tr_names, tr_raw, te_names, te_raw)
    del tr_raw, te_raw
    splits = splits_std if standardize == "maf" else tuple(a * std + mean for a in splits_std)
    info = {
        "source": "UCI HEPMASS (Baldi et al. 2016), 1000_train.csv / 1000_test.csv",
        "url": HEPMASS_URL,
        "license": "CC BY 4.0",
        "files": {k: str(v) for k, v in found.items()},
        "paper_exact": True,
        "kept_features": kept,
        "preprocessing": [
            "keep class-1 (signal) rows, drop the label",
            "drop the test file's last column (as MAF's code does)",
            "drop features whose smallest value occurs more than 5 times",
            "validation: the last 10% of the training file's rows",
        ],
    }
    return _finish(
        "hepmass",
        splits,  # type: ignore[arg-type]
        standardize,
        (mean, std),
        "the mean/std (ddof=1) of the whole training file, validation rows included (MAF's choice)",
        seed,
        (n_train, n_val, n_test),
        info,
    )


# --------------------------------------------------------------------------- MINIBOONE


def locate_miniboone(data_dir: Path) -> Located:
    """Find ``miniboone/data.npy`` (MAF) or the raw ``MiniBooNE_PID.txt``."""
    dirs = _dirs(data_dir, "miniboone", "MINIBOONE", "MiniBooNE")
    found: dict[str, Path] = {}
    if npy := _first_file(dirs, ("data.npy",)):
        found["npy"] = npy
    if raw := _first_file(dirs, (MINIBOONE_TXT,)):
        found["raw"] = raw
    if found:
        return Located(found)
    return Located(
        routes=[
            [
                RequiredFile(
                    "data.npy",
                    MAF_DATA_URL,
                    data_dir / "miniboone" / "data.npy",
                    note="MAF's copy: data/miniboone/data.npy from data.tar.gz (paper-exact)",
                )
            ],
            [RequiredFile(MINIBOONE_TXT, MINIBOONE_URL, data_dir / "miniboone" / MINIBOONE_TXT)],
        ]
    )


def read_miniboone_raw(path: Path) -> tuple[np.ndarray, int, int]:
    """Parse ``MiniBooNE_PID.txt``: ``(float64 [N, 50], n_signal, n_background)``."""
    head = read_head(path, 1)
    first = head[0] if head else ""
    try:
        n_signal, n_background = (int(t) for t in first.split())
    except ValueError as e:
        raise DatasetFormatError(
            f"{path}: the first line should hold the signal and background counts "
            f"(e.g. '36499 93565'), got {first[:60]!r}"
        ) from e
    arr = parse_numeric_file(path, skiprows=1)
    if arr.shape[1] != 50:
        raise DatasetFormatError(f"{path}: expected 50 columns, got {arr.shape[1]}")
    if arr.shape[0] != n_signal + n_background:
        raise DatasetFormatError(
            f"{path}: header announces {n_signal}+{n_background} rows, found {arr.shape[0]}"
        )
    check_finite(arr, path, 2)
    return arr, n_signal, n_background


def miniboone_recipe(data: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """MAF's recorded MINIBOONE cleaning: drop rows with column 0 below -100 (the -999
    placeholders), then features whose smallest value occurs more than 5 times. File order
    is kept. Returns ``(cleaned rows, kept column indices)``.
    """
    data = data[~(data[:, 0] < -100)]
    keep = np.flatnonzero(_smallest_value_counts(data) <= 5)
    return data[:, keep], [int(k) for k in keep]


def load_miniboone(
    data_dir: Path,
    *,
    seed: int = 0,
    source: str = "auto",
    events: str = "signal",
    standardize: str | bool = "maf",
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
) -> TabularData:
    """MINIBOONE (UCI MiniBooNE particle identification), D = 43, MAF protocol.

    ``source="auto"`` prefers MAF's ``data.npy`` (paper-exact), else rebuilds from
    ``MiniBooNE_PID.txt``. Caveat for the rebuild: MAF's ``data.npy`` has 36,488 rows while
    the raw file has 130,065; MAF's recorded recipe alone does not explain that. 36,488 is
    the 36,499 signal events less 11 outliers, so ``events="signal"`` (default) keeps the
    signal rows (the first 36,499) before cleaning; ``events="all"`` uses every row.
    Split (no shuffle): last 10% test, last 10% of the rest validation; z-score with
    train+validation statistics (MAF).
    """
    # Long on purpose: MAF's preprocessing, one step after another, as in their code.
    standardize = _check_mode(standardize)
    if events not in ("signal", "all"):
        raise ValueError(f"events must be 'signal' or 'all', got {events!r}")
    if source not in ("auto", "npy", "raw"):
        raise ValueError(f"source must be 'auto', 'npy' or 'raw', got {source!r}")
    found = locate_miniboone(data_dir).require("miniboone", data_dir)
    info: dict = {
        "source": "UCI MiniBooNE particle identification (Roe et al. 2005)",
        "url": MINIBOONE_URL,
        "license": "CC BY 4.0",
    }
    if source in ("auto", "npy") and "npy" in found:
        path = found["npy"]
        try:
            data = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DatasetFormatError(f"{path}: not a readable .npy array ({e})") from e
        if data.ndim != 2:
            raise DatasetFormatError(f"{path}: expected a 2-D array, got shape {data.shape}")
        check_finite(data, path)
        if data.shape != (36488, 43):
            warnings.warn(
                f"{path} has shape {data.shape}; MAF's miniboone/data.npy is (36488, 43)",
                stacklevel=2,
            )
        info.update(file=str(path), paper_exact=True)
        info["preprocessing"] = [
            "MAF's cleaned data.npy (outliers and discrete features already removed)"
        ]
    elif source == "npy":
        raise ValueError(f"source='npy' but no miniboone/data.npy in {data_dir}")
    else:
        path = found["raw"]
        raw, n_signal, _ = read_miniboone_raw(path)
        if events == "signal":
            raw = raw[:n_signal]
        data, kept = miniboone_recipe(raw)
        info.update(file=str(path), paper_exact=False, events=events, kept_columns=kept)
        info["rebuild_note"] = (
            "rebuilt from MiniBooNE_PID.txt; MAF's data.npy (36,488 x 43) appears to hold the "
            "signal events only; that is an inference, not documented"
        )
        info["preprocessing"] = [
            f"rows: {'signal events (the first n_signal rows)' if events == 'signal' else 'all'}",
            "drop rows with column 0 < -100 (the -999 placeholders)",
            "drop features whose smallest value occurs more than 5 times",
        ]
    data = np.asarray(data, dtype=np.float64)
    train, val, test = maf_tail_split(data)
    info["preprocessing"].append("split in file order: last 10% test, last 10% of the rest val")
    return _finish(
        "miniboone",
        (train, val, test),
        standardize,
        _train_val_stats(train, val),
        "the mean/std (ddof=0) of train+validation (MAF's choice)",
        seed,
        (n_train, n_val, n_test),
        info,
    )
