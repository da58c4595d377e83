"""8x8 natural-image patches, the BSDS300 protocol of the MAF paper.

The protocol (Uria et al. 2013, used by MAF): convert to monochrome 8-bit, take random
8x8 patches, dequantise ``(p + U[0, 1)) / 256`` (values in ``[0, 1)``), subtract each
patch's mean, and drop the bottom-right pixel (it is minus the sum of the rest), which
gives D = 63.

This module holds the vectorised machinery (coordinate sampling, gathering, feature
transform), used both by the embedded ``patches`` dataset (the two photographs that
scikit-learn ships) and by the ``bsds300`` rebuild in :mod:`invertible.data.images`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import numpy as np

from invertible.data.base import TabularData, seeded_rng

__all__ = [
    "PATCH",
    "band_limits",
    "extract_patches",
    "load_patches",
    "patch_features",
    "patches_coordinates",
    "rgb_to_gray",
    "sample_patch_coords",
    "sample_patches",
    "sklearn_gray_images",
]

#: Patch side length.
PATCH = 8
#: Column bands of the ``patches`` dataset: fractions of each image's width.
PATCHES_BANDS = (0.7, 0.1, 0.2)
_CHUNK = 65536


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Monochrome 8-bit conversion exactly like Pillow's ``Image.convert("L")``.

    ``L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`` (ITU-R 601-2 luma in 16-bit fixed
    point), computed in numpy so it is vectorised and needs no Pillow.

    Example:
        >>> rgb_to_gray(np.array([[[255, 255, 255], [255, 0, 0]]], dtype=np.uint8))
        array([[255,  76]], dtype=uint8)
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.uint8, copy=False)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an [H, W, 3] RGB image, got shape {rgb.shape}")
    c = rgb[..., :3].astype(np.uint32)
    gray = (19595 * c[..., 0] + 38470 * c[..., 1] + 7471 * c[..., 2] + 0x8000) >> 16
    return gray.astype(np.uint8)


def band_limits(width: int, fractions: Sequence[float] = PATCHES_BANDS) -> list[tuple[int, int]]:
    """Split ``range(width)`` into consecutive column bands ``[start, stop)`` by fraction.

    Example:
        >>> band_limits(640)
        [(0, 448), (448, 512), (512, 640)]
    """
    edges = np.round(np.cumsum([0.0, *fractions]) / sum(fractions) * width).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def sample_patch_coords(
    rng: np.random.Generator,
    shapes: Sequence[tuple[int, int]],
    n: int,
    col_range: Sequence[tuple[int, int]] | None = None,
    patch: int = PATCH,
    image_weights: str = "uniform",
) -> np.ndarray:
    """Random top-left corners of patches lying entirely inside each image (and band).

    Args:
        rng: Generator.
        shapes: ``(H, W)`` of each image.
        n: Number of patches.
        col_range: Optional per-image ``[start, stop)`` column band; a patch's columns
            ``c .. c + patch - 1`` then lie inside the band.
        patch: Patch side.
        image_weights: ``"uniform"`` (each image equally likely) or ``"area"`` (by the
            number of valid positions).

    Returns:
        ``int64 [n, 3]``: ``(image index, row, column)`` of each patch's top-left pixel.
    """
    shapes = [(int(h), int(w)) for h, w in shapes]
    if col_range is None:
        col_range = [(0, w) for _, w in shapes]
    rows = np.array([h - patch + 1 for h, _ in shapes])
    lo = np.array([a for a, _ in col_range])
    cols = np.array([b - a - patch + 1 for a, b in col_range])
    if np.any(rows < 1) or np.any(cols < 1):
        raise ValueError("an image (or band) is smaller than the patch")
    if image_weights == "uniform":
        img = rng.integers(0, len(shapes), size=n)
    elif image_weights == "area":
        p = (rows * cols) / (rows * cols).sum()
        img = rng.choice(len(shapes), size=n, p=p)
    else:
        raise ValueError(f"image_weights must be 'uniform' or 'area', got {image_weights!r}")
    r = (rng.random(n) * rows[img]).astype(np.int64)
    c = lo[img] + (rng.random(n) * cols[img]).astype(np.int64)
    return np.stack([img.astype(np.int64), r, c], axis=1)


class _FlatImages:
    """Images of different sizes in one flat uint8 buffer, for vectorised gathers."""

    def __init__(self, images: Sequence[np.ndarray]) -> None:
        self.widths = np.array([im.shape[1] for im in images], dtype=np.int64)
        sizes = np.array([im.size for im in images], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.buffer = np.concatenate([np.ascontiguousarray(im).ravel() for im in images])

    def gather(self, coords: np.ndarray, patch: int) -> np.ndarray:
        img, r, c = coords[:, 0], coords[:, 1], coords[:, 2]
        w = self.widths[img]
        base = self.offsets[img] + r * w + c  # [n]
        dr = np.arange(patch, dtype=np.int64)
        # [n, patch, patch] flat indices: base + dr * w + dc
        idx = (base[:, None] + dr[None, :] * w[:, None])[:, :, None] + dr[None, None, :]
        return self.buffer[idx.reshape(len(coords), patch * patch)]


def extract_patches(
    images: Sequence[np.ndarray] | _FlatImages, coords: np.ndarray, patch: int = PATCH
) -> np.ndarray:
    """Gather raw ``uint8`` patches ``[n, patch * patch]`` (row-major) at ``coords``.

    Example:
        >>> img = np.arange(100, dtype=np.uint8).reshape(10, 10)
        >>> extract_patches([img], np.array([[0, 1, 2]]), patch=2)
        array([[12, 13, 22, 23]], dtype=uint8)
    """
    flat = images if isinstance(images, _FlatImages) else _FlatImages(images)
    out = np.empty((len(coords), patch * patch), dtype=np.uint8)
    for s in range(0, len(coords), _CHUNK):
        out[s : s + _CHUNK] = flat.gather(coords[s : s + _CHUNK], patch)
    return out


def patch_features(raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The MAF/RNADE transform of raw 8-bit patches ``[n, P]`` -> ``float32 [n, P - 1]``.

    Dequantise ``(p + U[0, 1)) / 256``, subtract each patch's mean, drop the last pixel.
    """
    n, p = raw.shape
    out = np.empty((n, p - 1), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        block = raw[s : s + _CHUNK].astype(np.float32)
        block += rng.random(block.shape, dtype=np.float32)
        block *= np.float32(1.0 / 256.0)
        block -= block.mean(axis=1, keepdims=True)
        out[s : s + _CHUNK] = block[:, :-1]
    return out


def sample_patches(
    images: Sequence[np.ndarray] | _FlatImages,
    coords: np.ndarray,
    rng: np.random.Generator,
    patch: int = PATCH,
) -> np.ndarray:
    """Extract patches at ``coords`` and apply :func:`patch_features` (D = patch^2 - 1)."""
    return patch_features(extract_patches(images, coords, patch), rng)


# --------------------------------------------------------------------------- embedded set


def sklearn_gray_images() -> tuple[list[str], list[np.ndarray]]:
    """scikit-learn's two sample photographs as monochrome ``uint8 [427, 640]`` arrays.

    Returns ``(names, images)`` sorted by file name (``china.jpg``, ``flower.jpg``).
    """
    from sklearn.datasets import load_sample_images  # noqa: PLC0415 (heavy; one dataset)

    bunch = load_sample_images()
    pairs = sorted(
        zip((os.path.basename(f) for f in bunch.filenames), bunch.images), key=lambda t: t[0]
    )
    return [p[0] for p in pairs], [rgb_to_gray(p[1]) for p in pairs]


def patches_coordinates(
    shapes: Sequence[tuple[int, int]],
    *,
    seed: int = 0,
    n_train: int = 40000,
    n_val: int = 5000,
    n_test: int = 10000,
    bands: Sequence[float] = PATCHES_BANDS,
) -> dict[str, np.ndarray]:
    """The patch corners that :func:`load_patches` uses, per split (for inspection/tests).

    Each split's patches lie entirely inside its own column band of every image
    (train: the left ``bands[0]`` of the width, val: the next ``bands[1]``, test: the
    rest), so patches of different splits never share a pixel.
    """
    out = {}
    for i, (split, n) in enumerate((("train", n_train), ("val", n_val), ("test", n_test))):
        ranges = [band_limits(w, bands)[i] for _, w in shapes]
        rng = seeded_rng(seed, "patches-coords", i)
        out[split] = sample_patch_coords(rng, shapes, n, ranges)
    return out


def load_patches(
    *,
    seed: int = 0,
    n_train: int = 40000,
    n_val: int = 5000,
    n_test: int = 10000,
    bands: Sequence[float] = PATCHES_BANDS,
) -> TabularData:
    """The embedded default dataset: BSDS300-protocol 8x8 patches (D = 63) of the two
    photographs scikit-learn ships (``china.jpg``, ``flower.jpg``; 427x640 RGB).

    Monochrome (Pillow "L" luma), random 8x8 patches, ``(p + U) / 256``, patch mean
    subtracted, bottom-right pixel dropped. Train/val/test come from disjoint column bands
    (70% / 10% / 20% of the width), so overlapping patches cannot leak between splits. Not
    standardised (the MAF paper does not standardise BSDS300). Deterministic given ``seed``.

    Example:
        >>> load_patches(n_train=100, n_val=10, n_test=10).train.shape
        (100, 63)
    """
    names, images = sklearn_gray_images()
    shapes = [im.shape for im in images]
    coords = patches_coordinates(
        shapes, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, bands=bands
    )
    flat = _FlatImages(images)
    splits = [
        sample_patches(flat, coords[s], seeded_rng(seed, "patches-noise", i))
        for i, s in enumerate(("train", "val", "test"))
    ]
    info = {
        "source": "scikit-learn sample images (sklearn.datasets.load_sample_images): "
        + ", ".join(names),
        "protocol": "BSDS300 protocol of the MAF paper (Papamakarios et al. 2017), applied to "
        "two photographs instead of the 300 BSDS images",
        "preprocessing": [
            "monochrome 8-bit (Pillow 'L': ITU-R 601-2 luma)",
            "random 8x8 patches (image chosen uniformly, corner uniformly within the band)",
            "dequantise: (p + U[0,1)) / 256, values in [0, 1)",
            "subtract each patch's mean",
            "drop the bottom-right pixel (D = 63)",
        ],
        "splits": "disjoint column bands of each image: train "
        f"{bands[0]:.0%}, val {bands[1]:.0%}, test {bands[2]:.0%} of the width; "
        "patches lie entirely inside their band",
        "bands_px": {
            name: dict(zip(("train", "val", "test"), map(list, band_limits(w, bands))))
            for name, (_, w) in zip(names, shapes)
        },
        "standardization": "none (as in the MAF paper for BSDS300)",
        "seed": seed,
        "sizes": {"train": n_train, "val": n_val, "test": n_test},
        "license": "scikit-learn sample images: china.jpg and flower.jpg are CC BY 2.0 "
        "(see sklearn/datasets/images/README.txt)",
        "citation": "Papamakarios, Pavlakou, Murray. Masked Autoregressive Flow for Density "
        "Estimation. NeurIPS 2017",
    }
    return TabularData("patches", *splits, info=info)
