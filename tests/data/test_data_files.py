"""Registry, data-directory resolution, missing/corrupt files, and the image loaders
(MNIST, Fashion-MNIST, BSDS300) on the shared offline files and on synthetic files."""

from __future__ import annotations

import gzip
import io
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from invertible.data import (
    ChecksumWarning,
    DatasetFormatError,
    DatasetNotFoundError,
    ImageData,
    TabularData,
    dataset_names,
    list_datasets,
    load_dataset,
    resolve_data_dir,
)
from invertible.data import images as images_mod

FILE_SETS = ["power", "gas", "hepmass", "miniboone", "bsds300", "mnist", "mnist-test",
             "fashion-mnist"]  # fmt: skip


@pytest.fixture
def no_system_fashion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(images_mod, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-such-dir")


def _no_checksum_warnings(record: list[warnings.WarningMessage]) -> None:
    bad = [str(w.message) for w in record if issubclass(w.category, ChecksumWarning)]
    assert not bad, bad


# --------------------------------------------------------------------------- registry


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ValueError, match=r"known datasets: .*moons.*bsds300"):
        load_dataset("no-such-set")


def test_unknown_option_is_reported() -> None:
    with pytest.raises(TypeError, match="n_train"):
        load_dataset("moons", n_trian=5)


def test_name_normalisation() -> None:
    d = load_dataset("Digits_Images")
    assert isinstance(d, ImageData) and d.name == "digits-images"


def test_data_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("INVERTIBLE_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path) == tmp_path  # the argument wins
    monkeypatch.delenv("INVERTIBLE_DATA_DIR")
    assert resolve_data_dir() == Path.home() / ".local/share/invertible/data"


def test_list_datasets_on_empty_dir(tmp_path: Path, no_system_fashion: None) -> None:
    status = {s.name: s for s in list_datasets(tmp_path)}
    assert list(status) == dataset_names()
    for name, s in status.items():
        if s.kind in ("toy", "embedded"):
            assert s.available and not s.missing, name
        else:
            assert s.kind == "file"
            assert not s.available and s.missing, name
            for f in s.missing:
                assert str(f.destination).startswith(str(tmp_path))
                assert f.url.startswith("http")
                assert f.filename in s.message and str(f.destination) in s.message
    assert status["mnist"].missing[0].filename == "train-images-idx3-ubyte.gz"
    assert {s.kind for s in status.values()} == {"toy", "embedded", "file"}


def test_list_datasets_uses_env_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INVERTIBLE_DATA_DIR", str(tmp_path))
    s = {s.name: s for s in list_datasets()}["power"]
    assert str(s.missing[0].destination).startswith(str(tmp_path))


@pytest.mark.parametrize("name", FILE_SETS)
def test_missing_files_raise_with_file_url_and_destination(
    name: str, tmp_path: Path, no_system_fashion: None
) -> None:
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset(name, data_dir=tmp_path)
    err = exc.value
    assert isinstance(err, FileNotFoundError)
    assert err.dataset == name and err.missing
    msg = str(err)
    for f in err.missing:
        assert f.filename in msg
        assert f.url in msg and f.url.startswith("http")
        assert str(f.destination) in msg
        assert str(f.destination).startswith(str(tmp_path))


# --------------------------------------------------------------------------- idx helpers


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    return head + np.ascontiguousarray(arr, dtype=np.uint8).tobytes()


def _write_idx_set(root: Path, n_train: int, n_test: int, gz: bool = False) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": np.arange(n_train) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": np.arange(n_test) % 10,
    }
    for stem, arr in parts.items():
        data = _idx_bytes(arr.astype(np.uint8))
        if gz:
            (root / (stem + ".gz")).write_bytes(gzip.compress(data, compresslevel=1))
        else:
            (root / stem).write_bytes(data)


def test_synthetic_mnist_paper_split(tmp_path: Path) -> None:
    _write_idx_set(tmp_path / "mnist", n_train=120, n_test=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ChecksumWarning)
        d = load_dataset("mnist", data_dir=tmp_path, n_val=20)
    assert isinstance(d, ImageData)
    assert d.train.shape == (100, 1, 28, 28) and d.val.shape == (20, 1, 28, 28)
    assert d.test.shape == (30, 1, 28, 28) and d.train.dtype == np.uint8
    assert d.shape == (1, 28, 28) and d.levels == 256
    raw = images_mod.read_idx(tmp_path / "mnist" / "train-images-idx3-ubyte")
    np.testing.assert_array_equal(d.train[:, 0], raw[:100])  # first images are train
    np.testing.assert_array_equal(d.val[:, 0], raw[100:])  # the last ones validation
    np.testing.assert_array_equal(d.labels["val"], np.arange(100, 120) % 10)


def test_checksum_mismatch_warns(tmp_path: Path) -> None:
    _write_idx_set(tmp_path / "mnist", n_train=12, n_test=10, gz=True)
    with pytest.warns(ChecksumWarning) as record:
        load_dataset("mnist-test", data_dir=tmp_path)
    messages = [str(w.message) for w in record]
    assert any("t10k-images-idx3-ubyte.gz" in m and "sha256" in m for m in messages)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 9,
        b"\x01\x02\x03\x04garbage",
    ],
    ids=["truncated-payload", "bad-magic"],
)
def test_corrupt_idx_raises(tmp_path: Path, payload: bytes) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte").write_bytes(payload)
    with pytest.raises(DatasetFormatError):
        load_dataset("mnist-test", data_dir=tmp_path)


def test_truncated_gzip_raises(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    blob = gzip.compress(_idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DatasetFormatError, match="corrupt or truncated"):
        load_dataset("mnist-test", data_dir=tmp_path)


# --------------------------------------------------------------------------- shared MNIST


def test_shared_mnist_needs_train_images(shared_mnist: Path) -> None:
    if (shared_mnist / "mnist" / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("the shared copy now has the MNIST train images")
    with pytest.raises(DatasetNotFoundError) as exc:
        load_dataset("mnist", data_dir=shared_mnist)
    msg = str(exc.value)
    assert "train-images-idx3-ubyte.gz" in msg
    assert "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz" in msg
    assert str(shared_mnist / "mnist" / "train-images-idx3-ubyte.gz") in msg


def test_shared_mnist_test(shared_mnist: Path) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_dataset("mnist-test", data_dir=shared_mnist)
    _no_checksum_warnings(record)
    assert isinstance(d, ImageData) and d.levels == 256
    assert (len(d.train), len(d.val), len(d.test)) == (7000, 1000, 2000)
    assert d.train.dtype == np.uint8 and d.train.shape[1:] == (1, 28, 28)
    assert d.info["paper_protocol"] is False and "NOT the paper" in d.info["splits"]
    # together the three splits are exactly the official test set
    labels = np.concatenate([d.labels[s] for s in ("train", "val", "test")])
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    total = sum(int(a.astype(np.int64).sum()) for a in (d.train, d.val, d.test))
    assert total / (10000 * 784) == pytest.approx(33.79, abs=0.01)
    again = load_dataset("mnist", data_dir=shared_mnist, splits="test")
    np.testing.assert_array_equal(d.train, again.train)
    other = load_dataset("mnist-test", data_dir=shared_mnist, seed=1)
    assert not np.array_equal(d.train, other.train)


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_from_system_dir(fashion_system_dir: Path, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_dataset("fashion-mnist", data_dir=tmp_path)
    _no_checksum_warnings(record)
    assert (len(d.train), len(d.val), len(d.test)) == (50000, 10000, 10000)
    assert d.train.shape[1:] == (1, 28, 28) and d.train.dtype == np.uint8
    assert str(fashion_system_dir) in d.info["files"]["train_images"]
    both = np.concatenate([d.labels["train"], d.labels["val"]])
    assert np.bincount(both).tolist() == [6000] * 10


def test_fashion_mnist_data_dir_wins(tmp_path: Path) -> None:
    _write_idx_set(tmp_path / "fashion-mnist", n_train=30, n_test=10)
    with pytest.warns(ChecksumWarning):
        d = load_dataset("fashion-mnist", data_dir=tmp_path, n_val=10)
    assert (len(d.train), len(d.val), len(d.test)) == (20, 10, 10)
    assert str(tmp_path) in d.info["files"]["train_images"]


# --------------------------------------------------------------------------- BSDS300


def _jpeg(rng: np.random.Generator, h: int, w: int) -> bytes:
    from PIL import Image

    base = np.linspace(0, 255, w)[None, :] * np.linspace(0.2, 1.0, h)[:, None]
    rgb = np.clip(base[..., None] + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _fake_bsds(root: Path) -> dict[str, dict[str, bytes]]:
    rng = np.random.default_rng(0)
    files = {
        "train": {str(i): _jpeg(rng, 32, 48) for i in (101, 7, 55)},
        "test": {str(i): _jpeg(rng, 48, 32) for i in (3, 1000)},
    }
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(root / "BSDS300-images.tgz", "w:gz") as tar:
        for split, members in files.items():
            for iid, blob in members.items():
                info = tarfile.TarInfo(f"BSDS300/images/{split}/{iid}.jpg")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
    return files


SMALL_BSDS = {"n_train": 3000, "n_val": 300, "n_test": 700}
# the synthetic archives hold 3 + 2 images, not BSDS300's 200 + 100
few_images = pytest.mark.filterwarnings("ignore:.*BSDS300 has 200 and 100:UserWarning")


@few_images
def test_bsds300_synthetic_tgz_and_folder_agree(tmp_path: Path) -> None:
    files = _fake_bsds(tmp_path / "tgz" / "bsds300")
    for split, members in files.items():
        d = tmp_path / "dir" / "bsds300" / "BSDS300" / "images" / split
        d.mkdir(parents=True)
        for iid, blob in members.items():
            (d / f"{iid}.jpg").write_bytes(blob)
    with pytest.warns(UserWarning, match="3 train and 2 test images"):
        a = load_dataset("bsds300", data_dir=tmp_path / "tgz", cache=False, **SMALL_BSDS)
    b = load_dataset("bsds300", data_dir=tmp_path / "dir", cache=False, **SMALL_BSDS)
    assert isinstance(a, TabularData) and a.features == 63
    assert (len(a.train), len(a.val), len(a.test)) == (3000, 300, 700)
    for s in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, s), getattr(b, s))
    ids, _ = images_mod.bsds300_images(tmp_path / "tgz" / "bsds300" / "BSDS300-images.tgz")
    assert ids == {"train": ["7", "55", "101"], "test": ["3", "1000"]}


@few_images
def test_bsds300_cache_is_written_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_bsds(tmp_path / "bsds300")
    cache = tmp_path / "cache-here"
    a = load_dataset("bsds300", data_dir=tmp_path, cache_dir=cache, **SMALL_BSDS)
    written = sorted(p.name for p in cache.iterdir())
    assert len(written) == 3 and all(p.endswith(".npy") for p in written)
    assert not any(p.name.endswith(".tmp") for p in cache.iterdir())

    def boom(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(images_mod, "bsds300_images", boom)
    b = load_dataset("bsds300", data_dir=tmp_path, cache_dir=cache, **SMALL_BSDS)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test, b.test)
    # other options -> other cache entry (so this one rebuilds, and fails on purpose)
    with pytest.raises(AssertionError, match="cache was not used"):
        load_dataset("bsds300", data_dir=tmp_path, cache_dir=cache, seed=1, **SMALL_BSDS)


def _has_h5py() -> bool:
    try:
        import h5py  # noqa: F401
    except ImportError:
        return False
    return True


@few_images
@pytest.mark.skipif(_has_h5py(), reason="h5py is installed")
def test_bsds300_hdf5_without_h5py(tmp_path: Path) -> None:
    (tmp_path / "BSDS300").mkdir()
    (tmp_path / "BSDS300" / "BSDS300.hdf5").write_bytes(b"not really hdf5")
    with pytest.raises(ImportError, match="pip install h5py"):
        load_dataset("bsds300", data_dir=tmp_path)
    _fake_bsds(tmp_path / "bsds300")
    with pytest.warns(UserWarning, match="h5py is not installed"):
        d = load_dataset("bsds300", data_dir=tmp_path, cache=False, **SMALL_BSDS)
    assert d.info["paper_exact"] is False


@pytest.mark.skipif(not _has_h5py(), reason="h5py is not installed")
def test_bsds300_hdf5_with_h5py(tmp_path: Path) -> None:
    import h5py

    rng = np.random.default_rng(0)
    (tmp_path / "BSDS300").mkdir()
    arrays = {k: rng.normal(size=(n, 63)) for k, n in (("train", 50), ("validation", 9),
                                                         ("test", 11))}  # fmt: skip
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for k, v in arrays.items():
            f[k] = v
    d = load_dataset("bsds300", data_dir=tmp_path, n_train=20)
    np.testing.assert_allclose(d.train, arrays["train"][:20].astype(np.float32))
    np.testing.assert_allclose(d.val, arrays["validation"].astype(np.float32))
    assert d.info["paper_exact"] is True


def test_shared_bsds300(shared_bsds300: Path, tmp_path: Path) -> None:
    opts = {"n_train": 2000, "n_val": 200, "n_test": 500, "cache_dir": tmp_path}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        d = load_dataset("bsds300", data_dir=shared_bsds300, **opts)
    _no_checksum_warnings(record)
    assert [w for w in record if "200 and 100" in str(w.message)] == []  # all 300 images
    assert isinstance(d, TabularData) and d.features == 63
    assert (len(d.train), len(d.val), len(d.test)) == (2000, 200, 500)
    assert d.train.dtype == np.float32 and d.mean is None
    full = np.concatenate([d.test, -d.test.sum(axis=1, keepdims=True)], axis=1)
    assert np.abs(full).max() < 1.0
    again = load_dataset("bsds300", data_dir=shared_bsds300, **opts)  # from the cache
    np.testing.assert_array_equal(d.test, again.test)
    other = load_dataset("bsds300", data_dir=shared_bsds300, seed=1, cache=False,
                         n_train=10, n_val=10, n_test=10)  # fmt: skip
    assert not np.array_equal(d.test[:10], other.test)
