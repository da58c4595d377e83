"""Small tensor helpers shared by the workflow layers: a module's dtype and device, and
arrays to tensors without sharing read-only memory.

Example:
    >>> import torch
    >>> dtype_device(torch.nn.Linear(2, 2).double())
    (torch.float64, device(type='cpu'))
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["AUTOCAST_DEVICES", "as_tensor", "dtype_device", "full_precision", "seed_from"]

#: Device types with an autocast implementation.
AUTOCAST_DEVICES = ("cpu", "cuda")


def dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of ``module``'s first parameter (else floating buffer), else
    ``(float32, cpu)``.
    """
    for p in module.parameters():
        return p.dtype, p.device
    for b in module.buffers():
        if b.is_floating_point():
            return b.dtype, b.device
    return torch.float32, torch.device("cpu")


def seed_from(*keys: int) -> int:
    """A 63-bit torch seed from integer ``keys`` (distinct keys give unrelated streams).

    Example:
        >>> seed_from(0, 1) == seed_from(0, 1) != seed_from(0, 2)
        True
    """
    entropy = [int(k) % 2**64 for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def as_tensor(x: Any, device: torch.device | str, dtype: torch.dtype) -> Tensor:
    """``x`` (tensor, array, array-like) as a tensor of ``dtype`` on ``device``.

    A read-only numpy array (e.g. memory-mapped pixels) is copied first: torch would
    otherwise share, and warn about, memory it must not write.
    """
    if isinstance(x, Tensor):
        return x.to(device=device, dtype=dtype)
    array = np.asarray(x)
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(array, dtype=dtype, device=device)


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Autocast off on every device that has it: what validation and evaluation run under,
    even inside a caller's autocast region (likelihoods are reported in float32).

    Example:
        >>> with torch.autocast("cpu", dtype=torch.bfloat16), full_precision():
        ...     torch.nn.Linear(2, 2)(torch.randn(1, 2)).dtype
        torch.float32
    """
    with contextlib.ExitStack() as stack:
        for kind in AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(kind):
                stack.enter_context(torch.autocast(kind, enabled=False))
        yield
