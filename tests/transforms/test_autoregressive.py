"""AffineAutoregressive: pass counts per direction, conditionals, fast vs naive sequential."""

from __future__ import annotations

import pytest
import torch

import invertible as inv


def _perturbed(layer: inv.AffineAutoregressive, scale: float = 0.3) -> inv.AffineAutoregressive:
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return layer


@pytest.mark.parametrize("mode", ["maf", "iaf"])
def test_parallel_and_sequential_pass_counts(mode: str) -> None:
    """Full MADE passes, counted by a forward hook: the parallel direction runs one, the
    incremental sequential direction none (each unit once, in D small steps), the naive one D."""
    torch.manual_seed(0)
    D = 6
    layer = _perturbed(inv.AffineAutoregressive(D, hidden_features=(16,), mode=mode))
    passes: list[int] = []
    layer.made.register_forward_hook(lambda module, args, out: passes.append(1))
    parallel, sequential = (
        (layer.inverse, layer.forward) if mode == "maf" else (layer.forward, layer.inverse)
    )
    x = torch.randn(3, D)
    for direction, expected in [(parallel, 1), (sequential, 0)]:
        passes.clear()
        direction(x)
        assert len(passes) == expected
    layer.sequential = "naive"
    passes.clear()
    sequential(x)
    assert len(passes) == D


@pytest.mark.parametrize("mode", ["maf", "iaf"])
@pytest.mark.parametrize("elementwise", [inv.Affine(), inv.Gated(), inv.Additive()], ids=str)
def test_conditionals_reproduce_the_forward_map(mode: str, elementwise) -> None:
    torch.manual_seed(0)
    layer = _perturbed(
        inv.AffineAutoregressive(
            4, hidden_features=(16,), mode=mode, elementwise=elementwise, context_features=2
        )
    ).double()
    u = torch.randn(5, 4, dtype=torch.float64)
    context = torch.randn(5, 2, dtype=torch.float64)
    x, ladj = layer(u, context)
    shift, log_scale = layer.conditionals(x if mode == "maf" else u, context)
    torch.testing.assert_close(x, u * log_scale.exp() + shift)
    torch.testing.assert_close(ladj, log_scale.sum(dim=1))


@pytest.mark.parametrize("mode", ["maf", "iaf"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_incremental_sequential_equals_naive(mode: str, dtype: torch.dtype) -> None:
    torch.manual_seed(1)
    D = 24
    layer = _perturbed(
        inv.AffineAutoregressive(D, hidden_features=(64, 64), mode=mode, ordering="random"),
        0.05,
    ).to(dtype)
    values = torch.randn(32, D, dtype=dtype)
    run = layer.forward if mode == "maf" else layer.inverse
    with torch.no_grad():
        fast, ladj_fast = run(values)
        layer.sequential = "naive"
        slow, ladj_slow = run(values)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(fast, slow, rtol=tol, atol=tol)
    torch.testing.assert_close(ladj_fast, ladj_slow, rtol=tol, atol=tol)


def test_fresh_layer_is_identity_and_bad_arguments() -> None:
    layer = inv.AffineAutoregressive(3, hidden_features=(8,))
    z = torch.randn(2, 3)
    x, ladj = layer(z)
    torch.testing.assert_close(x, z)
    assert torch.equal(ladj, torch.zeros(2))
    with pytest.raises(ValueError, match="mode"):
        inv.AffineAutoregressive(3, mode="flow")
    with pytest.raises(ValueError, match="sequential"):
        inv.AffineAutoregressive(3, sequential="fast")
