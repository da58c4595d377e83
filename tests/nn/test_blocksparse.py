"""The block-sparse masked product: plans cover every mask entry, products equal dense ones."""

import torch

from invertible.nn.blocksparse import BlockPlan, block_plan, masked_linear


def test_block_plan_covers_every_mask_entry() -> None:
    mask = torch.rand(37, 23) < 0.3
    mask = mask.cumsum(dim=1).bool()  # some rows empty, others reaching right to the end
    for groups in (1, 2, 4, 37):
        plan = block_plan(mask, groups)
        assert plan[0][0] == 0 and plan[-1][1] == 37
        covered = torch.zeros_like(mask)
        for r0, r1, c0, c1 in plan:
            covered[r0:r1, c0:c1] = True
        assert torch.all(covered[mask]), "a mask entry outside every block"


def test_masked_linear_ignores_masked_out_entries() -> None:
    """What is stored outside the mask changes neither the output nor the gradient."""
    torch.manual_seed(0)
    mask = torch.ones(6, 5, dtype=torch.bool).tril()
    x = torch.randn(4, 5, dtype=torch.float64)
    weight = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    for plan in (None, BlockPlan(mask, 3)):
        reference = masked_linear(x, weight, None, mask, plan)
        with torch.no_grad():
            polluted = weight.detach().clone()
            polluted[~mask] = 1e6
        polluted.requires_grad_(True)
        out = masked_linear(x, polluted, None, mask, plan)
        torch.testing.assert_close(out, reference)
        out.sum().backward()
        assert torch.all(polluted.grad[~mask] == 0)


def test_block_plan_bias_only_rows() -> None:
    """Rows whose mask is empty get the bias alone."""
    mask = torch.zeros(4, 3, dtype=torch.bool)
    mask[2:, :2] = True
    bias = torch.arange(4.0)
    plan = BlockPlan(mask, 2)
    out = masked_linear(torch.ones(2, 3), torch.ones(4, 3), bias, mask, plan)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 4.0, 5.0]] * 2))
