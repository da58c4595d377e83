"""The patch machinery and the embedded ``patches`` dataset."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from invertible.data import load_dataset
from invertible.data.base import seeded_rng
from invertible.data.patches import (
    band_limits,
    extract_patches,
    load_patches,
    patch_features,
    patches_coordinates,
    rgb_to_gray,
    sample_patch_coords,
    sklearn_gray_images,
)

SMALL = {"n_train": 2000, "n_val": 300, "n_test": 500}


@pytest.fixture(scope="module")
def small_patches():
    return load_dataset("patches", **SMALL)


@pytest.fixture(scope="module")
def gray_images():
    return sklearn_gray_images()


def test_patches_shapes_dtypes_determinism(small_patches) -> None:
    d = small_patches
    assert d.features == 63
    for split, n in zip(("train", "val", "test"), (2000, 300, 500)):
        a = getattr(d, split)
        assert a.shape == (n, 63) and a.dtype == np.float32 and np.isfinite(a).all()
    again = load_dataset("patches", **SMALL)
    other = load_dataset("patches", seed=1, **SMALL)
    np.testing.assert_array_equal(d.train, again.train)
    np.testing.assert_array_equal(d.test, again.test)
    assert not np.array_equal(d.train, other.train)
    assert d.mean is None and d.std is None
    assert "none" in d.info["standardization"]


def test_patches_default_sizes() -> None:
    sig = inspect.signature(load_patches).parameters
    assert (sig["n_train"].default, sig["n_val"].default, sig["n_test"].default) == (
        40000,
        5000,
        10000,
    )


def test_patch_values_follow_the_protocol(small_patches) -> None:
    """Patch mean removed: the dropped pixel is minus the sum of the other 63; every pixel
    of (p + U) / 256 lies in [0, 1), so centred values lie in (-1, 1)."""
    x = small_patches.train.astype(np.float64)
    last = -x.sum(axis=1)
    full = np.concatenate([x, last[:, None]], axis=1)
    assert np.abs(full).max() < 1.0
    assert np.abs(full.mean(axis=1)).max() < 1e-6


def test_patch_features_matches_direct_computation() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(70000, 64), dtype=np.uint8)  # spans two chunks
    out = patch_features(raw, seeded_rng(1, "x"))
    noise = seeded_rng(1, "x").random((65536, 64), dtype=np.float32)  # the first chunk
    block = (raw[:65536].astype(np.float32) + noise) / np.float32(256)
    expect = block - block.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(out[:65536], expect[:, :63], atol=1e-6)
    assert out.shape == (70000, 63) and out.dtype == np.float32


def test_rgb_to_gray_matches_pillow() -> None:
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    np.testing.assert_array_equal(rgb_to_gray(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


def test_extract_patches_row_major() -> None:
    img = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    img2 = (255 - np.arange(9 * 11)).astype(np.uint8).reshape(9, 11)
    coords = np.array([[0, 3, 2], [1, 1, 3], [0, 0, 0]])
    got = extract_patches([img, img2], coords, patch=4)
    np.testing.assert_array_equal(got[0], img[3:7, 2:6].ravel())
    np.testing.assert_array_equal(got[1], img2[1:5, 3:7].ravel())
    np.testing.assert_array_equal(got[2], img[0:4, 0:4].ravel())


def test_sample_patch_coords_stay_inside_bands() -> None:
    shapes = [(30, 50), (20, 40)]
    bands = [(10, 30), (0, 9)]
    c = sample_patch_coords(np.random.default_rng(0), shapes, 5000, bands, patch=8)
    for k, ((h, _), (lo, hi)) in enumerate(zip(shapes, bands)):
        ck = c[c[:, 0] == k]
        assert len(ck) > 0
        assert ck[:, 1].min() >= 0 and ck[:, 1].max() + 8 <= h
        assert ck[:, 2].min() >= lo and ck[:, 2].max() + 8 <= hi
    # the extremes are reachable
    ck = c[c[:, 0] == 0]
    assert ck[:, 2].min() == 10 and ck[:, 2].max() == 22


def test_band_limits() -> None:
    assert band_limits(640) == [(0, 448), (448, 512), (512, 640)]
    assert band_limits(100, (0.5, 0.5, 0.0)) == [(0, 50), (50, 100), (100, 100)]


def test_split_regions_are_disjoint(gray_images) -> None:
    """No pixel is shared by patches of two different splits (no leakage)."""
    _names, imgs = gray_images
    shapes = [im.shape for im in imgs]
    coords = patches_coordinates(shapes, seed=0, **SMALL)
    for k, (h, w) in enumerate(shapes):
        covered = {}
        for split, c in coords.items():
            ck = c[c[:, 0] == k]
            assert len(ck) > 0
            mask = np.zeros((h, w), dtype=bool)
            cols = np.zeros(w, dtype=bool)
            for c0 in np.unique(ck[:, 2]):
                cols[c0 : c0 + 8] = True
            mask[:, cols] = True
            covered[split] = mask
        assert not (covered["train"] & covered["val"]).any()
        assert not (covered["train"] & covered["test"]).any()
        assert not (covered["val"] & covered["test"]).any()
    # and the bands are the documented 70/10/20 column split
    assert band_limits(640) == [(0, 448), (448, 512), (512, 640)]


def test_loader_uses_those_coordinates(small_patches, gray_images) -> None:
    """The dataset is exactly the transform of the patches at ``patches_coordinates``."""
    _, imgs = gray_images
    coords = patches_coordinates([im.shape for im in imgs], seed=0, **SMALL)
    raw = extract_patches(imgs, coords["test"])
    expect = patch_features(raw, seeded_rng(0, "patches-noise", 2))
    np.testing.assert_array_equal(small_patches.test, expect)


def test_sklearn_images_are_monochrome_uint8(gray_images) -> None:
    names, imgs = gray_images
    assert names == ["china.jpg", "flower.jpg"]
    for im in imgs:
        assert im.shape == (427, 640) and im.dtype == np.uint8
