"""MADE: the autoregressive property, mask storage, and the incremental sequential pass."""

from __future__ import annotations

import itertools

import pytest
import torch
from safetensors.torch import load, save

from invertible.nn import MADE, made_ordering


def _perturbed(made: MADE, scale: float = 0.5) -> MADE:
    """Randomise every weight (the zero last layer would make every Jacobian vanish)."""
    with torch.no_grad():
        for parameter in made.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return made


def _jacobian(made: MADE, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
    """d outputs[i, p] / d inputs[j] for one sample: shape [D, P, D]."""

    def f(v: torch.Tensor) -> torch.Tensor:
        return made(v[None], context)[0]

    return torch.autograd.functional.jacobian(f, x)


CONFIGS = [
    pytest.param(dict(hidden_features=(16, 16)), id="plain"),
    pytest.param(dict(hidden_features=(7, 20, 9), activation=torch.nn.Tanh), id="uneven-widths"),
    pytest.param(dict(hidden_features=(16,), num_blocks=2), id="residual"),
    pytest.param(dict(hidden_features=(16, 16), context_features=3), id="context"),
    pytest.param(dict(hidden_features=(16,), num_blocks=1, context_features=2), id="res-context"),
]
ORDERINGS = ["natural", "reversed", "random", [3, 0, 4, 1, 2]]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("ordering", ORDERINGS, ids=str)
@pytest.mark.parametrize("num_masks", [1, 4])
def test_jacobian_strictly_triangular_for_every_mask(config, ordering, num_masks) -> None:
    torch.manual_seed(0)
    D, P = 5, 2
    made = _perturbed(
        MADE(D, num_params=P, ordering=ordering, num_masks=num_masks, seed=3, **config).double()
    )
    C = config.get("context_features", 0)
    for k in range(num_masks):
        made.set_mask(k)
        positions = torch.argsort(made.ordering)  # 0-based position of each coordinate
        allowed = positions[None, :] < positions[:, None]  # [output i, input j]
        seen = torch.zeros(D, D, dtype=torch.bool)
        for _ in range(10):
            x = torch.randn(D, dtype=torch.float64)
            context = torch.randn(1, C, dtype=torch.float64) if C else None
            jac = _jacobian(made, x, context).abs().amax(dim=1)  # [D, D]
            assert torch.all(jac[~allowed] == 0), f"mask {k}: output sees a later input"
            seen |= jac > 0
        if k == 0:  # evenly spread degrees: every allowed connection exists
            assert torch.equal(seen, allowed), f"mask {k}: missing connections"
        # masks differ from each other
    if num_masks > 1:
        orders = {tuple(o.tolist()) for o in made.orderings}
        assert len(orders) > 1


def test_context_reaches_every_output() -> None:
    torch.manual_seed(0)
    made = _perturbed(MADE(4, hidden_features=(12,), num_params=1, context_features=2)).double()
    context = torch.randn(1, 2, dtype=torch.float64, requires_grad=True)
    out = made(torch.randn(1, 4, dtype=torch.float64), context)[0, :, 0]
    for i in range(4):
        (grad,) = torch.autograd.grad(out[i], context, retain_graph=True)
        assert grad.abs().sum() > 0, f"output {i} ignores the context"


def test_fresh_made_outputs_zero_and_orderings() -> None:
    made = MADE(4, hidden_features=(8,), num_params=3)
    assert torch.equal(made(torch.randn(2, 4)), torch.zeros(2, 4, 3))
    assert made_ordering(3, "natural").tolist() == [0, 1, 2]
    assert sorted(
        made_ordering(6, "random", generator=torch.Generator().manual_seed(1)).tolist()
    ) == list(range(6))
    with pytest.raises(ValueError, match="permutation"):
        made_ordering(3, [0, 0, 1])
    with pytest.raises(ValueError, match="unknown ordering"):
        made_ordering(3, "sideways")
    with pytest.raises(ValueError, match="one width"):
        MADE(3, (8, 16), num_blocks=1)


def test_hidden_degrees_sorted_in_range() -> None:
    made = MADE(6, hidden_features=(10, 4), num_masks=3, seed=1)
    for k, layer in itertools.product(range(3), range(2)):
        made.set_mask(k)
        degrees = made.hidden_degrees(layer)
        assert torch.equal(degrees, degrees.sort().values)
        assert degrees.min() >= 1 and degrees.max() <= 5


def test_masks_orderings_and_current_mask_survive_save_load() -> None:
    made = MADE(5, hidden_features=(8, 8), ordering="random", num_masks=3, seed=11)
    made.set_mask(2)
    blob = save({k: v.contiguous() for k, v in made.state_dict().items()})
    fresh = MADE(5, hidden_features=(8, 8), ordering="random", num_masks=3, seed=12)
    assert not torch.equal(fresh.orderings, made.orderings)
    fresh.load_state_dict(load(blob))
    assert fresh.current_mask == 2
    for name, buffer in made.named_buffers():
        assert torch.equal(buffer, dict(fresh.named_buffers())[name]), name
    _perturbed(made)
    fresh.load_state_dict(made.state_dict())
    x = torch.randn(3, 5)
    torch.testing.assert_close(fresh(x), made(x), rtol=0, atol=0)
    # the sequential structure (a Python-side cache) is refreshed too
    step = lambda i, p: (p[:, 0] + 1, None)  # noqa: E731
    torch.testing.assert_close(fresh.autoregress(step, 2)[0], made.autoregress(step, 2)[0])


def test_masked_weights_get_no_gradient() -> None:
    torch.manual_seed(0)
    made = MADE(6, hidden_features=(16, 16), num_params=2, ordering="random", seed=0)
    loss = made(torch.randn(8, 6)).square().sum() + made(torch.randn(8, 6)).sum()
    loss.backward()
    for layer, mask in zip(made.layers, made._masks):
        assert torch.all(layer.weight.grad[~mask[0]] == 0), "gradient of a masked weight"


@pytest.mark.parametrize("batch", [3, 600])  # dense and block-sparse products
@pytest.mark.parametrize("num_masks", [1, 3])
def test_data_writes_cannot_break_the_autoregressive_property(batch: int, num_masks: int) -> None:
    """Writing every stored weight through ``.data`` (initialisers, EMA) after a pass."""
    torch.manual_seed(0)
    made = MADE(6, hidden_features=(64, 64), num_params=2, num_masks=num_masks, seed=0).double()
    made(torch.randn(batch, 6, dtype=torch.float64))
    for p in made.parameters():
        p.data.normal_()
    x = torch.randn(batch, 6, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: made(v).sum(0), x[:1])[..., 0, :]
    position = made.input_degrees[made.current_mask]
    allowed = position[None, :] < position[:, None]  # output i may see input j
    assert torch.all(jac.abs().sum(1)[~allowed] == 0)
    for layer, mask in zip(made.layers, made._masks):  # stored entries are irrelevant
        layer.weight.data[~mask[made.current_mask]] = 1e3
    torch.testing.assert_close(made(x)[:1], made(x[:1]))


@pytest.mark.parametrize(
    "config",
    [
        dict(hidden_features=(32, 24)),
        dict(hidden_features=(5, 40)),  # fewer units than degrees: empty degree blocks
        dict(hidden_features=(32,), num_blocks=2),
        dict(hidden_features=(32, 32), context_features=2),
        dict(hidden_features=(32, 32), num_masks=3),
        dict(hidden_features=(32,), num_blocks=1, num_masks=2, context_features=2),
    ],
    ids=["plain", "narrow", "residual", "context", "masks", "res-masks-context"],
)
@pytest.mark.parametrize("grad", [False, True])
def test_incremental_equals_naive(config: dict, grad: bool) -> None:
    torch.manual_seed(0)
    D = 9
    made = _perturbed(MADE(D, num_params=2, ordering="random", seed=5, **config).double(), 0.3)
    if made.num_masks > 1:
        made.set_mask(made.num_masks - 1)
    C = config.get("context_features", 0)
    context = torch.randn(6, C, dtype=torch.float64) if C else None
    u = torch.randn(6, D, dtype=torch.float64)

    def step(i: int, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return u[:, i] * params[:, 1].tanh().exp() + params[:, 0], params[:, 1]

    with torch.set_grad_enabled(grad):
        fast, extras_fast = made.autoregress(step, 6, context)
        slow, extras_slow = made.autoregress(step, 6, context, method="naive")
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(torch.stack(extras_fast), torch.stack(extras_slow))
    # fixed point: the parameters of the finished values reproduce them
    params = made(fast, context)
    expected = u * params[..., 1].tanh().exp() + params[..., 0]
    torch.testing.assert_close(fast, expected, rtol=1e-10, atol=1e-10)
    if grad:
        fast.sum().backward()
        assert all(p.grad is not None for p in made.parameters())


def test_one_feature() -> None:
    made = _perturbed(MADE(1, hidden_features=(4,), num_params=2, context_features=1))
    context = torch.randn(3, 1)
    out = made(torch.randn(3, 1), context)
    torch.testing.assert_close(out, made(torch.randn(3, 1), context))  # depends on no input
    values, _ = made.autoregress(lambda i, p: (p[:, 0], None), 3, context)
    torch.testing.assert_close(values[:, 0], out[:, 0, 0])


def test_incremental_pass_runs_no_full_network_pass() -> None:
    """The incremental sequential pass never re-runs the network; the naive one D times."""
    made = MADE(7, hidden_features=(8,), num_params=1)
    passes = []
    made.register_forward_hook(lambda module, args, out: passes.append(1))
    made.autoregress(lambda i, p: (p[:, 0], None), 2)
    assert len(passes) == 0
    made.autoregress(lambda i, p: (p[:, 0], None), 2, method="naive")
    assert len(passes) == 7


@pytest.mark.parametrize("groups", [2, 3, 5])
@pytest.mark.parametrize(
    "config",
    [
        dict(hidden_features=(40, 33)),
        dict(hidden_features=(5, 40)),  # empty degree blocks: row groups without columns
        dict(hidden_features=(32,), num_blocks=2),
        dict(hidden_features=(32, 32), context_features=2),
    ],
    ids=["plain", "narrow", "residual", "context"],
)
def test_block_sparse_product_equals_dense(config: dict, groups: int) -> None:
    """The block-sparse parallel pass gives the dense pass's outputs and gradients."""
    torch.manual_seed(0)
    D = 9
    made = _perturbed(MADE(D, num_params=2, ordering="random", seed=2, **config).double(), 0.3)
    C = config.get("context_features", 0)
    context = torch.randn(7, C, dtype=torch.float64) if C else None
    x = torch.randn(7, D, dtype=torch.float64, requires_grad=True)
    results = []
    for block_groups in (1, groups):
        made.block_groups = block_groups
        made.zero_grad()
        x.grad = None
        out = made(x, context)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = [p.grad.clone() for p in made.parameters()]
        results.append((out.detach(), x.grad.clone(), grads))
    (dense, dense_x, dense_grads), (sparse, sparse_x, sparse_grads) = results
    torch.testing.assert_close(sparse, dense, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sparse_x, dense_x, rtol=1e-12, atol=1e-12)
    for got, expected in zip(sparse_grads, dense_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    for layer, mask in zip(made.layers, made._masks):
        assert torch.all(layer.weight.grad[~mask[0]] == 0)


def test_zero_init_controls_the_identity_start() -> None:
    """A fresh MADE outputs zeros (the layer is the identity) unless ``zero_init=False``."""
    x = torch.randn(5, 4)
    assert MADE(4, (8,)).forward(x).abs().max() == 0
    assert MADE(4, (8,), zero_init=False).forward(x).abs().max() > 0
