"""Coupling layers: the split/merge fast paths agree with the general index path."""

from __future__ import annotations

import pytest
import torch

import invertible as inv


@pytest.mark.parametrize("features", [4, 5, 6, 7])
@pytest.mark.parametrize("parity", [0, 1])
@pytest.mark.parametrize("mask", ["alternating", "half"])
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_fast_split_and_merge_match_index_path(
    features: int, parity: int, mask: str, direction: str
) -> None:
    torch.manual_seed(features + 10 * parity)
    layer = inv.AffineCoupling(
        features, mask=mask, parity=parity, hidden_features=(8,), identity_init=False
    )
    assert layer._layout is not None  # the fast path is the one under test
    x = torch.randn(6, features, requires_grad=True)
    out, ladj = getattr(layer, direction)(x)
    grads = torch.autograd.grad((out * torch.arange(features)).sum() + ladj.sum(), x)

    layer._layout = None  # the general path: index_select, cat and a gather
    x_ref = x.detach().clone().requires_grad_()
    out_ref, ladj_ref = getattr(layer, direction)(x_ref)
    grads_ref = torch.autograd.grad(
        (out_ref * torch.arange(features)).sum() + ladj_ref.sum(), x_ref
    )

    torch.testing.assert_close(out, out_ref)
    torch.testing.assert_close(ladj, ladj_ref)
    torch.testing.assert_close(grads[0], grads_ref[0])
