"""The Flow contract: densities, sampling, validation of inputs."""

from __future__ import annotations

import math

import pytest
import torch

import invertible as inv


def _perturbed(flow: inv.Flow, seed: int = 0, scale: float = 0.3) -> inv.Flow:
    torch.manual_seed(seed)
    with torch.no_grad():
        flow.log_prob(torch.randn(64, flow.features, dtype=flow._dtype()) * 2)  # BatchNorm stats
        for parameter in flow.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return flow.eval()


@pytest.mark.parametrize(
    "build",
    [
        lambda: inv.RealNVP(2, num_layers=4, hidden_features=(16, 16)),
        lambda: inv.NICE(2, num_layers=4, hidden_features=(16,), base="normal"),
        lambda: inv.NICE(2, num_layers=2, hidden_features=(16,), base="logistic"),
    ],
    ids=["realnvp", "nice-normal", "nice-logistic"],
)
def test_two_dimensional_density_integrates_to_one(build) -> None:
    # A gentle perturbation keeps the density smooth enough for a 601 x 601 grid.
    flow = _perturbed(build().double(), scale=0.1)
    grid = torch.linspace(-12, 12, 601, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.flatten(), yy.flatten()], dim=1)
    with torch.no_grad():
        density = flow.log_prob(points).exp()
    cell = (grid[1] - grid[0]) ** 2
    assert float(density.sum() * cell) == pytest.approx(1.0, abs=1e-2)


def test_sample_and_log_prob_agree_with_log_prob() -> None:
    flow = _perturbed(inv.RealNVP(3, num_layers=3, hidden_features=(16,)))
    x, log_p = flow.sample_and_log_prob(50)
    torch.testing.assert_close(flow.log_prob(x), log_p, rtol=1e-4, atol=1e-4)


def test_rsample_is_differentiable_and_sample_is_not() -> None:
    flow = _perturbed(inv.RealNVP(3, num_layers=2, hidden_features=(8,)))
    assert flow.rsample(5).requires_grad
    assert not flow.sample(5).requires_grad
    x, log_p = flow.sample_and_log_prob(5)
    (x.sum() + log_p.sum()).backward()
    assert all(p.grad is not None for p in flow.parameters())


def test_standard_normal_flow_matches_closed_form() -> None:
    flow = inv.Flow(inv.Rescaling(2), inv.StandardNormal(2))
    with torch.no_grad():
        flow.transform.log_scale.fill_(math.log(2.0))
    x = torch.tensor([[1.0, -2.0]])
    expected = torch.distributions.Normal(0.0, 2.0).log_prob(x).sum(dim=1)
    torch.testing.assert_close(flow.log_prob(x), expected)


def test_logistic_base_matches_torch() -> None:
    z = torch.randn(10, 3)
    base = inv.StandardLogistic(3)
    logistic = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(0.0, 1.0),
        [torch.distributions.SigmoidTransform().inv],
    )
    torch.testing.assert_close(base.log_prob(z), logistic.log_prob(z).sum(dim=1))
    assert torch.isfinite(base.rsample(10_000)).all()


@pytest.mark.parametrize(
    ("shape", "message"),
    [((4, 3), r"expected shape \[batch, 2\], got \[4, 3\]"), ((2,), r"unsqueeze\(0\)")],
)
def test_wrong_shape_names_expected_and_received(shape, message) -> None:
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    with pytest.raises(ValueError, match=message):
        flow.log_prob(torch.zeros(shape))


def test_nan_rows_are_reported() -> None:
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    x = torch.zeros(5, 2)
    x[3, 1] = float("nan")
    x[4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"2 of 5 rows contain NaN or inf \(rows 3, 4\)"):
        flow.log_prob(x)
    with inv.validation(False):
        assert flow.log_prob(x).shape == (5,)


def test_integer_and_mismatched_dtypes_are_rejected() -> None:
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    with pytest.raises(TypeError, match="floating-point"):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(TypeError, match=r"flow.to\(torch.float64\)"):
        flow.log_prob(torch.zeros(3, 2, dtype=torch.float64))


def test_context_is_validated_and_broadcast() -> None:
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,), context_features=3)
    x = torch.randn(4, 2)
    assert flow.log_prob(x, torch.randn(4, 3)).shape == (4,)
    assert flow.sample(6, torch.randn(3)).shape == (6, 2)
    with pytest.raises(ValueError, match="needs a context"):
        flow.log_prob(x)
    with pytest.raises(ValueError, match=r"expected shape \[batch, 3\]"):
        flow.log_prob(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match="expected 4 rows"):
        flow.log_prob(x, torch.randn(3, 3))
    unconditional = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.log_prob(x, torch.randn(4, 3))


def test_bad_sample_count() -> None:
    flow = inv.NICE(2, num_layers=2, hidden_features=(8,))
    with pytest.raises(ValueError, match="non-negative int"):
        flow.sample(-1)
    assert flow.sample(0).shape == (0, 2)


def test_to_moves_base_and_dtype() -> None:
    flow = inv.NICE(2, num_layers=2, hidden_features=(8,)).to(torch.float64)
    assert flow.sample(3).dtype == torch.float64
    assert flow.log_prob(torch.zeros(1, 2, dtype=torch.float64)).dtype == torch.float64


def test_inverted_swaps_directions() -> None:
    t = inv.AffineCoupling(3, hidden_features=(8,))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p))
    z = torch.randn(4, 3)
    x, ladj = t(z)
    x2, ladj2 = t.inverted().inverse(z)
    torch.testing.assert_close(x2, x)
    torch.testing.assert_close(ladj2, ladj)
    assert t.inverted().inverted() is t


def test_presets_are_registered_with_json_config() -> None:
    import json

    flow = inv.RealNVP(3, num_layers=2, hidden_features=(8,))
    assert inv.Flow.registry["RealNVP"] is inv.RealNVP
    rebuilt = inv.Flow.registry["RealNVP"](**json.loads(json.dumps(flow.config)))
    rebuilt.load_state_dict(flow.state_dict())


def test_coupling_needs_two_features() -> None:
    with pytest.raises(ValueError, match="at least 2 features"):
        inv.AffineCoupling(1)


def test_chunked_sampling_and_log_prob_match_unchunked() -> None:
    flow = inv.RealNVP(3, num_layers=2, hidden_features=(8,), context_features=1).eval()
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    context = torch.randn(10, 1)
    torch.manual_seed(5)
    whole = flow.sample(10, context)
    torch.manual_seed(5)
    chunked = flow.sample(10, context, chunk_size=3)
    assert chunked.shape == (10, 3)
    torch.testing.assert_close(
        flow.log_prob_chunked(whole, context, chunk_size=4), flow.log_prob(whole, context).detach()
    )
    assert torch.isfinite(chunked).all()


def test_context_of_the_wrong_dtype_gets_the_friendly_error() -> None:
    flow = inv.MAF(3, num_layers=1, hidden_features=(8,), context_features=2)
    with pytest.raises(TypeError, match=r"context: dtype torch.float64 does not match"):
        flow.log_prob(torch.zeros(4, 3), torch.zeros(4, 2, dtype=torch.float64))
