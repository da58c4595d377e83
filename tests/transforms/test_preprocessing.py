"""Preprocessing layers and the bits/dim convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import invertible as inv


def test_bits_per_dim_hand_computed() -> None:
    # D = 4, log p = -10 nats: (10 / 4 + log 256) / log 2 = 2.5 / 0.693147... + 8
    assert inv.bits_per_dim(-10.0, 4) == pytest.approx(2.5 / math.log(2) + 8.0, abs=1e-12)
    values = inv.bits_per_dim(torch.tensor([0.0, -784 * math.log(2)]), 784)
    torch.testing.assert_close(values, torch.tensor([8.0, 9.0]))


def test_bits_per_dim_of_uniform_pixels_is_exactly_8() -> None:
    # The uniform density on [0, 1]^D (log p = 0) is the uniform distribution over the 256
    # pixel values, dequantized: exactly log2(256) = 8 bits per dimension.
    assert inv.bits_per_dim(0.0, 3 * 32 * 32) == 8.0
    # and with another number of levels: uniform over 17 values -> log2(17)
    assert inv.bits_per_dim(0.0, 64, levels=17) == pytest.approx(math.log2(17))


def test_bits_per_dim_of_a_known_density_is_the_analytic_value() -> None:
    # p(x) = prod_i 2 x_i on [0, 1]^D: E[-log p] = D (1/2 - log 2), so the expected
    # bits/dim is (1/2 - log 2 + log 256) / log 2 = 8 - (log 2 - 1/2) / log 2.
    torch.manual_seed(0)
    D, n = 4, 200_000
    x = torch.rand(n, D).sqrt()  # density 2x per coordinate
    log_p = (2 * x).log().sum(dim=1)
    estimate = float(inv.bits_per_dim(log_p, D).mean())
    analytic = 8.0 - (math.log(2) - 0.5) / math.log(2)
    assert estimate == pytest.approx(analytic, abs=5e-3)


def test_bits_per_dim_rejects_bad_dimension() -> None:
    with pytest.raises(ValueError, match="features"):
        inv.bits_per_dim(0.0, 0)


def test_dequantize_range_and_mean() -> None:
    pixels = np.full((1000, 1, 2, 2), 7, dtype=np.uint8)
    x = inv.dequantize(pixels, generator=torch.Generator().manual_seed(0))
    assert x.dtype == torch.float32 and x.shape == (1000, 1, 2, 2)
    assert bool((x >= 7 / 256).all() and (x < 8 / 256).all())
    assert float(x.mean()) == pytest.approx(7.5 / 256, abs=1e-4)
    edge = inv.dequantize(torch.tensor([0, 255], dtype=torch.uint8))
    assert bool(((edge >= 0) & (edge < 1)).all())


@pytest.mark.parametrize("lam", [0.05, 1e-6, 0.0])
def test_logit_log_det_hand_computed(lam: float) -> None:
    x = torch.tensor([[0.2, 0.5, 0.9]], dtype=torch.float64)
    y, ladj = inv.Logit(lam).inverse(x)
    s = lam + (1 - 2 * lam) * x
    torch.testing.assert_close(y, torch.log(s / (1 - s)))
    expected = (math.log(1 - 2 * lam) - torch.log(s) - torch.log(1 - s)).sum(dim=1)
    torch.testing.assert_close(ladj, expected)
    back, ladj_fwd = inv.Logit(lam)(y)
    torch.testing.assert_close(back, x)
    torch.testing.assert_close(ladj_fwd, -ladj)


@pytest.mark.parametrize("lam", [0.05, 1e-6])
def test_logit_log_det_matches_autograd_on_the_unit_interval(lam: float) -> None:
    layer = inv.Logit(lam)
    x = torch.rand(6, dtype=torch.float64) * 0.98 + 0.01
    jac = torch.autograd.functional.jacobian(lambda v: layer.inverse(v.view(1, 6))[0].flatten(), x)
    torch.testing.assert_close(layer.inverse(x.view(1, 6))[1][0], torch.linalg.slogdet(jac)[1])
    y = torch.randn(6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: layer(v.view(1, 6))[0].flatten(), y)
    torch.testing.assert_close(layer(y.view(1, 6))[1][0], torch.linalg.slogdet(jac)[1])


def test_logit_is_the_last_generative_step_of_an_image_flow() -> None:
    # With only the logit as transform and a standard logistic base, the flow's density
    # on (0, 1) for lam = 0 is exactly uniform: log p(x) = 0, i.e. 8 bits/dim.
    flow = inv.Flow(inv.Logit(0.0), inv.StandardLogistic(1, 2, 2))
    x = torch.rand(5, 1, 2, 2, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    flow = flow.double()
    torch.testing.assert_close(flow.log_prob(x), torch.zeros(5, dtype=torch.float64))
    samples = flow.sample(100)
    assert bool(((samples > 0) & (samples < 1)).all())


def test_logit_rejects_bad_lambda() -> None:
    with pytest.raises(ValueError, match="lam"):
        inv.Logit(0.5)


def test_to_unit_interval() -> None:
    layer = inv.ToUnitInterval(256)
    v = torch.tensor([[0.0, 128.0, 255.5]])
    z, ladj = layer.inverse(v)
    torch.testing.assert_close(z, v / 256)
    torch.testing.assert_close(ladj, torch.tensor([-3 * math.log(256)]))
    torch.testing.assert_close(layer(z)[0], v)
