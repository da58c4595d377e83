"""Image datasets: MNIST, Fashion-MNIST, scikit-learn digits, and BSDS300 patches.

MNIST and Fashion-MNIST come back as raw ``uint8`` :class:`ImageData` (dequantisation and
logit are the flow's preprocessing transforms). BSDS300 comes back as the MAF paper's 63-D
patch vectors (:class:`TabularData`), either read from the paper's ``BSDS300.hdf5`` or
rebuilt from Berkeley's images with the same protocol (see :mod:`invertible.data.patches`).
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import warnings
from pathlib import Path

import numpy as np

from invertible.data.base import (
    ChecksumWarning,
    DatasetFormatError,
    ImageData,
    Located,
    RequiredFile,
    TabularData,
    check_finite,
    check_sha256,
    file_key,
    hash_key,
    load_cached_npy,
    read_bytes,
    resolve_cache_dir,
    seeded_rng,
    split_sizes,
    try_save_cache,
)
from invertible.data.patches import (
    PATCH,
    _FlatImages,
    extract_patches,
    patch_features,
    sample_patch_coords,
)

__all__ = [
    "FASHION_MNIST_SYSTEM_DIR",
    "bsds300_images",
    "load_bsds300",
    "load_digits",
    "load_digits_images",
    "load_fashion_mnist",
    "load_mnist",
    "locate_bsds300",
    "locate_idx",
    "read_idx",
]

#: Where Debian/Ubuntu's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

MNIST_URL = "http://yann.lecun.com/exdb/mnist/"
MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
BSDS_URL = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/BSDS300-images.tgz"
MAF_DATA_URL = "https://zenodo.org/record/1161203 (data.tar.gz, MAF's preprocessed files)"

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Published checksums. gz: of the .gz file (sha256 or md5); raw: sha256 of the decompressed
# idx bytes (lets re-compressed copies, e.g. Debian's, be verified by content).
_CHECKSUMS: dict[str, dict[str, dict[str, str]]] = {
    "mnist": {
        "train-images-idx3-ubyte": {
            "gz_sha256": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
            "gz_md5": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        },
        "train-labels-idx1-ubyte": {
            "gz_sha256": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
            "gz_md5": "d53e105ee54ea40749a09fcbcd1e9432",
            "raw": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        },
        "t10k-images-idx3-ubyte": {
            "gz_sha256": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
            "gz_md5": "9fb629c4189551a2d022fa330f9573f3",
            "raw": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        },
        "t10k-labels-idx1-ubyte": {
            "gz_sha256": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
            "gz_md5": "ec29112dd5afa0611ce80d1b7f02629c",
            "raw": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": {
            "gz_md5": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "raw": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        },
        "train-labels-idx1-ubyte": {
            "gz_md5": "25c81989df183df01b3e8a0aad5dffbe",
            "raw": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        },
        "t10k-images-idx3-ubyte": {
            "gz_md5": "bef4ecab320f06d8554ea6380940ec79",
            "raw": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        },
        "t10k-labels-idx1-ubyte": {
            "gz_md5": "bb300cfdad3c16e7a12a480ee83cd310",
            "raw": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
    },
}

_BSDS_REASSEMBLED_SHA256 = "76f90ebc02e4bcea23079df0da05e67916d6ce264ccbabdf0cf9479cfaa8cc0f"
_BSDS_CACHE_VERSION = 1


# --------------------------------------------------------------------------- idx files


def read_idx(path: Path, data: bytes | None = None) -> np.ndarray:
    """Read an idx file (``.gz`` or plain) of unsigned bytes into a numpy array.

    Raises :class:`DatasetFormatError` for a bad magic number or a truncated payload.
    """
    if data is None:
        data = read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetFormatError(f"{path}: not an idx file (bad magic number)")
    if data[2] != 0x08:
        raise DatasetFormatError(f"{path}: idx element type {data[2]:#x}, expected 0x08 (uint8)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetFormatError(f"{path}: truncated idx header")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims)) if dims else 0
    if len(data) - header != count:
        raise DatasetFormatError(
            f"{path}: idx payload has {len(data) - header} bytes, header says {count} "
            f"(shape {dims}); the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _verify_idx(dataset: str, stem: str, path: Path, raw: bytes) -> None:
    known = _CHECKSUMS.get(dataset, {}).get(stem)
    if not known:
        return
    if path.suffix == ".gz":
        blob = path.read_bytes()
        if known.get("gz_sha256") == hashlib.sha256(blob).hexdigest():
            return
        if known.get("gz_md5") == hashlib.md5(blob).hexdigest():
            return
    if "raw" in known:
        if hashlib.sha256(raw).hexdigest() == known["raw"]:
            return
    elif path.suffix != ".gz":
        return  # nothing published for this uncompressed file
    warnings.warn(
        f"checksum mismatch for {path}: it matches none of the published checksums of "
        f"{dataset} {stem} ({', '.join(f'{k}={v}' for k, v in known.items())}). It may be a "
        "different or corrupt copy.",
        ChecksumWarning,
        stacklevel=4,
    )


def locate_idx(
    dataset: str, data_dir: Path, roles: tuple[str, ...], optional: tuple[str, ...] = ()
) -> Located:
    """Find MNIST-style idx files (``.gz`` or uncompressed) for ``roles``.

    Looks in ``<data_dir>/mnist`` (or ``MNIST/raw``) for MNIST and in
    ``<data_dir>/fashion-mnist`` (or ``FashionMNIST/raw``), then
    :data:`FASHION_MNIST_SYSTEM_DIR`, for Fashion-MNIST. All files of one dataset are taken
    from the first directory holding the required ones.
    """
    if dataset == "mnist":
        dirs = [data_dir / "mnist", data_dir / "MNIST" / "raw", data_dir / "MNIST"]
        url = MNIST_URL
        note_extra = f"mirror: {MNIST_MIRROR}"
    else:
        dirs = [
            data_dir / "fashion-mnist",
            data_dir / "fashion_mnist",
            data_dir / "FashionMNIST" / "raw",
            FASHION_MNIST_SYSTEM_DIR,
        ]
        url = FASHION_URL
        note_extra = (
            "or install Debian/Ubuntu's dataset-fashion-mnist package "
            f"(files go to {FASHION_MNIST_SYSTEM_DIR})"
        )

    def find(d: Path, role: str) -> Path | None:
        stem = _IDX_FILES[role]
        for name in (stem + ".gz", stem):
            if (d / name).is_file():
                return d / name
        return None

    best: tuple[int, dict[str, Path]] = (-1, {})
    for d in dirs:
        got = {r: p for r in roles + optional if (p := find(d, r))}
        n_req = sum(r in got for r in roles)
        if n_req == len(roles):
            return Located(got)
        if n_req > best[0]:
            best = (n_req, got)
    found = best[1]
    home = dirs[0]
    missing = [
        RequiredFile(
            _IDX_FILES[r] + ".gz",
            url + _IDX_FILES[r] + ".gz",
            home / (_IDX_FILES[r] + ".gz"),
            note=note_extra,
        )
        for r in roles
        if r not in found
    ]
    return Located({r: p for r, p in found.items() if r in roles}, [missing])


def _read_idx_set(dataset: str, found: dict[str, Path]) -> dict[str, np.ndarray]:
    out = {}
    for role, path in found.items():
        raw = read_bytes(path)
        arr = read_idx(path, raw)  # structure first: a corrupt file is an error, not a warning
        _verify_idx(dataset, _IDX_FILES[role], path, raw)
        want_ndim = 3 if role.endswith("images") else 1
        if arr.ndim != want_ndim:
            raise DatasetFormatError(f"{path}: expected a {want_ndim}-D idx array, got {arr.shape}")
        out[role] = arr
    for split in ("train", "test"):
        im, lb = out.get(f"{split}_images"), out.get(f"{split}_labels")
        if im is not None and lb is not None and len(im) != len(lb):
            raise DatasetFormatError(f"{dataset}: {len(im)} {split} images but {len(lb)} labels")
    return out


def _load_idx_dataset(
    dataset: str,
    name: str,
    data_dir: Path,
    *,
    seed: int,
    splits: str,
    n_val: int,
    info: dict,
) -> ImageData:
    if splits == "paper":
        located = locate_idx(
            dataset, data_dir, ("train_images", "test_images"), ("train_labels", "test_labels")
        )
    elif splits == "test":
        located = locate_idx(dataset, data_dir, ("test_images",), ("test_labels",))
    else:
        raise ValueError(f"splits must be 'paper' or 'test', got {splits!r}")
    arrays = _read_idx_set(dataset, located.require(name, data_dir))
    labels: dict[str, np.ndarray] | None = None
    if splits == "paper":
        tr = arrays["train_images"]
        if not 0 < n_val < len(tr):
            raise ValueError(f"n_val must be in (0, {len(tr)}), got {n_val}")
        cut = len(tr) - n_val
        train, val, test = tr[:cut], tr[cut:], arrays["test_images"]
        if "train_labels" in arrays and "test_labels" in arrays:
            tl = arrays["train_labels"].astype(np.int64)
            te_l = arrays["test_labels"].astype(np.int64)
            labels = {"train": tl[:cut], "val": tl[cut:], "test": te_l}
        info["splits"] = (
            f"train: the first {cut} official training images; val: the last {n_val}; "
            "test: the official test set (MAF protocol)"
        )
        info["paper_protocol"] = n_val == 10000
    else:
        te = arrays["test_images"]
        n_tr, n_va, n_te = split_sizes(len(te), (0.7, 0.1, 0.2))
        perm = seeded_rng(seed, name, "split").permutation(len(te))
        idx = (perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :])
        train, val, test = (te[i] for i in idx)
        if "test_labels" in arrays:
            tl = arrays["test_labels"].astype(np.int64)
            labels = dict(zip(("train", "val", "test"), (tl[i] for i in idx)))
        info["splits"] = (
            "NOT the paper's protocol: only the official test set, split by a seeded "
            f"permutation (seed={seed}) into {n_tr}/{n_va}/{n_te}; for tests and quick runs"
        )
        info["paper_protocol"] = False
    info["files"] = {k: str(v) for k, v in located.found.items()}
    info["levels"] = 256
    info["pixels"] = "raw uint8 0..255, [N, 1, 28, 28]; no dequantisation or scaling"
    return ImageData(
        name,
        np.ascontiguousarray(train[:, None]),
        np.ascontiguousarray(val[:, None]),
        np.ascontiguousarray(test[:, None]),
        shape=(1, 28, 28),
        info=info,
        levels=256,
        labels=labels,
    )


def load_mnist(
    data_dir: Path, *, seed: int = 0, splits: str = "paper", n_val: int = 10000
) -> ImageData:
    """MNIST as raw ``uint8 [N, 1, 28, 28]``.

    ``splits="paper"`` (MAF): the first 50,000 official training images are train, the last
    10,000 validation, the official test set test; needs ``train-images-idx3-ubyte.gz`` and
    ``t10k-images-idx3-ubyte.gz`` (labels optional). ``splits="test"`` (also
    ``load_dataset("mnist-test")``) needs only the test images and splits them 70/10/20 by a
    seeded permutation; that is not the paper's protocol.
    """
    info = {
        "source": "MNIST (LeCun, Cortes, Burges)",
        "url": MNIST_URL,
        "license": "CC BY-SA 3.0",
        "citation": "LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to "
        "document recognition. Proc. IEEE 1998",
        "maf_note": "MAF flattens to D = 784, uses x/256 + U(0,1)/256 and logit(1e-6 + "
        "(1 - 2e-6) x); that preprocessing belongs to the flow's transforms",
    }
    name = "mnist" if splits == "paper" else "mnist-test"
    return _load_idx_dataset(
        "mnist", name, data_dir, seed=seed, splits=splits, n_val=n_val, info=info
    )


def load_fashion_mnist(
    data_dir: Path, *, seed: int = 0, splits: str = "paper", n_val: int = 10000
) -> ImageData:
    """Fashion-MNIST as raw ``uint8 [N, 1, 28, 28]``; the last 10,000 training images are
    validation. Looks in ``<data_dir>/fashion-mnist`` then in
    ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``).
    """
    info = {
        "source": "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), Zalando Research",
        "url": "https://github.com/zalandoresearch/fashion-mnist",
        "license": "MIT",
        "citation": "Xiao, Rasul, Vollgraf. Fashion-MNIST: a Novel Image Dataset for "
        "Benchmarking Machine Learning Algorithms. arXiv:1708.07747",
    }
    name = "fashion-mnist" if splits == "paper" else "fashion-mnist-test"
    return _load_idx_dataset(
        "fashion-mnist", name, data_dir, seed=seed, splits=splits, n_val=n_val, info=info
    )


# --------------------------------------------------------------------------- digits


def _digits_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_tr, n_va, _ = split_sizes(n, (0.7, 0.1, 0.2))
    perm = seeded_rng(seed, "digits-split").permutation(n)
    return perm[:n_tr], perm[n_tr : n_tr + n_va], perm[n_tr + n_va :]


_DIGITS_INFO = {
    "source": "scikit-learn's 8x8 digits (sklearn.datasets.load_digits): the UCI Optical "
    "Recognition of Handwritten Digits test set, 1797 images, values 0..16",
    "license": "CC BY 4.0 (UCI)",
    "citation": "Alpaydin, Kaynak. Optical Recognition of Handwritten Digits. UCI 1998",
}


def load_digits(*, seed: int = 0, standardize: bool | str = False) -> TabularData:
    """scikit-learn's digits as 64-D vectors, dequantised ``(v + U[0, 1)) / 17`` in [0, 1).

    Seeded 70/10/20 split (1258/180/359); the same permutation as ``digits-images``.
    Not standardised unless ``standardize=True`` (training-split statistics).

    Example:
        >>> load_digits().train.shape
        (1258, 64)
    """
    from sklearn.datasets import load_digits as sk_digits  # noqa: PLC0415 (heavy; one dataset)

    values = sk_digits().data.astype(np.float64)  # [1797, 64], 0..16
    out = []
    for i, idx in enumerate(_digits_split(len(values), seed)):
        v = values[idx]
        out.append((v + seeded_rng(seed, "digits-noise", i).random(v.shape)) / 17.0)
    mean = std = None
    info = dict(_DIGITS_INFO)
    if standardize not in (True, False, "train", "none"):
        raise ValueError(f"standardize must be True/'train' or False/'none', got {standardize!r}")
    if standardize in (True, "train"):
        mean, std = out[0].mean(axis=0), out[0].std(axis=0)
        std = np.where(std > 0, std, 1.0)
        out = [(a - mean) / std for a in out]
        info["standardization"] = "z-scored with the mean/std of the training split only"
    else:
        info["standardization"] = "none"
    info.update(
        levels=17,
        preprocessing=["dequantise: (v + U[0,1)) / 17, values in [0, 1)"],
        splits=f"seeded permutation (seed={seed}), 70/10/20",
        seed=seed,
    )
    return TabularData(
        "digits",
        *out,
        mean=None if mean is None else mean.astype(np.float32),
        std=None if std is None else std.astype(np.float32),
        info=info,
    )


def load_digits_images(*, seed: int = 0, scale_to_8bit: bool = False) -> ImageData:
    """scikit-learn's digits as ``uint8 [N, 1, 8, 8]`` images.

    By default the pixel values stay on their native 17-level grid ``0..16`` and
    ``levels=17`` (dequantise with ``(v + U) / 17``). ``scale_to_8bit=True`` maps them to
    ``round(v * 255 / 16)`` (still only 17 distinct values) with ``levels=256``, for code
    that assumes 8-bit pixels. Same split as ``digits``.

    Example:
        >>> d = load_digits_images()
        >>> d.train.shape, d.levels, int(d.train.max())
        ((1258, 1, 8, 8), 17, 16)
    """
    from sklearn.datasets import load_digits as sk_digits  # noqa: PLC0415 (heavy; one dataset)

    bunch = sk_digits()
    images = bunch.images.astype(np.float64)  # [1797, 8, 8]
    if scale_to_8bit:
        images = np.round(images * 255.0 / 16.0)
    images = images.astype(np.uint8)[:, None]
    idx = _digits_split(len(images), seed)
    target = bunch.target.astype(np.int64)
    info = dict(_DIGITS_INFO)
    levels = 256 if scale_to_8bit else 17
    info.update(
        levels=levels,
        pixels="round(v * 255 / 16), 17 distinct values in 0..255"
        if scale_to_8bit
        else "native values 0..16 (17 levels); divide by 17 after dequantisation",
        splits=f"seeded permutation (seed={seed}), 70/10/20",
        seed=seed,
    )
    return ImageData(
        "digits-images",
        *(np.ascontiguousarray(images[i]) for i in idx),
        shape=(1, 8, 8),
        info=info,
        levels=levels,
        labels=dict(zip(("train", "val", "test"), (target[i] for i in idx))),
    )


# --------------------------------------------------------------------------- BSDS300

_BSDS_MEMBER = re.compile(r"(?:^|/)images/(train|test)/(\d+)\.jpg$")


def locate_bsds300(data_dir: Path) -> Located:
    """Find ``BSDS300.hdf5`` (MAF), an extracted ``BSDS300/images/{train,test}`` tree, or the
    images archive (``BSDS300-images.tgz`` / ``BSDS300-images-reassembled.tgz``).
    """
    found: dict[str, Path] = {}
    subs = ("BSDS300", "bsds300")
    for s in subs:
        if (data_dir / s / "BSDS300.hdf5").is_file():
            found["hdf5"] = data_dir / s / "BSDS300.hdf5"
            break
    for s in subs:
        for root in (data_dir / s / "images", data_dir / s / "BSDS300" / "images"):
            if (root / "train").is_dir() and (root / "test").is_dir():
                found.setdefault("images_dir", root)
    for d in (data_dir / "bsds300", data_dir / "BSDS300", data_dir):
        for n in ("BSDS300-images.tgz", "BSDS300-images-reassembled.tgz"):
            if (d / n).is_file():
                found.setdefault("tgz", d / n)
    if found:
        return Located(found)
    return Located(
        routes=[
            [
                RequiredFile(
                    "BSDS300-images.tgz",
                    BSDS_URL,
                    data_dir / "bsds300" / "BSDS300-images.tgz",
                    note="read directly, no extraction needed (an extracted "
                    "bsds300/BSDS300/images/{train,test}/ tree also works)",
                )
            ],
            [
                RequiredFile(
                    "BSDS300.hdf5",
                    MAF_DATA_URL,
                    data_dir / "BSDS300" / "BSDS300.hdf5",
                    note="MAF's exact patches (data/BSDS300/BSDS300.hdf5); needs h5py",
                )
            ],
        ]
    )


def _decode_gray(blob: bytes, where: str) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 (only for PNG sources)

    try:
        with Image.open(io.BytesIO(blob)) as im:
            if im.mode not in ("RGB", "L"):
                im = im.convert("RGB")
            # Pillow's "L" conversion is exactly rgb_to_gray (ITU-R 601-2 luma), in C
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except Exception as e:  # PIL raises many types for bad files
        raise DatasetFormatError(f"{where}: cannot decode the JPEG ({e})") from e


def _read_manifest(path: Path) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    lines = path.read_text().splitlines()
    if not lines:
        return out
    head = lines[0].split("\t")
    cols = [i for i, h in enumerate(head) if h.startswith("sha256")]
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) == len(head):
            out[(f[0], f[1])] = {f[i] for i in cols}
    return out


def bsds300_images(
    path: Path, verify: bool = True
) -> tuple[dict[str, list[str]], dict[str, list[np.ndarray]]]:
    """Read BSDS300 images (monochrome ``uint8``) from the tgz archive or an images folder.

    Returns ``(ids, images)``, each ``{"train": [...], "test": [...]}`` sorted by numeric
    id. When a ``BSDS300-manifest.tsv`` lies next to the archive, each image's sha256 is
    checked against it (either the included or the original BSDS300 digest).
    """
    blobs: dict[str, dict[str, bytes]] = {"train": {}, "test": {}}
    if path.is_dir():
        for split in ("train", "test"):
            for f in (path / split).glob("*.jpg"):
                blobs[split][f.stem] = f.read_bytes()
        manifest_path = path.parent.parent / "BSDS300-manifest.tsv"
    else:
        if verify and path.name == "BSDS300-images-reassembled.tgz":
            check_sha256(path, _BSDS_REASSEMBLED_SHA256, "BSDS300 reassembled archive")
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar:
                    match = _BSDS_MEMBER.search(m.name)
                    if m.isfile() and match:
                        fh = tar.extractfile(m)
                        if fh is not None:
                            blobs[match.group(1)][match.group(2)] = fh.read()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DatasetFormatError(f"{path} is corrupt or truncated ({e})") from e
        manifest_path = path.parent / "BSDS300-manifest.tsv"
    counts = {s: len(b) for s, b in blobs.items()}
    if counts["train"] == 0 or counts["test"] == 0:
        raise DatasetFormatError(f"{path}: no images/train/*.jpg or images/test/*.jpg found")
    if counts != {"train": 200, "test": 100}:
        warnings.warn(
            f"{path}: {counts['train']} train and {counts['test']} test images; BSDS300 has "
            "200 and 100",
            stacklevel=3,
        )
    if verify and manifest_path.is_file():
        manifest = _read_manifest(manifest_path)
        bad = [
            f"{s}/{i}"
            for s, b in blobs.items()
            for i, blob in b.items()
            if (s, i) in manifest and hashlib.sha256(blob).hexdigest() not in manifest[(s, i)]
        ]
        if bad:
            warnings.warn(
                f"{len(bad)} image(s) differ from {manifest_path} (first: {bad[0]})",
                ChecksumWarning,
                stacklevel=3,
            )
    ids = {s: sorted(b, key=int) for s, b in blobs.items()}
    images = {s: [_decode_gray(blobs[s][i], f"{path}:{s}/{i}.jpg") for i in ids[s]] for s in ids}
    return ids, images


def _bsds_source_key(path: Path) -> str:
    if path.is_file():
        return file_key(path)
    parts = sorted(file_key(f) for s in ("train", "test") for f in (path / s).glob("*.jpg"))
    return hash_key(str(path), *parts)


def _bsds_from_hdf5(
    path: Path, n_sizes: tuple[int | None, int | None, int | None]
) -> tuple[list[np.ndarray], dict]:
    try:
        import h5py  # noqa: PLC0415 (optional dependency: the hdf5 extra)
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs h5py: `pip install h5py` (or `pip install "
            "invertible[hdf5]`), or pass source='images' to rebuild the patches from the "
            "BSDS300 images instead"
        ) from e
    out = []
    try:
        with h5py.File(path, "r") as f:
            for key, n in zip(("train", "validation", "test"), n_sizes):
                if key not in f:
                    raise DatasetFormatError(f"{path}: no dataset {key!r} (keys: {list(f)})")
                ds = f[key]
                out.append(np.asarray(ds[: ds.shape[0] if n is None else n], dtype=np.float32))
    except OSError as e:
        raise DatasetFormatError(f"{path}: not a readable HDF5 file ({e})") from e
    for a, key in zip(out, ("train", "validation", "test")):
        if a.ndim != 2 or a.shape[1] != 63:
            raise DatasetFormatError(f"{path}: {key} has shape {a.shape}, expected [N, 63]")
        check_finite(a, f"{path}:{key}")
    info = {
        "file": str(path),
        "paper_exact": True,
        "preprocessing": ["MAF's BSDS300.hdf5 (RNADE patches), used as is"],
    }
    return out, info


def load_bsds300(
    data_dir: Path,
    *,
    seed: int = 0,
    source: str = "auto",
    n_train: int | None = None,
    n_val: int | None = None,
    n_test: int | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
) -> TabularData:
    """BSDS300 8x8 patches, D = 63 (MAF protocol).

    Args:
        data_dir: Data directory.
        seed: Patch sampling and dequantisation seed (rebuild only).
        source: ``"auto"`` (the paper's ``BSDS300.hdf5`` if present and h5py is installed,
            else the images), ``"hdf5"`` or ``"images"``.
        n_train: Training patch count. Rebuild defaults: 1,000,000 / 50,000 / 250,000
            for the three splits (the paper's). With the hdf5, ``None`` takes all and a
            number the first rows.
        n_val: Validation patch count (as ``n_train``).
        n_test: Test patch count (as ``n_train``).
        cache: Rebuild only: cache the patch arrays as ``.npy`` (keyed by source file,
            counts and seed) in ``cache_dir``.
        cache_dir: Where the cache goes (default ``<data_dir>/cache``, or
            ``~/.cache/invertible`` when the data directory is read-only; also
            ``$INVERTIBLE_CACHE_DIR``).

    The rebuild converts every image to monochrome (Pillow "L"), draws train and validation
    patches from the 200 train images and test patches from the 100 test images (image
    uniformly, corner uniformly), dequantises ``(p + U) / 256``, subtracts each patch's mean
    and drops the bottom-right pixel. It matches the paper in distribution only (the
    original sampling and seed are unknown). Not standardised (as in the paper).
    """
    if source not in ("auto", "hdf5", "images"):
        raise ValueError(f"source must be 'auto', 'hdf5' or 'images', got {source!r}")
    found = locate_bsds300(data_dir).require("bsds300", data_dir)
    image_src = found.get("images_dir") or found.get("tgz")
    use_hdf5 = False
    if source == "hdf5" or (source == "auto" and "hdf5" in found):
        if "hdf5" not in found:
            raise ValueError(f"source='hdf5' but no BSDS300/BSDS300.hdf5 in {data_dir}")
        try:
            import h5py  # noqa: F401, PLC0415 (optional dependency: the hdf5 extra)

            use_hdf5 = True
        except ImportError:
            if source == "hdf5" or image_src is None:
                use_hdf5 = True  # _bsds_from_hdf5 raises the helpful ImportError
            else:
                warnings.warn(
                    f"{found['hdf5']} found but h5py is not installed (`pip install h5py`); "
                    "rebuilding the patches from the images instead",
                    stacklevel=2,
                )
    info: dict = {
        "source": "Berkeley Segmentation Dataset BSDS300 (Martin, Fowlkes, Tal, Malik, ICCV 2001)",
        "url": "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/bsds/",
        "license": "free for non-commercial research and education (Berkeley terms; Corel images)",
        "citation": [
            "Martin, Fowlkes, Tal, Malik. A Database of Human Segmented Natural Images. ICCV 2001",
            "Uria, Murray, Larochelle. RNADE. NeurIPS 2013",
            "Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow. NeurIPS 2017",
        ],
        "standardization": "none (as in the MAF paper)",
    }
    if use_hdf5:
        splits, extra = _bsds_from_hdf5(found["hdf5"], (n_train, n_val, n_test))
        info.update(extra)
    else:
        if image_src is None:
            raise ValueError(f"source='images' but no BSDS300 images found in {data_dir}")
        sizes = (
            1_000_000 if n_train is None else n_train,
            50_000 if n_val is None else n_val,
            250_000 if n_test is None else n_test,
        )
        splits = _bsds_rebuild(data_dir, image_src, sizes, seed, cache, cache_dir, info)
    info["sizes"] = {"train": len(splits[0]), "val": len(splits[1]), "test": len(splits[2])}
    return TabularData("bsds300", *splits, info=info)


def _bsds_rebuild(
    data_dir: Path,
    image_src: Path,
    sizes: tuple[int, int, int],
    seed: int,
    cache: bool,
    cache_dir: str | Path | None,
    info: dict,
) -> list[np.ndarray]:
    info.update(
        file=str(image_src),
        paper_exact=False,
        seed=seed,
        preprocessing=[
            "monochrome 8-bit (Pillow 'L': ITU-R 601-2 luma)",
            "random 8x8 patches: train and validation from the 200 train images, test from "
            "the 100 test images (image uniformly, corner uniformly)",
            "dequantise: (p + U[0,1)) / 256, values in [0, 1)",
            "subtract each patch's mean; drop the bottom-right pixel (D = 63)",
        ],
        rebuild_note="same protocol as the paper's BSDS300.hdf5; the original patch sampling "
        "and seed are unknown, so this matches in distribution only",
    )
    key = hash_key(_BSDS_CACHE_VERSION, _bsds_source_key(image_src), sizes, seed)
    files = None
    if cache:
        root = resolve_cache_dir(data_dir, cache_dir)
        files = [root / f"bsds300-{key}-{s}.npy" for s in ("train", "val", "test")]
        cached = [load_cached_npy(f) for f in files]
        if all(c is not None for c in cached):
            info["cache"] = str(files[0].parent)
            return cached  # type: ignore[return-value]
    _, images = bsds300_images(image_src)
    out = []
    for i, (split, n) in enumerate(zip(("train", "val", "test"), sizes)):
        imgs = images["test" if split == "test" else "train"]
        coords = sample_patch_coords(
            seeded_rng(seed, "bsds300-coords", i), [im.shape for im in imgs], n, patch=PATCH
        )
        raw = extract_patches(_FlatImages(imgs), coords)
        out.append(patch_features(raw, seeded_rng(seed, "bsds300", i)))
    if cache and files is not None:
        ok = all(try_save_cache(f, a) for f, a in zip(files, out))
        if ok:
            info["cache"] = str(files[0].parent)
    return out
