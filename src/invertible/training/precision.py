"""Mixed-precision training: the ``precision=`` option of :func:`~invertible.fit`.

``"fp32"`` (default) trains in full precision. ``"bf16"`` and ``"fp16"`` wrap the forward
pass and the loss of each training step in ``torch.autocast(device_type, dtype)``: the
matrix products of the conditioner networks (MADE, including its block-sparse product,
coupling MLPs, ResNets, WaveNets) run in the low precision, while everything that decides
the likelihood stays in float32, because every conditioner returns its output in the dtype
of its input (the log-scales are soft clamped, the elementwise maps, log-determinants,
base log-densities and batch-norm statistics computed in float32). The backward pass and
the optimizer step run outside autocast, on float32 parameters and gradients.

``"fp16"`` needs CUDA: its 5-bit exponent underflows gradients, so the loss is scaled by a
``torch.amp.GradScaler`` (unscaled before gradient clipping); CPUs have no fast fp16
matrix products to gain from. Validation and evaluation always run in float32
(:func:`full_precision`).

Example:
    >>> import torch
    >>> with autocast("bf16", torch.device("cpu")):
    ...     y = torch.nn.Linear(4, 4)(torch.randn(2, 4))
    >>> y.dtype
    torch.bfloat16
    >>> make_scaler("bf16", torch.device("cpu")) is None
    True
"""

from __future__ import annotations

import contextlib

import torch

from invertible.tensors import AUTOCAST_DEVICES, full_precision

__all__ = [
    "PRECISIONS",
    "autocast",
    "autocast_dtype",
    "check_precision",
    "full_precision",
    "make_scaler",
]

#: The values of ``precision=``, and the autocast dtype of each (``None``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """Return ``precision`` if it is known (and usable on ``device``), else raise one
    ``ValueError`` naming the choices.

    Example:
        >>> check_precision("bf16", "cpu")
        'bf16'
        >>> check_precision("fp8")
        Traceback (most recent call last):
        ...
        ValueError: precision must be one of 'fp32', 'bf16', 'fp16', got 'fp8'
    """
    if precision not in PRECISIONS:
        choices = ", ".join(repr(p) for p in PRECISIONS)
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    if device is None or precision == "fp32":
        return precision
    kind = torch.device(device).type
    if precision == "fp16" and kind != "cuda":
        raise ValueError(
            f"precision 'fp16' needs a CUDA device (it trains with a gradient scaler), got "
            f"{kind!r}; use precision='bf16' on {kind}"
        )
    if kind not in AUTOCAST_DEVICES:
        raise ValueError(
            f"precision {precision!r}: no autocast on device {kind!r}; use precision='fp32'"
        )
    return precision


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of ``precision`` (``None`` for ``"fp32"``)."""
    return PRECISIONS[check_precision(precision)]


def autocast(precision: str, device: torch.device) -> torch.autocast | contextlib.nullcontext[None]:
    """The context of a training step's forward pass and loss: ``torch.autocast`` in the
    dtype of ``precision`` on ``device``, or nothing for ``"fp32"``.
    """
    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def make_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` for ``"fp16"`` on CUDA, else ``None`` (bf16 has float32's
    exponent range: its gradients do not underflow).
    """
    if check_precision(precision, device) != "fp16":
        return None
    return torch.amp.GradScaler(device.type)
