"""Image presets: RealNVPImage and NICEImage end to end, temperature sampling, grids."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import invertible as inv


def _digits(n: int = 256) -> tuple[torch.Tensor, int]:
    """Dequantized 8×8 digits in [0, 1) (17 levels), from the data package or scikit-learn."""
    try:
        from invertible.data import load_dataset

        data = load_dataset("digits-images")
        pixels, levels = data.train[:n], int(data.levels)
    except Exception:
        from sklearn.datasets import load_digits

        pixels, levels = load_digits().images[:n, None].astype(np.uint8), 17
    return inv.dequantize(pixels, levels, generator=torch.Generator().manual_seed(0)), levels


def _tiny(**kwargs: object) -> inv.RealNVPImage:
    options = {"blocks_per_scale": 1, "channels": 8, "couplings_per_scale": 2}
    options.update(kwargs)
    return inv.RealNVPImage((1, 8, 8), **options)  # type: ignore[arg-type]


def test_tiny_realnvp_image_trains_without_nans_and_improves() -> None:
    torch.manual_seed(0)
    x, levels = _digits()
    flow = _tiny(lam=0.05, levels=levels)
    optimizer = torch.optim.Adam(flow.parameters(), lr=2e-3)
    losses = []
    for step in range(15):
        batch = x[(step * 32) % len(x) :][:32]
        loss = -flow.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert torch.isfinite(loss)
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    flow.eval()
    bpd = flow.bits_per_dim(x[:64])
    assert bpd.shape == (64,) and bool(torch.isfinite(bpd).all())
    # log_prob of the flow's own samples equals the density from the sampling pass
    samples, log_p = flow.sample_and_log_prob(32)
    torch.testing.assert_close(flow.log_prob(samples), log_p, rtol=1e-4, atol=1e-3)


def test_realnvp_image_log_prob_matches_autograd_jacobian_logit_included() -> None:
    torch.manual_seed(0)
    flow = inv.RealNVPImage((1, 4, 4), blocks_per_scale=1, channels=4, lam=0.05).double()
    flow.train()
    flow.log_prob(torch.rand(32, 1, 4, 4, dtype=torch.float64))  # running statistics
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    flow.eval()
    x = torch.rand(2, 1, 4, 4, dtype=torch.float64) * 0.9 + 0.05
    for i in range(2):
        jac = torch.autograd.functional.jacobian(
            lambda v: flow.transform.inverse(v.view(1, 1, 4, 4))[0].flatten(), x[i].flatten()
        )
        z = flow.transform.inverse(x[i : i + 1])[0]
        expected = flow.base.log_prob(z) + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(flow.log_prob(x[i : i + 1]), expected)


def test_realnvp_image_rebuilds_from_its_config() -> None:
    torch.manual_seed(0)
    flow = _tiny(flow_norm="actnorm", normalization="weight", log_scale="clamp").eval()
    config = json.loads(json.dumps(flow.config))
    rebuilt = inv.RealNVPImage(**config)
    rebuilt.load_state_dict(flow.state_dict())
    rebuilt.eval()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(rebuilt.log_prob(x), flow.log_prob(x))
    assert type(flow).__name__ in inv.Flow.registry


def test_temperature_scales_the_base_noise() -> None:
    torch.manual_seed(0)
    flow = _tiny().eval()
    x = flow.sample(16, temperature=0.5)
    assert x.shape == (16, 1, 8, 8) and bool(((x > 0) & (x < 1)).all())
    cold = flow.sample(3, temperature=0.0)  # z = 0 for every sample: identical images
    torch.testing.assert_close(cold[0], cold[1])
    torch.manual_seed(1)
    a = flow.sample(4, temperature=0.3)
    torch.manual_seed(1)
    b = flow.sample(4)
    mid = 0.5  # a fresh flow is sigmoid(z) up to a permutation: colder samples are closer
    assert (a - mid).abs().mean() < (b - mid).abs().mean()


def test_realnvp_image_validates_shape() -> None:
    with pytest.raises(ValueError, match="C, H, W"):
        inv.RealNVPImage((8, 8))
    with pytest.raises(ValueError, match="divisible"):
        inv.RealNVPImage((1, 6, 6), num_scales=3)


def test_nice_image_is_nice_on_flattened_pixels_with_a_logistic_prior() -> None:
    torch.manual_seed(0)
    flow = inv.NICEImage((1, 4, 4), num_layers=2, hidden_features=(16,))
    assert isinstance(flow.base, inv.StandardLogistic) and flow.event_shape == (1, 4, 4)
    x = torch.rand(8, 1, 4, 4)
    # a fresh NICE is the identity: the density is the logistic prior at x itself
    torch.testing.assert_close(flow.log_prob(x), flow.base.log_prob(x))
    with_logit = inv.NICEImage((1, 4, 4), num_layers=2, hidden_features=(16,), lam=1e-6)
    log_p = with_logit.log_prob(x)  # logistic prior on logit(x) + logit Jacobian: uniform
    torch.testing.assert_close(log_p, torch.zeros(8), atol=1e-3, rtol=0)
    assert with_logit.bits_per_dim(x).sub(8).abs().max() < 1e-3
    rebuilt = inv.NICEImage(**json.loads(json.dumps(with_logit.config)))
    assert rebuilt.config == with_logit.config


def test_save_image_grid(tmp_path) -> None:
    from PIL import Image

    path = inv.save_image_grid(torch.rand(10, 1, 8, 8), tmp_path / "a" / "grid.png", nrow=5)
    image = Image.open(path)
    assert image.size == (5 * 10 + 2, 2 * 10 + 2) and image.mode == "L"
    rgb = inv.save_image_grid(np.random.rand(4, 3, 4, 4), tmp_path / "rgb.png", scale=2)
    assert Image.open(rgb).mode == "RGB"
    with pytest.raises(ValueError, match="expected"):
        inv.save_image_grid(torch.rand(2, 2, 4, 4), tmp_path / "bad.png")


def test_bits_per_dim_method_uses_the_library_convention() -> None:
    flow = _tiny(levels=17).eval()
    x = torch.rand(3, 1, 8, 8)
    expected = (-flow.log_prob(x) / 64 + math.log(17)) / math.log(2)
    torch.testing.assert_close(flow.bits_per_dim(x), expected)
