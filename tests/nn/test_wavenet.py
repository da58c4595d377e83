"""CausalWaveNet: causality, receptive field, exact incremental generation, validation."""

from __future__ import annotations

import pytest
import torch

import invertible as inv
from invertible.nn import CausalWaveNet, wavenet_dilations

CONFIGS = {
    "k2": {"dilations": [1, 2, 4, 1]},
    "k3-linear": {"dilations": [1, 3], "kernel_size": 3, "linear_order": 5},
    "gate-width": {"dilations": [2, 1], "gate_channels": 3},
    "mel-repeat": {"dilations": [1, 2], "mel_channels": 3, "hop_length": 4},
    "mel-transposed": {
        "dilations": [1, 2],
        "mel_channels": 3,
        "hop_length": 4,
        "upsample": "transposed",
    },
    "linear-only": {"dilations": (), "linear_order": 4},
}


def _net(name: str, seed: int = 0) -> CausalWaveNet:
    """A tiny float64 network, every parameter perturbed (the zero head would hide errors)."""
    torch.manual_seed(seed)
    net = CausalWaveNet(2, residual_channels=5, skip_channels=4, **CONFIGS[name]).double()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return net


def _context(net: CausalWaveNet, batch: int, length: int) -> torch.Tensor | None:
    if not net.mel_channels:
        return None
    frames = -(-length // net.hop_length)
    return torch.randn(batch, net.mel_channels, frames, dtype=torch.float64)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_jacobian_is_strictly_lower_triangular_within_the_receptive_field(name: str) -> None:
    net = _net(name)
    T, R = 14, net.receptive_field
    past = torch.ones(T, T, dtype=torch.bool).tril(-1)
    band = past & ~torch.ones(T, T, dtype=torch.bool).tril(-R - 1)
    reach = torch.zeros(T, T, dtype=torch.float64)
    for _ in range(4):
        x = torch.randn(T, dtype=torch.float64)
        context = _context(net, 1, T)
        for p in range(net.num_params):
            jacobian = torch.autograd.functional.jacobian(
                lambda v, p=p, c=context: net(v[None], c)[0, :, p], x
            )
            assert jacobian[~past].abs().max() == 0, "output t depends on x_t or a later sample"
            assert jacobian[~band].abs().max() == 0, "output t sees further back than R"
            reach += jacobian.abs()
    # Generic weights reach the whole band: the last past sample and the farthest one.
    assert reach.diagonal(-1).min() > 0
    assert reach.diagonal(-R).min() > 0


def test_conditioning_is_seen_whole_and_changes_the_output() -> None:
    net = _net("mel-repeat")
    x = torch.randn(2, 12, dtype=torch.float64)
    context = _context(net, 2, 12)
    other = context.clone()
    other[:, :, -1] += 1.0  # only the last frame (samples 8..11) changes
    a, b = net(x, context), net(x, other)
    assert torch.equal(a[:, :8], b[:, :8]) and not torch.allclose(a[:, 8:], b[:, 8:])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_incremental_equals_naive_equals_parallel_float64(name: str) -> None:
    net = _net(name)
    B, T = 3, 19
    x = torch.randn(B, T, dtype=torch.float64)
    context = _context(net, B, T)
    parallel = net(x, context)
    for method in ("incremental", "naive"):
        # Teacher forcing: the step returns the given x_t and records the params it got.
        values, params = net.autoregress(
            lambda t, p: (x[:, t], p), B, T, context, like=x, method=method
        )
        torch.testing.assert_close(values, x, rtol=0, atol=0)
        torch.testing.assert_close(torch.stack(params, 1), parallel, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["k2", "mel-transposed"])
def test_generation_feeds_back_and_is_differentiable(name: str) -> None:
    """Free-running generation: both methods give the same values and the same gradients."""
    net = _net(name)
    B, T = 2, 11
    noise = torch.randn(B, T, dtype=torch.float64)
    context = _context(net, B, T)

    def run(method: str):
        net.zero_grad()
        values, _ = net.autoregress(
            lambda t, p: (p[:, 0] + p[:, 1].tanh().exp() * noise[:, t], None),
            B,
            T,
            context,
            like=noise,
            method=method,
        )
        values.square().sum().backward()
        return values.detach(), [q.grad.clone() for q in net.parameters()]

    (v1, g1), (v2, g2) = run("incremental"), run("naive")
    torch.testing.assert_close(v1, v2, rtol=0, atol=1e-9)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    # The parallel pass on the generated values reproduces the noise: exact inversion.
    params = net(v1, context)
    recovered = (v1 - params[..., 0]) / params[..., 1].tanh().exp()
    torch.testing.assert_close(recovered, noise, rtol=0, atol=1e-9)


@pytest.mark.parametrize("name", ["k2", "k3-linear", "mel-repeat"])
def test_variable_length_prefixes_agree(name: str) -> None:
    """Causality at any T: the outputs on a prefix equal the first outputs on the whole."""
    net = _net(name)
    x = torch.randn(2, 33, dtype=torch.float64)
    context = _context(net, 2, 33)
    full = net(x, context)
    for T in (1, 5, 17):
        torch.testing.assert_close(net(x[:, :T], context), full[:, :T], rtol=0, atol=1e-12)


def test_receptive_field_and_default_schedule() -> None:
    assert wavenet_dilations(2, 512) == [2**i for i in range(10)] * 2
    assert CausalWaveNet().receptive_field == 1 + 2 * 1023
    assert CausalWaveNet(dilations=[1, 2], kernel_size=3).receptive_field == 7
    assert CausalWaveNet(dilations=[1], linear_order=32).receptive_field == 32
    with pytest.raises(ValueError, match="power of two"):
        wavenet_dilations(1, 6)


def test_fresh_network_outputs_its_bias_only() -> None:
    net = CausalWaveNet(2, residual_channels=4, skip_channels=4, dilations=[1])
    assert torch.equal(net(torch.randn(2, 9)), torch.zeros(2, 9, 2))


def test_context_validation_names_the_problem() -> None:
    net = _net("mel-repeat")
    x = torch.zeros(2, 12, dtype=torch.float64)
    step = lambda t, p: (p[:, 0], None)  # noqa: E731
    with pytest.raises(ValueError, match=r"needs a context of shape \[batch, 3, frames\]"):
        net.autoregress(step, 2, 12, None)
    with pytest.raises(ValueError, match="cover less than T = 12"):
        net.autoregress(step, 2, 12, torch.zeros(2, 3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"expected shape \[batch, 3, frames\]"):
        net.autoregress(step, 2, 12, torch.zeros(2, 4, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="unconditional"):
        _net("k2").autoregress(step, 2, 12, torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="method"):
        _net("k2").autoregress(step, 2, 12, method="fast")
    assert x.shape == (2, 12)


def test_transform_validation_names_the_problem() -> None:
    layer = inv.WaveNetAutoregressive(residual_channels=4, skip_channels=4, dilations=[1])
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        layer.inverse(torch.zeros(10))
    with pytest.raises(ValueError, match=r"squeeze\(1\)"):
        layer.inverse(torch.zeros(2, 1, 10))
    with pytest.raises(ValueError, match="T = 0"):
        layer.inverse(torch.zeros(2, 0))
    with pytest.raises(TypeError, match="floating-point"):
        layer.inverse(torch.zeros(2, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="needs Affine"):
        inv.WaveNetAutoregressive(elementwise=inv.Gated(), dilations=[1], linear_order=2)
