"""The MAF UCI loaders (POWER, GAS, HEPMASS, MINIBOONE) on tiny synthetic files written in
the real formats: the recipe (column drops, noise, splits, statistics) is checked on them."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from invertible.data import DatasetFormatError, DatasetNotFoundError, load_dataset
from invertible.data.base import maf_tail_split

# --------------------------------------------------------------------------- POWER

POWER_HEADER = (
    "Date;Time;Global_active_power;Global_reactive_power;Voltage;Global_intensity;"
    "Sub_metering_1;Sub_metering_2;Sub_metering_3"
)


def _power_rows(n: int = 530, missing_every: int = 53) -> tuple[list[str], np.ndarray]:
    """Lines in the UCI format (one per minute, so the time identifies a row), and the
    expected data.npy-layout array of the complete rows."""
    rng = np.random.default_rng(0)
    lines, rows = [], []
    for i in range(n):
        hh, mm = divmod(i, 60)
        date, time = f"{16 + i // 1440}/12/2006", f"{hh:02d}:{mm:02d}:00"
        if i % missing_every == 7:
            lines.append(f"{date};{time};?;?;?;?;?;?;")
            continue
        vals = [
            round(rng.uniform(0.1, 5), 3),  # global active power
            round(rng.uniform(0, 0.5), 3),  # global reactive power
            round(rng.uniform(230, 250), 2),  # voltage
            round(rng.uniform(1, 20), 1),  # global intensity
            float(rng.integers(0, 3)),  # sub-metering 1..3
            float(rng.integers(0, 3)),
            float(rng.integers(0, 20)),
        ]
        lines.append(f"{date};{time};" + ";".join(f"{v:.3f}" for v in vals))
        rows.append([*vals, 60 * hh + mm])
    return lines, np.array(rows)


def _write_power(root: Path, lines: list[str]) -> Path:
    (root / "power").mkdir(parents=True, exist_ok=True)
    path = root / "power" / "household_power_consumption.txt"
    path.write_text("\n".join([POWER_HEADER, *lines]) + "\n")
    return path


def _maf_power_reference(data: np.ndarray):
    """The paper's recipe spelled out (README / MAF code): RandomState(42) shuffle, delete
    columns 3 then 1, noise drawn in the order voltage, active power, sub-meterings."""
    rng = np.random.RandomState(42)
    data = data.copy()
    rng.shuffle(data)
    n = len(data)
    data = np.delete(np.delete(data, 3, axis=1), 1, axis=1)
    v = 0.01 * rng.rand(n, 1)
    g = 0.001 * rng.rand(n, 1)
    s = rng.rand(n, 3)
    data = data + np.hstack((g, v, s, np.zeros((n, 1))))
    n_test = int(0.1 * n)
    test, rest = data[-n_test:], data[:-n_test]
    n_val = int(0.1 * len(rest))
    return rest[:-n_val], rest[-n_val:], test


def test_power_raw_recipe(tmp_path: Path) -> None:
    lines, expected_rows = _power_rows()
    _write_power(tmp_path, lines)
    d = load_dataset("power", data_dir=tmp_path, standardize="none", time_dequantize=False)
    n = len(expected_rows)
    assert n == 520 and d.info["rows_dropped_missing"] == 10
    n_test = int(0.1 * n)
    n_val = int(0.1 * (n - n_test))
    assert (len(d.train), len(d.val), len(d.test)) == (n - n_test - n_val, n_val, n_test)
    assert d.features == 6 and d.mean is None
    ref = _maf_power_reference(expected_rows)
    for got, want in zip((d.train, d.val, d.test), ref):
        np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6)
    # column drops and noise amplitudes, row by row (time identifies the source row)
    by_time = {int(r[7]): r for r in expected_rows}
    allrows = np.concatenate([d.train, d.val, d.test]).astype(np.float64)
    src = np.array([by_time[round(t)] for t in allrows[:, 5]])
    noise = allrows - src[:, [0, 2, 4, 5, 6, 7]]
    tol = 1e-3  # float32 rounding of values up to ~250
    for col, amp in zip(range(6), (0.001, 0.01, 1.0, 1.0, 1.0, 0.0)):
        assert noise[:, col].min() >= -tol and noise[:, col].max() <= amp + tol
        if amp >= 0.01:
            assert noise[:, col].max() > amp / 2  # noise was really added
    assert sorted(by_time) == sorted(round(t) for t in allrows[:, 5])  # a permutation


def test_power_standardisation_modes(tmp_path: Path) -> None:
    lines, _ = _power_rows()
    _write_power(tmp_path, lines)
    raw = load_dataset("power", data_dir=tmp_path, standardize="none")
    maf = load_dataset("power", data_dir=tmp_path)
    tr = load_dataset("power", data_dir=tmp_path, standardize="train")
    both = np.vstack([raw.train, raw.val]).astype(np.float64)
    np.testing.assert_allclose(maf.mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(maf.std, both.std(0), rtol=1e-5)
    assert "train+validation" in maf.info["standardization"]
    np.testing.assert_allclose(tr.mean, raw.train.astype(np.float64).mean(0), rtol=1e-5)
    np.testing.assert_allclose(tr.train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(tr.train.std(0), 1, atol=1e-4)
    np.testing.assert_allclose(tr.test, (raw.test - tr.mean) / tr.std, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="standardize"):
        load_dataset("power", data_dir=tmp_path, standardize="bogus")


def test_power_time_dequantisation_is_seeded(tmp_path: Path) -> None:
    lines, _ = _power_rows()
    _write_power(tmp_path, lines)
    a = load_dataset("power", data_dir=tmp_path, standardize="none")
    b = load_dataset("power", data_dir=tmp_path, standardize="none")
    c = load_dataset("power", data_dir=tmp_path, standardize="none", seed=1)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train[:, 5], c.train[:, 5])
    frac = a.train[:, 5] - np.floor(a.train[:, 5])
    assert frac.max() > 0.5  # continuous time of day


def test_power_npy_and_zip_routes_match_raw(tmp_path: Path) -> None:
    lines, rows = _power_rows()
    txt = _write_power(tmp_path / "raw", lines)
    zdir = tmp_path / "zip" / "power"
    zdir.mkdir(parents=True)
    with zipfile.ZipFile(zdir / "individual+household+electric+power+consumption.zip", "w") as z:
        z.write(txt, "household_power_consumption.txt")
    (tmp_path / "npy" / "power").mkdir(parents=True)
    np.save(tmp_path / "npy" / "power" / "data.npy", rows)
    opts = {"standardize": "none", "time_dequantize": False}
    a = load_dataset("power", data_dir=tmp_path / "raw", **opts)
    b = load_dataset("power", data_dir=tmp_path / "zip", **opts)
    with pytest.warns(UserWarning, match="2,049,280"):
        c = load_dataset("power", data_dir=tmp_path / "npy", **opts)
    assert c.info["paper_exact"] is True and a.info["paper_exact"] is False
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(a.splits[s], b.splits[s])
        np.testing.assert_array_equal(a.splits[s], c.splits[s])


def test_power_subsets(tmp_path: Path) -> None:
    lines, _ = _power_rows()
    _write_power(tmp_path, lines)
    full = load_dataset("power", data_dir=tmp_path)
    sub = load_dataset("power", data_dir=tmp_path, n_train=40, n_test=7)
    assert (len(sub.train), len(sub.val), len(sub.test)) == (40, len(full.val), 7)
    rows = {tuple(r) for r in full.train}
    assert all(tuple(r) in rows for r in sub.train)
    np.testing.assert_array_equal(sub.mean, full.mean)  # statistics of the full splits


def test_power_nan_rows_are_reported(tmp_path: Path) -> None:
    lines, _ = _power_rows()
    lines[20] = lines[20].rsplit(";", 1)[0] + ";nan"
    lines[40] = lines[40].rsplit(";", 1)[0] + ";inf"
    _write_power(tmp_path, lines)
    with pytest.raises(DatasetFormatError, match=r"2 row\(s\).*line 22 "):
        load_dataset("power", data_dir=tmp_path)


def test_power_npy_nan_is_reported(tmp_path: Path) -> None:
    (tmp_path / "power").mkdir()
    arr = np.ones((30, 8))
    arr[5, 2] = np.nan
    np.save(tmp_path / "power" / "data.npy", arr)
    with pytest.raises(DatasetFormatError, match=r"1 row\(s\).*data row 5"):
        load_dataset("power", data_dir=tmp_path)


def test_power_wrong_file_and_corrupt_zip(tmp_path: Path) -> None:
    _write_power(tmp_path / "a", ["1;2;3"])
    (tmp_path / "a" / "power" / "household_power_consumption.txt").write_text("hello\n1;2\n")
    with pytest.raises(DatasetFormatError, match="not the UCI household power file"):
        load_dataset("power", data_dir=tmp_path / "a")
    lines, _ = _power_rows()
    txt = _write_power(tmp_path / "b", lines)
    zpath = tmp_path / "b" / "power" / "power.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.write(txt, "household_power_consumption.txt")
    txt.unlink()
    blob = bytearray(zpath.read_bytes())
    blob[60:70] = b"\x00" * 10  # damage the compressed stream
    zpath.write_bytes(bytes(blob))
    with pytest.raises(DatasetFormatError, match="corrupt or truncated"):
        load_dataset("power", data_dir=tmp_path / "b")


# --------------------------------------------------------------------------- GAS


def _write_gas(root: Path, n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(1)
    sensors = rng.normal(size=(n, 16)) * rng.uniform(1, 50, 16) + rng.uniform(0, 100, 16)
    sensors[:, 5] = 2 * sensors[:, 2] + rng.normal(0, 1e-3, n)  # corr(2, 5) > 0.98
    sensors[:, 11] = sensors[:, 4] + rng.normal(0, 1e-3, n)  # corr(4, 11) > 0.98
    sensors[:, 8] = -sensors[:, 7]  # anti-correlated: kept (MAF tests corr > 0.98)
    sensors = np.round(sensors, 4)
    head = np.column_stack([np.arange(n) * 0.01, rng.uniform(0, 500, n), rng.uniform(0, 20, n)])
    table = np.column_stack([head, sensors])
    (root / "gas").mkdir(parents=True, exist_ok=True)
    body = "\n".join(" ".join(f"{v:.4f}" for v in row) for row in table)
    (root / "gas" / "ethylene_CO.txt").write_text(
        "Time (seconds), CO conc (ppm), Ethylene conc (ppm), Sensor readings (16 channels)\n"
        + body
        + "\n"
    )
    return sensors


def test_gas_recipe(tmp_path: Path) -> None:
    sensors = _write_gas(tmp_path)
    d = load_dataset("gas", data_dir=tmp_path, fraction=1.0)
    kept = d.info["kept_sensor_columns"]
    assert kept == [c for c in range(16) if c not in (2, 4)]
    assert d.features == 14
    assert (len(d.train), len(d.val), len(d.test)) == (810, 90, 100)
    allrows = np.concatenate([d.train, d.val, d.test]).astype(np.float64)
    np.testing.assert_allclose(allrows.mean(0), 0, atol=1e-5)  # z-scored with all rows
    np.testing.assert_allclose(allrows.std(0, ddof=1), 1, atol=1e-5)
    assert "all rows" in d.info["standardization"]
    # the rows are the file's rows (kept columns), in a random order
    raw = load_dataset("gas", data_dir=tmp_path, fraction=1.0, standardize="none")
    back = np.concatenate([raw.train, raw.val, raw.test]).astype(np.float64)
    src = sensors[:, kept]
    order_b, order_s = np.argsort(back[:, 0]), np.argsort(src[:, 0])
    np.testing.assert_allclose(back[order_b], src[order_s], rtol=1e-5, atol=1e-4)  # same rows
    assert not np.allclose(back[:50], src[:50], atol=1e-3)  # in a shuffled order


def test_gas_fraction_and_seed(tmp_path: Path) -> None:
    _write_gas(tmp_path)
    a = load_dataset("gas", data_dir=tmp_path)
    assert len(a.train) + len(a.val) + len(a.test) == 250  # 25% as in MAF's pickle
    b = load_dataset("gas", data_dir=tmp_path)
    c = load_dataset("gas", data_dir=tmp_path, seed=3)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.train, c.train)
    assert a.info["paper_exact"] is False


def test_gas_never_loads_pickles(tmp_path: Path) -> None:
    (tmp_path / "gas").mkdir()
    (tmp_path / "gas" / "ethylene_CO.pickle").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(DatasetNotFoundError, match=r"(?s)ethylene_CO\.txt.*not loaded"):
        load_dataset("gas", data_dir=tmp_path)


def test_gas_nan_rows_are_reported(tmp_path: Path) -> None:
    _write_gas(tmp_path, n=200)
    path = tmp_path / "gas" / "ethylene_CO.txt"
    lines = path.read_text().splitlines()
    lines[10] = " ".join([*lines[10].split()[:-1], "nan"])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError, match=r"1 row\(s\).*line 11 "):
        load_dataset("gas", data_dir=tmp_path)


# --------------------------------------------------------------------------- HEPMASS

HEP_NAMES = ["# label", "f0", "f1", "f2", "f3", "f4", "mass"]


def _hep_table(rng: np.random.Generator, n: int) -> np.ndarray:
    label = (np.arange(n) % 2 == 0).astype(float)
    cont = rng.normal(size=(n, 4)) * [1, 2, 3, 4] + [0, 1, 2, 3]
    disc = rng.integers(0, 3, n).astype(float)  # smallest value repeats: dropped
    return np.column_stack([label, cont, disc, np.full(n, 1000.0)])


def _write_csv(path: Path, names: list[str], table: np.ndarray, trailing: bool = False) -> None:
    end = "," if trailing else ""
    lines = [",".join(names) + end]
    lines += [",".join(f"{v:.6f}" for v in row) + end for row in table]
    path.write_text("\n".join(lines) + "\n")


def _write_hepmass(root: Path, trailing: bool, swap_test: bool = False):
    rng = np.random.default_rng(2)
    train, test = _hep_table(rng, 400), _hep_table(rng, 100)
    (root / "hepmass").mkdir(parents=True, exist_ok=True)
    _write_csv(root / "hepmass" / "1000_train.csv", HEP_NAMES, train)
    names, tab = list(HEP_NAMES), test.copy()
    if swap_test:  # same columns, another order: matched by header name
        names[1], names[2] = names[2], names[1]
        tab[:, [1, 2]] = tab[:, [2, 1]]
    if trailing:  # lines ending in ',' give an empty last column, which MAF drops
        _write_csv(root / "hepmass" / "1000_test.csv", names, tab, trailing=True)
    else:  # otherwise MAF's drop removes 'mass', which the discrete rule drops anyway
        _write_csv(root / "hepmass" / "1000_test.csv", names, tab)
    return train, test


@pytest.mark.parametrize("trailing", [True, False])
def test_hepmass_recipe(tmp_path: Path, trailing: bool) -> None:
    train, test = _write_hepmass(tmp_path, trailing)
    d = load_dataset("hepmass", data_dir=tmp_path)
    assert d.info["kept_features"] == ["f0", "f1", "f2", "f3"]  # f4 discrete, mass constant
    sig = train[train[:, 0] == 1][:, 1:5]
    mean, std = sig.mean(0), sig.std(0, ddof=1)  # whole training file, val rows included
    n_val = int(0.1 * len(sig))
    np.testing.assert_allclose(d.train, ((sig - mean) / std)[:-n_val], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.val, ((sig - mean) / std)[-n_val:], rtol=1e-5, atol=1e-6)
    te = test[test[:, 0] == 1][:, 1:5]
    np.testing.assert_allclose(d.test, (te - mean) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.mean, mean, rtol=1e-6)
    assert (len(d.train), len(d.val), len(d.test)) == (180, 20, 50)


def test_hepmass_test_columns_matched_by_name(tmp_path: Path) -> None:
    _write_hepmass(tmp_path / "a", trailing=True)
    _write_hepmass(tmp_path / "b", trailing=True, swap_test=True)
    a = load_dataset("hepmass", data_dir=tmp_path / "a")
    b = load_dataset("hepmass", data_dir=tmp_path / "b")
    np.testing.assert_array_equal(a.test, b.test)


def test_hepmass_gz_and_nan(tmp_path: Path) -> None:
    import gzip

    _write_hepmass(tmp_path, trailing=False)
    for name in ("1000_train.csv", "1000_test.csv"):
        p = tmp_path / "hepmass" / name
        (tmp_path / "hepmass" / (name + ".gz")).write_bytes(gzip.compress(p.read_bytes()))
        p.unlink()
    d = load_dataset("hepmass", data_dir=tmp_path)
    assert d.features == 4
    p = tmp_path / "hepmass" / "1000_test.csv.gz"
    lines = gzip.decompress(p.read_bytes()).decode().splitlines()
    fields = lines[3].split(",")
    fields[0], fields[2] = "1.000000", "nan"
    lines[3] = ",".join(fields)
    p.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DatasetFormatError, match=r"1 row\(s\)"):
        load_dataset("hepmass", data_dir=tmp_path)


# --------------------------------------------------------------------------- MINIBOONE


def _write_miniboone(root: Path, n_sig: int = 40, n_bkg: int = 25) -> np.ndarray:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(n_sig + n_bkg, 50)) * 3 + 1
    data[:, 7] = rng.integers(0, 2, len(data))  # discrete: dropped
    data[5] = -999.0  # an outlier row among the signal events
    (root / "miniboone").mkdir(parents=True, exist_ok=True)
    body = "\n".join(" ".join(f"{v: .6E}" for v in row) for row in data)
    (root / "miniboone" / "MiniBooNE_PID.txt").write_text(f"   {n_sig} {n_bkg}\n{body}\n")
    return data


def test_miniboone_raw_recipe(tmp_path: Path) -> None:
    data = _write_miniboone(tmp_path)
    d = load_dataset("miniboone", data_dir=tmp_path, standardize="none")
    sig = np.delete(data[:40], 5, axis=0)  # signal rows, outlier removed, file order
    keep = [c for c in range(50) if c != 7]
    assert d.info["kept_columns"] == keep and d.features == 49
    ref = maf_tail_split(sig[:, keep])
    for got, want in zip((d.train, d.val, d.test), ref):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    assert (len(d.train), len(d.val), len(d.test)) == (33, 3, 3)  # 39 rows
    every = load_dataset("miniboone", data_dir=tmp_path, events="all", standardize="none")
    assert len(every.train) + len(every.val) + len(every.test) == 64


def test_miniboone_standardisation_and_npy_route(tmp_path: Path) -> None:
    _write_miniboone(tmp_path / "raw")
    raw = load_dataset("miniboone", data_dir=tmp_path / "raw", standardize="none")
    maf = load_dataset("miniboone", data_dir=tmp_path / "raw")
    both = np.vstack([raw.train, raw.val]).astype(np.float64)
    np.testing.assert_allclose(maf.mean, both.mean(0), rtol=1e-5)
    np.testing.assert_allclose(maf.std, both.std(0), rtol=1e-5)
    (tmp_path / "npy" / "miniboone").mkdir(parents=True)
    cleaned = np.concatenate([raw.train, raw.val, raw.test]).astype(np.float64)
    np.save(tmp_path / "npy" / "miniboone" / "data.npy", cleaned)
    with pytest.warns(UserWarning, match="36488, 43"):
        npy = load_dataset("miniboone", data_dir=tmp_path / "npy")
    np.testing.assert_allclose(npy.test, maf.test, rtol=1e-5, atol=1e-6)
    assert npy.info["paper_exact"] is True


def test_miniboone_bad_header_and_no_pickle_npy(tmp_path: Path) -> None:
    _write_miniboone(tmp_path)
    p = tmp_path / "miniboone" / "MiniBooNE_PID.txt"
    text = p.read_text().split("\n", 1)[1]
    p.write_text("10 10\n" + text)
    with pytest.raises(DatasetFormatError, match="header announces"):
        load_dataset("miniboone", data_dir=tmp_path)
    (tmp_path / "m2" / "miniboone").mkdir(parents=True)
    np.save(tmp_path / "m2" / "miniboone" / "data.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DatasetFormatError, match="not a readable"):
        load_dataset("miniboone", data_dir=tmp_path / "m2")


def test_standardize_accepts_booleans(tmp_path: Path) -> None:
    lines, _ = _power_rows()
    _write_power(tmp_path, lines)
    default = load_dataset("power", data_dir=tmp_path)
    np.testing.assert_array_equal(load_dataset("power", data_dir=tmp_path, standardize=True).test,
                                  default.test)  # fmt: skip
    off = load_dataset("power", data_dir=tmp_path, standardize=False)
    assert off.mean is None and off.info["standardization"] == "none"


def test_truncated_gzip_is_reported_while_streaming(tmp_path: Path) -> None:
    import gzip

    _write_hepmass(tmp_path, trailing=False)
    p = tmp_path / "hepmass" / "1000_train.csv"
    blob = gzip.compress(p.read_bytes())
    (tmp_path / "hepmass" / "1000_train.csv.gz").write_bytes(blob[: len(blob) - 40])
    p.unlink()
    with pytest.raises(DatasetFormatError, match="corrupt or truncated"):
        load_dataset("hepmass", data_dir=tmp_path)
