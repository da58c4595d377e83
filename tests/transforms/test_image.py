"""Image transforms: exact squeeze / factor-out inverses, mask coverage, shapes, errors."""

from __future__ import annotations

import pytest
import torch

import invertible as inv


def test_squeeze_unsqueeze_are_exact_inverses() -> None:
    x = torch.randn(3, 2, 6, 4)
    z, ladj = inv.Squeeze().inverse(x)
    assert z.shape == (3, 8, 3, 2) and torch.equal(ladj, torch.zeros(3))
    assert torch.equal(inv.Squeeze()(z)[0], x)
    # and the other way round
    z = torch.randn(2, 8, 2, 3)
    assert torch.equal(inv.Squeeze().inverse(inv.Squeeze()(z)[0])[0], z)


def test_squeeze_moves_each_2x2_block_into_channels() -> None:
    x = torch.arange(2 * 4 * 4.0).view(1, 2, 4, 4)
    z, _ = inv.Squeeze().inverse(x)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(z[0, 4 * c + 2 * i + j], x[0, c, i::2, j::2])


def test_squeeze_rejects_odd_sizes() -> None:
    with pytest.raises(ValueError, match="even"):
        inv.Squeeze().inverse(torch.zeros(1, 1, 3, 4))


def test_factor_out_is_exact_and_passes_the_factored_half_through() -> None:
    torch.manual_seed(0)
    inner = inv.ChannelCoupling(2, hidden_channels=4, num_blocks=1).eval()
    with torch.no_grad():
        for p in inner.parameters():
            p.add_(0.1 * torch.randn_like(p))
    layer = inv.FactorOut(inner, factored=2).double()
    x = torch.randn(5, 4, 2, 2, dtype=torch.float64)
    z, ladj = layer.inverse(x)
    assert torch.equal(z[:, :2], x[:, :2])
    torch.testing.assert_close(ladj, inner.inverse(x[:, 2:])[1])
    back, ladj_fwd = layer(z)
    torch.testing.assert_close(back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ladj_fwd, -ladj)


@pytest.mark.parametrize(("h", "w"), [(4, 4), (3, 5)])
def test_checkerboard_parities_cover_every_pixel_once(h: int, w: int) -> None:
    kept0, kept1 = inv.checkerboard_mask(h, w, 0), inv.checkerboard_mask(h, w, 1)
    assert torch.equal(kept0 ^ kept1, torch.ones(h, w, dtype=torch.bool))
    assert abs(int(kept0.sum()) - int(kept1.sum())) <= 1


@pytest.mark.parametrize("channels", [2, 3, 8])
def test_channel_parities_cover_every_channel_once(channels: int) -> None:
    kept0, kept1 = inv.channel_mask(channels, 0), inv.channel_mask(channels, 1)
    assert torch.equal(kept0 ^ kept1, torch.ones(channels, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["checkerboard", "channel"])
def test_couplings_change_exactly_the_unkept_set(kind: str) -> None:
    torch.manual_seed(0)
    changed = torch.zeros(2, 4, 4, dtype=torch.bool)
    for parity in (0, 1):
        if kind == "checkerboard":
            layer = inv.CheckerboardCoupling(2, parity=parity, hidden_channels=4, num_blocks=1)
            kept = inv.checkerboard_mask(4, 4, parity).expand(2, 4, 4)
        else:
            layer = inv.ChannelCoupling(2, parity=parity, hidden_channels=4, num_blocks=1)
            kept = inv.channel_mask(2, parity).view(2, 1, 1).expand(2, 4, 4)
        with torch.no_grad():
            for p in layer.parameters():
                p.add_(0.5 * torch.randn_like(p))
        z = torch.randn(3, 2, 4, 4)
        x, _ = layer.eval()(z)
        assert torch.equal(x[:, kept], z[:, kept])
        assert bool((x[:, ~kept] != z[:, ~kept]).all())
        assert not bool((changed & ~kept).any()), "a pixel was changed by both parities"
        changed |= ~kept
    assert bool(changed.all())


def test_fresh_couplings_and_multiscale_start_at_the_identity_up_to_a_permutation() -> None:
    layer = inv.CheckerboardCoupling(1, hidden_channels=4, num_blocks=1)
    z = torch.randn(4, 1, 4, 4)
    assert torch.equal(layer(z)[0], z)
    t = inv.MultiScale((1, 4, 4), hidden_channels=4, num_blocks=1, flow_norm="none")
    x, ladj = t(z)
    assert torch.equal(ladj, torch.zeros(4))
    assert torch.equal(x.flatten().sort().values, z.flatten().sort().values)


def test_multiscale_keeps_the_shape_and_round_trips_in_float64() -> None:
    torch.manual_seed(0)
    t = inv.MultiScale((1, 8, 8), num_scales=3, hidden_channels=8, num_blocks=1).double()
    x = torch.rand(16, 1, 8, 8, dtype=torch.float64)
    t.train()
    t.inverse(x)  # running statistics
    t.eval()
    z, ladj = t.inverse(x)
    assert z.shape == x.shape and ladj.shape == (16,)
    back, ladj_fwd = t(z)
    torch.testing.assert_close(back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ladj_fwd, -ladj, rtol=1e-10, atol=1e-10)


def test_multiscale_factors_out_half_the_dimensions_at_each_scale() -> None:
    t = inv.MultiScale((1, 8, 8), num_scales=3, hidden_channels=4, num_blocks=1)
    factor_outs = [m for m in t.modules() if isinstance(m, inv.FactorOut)]
    assert [m.factored for m in factor_outs] == [2, 4]  # 32 of 64, then 16 of the other 32


def test_multiscale_rejects_indivisible_sizes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        inv.MultiScale((1, 6, 6), num_scales=3)
    with pytest.raises(ValueError, match="at least 2 pixels"):
        inv.MultiScale((1, 4, 4), num_scales=3)
    with pytest.raises(ValueError, match="channel-wise"):
        inv.ChannelCoupling(1)
