"""The elementwise maps: the two placements of the affine shift, and bad arguments."""

from __future__ import annotations

import pytest
import torch

import invertible as inv


def test_affine_shift_placements_are_the_same_family() -> None:
    """x = (z + b)·e^α equals x = z·e^α + b·e^α: the placements differ only in parameterisation."""
    torch.manual_seed(0)
    z, b, raw = torch.randn(5, 3), torch.randn(5, 3), 2 * torch.randn(5, 3)
    latent, data = inv.Affine(3.0, shift="latent"), inv.Affine(3.0, shift="data")
    x, ladj = latent(z, torch.stack([b, raw], -1))
    alpha = inv.soft_clamp(raw, 3.0)
    x_data, ladj_data = data(z, torch.stack([b * alpha.exp(), raw], -1))
    torch.testing.assert_close(x, x_data)
    torch.testing.assert_close(ladj, ladj_data)
    torch.testing.assert_close(x, (z + b) * alpha.exp())
    z_back, ladj_inv = latent.inverse(x, torch.stack([b, raw], -1))
    torch.testing.assert_close(z_back, z, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ladj_inv, -ladj)


def test_conditionals_report_the_effective_shift() -> None:
    """``conditionals`` gives the μ of x = u·e^α + μ whichever placement the layer uses."""
    torch.manual_seed(1)
    layer = inv.AffineAutoregressive(4, hidden_features=(8,))
    torch.nn.init.normal_(layer.made.layers[-1].weight, std=0.5)
    x = torch.randn(6, 4)
    shift, log_scale = layer.conditionals(x)
    params = layer.made(x)
    torch.testing.assert_close(shift, params[..., 0] * log_scale.exp())
    u, _ = layer.inverse(x)
    torch.testing.assert_close(u, (x - shift) * (-log_scale).exp(), rtol=1e-4, atol=1e-5)


def test_unknown_shift_placement_refused() -> None:
    with pytest.raises(ValueError, match="shift: expected 'latent' or 'data'"):
        inv.Affine(shift="before")


@pytest.mark.parametrize("bound", [3.0, 0.1, None])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_affine_bound_is_exact_and_keeps_the_dtype(bound: float | None, dtype: torch.dtype) -> None:
    """The bound held as a 0-dim tensor changes neither the value nor the dtype of α."""
    raw = torch.linspace(-40.0, 40.0, 9, dtype=torch.float64)
    params = torch.stack([torch.zeros_like(raw), raw], -1).to(dtype)
    x, alpha = inv.Affine(bound)(torch.ones(9, dtype=dtype), params)
    assert x.dtype == alpha.dtype == dtype
    expected = raw if bound is None else bound * torch.tanh(raw / bound)
    tolerance = {"rtol": 0.0, "atol": 1e-12} if dtype == torch.float64 else {}
    torch.testing.assert_close(alpha, expected.to(dtype), **tolerance)
    with pytest.raises(AttributeError):
        inv.Affine(bound).log_scale_bound = 1.0  # type: ignore[misc]
