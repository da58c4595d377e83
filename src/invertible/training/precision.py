"""Mixed-precision training: the ``precision=`` option of :func:`~invertible.fit`.

``"fp32"`` trains in full precision. ``"bf16"`` and ``"fp16"`` wrap the forward pass and
the loss of each training step in ``torch.autocast(device_type, dtype)``: the matrix
products of the conditioner networks (MADE, including its block-sparse product, coupling
MLPs, ResNets, WaveNets) run in the low precision, while everything that decides the
likelihood stays in float32, because every conditioner returns its output in the dtype of
its input (the log-scales are soft clamped, the elementwise maps, log-determinants, base
log-densities and batch-norm statistics computed in float32). The backward pass and the
optimizer step run outside autocast, on float32 parameters and gradients.

``"auto"``, the default of :func:`~invertible.fit`, :func:`~invertible.distill` and the
command line, is ``"bf16"`` where bf16 matrix products are fast and ``"fp32"`` elsewhere
(:func:`resolve_precision`): a CUDA device of compute capability 8.0 or more, or a CPU with
native bf16 products (AVX-512 BF16 or AMX, read from the CPU's feature flags; CPUs without
them emulate bf16 far below float32 speed). Where the flags are not readable (not Linux on
x86) a timing probe decides: bf16 products at least :data:`AUTO_BF16_SPEEDUP` times as fast
as float32 ones. A resumed run keeps the precision it started in. Where bf16 is fast it
was measured to be as good at equal steps and better at equal wall clock
(``python -m benchmarks precision``: MAF and RealNVP on gmm8, patches and BSDS300, 3 seeds);
where it is slow, "auto" keeps float32.

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
import functools
import platform
import statistics
import time
from pathlib import Path

import torch

from invertible.tensors import AUTOCAST_DEVICES, full_precision

__all__ = [
    "AUTO_BF16_SPEEDUP",
    "BF16_CPU_FLAGS",
    "PRECISIONS",
    "autocast",
    "autocast_dtype",
    "check_precision",
    "cpu_bf16_flags",
    "fast_bf16",
    "full_precision",
    "make_scaler",
    "resolve_precision",
]

#: The values of ``precision=``, and the autocast dtype of each (``None``: no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


#: "auto" picks bf16 on a CPU whose bf16 matrix products are at least this many times as fast
#: as its float32 ones. Autocast adds casts around every product, so a small gain in the
#: products is lost in the step: on a CPU with AVX-512 BF16 the products ran 4x faster and
#: the MAF and coupling training steps 1.6-1.9x (``python -m benchmarks steps``).
AUTO_BF16_SPEEDUP = 2.0


def check_precision(precision: str, device: torch.device | str | None = None) -> str:
    """Return ``precision`` if it is known (and usable on ``device``), else raise one
    ``ValueError`` naming the choices. ``"auto"`` is usable everywhere.

    Example:
        >>> check_precision("bf16", "cpu")
        'bf16'
        >>> check_precision("fp8")
        Traceback (most recent call last):
        ...
        ValueError: precision must be one of 'auto', 'fp32', 'bf16', 'fp16', got 'fp8'
    """
    if precision not in PRECISIONS and precision != "auto":
        choices = ", ".join(repr(p) for p in ("auto", *PRECISIONS))
        raise ValueError(f"precision must be one of {choices}, got {precision!r}")
    if device is None or precision in ("fp32", "auto"):
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


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run on ``device`` trains in: ``"auto"`` becomes ``"bf16"`` where
    :func:`fast_bf16` holds and ``"fp32"`` elsewhere; other values are checked and returned.

    Example:
        >>> resolve_precision("fp32", "cpu")
        'fp32'
        >>> resolve_precision("auto", "cpu") in ("bf16", "fp32")
        True
    """
    check_precision(precision, device)
    if precision != "auto":
        return precision
    return "bf16" if fast_bf16(device) else "fp32"


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matrix products are fast on ``device``: CUDA compute capability 8.0 or
    more (Ampere and later), or a CPU where they measure at least :data:`AUTO_BF16_SPEEDUP`
    times the float32 ones (measured once per process and thread count, in well under a
    second).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type == "cpu":
        native = cpu_bf16_flags()
        if native is not None:
            return native
        return cpu_bf16_speedup(torch.get_num_threads()) >= AUTO_BF16_SPEEDUP
    return False


#: x86 feature flags of native bf16 matrix products (AVX-512 BF16, AMX).
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_bf16_flags(cpuinfo: str = "/proc/cpuinfo") -> bool | None:
    """Whether the x86 CPU advertises native bf16 products (:data:`BF16_CPU_FLAGS`) in
    Linux's ``cpuinfo``; ``None`` where that does not say (another OS or architecture).

    Read, not timed: a timing probe on a busy machine measured anything from 2 to 150 on
    one CPU, so "auto" could resolve differently in two processes of the same run.
    """
    path = Path(cpuinfo)
    if platform.system() != "Linux" or not path.is_file():
        return None
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return not BF16_CPU_FLAGS.isdisjoint(value.split())
    return None  # no x86 "flags" line: ARM and others list "Features"


@functools.cache
def cpu_bf16_speedup(threads: int, size: int = 512, repeats: int = 9) -> float:
    """Measured time of a float32 ``size``-square matrix product over that of a bf16 one on
    the CPU, with ``threads`` torch threads (the cache key): the median over ``repeats``
    back-to-back pairs, so that a pause of the process spoils one pair, not the figure.
    """
    del threads  # the cache key: torch uses the current thread count
    operands = {
        dtype: torch.randn(size, size).to(dtype) for dtype in (torch.float32, torch.bfloat16)
    }
    for a in operands.values():
        torch.mm(a, a)  # warm-up: kernel selection and first-touch allocation

    def seconds(a: torch.Tensor) -> float:
        start = time.perf_counter()
        torch.mm(a, a)
        return max(time.perf_counter() - start, 1e-9)

    return statistics.median(
        seconds(operands[torch.float32]) / seconds(operands[torch.bfloat16]) for _ in range(repeats)
    )


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
