"""Drawing samples to files: ``.npy`` vectors (optionally un-standardised) and quantised
``uint8`` images, in chunks (bounded memory) and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from invertible.core import Flow
from invertible.files import atomic_save_npy

__all__ = ["sample_images", "sample_to_npy"]


@torch.no_grad()
def sample_images(
    flow: Flow,
    n: int,
    *,
    levels: int = 256,
    temperature: float = 1.0,
    seed: int | None = None,
    batch_size: int = 1000,
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Draw ``n`` images from an image flow and quantize them to pixels (``uint8``).

    Samples x ∈ (0, 1) become p = ⌊levels·x⌋ clipped to ``0 .. levels - 1`` (the inverse of
    the dequantization); NaN samples become 0. With ``path`` the array is written as
    ``.npy`` atomically.

    Example:
        >>> import invertible
        >>> flow = invertible.RealNVPImage((1, 4, 4), num_scales=1, channels=4).eval()
        >>> px = sample_images(flow, 5, levels=17, temperature=0.7, seed=0)
        >>> px.shape, px.dtype, int(px.max()) <= 16
        ((5, 1, 4, 4), dtype('uint8'), True)
    """
    if seed is not None:
        torch.manual_seed(seed)
    was_training = flow.training
    flow.eval()
    chunks = []
    try:
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            x = flow.sample(m, temperature=temperature)  # type: ignore[call-arg]
            x = torch.nan_to_num(x.double(), nan=0.0)
            chunks.append(torch.floor(x * levels).clamp(0, levels - 1).to(torch.uint8).cpu())
    finally:
        flow.train(was_training)
    pixels = torch.cat(chunks).numpy() if chunks else np.zeros((0, *flow.event_shape), np.uint8)
    if path is not None:
        atomic_save_npy(Path(path), pixels)
    return pixels


def sample_to_npy(
    flow: Flow,
    n: int,
    path: str | os.PathLike[str],
    *,
    batch_size: int = 10000,
    seed: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Draw ``n`` samples in batches and write them to ``path`` (``.npy``) atomically.

    ``transform`` maps samples before saving (e.g. ``data.unstandardize``). Samples with
    NaN/inf are kept (they are informative) but a warning count is not raised here.

    Example:
        >>> import tempfile, numpy as np, invertible
        >>> flow = invertible.Flow(invertible.Rescaling(2), invertible.StandardNormal(2))
        >>> p = tempfile.mkdtemp() + "/s.npy"
        >>> sample_to_npy(flow, 5, p, seed=0).shape, np.load(p).shape
        ((5, 2), (5, 2))
    """
    if seed is not None:
        torch.manual_seed(seed)
    was_training = flow.training
    flow.eval()
    chunks = []
    try:
        for start in range(0, n, batch_size):
            chunks.append(flow.sample(min(batch_size, n - start)).double().cpu().numpy())
    finally:
        flow.train(was_training)
    samples = (np.concatenate(chunks) if chunks else np.zeros((0, *flow.event_shape))).astype(
        np.float32
    )
    if transform is not None:
        samples = np.asarray(transform(samples), dtype=np.float32)
    atomic_save_npy(Path(path), samples)
    return samples
