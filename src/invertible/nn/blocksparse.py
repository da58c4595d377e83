r"""Masked linear products that skip the zero rectangles of block-triangular masks.

A MADE with degree-sorted hidden units has block-triangular masks: whole rectangles of
every masked weight are zero. :func:`masked_linear` splits the rows of a layer into ``G``
groups and multiplies each group only by the columns its mask reaches
(:func:`block_plan`), so forward and backward do about (G+1)/(2G) of the dense work for a
triangular mask.

The mask is applied on every call, inside the product (``weight ⊙ mask``), from plain
differentiable PyTorch operations. So the result never depends on what is stored in the
masked-out entries of a weight (``param.data`` writes, initialisers, EMA, checkpoints), and
everything PyTorch offers for ordinary modules applies unchanged at every batch size:
autocast, double backward, ``torch.func``, ``torch.export``, ``jit.trace``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Block", "BlockPlan", "auto_groups", "autocast_dtype_of", "block_plan", "masked_linear"]

Block = tuple[int, int, int, int]

DENSE_ABOVE = 0.85
"""A block plan covering more than this fraction of the weight is not worth its overhead."""


def block_plan(mask: Tensor, groups: int) -> list[Block]:
    """Row groups of a masked weight and the column range each one needs.

    Splits the ``out`` rows of ``mask`` (``[out, in]``, bool) into ``groups`` contiguous
    groups of (nearly) equal size and returns ``(row_lo, row_hi, col_lo, col_hi)`` per
    group: the smallest column range holding every ``True`` entry of those rows
    (``col_lo == col_hi`` for rows without any). A weight that is zero outside ``mask``
    satisfies ``x @ W.T == concat_g(x[:, col_lo:col_hi] @ W[rows, col_lo:col_hi].T)``.

    Args:
        mask: boolean connectivity mask ``[out, in]`` (tensor or NumPy array).
        groups: number of row groups (clipped to ``[1, out]``).

    Returns:
        One block per non-empty row group.

    Example:
        >>> block_plan(torch.ones(4, 4, dtype=torch.bool).tril(), 2)
        [(0, 2, 0, 2), (2, 4, 0, 4)]
    """
    mask = _as_array(mask)
    rows, _cols = mask.shape
    groups = max(1, min(groups, rows))
    edges = [rows * g // groups for g in range(groups + 1)]
    plan: list[Block] = []
    for lo, hi in itertools.pairwise(edges):
        if hi == lo:
            continue
        used = np.flatnonzero(mask[lo:hi].any(axis=0))
        if used.size == 0:
            plan.append((lo, hi, 0, 0))
        else:
            plan.append((lo, hi, int(used[0]), int(used[-1]) + 1))
    return plan


def _as_array(mask: Tensor | np.ndarray) -> np.ndarray:
    """The mask as a NumPy array: plans are integer structure, computed outside any graph
    (reading a tensor's values under ``torch.export`` would be a data-dependent guard).
    """
    if isinstance(mask, Tensor):
        return mask.detach().cpu().numpy()
    return np.asarray(mask)


class BlockPlan:
    """The integer structure of one masked layer's block-sparse product.

    Holds the blocks of :func:`block_plan`, the fraction of the dense product they cover,
    and for each block whether its mask rectangle is all ``True`` (no multiplication
    needed). Plain Python data: it never reads a tensor after construction, so it is
    safe under tracing and functional transforms.

    Args:
        mask: boolean connectivity mask ``[out, in]``.
        groups: number of row groups.

    Example:
        >>> plan = BlockPlan(torch.ones(4, 4, dtype=torch.bool).tril(), 2)
        >>> plan.blocks, plan.covered
        ([(0, 2, 0, 2), (2, 4, 0, 4)], 0.75)
    """

    __slots__ = ("blocks", "covered", "dense_blocks", "row_sizes")

    def __init__(self, mask: Tensor | np.ndarray, groups: int) -> None:
        mask = _as_array(mask)
        self.blocks = block_plan(mask, groups)
        area = sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in self.blocks)
        self.covered = area / max(mask.size, 1)
        self.row_sizes = [r1 - r0 for r0, r1, _, _ in self.blocks]
        self.dense_blocks = [bool(mask[r0:r1, c0:c1].all()) for r0, r1, c0, c1 in self.blocks]


#: Products smaller than this (rows·cols·batch) run dense, in full precision.
DENSE_BELOW = 2**21

#: ... and in bf16 / fp16 (autocast), whose products are several times faster, so that the
#: per-block overhead outweighs the skipped work up to larger sizes: on a CPU with AVX-512
#: BF16 a MAF step (width 512, batch 512) took 28 ms dense against 37 ms in blocks at
#: D = 63, and 127 ms against 112 ms at D = 784 (whose 512 × 1568 output layer gains).
DENSE_BELOW_LOW_PRECISION = 2**28


def auto_groups(rows: int, cols: int, batch: int, dtype: torch.dtype = torch.float32) -> int:
    """Row groups worth using for a product of this size in ``dtype``.

    1 (dense) for small products, where the per-block overhead outweighs the skipped work,
    else 4 (measured on CPU: 4 beats 2 and 8 for MADEs of width 512 from D = 8 to 784).
    Products in bf16 / fp16 switch to blocks at larger sizes (:data:`DENSE_BELOW_LOW_PRECISION`).

    Example:
        >>> auto_groups(512, 512, 4), auto_groups(512, 512, 512)
        (1, 4)
        >>> auto_groups(512, 512, 512, torch.bfloat16), auto_groups(1568, 512, 512, torch.bfloat16)
        (1, 4)
    """
    low = dtype in (torch.bfloat16, torch.float16)
    return 1 if rows * cols * batch < (DENSE_BELOW_LOW_PRECISION if low else DENSE_BELOW) else 4


class _BlockSparseLinear(torch.autograd.Function):
    """The block-sparse product with a backward that writes each gradient once.

    Autograd's own backward of the block slices would zero-fill a full-size gradient per
    block and add them up; this one computes the widest block's input gradient directly
    and adds the others in place, and pads each weight-gradient block only where it is
    empty. The backward is made of differentiable operations (double backward works),
    follows the forward's autocast precision, and the forward/backward pair is written
    in the ``setup_context`` style with a generated vmap rule, so ``torch.func`` applies.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(  # type: ignore[override]
        x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor, plan: BlockPlan
    ) -> Tensor:
        return _blocks_forward(x, weight, bias, mask, plan)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        x, weight, _bias, mask, plan = inputs
        ctx.save_for_backward(x, weight, mask)
        ctx.plan = plan
        ctx.has_bias = inputs[2] is not None

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mask = ctx.saved_tensors
        plan: BlockPlan = ctx.plan
        needs_x, needs_w, needs_b = ctx.needs_input_grad[:3]
        if _plain_backward(grad):
            grad = grad.contiguous()
            grad_x = _input_grad_into(grad, x, weight, mask, plan) if needs_x else None
            grad_w = _weight_grad_into(grad, x, weight, mask, plan) if needs_w else None
        else:
            grad_x = _input_grad(grad, x, weight, mask, plan) if needs_x else None
            grad_w = _weight_grad(grad, x, weight, mask, plan) if needs_w else None
        grad_b = None
        if needs_b and ctx.has_bias:
            grad_b = grad.reshape(-1, grad.shape[-1]).sum(dim=0)
        return grad_x, grad_w, grad_b, None, None


def _plain_backward(grad: Tensor) -> bool:
    """Whether the backward may write its results in place with ``out=`` products: not
    when it is itself differentiated (``create_graph``) or run under a ``torch.func``
    transform (there is no public test for those; torch's own Function code uses this).
    """
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    return (
        not torch.is_grad_enabled()
        and grad.dim() == 2
        and transforms_active is not None
        and not transforms_active()
    )


def _input_grad_into(
    grad: Tensor, x: Tensor, weight: Tensor, mask: Tensor, plan: BlockPlan
) -> Tensor:
    """:func:`_input_grad` with each block written or accumulated in place."""
    grad_x = grad.new_empty(x.shape)
    order = sorted(range(len(plan.blocks)), key=lambda j: plan.blocks[j][2] - plan.blocks[j][3])
    for rank, j in enumerate(order):
        r0, r1, c0, c1 = plan.blocks[j]
        w = _masked_block(weight, mask, plan.blocks[j], plan.dense_blocks[j]).to(grad.dtype)
        if rank == 0:
            grad_x[:, :c0].zero_()
            grad_x[:, c1:].zero_()
            if c1 > c0:
                torch.mm(grad[:, r0:r1], w, out=grad_x[:, c0:c1])
        elif c1 > c0:
            grad_x[:, c0:c1].addmm_(grad[:, r0:r1], w)
    return grad_x


def _weight_grad_into(
    grad: Tensor, x: Tensor, weight: Tensor, mask: Tensor, plan: BlockPlan
) -> Tensor:
    """:func:`_weight_grad` with each block written in place and the rest zeroed."""
    grad_w = grad.new_empty(weight.shape)
    inputs = x.to(grad.dtype)
    gt = grad.t()
    for (r0, r1, c0, c1), dense in zip(plan.blocks, plan.dense_blocks, strict=True):
        grad_w[r0:r1, :c0].zero_()
        grad_w[r0:r1, c1:].zero_()
        if c1 > c0:
            torch.mm(gt[r0:r1], inputs[:, c0:c1], out=grad_w[r0:r1, c0:c1])
            if not dense:
                grad_w[r0:r1, c0:c1].masked_fill_(~mask[r0:r1, c0:c1], 0.0)
    return grad_w.to(weight.dtype)


def _masked_block(weight: Tensor, mask: Tensor, block: Block, dense: bool) -> Tensor:
    r0, r1, c0, c1 = block
    w = weight[r0:r1, c0:c1]
    # ``where``, not ``w * mask``: multiplying by a bool mask first copies it to the
    # weight's dtype, once per block and pass
    return w if dense else torch.where(mask[r0:r1, c0:c1], w, 0.0)


def _blocks_forward(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor, plan: BlockPlan
) -> Tensor:
    outputs = []
    for block, dense in zip(plan.blocks, plan.dense_blocks, strict=True):
        r0, r1, c0, c1 = block
        b = None if bias is None else bias[r0:r1]
        if c1 == c0:  # rows that see no input: the bias alone
            zero = x.new_zeros(*x.shape[:-1], r1 - r0)
            outputs.append(zero if b is None else zero + b)
            continue
        outputs.append(F.linear(x[..., c0:c1], _masked_block(weight, mask, block, dense), b))
    return torch.cat(outputs, dim=-1)


def _input_grad(grad: Tensor, x: Tensor, weight: Tensor, mask: Tensor, plan: BlockPlan) -> Tensor:
    """∂L/∂x: the widest block written directly, the other blocks added in place."""
    cols = x.shape[-1]
    order = sorted(range(len(plan.blocks)), key=lambda j: plan.blocks[j][2] - plan.blocks[j][3])
    first, rest = order[0], order[1:]
    r0, r1, c0, c1 = plan.blocks[first]
    w = _masked_block(weight, mask, plan.blocks[first], plan.dense_blocks[first])
    grad_x = grad[..., r0:r1] @ w.to(grad.dtype)
    if c0 > 0 or c1 < cols:
        grad_x = F.pad(grad_x, (c0, cols - c1))
    for j in rest:
        r0, r1, c0, c1 = plan.blocks[j]
        if c1 > c0:
            w = _masked_block(weight, mask, plan.blocks[j], plan.dense_blocks[j])
            grad_x[..., c0:c1] += grad[..., r0:r1] @ w.to(grad.dtype)
    return grad_x


def _weight_grad(grad: Tensor, x: Tensor, weight: Tensor, mask: Tensor, plan: BlockPlan) -> Tensor:
    """∂L/∂W block by block, masked, each row group padded only where it is empty."""
    cols = weight.shape[-1]
    g = grad.reshape(-1, grad.shape[-1])
    inputs = x.reshape(-1, cols).to(grad.dtype)
    rows = []
    for (r0, r1, c0, c1), dense in zip(plan.blocks, plan.dense_blocks, strict=True):
        if c1 == c0:
            rows.append(g.new_zeros(r1 - r0, cols))
            continue
        block = g[:, r0:r1].t() @ inputs[:, c0:c1]
        if not dense:
            block = torch.where(mask[r0:r1, c0:c1], block, 0.0)
        rows.append(F.pad(block, (c0, cols - c1)) if c0 > 0 or c1 < cols else block)
    return torch.cat(rows, dim=0).to(weight.dtype)


def masked_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, mask: Tensor, plan: BlockPlan | None = None
) -> Tensor:
    r"""``x (weight ⊙ mask)ᵀ + bias``, block by block when a plan is given.

    The mask is applied on every call, so entries of ``weight`` outside it never matter and
    get an exactly zero gradient. With a :class:`BlockPlan` the rectangles outside the plan's
    blocks are skipped in forward and backward; the result equals the dense product up to
    floating-point summation order. Built from differentiable PyTorch operations only.

    Args:
        x: inputs ``[..., in]``.
        weight: the full weight ``[out, in]``.
        bias: the bias ``[out]`` or ``None``.
        mask: boolean mask ``[out, in]``.
        plan: block plan of ``mask`` (``None``: one dense product).

    Returns:
        ``[..., out]``.

    Example:
        >>> mask = torch.ones(4, 4, dtype=torch.bool).tril()
        >>> x, w = torch.randn(3, 4), torch.randn(4, 4)
        >>> dense = masked_linear(x, w, None, mask)
        >>> torch.allclose(masked_linear(x, w, None, mask, BlockPlan(mask, 2)), dense)
        True
    """
    if plan is None:
        dtype = autocast_dtype_of(x, weight)
        if dtype is not None:  # cast, then mask: half the bytes for the mask and its backward
            weight = weight.to(dtype)
        # ``where``, not ``weight * mask``: no copy of the bool mask into the weight's dtype
        return F.linear(x, torch.where(mask, weight, 0.0), bias)
    if torch.jit.is_tracing():  # the tracer cannot record a Python autograd Function
        return _blocks_forward(x, weight, bias, mask, plan)  # same blocks, autograd's backward
    dtype = autocast_dtype_of(x, weight)
    if dtype is None:
        return _BlockSparseLinear.apply(x, weight, bias, mask, plan)
    # Under autocast, cast the operands once, here: inside the Function every block's
    # product would cast its slices again, and the backward its weight blocks and inputs
    # (those copies took more time than the bf16 products saved). The casts are ordinary
    # differentiable operations, so the gradients come back in the parameters' dtype.
    with torch.autocast(x.device.type, enabled=False):
        low_bias = None if bias is None else bias.to(dtype)
        return _BlockSparseLinear.apply(x.to(dtype), weight.to(dtype), low_bias, mask, plan)


def autocast_dtype_of(x: Tensor, weight: Tensor) -> torch.dtype | None:
    """The dtype autocast would run ``F.linear(x, weight)`` in, or ``None`` where autocast
    is off or leaves these operands alone (autocast casts float32 operands only).

    Example:
        >>> x, w = torch.randn(2, 3), torch.randn(4, 3)
        >>> autocast_dtype_of(x, w) is None
        True
        >>> with torch.autocast("cpu", dtype=torch.bfloat16):
        ...     autocast_dtype_of(x, w)
        torch.bfloat16
    """
    kind = x.device.type
    if kind not in ("cpu", "cuda") or not torch.is_autocast_enabled(kind):
        return None
    dtype = torch.get_autocast_dtype(kind)
    if weight.dtype != torch.float32 or x.dtype not in (torch.float32, dtype):
        return None
    return dtype
