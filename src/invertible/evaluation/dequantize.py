"""Dequantization of image pixels for training (fresh noise per step) and evaluation
(fixed noise per row), both pure functions of their seeds.

Example:
    >>> import torch
    >>> p = torch.tensor([[0, 255]], dtype=torch.uint8)
    >>> x = dequantize_eval(p, 256)
    >>> bool((x >= 0).all() and (x < 1).all())
    True
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from invertible.tensors import seed_from
from invertible.transforms.preprocessing import dequantize

__all__ = ["EVAL_NOISE_SEED", "NOISE_BLOCK_ROWS", "dequantize_eval", "dequantize_step"]

#: Seed of the fixed dequantization noise used to evaluate images (:func:`dequantize_eval`).
EVAL_NOISE_SEED = 20170527
#: Rows per block of evaluation noise: each block has its own seeded generator, so the noise
#: of an image depends on its row index only, not on the batch size of the evaluation.
NOISE_BLOCK_ROWS = 256


def _pixels(pixels: Tensor | np.ndarray) -> Tensor:
    if isinstance(pixels, np.ndarray):
        array = np.ascontiguousarray(pixels)
        if not array.flags.writeable:  # read-only dataset arrays: torch wants its own copy
            array = array.copy()
        return torch.from_numpy(array)
    return pixels


def dequantize_step(
    pixels: Tensor | np.ndarray,
    levels: int,
    *,
    seed: int,
    step: int,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The training batch of ``step``: x = (p + u) / levels ∈ [0, 1), fresh noise per step.

    The noise u ~ U[0, 1) comes from a generator seeded by ``(seed, step)``, so a batch is a
    pure function of (pixels, seed, step) and a resumed run sees exactly the same inputs.
    The result is on the device of ``pixels``.

    Example:
        >>> p = torch.tensor([[0, 16]], dtype=torch.uint8)
        >>> a, b = dequantize_step(p, 17, seed=0, step=3), dequantize_step(p, 17, seed=0, step=3)
        >>> bool((a == b).all()), bool((a != dequantize_step(p, 17, seed=0, step=4)).all())
        (True, True)
    """
    values = _pixels(pixels)
    gen = torch.Generator().manual_seed(seed_from(seed, step, 1))
    return dequantize(values, levels, generator=gen, dtype=dtype)


def dequantize_eval(
    pixels: Tensor | np.ndarray,
    levels: int,
    *,
    start: int = 0,
    seed: int = EVAL_NOISE_SEED,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Dequantize rows ``start, start + 1, ...`` of a split with FIXED noise.

    Row ``i`` always gets the same noise (blocks of :data:`NOISE_BLOCK_ROWS` rows, each from
    a generator seeded by ``(seed, block)``), whatever the batching, so evaluating a
    checkpoint after loading reproduces the number printed at the end of training.

    Example:
        >>> p = torch.randint(0, 256, (600, 1, 2, 2), dtype=torch.uint8)
        >>> whole = dequantize_eval(p, 256)
        >>> part = dequantize_eval(p[300:500], 256, start=300)
        >>> bool((whole[300:500] == part).all())
        True
    """
    values = _pixels(pixels)
    n = values.shape[0]
    if n == 0:
        return values.to(dtype) / levels
    rows = NOISE_BLOCK_ROWS
    first, last = start // rows, (start + n - 1) // rows
    blocks = [
        torch.rand(
            (rows, *values.shape[1:]),
            generator=torch.Generator().manual_seed(seed_from(seed, block, 2)),
            dtype=dtype,
        )
        for block in range(first, last + 1)
    ]
    offset = start - first * rows
    noise = torch.cat(blocks)[offset : offset + n]
    return (values.to(dtype) + noise.to(values.device)) / levels
