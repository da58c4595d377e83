"""Autoregressive presets: exact sequential inversion, sampling quality, MADE MoG, ensembles."""

from __future__ import annotations

import json
import math

import pytest
import torch

import invertible as inv

TARGET_MEAN = torch.tensor([1.0, -2.0])
TARGET_COV = torch.tensor([[2.0, 1.2], [1.2, 1.0]])


def _target() -> torch.distributions.MultivariateNormal:
    return torch.distributions.MultivariateNormal(TARGET_MEAN, TARGET_COV)


def _perturb(module: torch.nn.Module, scale: float = 0.2) -> None:
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


def _mmd_p_value(x: torch.Tensor, y: torch.Tensor, permutations: int = 200) -> float:
    """Permutation p-value of the (biased) RBF-kernel MMD², median-heuristic bandwidth."""
    generator = torch.Generator().manual_seed(0)
    pooled = torch.cat([x, y]).double()
    distances = torch.cdist(pooled, pooled).square()
    kernel = torch.exp(-distances / distances.median())
    n = len(x)
    # MMD² = wᵀ K w with w = +1/n on one sample, -1/n on the other; one row per labelling.
    labels = [torch.arange(2 * n)] + [
        torch.randperm(2 * n, generator=generator) for _ in range(permutations)
    ]
    weights = torch.stack([(index < n).double() * 2 - 1 for index in labels]) / n
    statistics = ((weights @ kernel) * weights).sum(dim=1)
    observed, null = statistics[0], statistics[1:]
    return float((1 + (null >= observed).sum()) / (1 + permutations))


def _check_samples(samples: torch.Tensor, reference: torch.Tensor) -> None:
    torch.testing.assert_close(samples.mean(0), TARGET_MEAN, atol=0.2, rtol=0)
    torch.testing.assert_close(torch.cov(samples.T), TARGET_COV, atol=0.3, rtol=0)
    assert _mmd_p_value(samples, reference) > 0.01


def _train(flow: inv.Flow, loss_fn, steps: int) -> None:
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = loss_fn()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_maf_learns_a_gaussian_and_samples_it() -> None:
    torch.manual_seed(0)
    flow = inv.MAF(2, num_layers=3, hidden_features=(32, 32))
    data = _target().sample((4096,))
    reference = _target().sample((400,))
    flow.eval()
    untrained = flow.sample(400)
    assert _mmd_p_value(untrained, reference) <= 0.01  # the test can fail
    flow.train()

    def loss() -> torch.Tensor:
        batch = data[torch.randint(len(data), (256,))]
        return -flow.log_prob(batch).mean()

    _train(flow, loss, 400)
    flow.eval()
    _check_samples(flow.sample(400), reference)
    held_out = _target().sample((2000,))
    with torch.no_grad():
        gap = float(_target().log_prob(held_out).mean() - flow.log_prob(held_out).mean())
    assert gap < 0.05, f"MAF is {gap:.3f} nats worse than the true density"


def test_iaf_fits_a_gaussian_by_reverse_kl_and_samples_it() -> None:
    torch.manual_seed(0)
    flow = inv.IAF(2, num_layers=3, hidden_features=(32, 32))
    target = _target()
    reference = target.sample((400,))
    assert _mmd_p_value(flow.sample(400), reference) <= 0.01

    def loss() -> torch.Tensor:  # KL(q || p): samples and log q from one parallel pass
        x, log_q = flow.sample_and_log_prob(256)
        return (log_q - target.log_prob(x)).mean()

    _train(flow, loss, 400)
    _check_samples(flow.sample(400), reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_maf_sequential_inversion_is_exact(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    # The identity start plus the perturbation keeps every sample in a range where float32
    # resolves the comparison at this tolerance (a random start adds the last layers' own
    # scale, and a rare sample lands where |log p| ~ 1e2 and rounding alone is ~1e-2).
    flow = inv.MAF(
        5, num_layers=3, hidden_features=(24, 24), context_features=2, identity_init=True
    ).to(dtype)
    _perturb(flow)
    context = torch.randn(64, 2, dtype=dtype)
    flow.train()
    with torch.no_grad():
        for _ in range(5):  # running statistics of batch norm away from their start
            flow.log_prob(3 * torch.randn(64, 5, dtype=dtype) + 1, context)
    flow.eval()
    x, log_p = flow.sample_and_log_prob(64, context)
    torch.testing.assert_close(flow.log_prob(x, context), log_p, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gated", [False, True])
def test_iaf_own_samples_one_pass_and_exact_inverse(dtype: torch.dtype, gated: bool) -> None:
    torch.manual_seed(0)
    flow = inv.IAF(6, num_layers=3, hidden_features=(24, 24), gated=gated).to(dtype)
    _perturb(flow)
    layers = flow.autoregressive_layers()
    passes = [0] * len(layers)
    for index, layer in enumerate(layers):
        layer.made.register_forward_hook(
            lambda module, args, out, index=index: passes.__setitem__(index, passes[index] + 1)
        )
    x, log_p = flow.sample_and_log_prob(64)
    assert passes == [1, 1, 1]  # one parallel MADE pass per layer
    assert log_p.requires_grad and x.requires_grad  # reparameterised
    torch.testing.assert_close(flow.log_prob(x.detach()), log_p.detach(), rtol=1e-4, atol=1e-4)


def test_made_mog_integrates_to_one_and_is_consistent() -> None:
    torch.manual_seed(0)
    model = inv.MADEMoG(2, components=4, hidden_features=(16, 16), log_scale_bound=2.0)
    _perturb(model, 0.3)
    model.eval()
    grid = torch.linspace(-30, 30, 1201, dtype=torch.float64)
    model = model.double()
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = model.log_prob(points).exp()
    area = (grid[1] - grid[0]) ** 2
    total = float(density.sum() * area)
    assert abs(total - 1) < 1e-4, total
    x, log_p = model.sample_and_log_prob(32)
    torch.testing.assert_close(model.log_prob(x), log_p)
    # a MADEMoG satisfies the base protocol: it can be the base of another flow
    flow = inv.Flow(inv.Rescaling(2), model).double()
    assert isinstance(model, inv.Distribution)
    assert flow.log_prob(x.detach()).shape == (32,)


def test_maf_mog_works_as_a_flow() -> None:
    torch.manual_seed(0)
    flow = inv.MAF(2, num_layers=2, hidden_features=(16,), mog_components=3)
    assert isinstance(flow.base, inv.MixtureMADE)
    data = torch.cat([torch.randn(256, 2) * 0.3 + 2, torch.randn(256, 2) * 0.3 - 2])
    with torch.no_grad():
        before = float(-flow.log_prob(data).mean())
    _train(flow, lambda: -flow.log_prob(data).mean(), 60)
    with torch.no_grad():
        assert float(-flow.log_prob(data).mean()) < before - 0.5
    flow.eval()
    x, log_p = flow.sample_and_log_prob(16)
    torch.testing.assert_close(flow.log_prob(x), log_p, rtol=1e-4, atol=1e-4)


def test_connectivity_agnostic_ensemble() -> None:
    torch.manual_seed(0)
    model = inv.GaussianAR(4, hidden_features=(16, 16), num_masks=3)
    _perturb(model)
    x = torch.randn(10, 4)
    model.train()
    seen = set()
    for _ in range(3):
        model.log_prob(x)
        seen.add(model.transform.made.current_mask)
    assert seen == {0, 1, 2}  # training cycles through the masks
    model.eval()
    per_mask = []
    for k in range(3):
        model.transform.set_mask(k)
        per_mask.append(inv.Flow.log_prob(model, x))
    model.set_mask(1)
    expected = torch.logsumexp(torch.stack(per_mask), 0) - math.log(3)
    torch.testing.assert_close(model.log_prob(x), expected)
    assert model.transform.made.current_mask == 1  # restored
    samples, log_p = model.sample_and_log_prob(20)
    torch.testing.assert_close(model.log_prob(samples), log_p)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("GaussianAR", dict(features=3, hidden_features=[8], ordering="random", num_masks=2)),
        ("MAF", dict(features=3, num_layers=2, hidden_features=[8], ordering="random")),
        ("MAF", dict(features=3, num_layers=2, hidden_features=[8], mog_components=2)),
        ("IAF", dict(features=3, num_layers=2, hidden_features=[8], gated=True)),
        ("MADEMoG", dict(features=3, components=2, hidden_features=[8], ordering=[2, 0, 1])),
    ],
)
def test_rebuild_from_config_and_state(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    flow = inv.Flow.registry[name](**kwargs)
    _perturb(flow)
    config = json.loads(json.dumps(flow.config))
    config["seed"] = 123  # random masks must come back from the state, not from the seed
    rebuilt = inv.Flow.registry[name](**config)
    rebuilt.load_state_dict(flow.state_dict())
    flow.eval(), rebuilt.eval()
    x = torch.randn(5, 3)
    torch.testing.assert_close(rebuilt.log_prob(x), flow.log_prob(x), rtol=0, atol=0)
    torch.manual_seed(1)
    a = flow.sample(4)
    torch.manual_seed(1)
    torch.testing.assert_close(rebuilt.sample(4), a, rtol=0, atol=0)
