"""Every preset as a PyTorch module: the change of variables, and what researchers do to
modules (``.data`` writes, pickling, autocast, double backward, ``torch.func``, export,
tracing, empty and one-row batches), at small and large batch sizes alike.

Cases come from :mod:`tests.presets.cases`; the first test checks that every registered
preset has one.
"""

from __future__ import annotations

import io
import math
import pickle

import pytest
import torch
from torch.func import functional_call

import invertible as inv
from invertible.nn import MADE

from .cases import (
    PRESETS,
    build,
    data,
    has_batch_statistics,
    is_autoregressive,
    set_block_groups,
)

CASES = sorted(PRESETS)
AUTOREGRESSIVE = [case for case in CASES if is_autoregressive(PRESETS[case]())]
VECTOR = [case for case in CASES if len(PRESETS[case]().event_shape) == 1]


def _num_masks(flow: inv.Flow) -> int:
    return int(getattr(flow, "num_masks", 1))


def _assert_log_det_is_exact(flow: inv.Flow, x: torch.Tensor) -> None:
    """log|det ∂z/∂x| reported by the transform equals the autograd Jacobian's (float64)."""
    _, ladj = flow.transform.inverse(x)
    shape = flow.event_shape
    for i in range(x.shape[0]):

        def inverse(v: torch.Tensor) -> torch.Tensor:
            return flow.transform.inverse(v.view(1, *shape))[0].flatten()

        jacobian = torch.autograd.functional.jacobian(inverse, x[i].flatten())
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(ladj[i], expected, rtol=1e-7, atol=1e-7)


def _assert_autoregressive(made: MADE, x: torch.Tensor) -> None:
    """Output i of the MADE depends on no input at or after its position."""
    jacobian = torch.autograd.functional.jacobian(lambda v: made(v[None])[0], x)
    dependence = jacobian.abs().sum(dim=1)  # [D, D_in]
    position = made.input_degrees[made.current_mask]
    allowed = position[None, :] < position[:, None]
    assert torch.all(dependence[~allowed] == 0), "an output sees an input it must not see"


@pytest.mark.parametrize("case", [c for c in AUTOREGRESSIVE if "residual" not in c])
def test_large_batches_run_the_block_sparse_product(case: str) -> None:
    """Batch 512 of these cases takes the block-sparse path, batch 8 the dense one, so the
    tests below that run both sizes cover both products."""
    mades = [m for m in build(case).modules() if isinstance(m, MADE)]
    assert all(made._plan(1, 512) is not None for made in mades)
    assert all(made._plan(1, 8) is None for made in mades)


def test_every_registered_preset_has_a_case() -> None:
    covered = {type(builder()).__name__ for builder in PRESETS.values()}
    missing = set(inv.Flow.registry) - covered
    assert not missing, f"add a case to tests/presets/cases.py for {sorted(missing)}"


@pytest.mark.parametrize("case", CASES)
def test_log_prob_is_the_change_of_variables(case: str) -> None:
    flow = build(case, torch.float64)
    x = data(flow, 3)
    _assert_log_det_is_exact(flow, x)
    if _num_masks(flow) == 1:
        z, ladj = flow.transform.inverse(x)
        torch.testing.assert_close(flow.log_prob(x), flow.base.log_prob(z) + ladj)


@pytest.mark.parametrize("case", CASES)
def test_sample_and_log_prob_agree_with_log_prob(case: str) -> None:
    flow = build(case, torch.float64)
    x, log_p = flow.sample_and_log_prob(16)
    assert x.shape == (16, *flow.event_shape)
    torch.testing.assert_close(flow.log_prob(x), log_p, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_save_load_round_trip(case: str, tmp_path) -> None:
    flow = build(case)
    inv.save(flow, tmp_path / "model")
    loaded = inv.load(tmp_path / "model").eval()
    x = data(flow, 4)
    torch.testing.assert_close(loaded.log_prob(x), flow.log_prob(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "case", [c for c in CASES if not has_batch_statistics(PRESETS[c]()) and "masks" not in c]
)
def test_train_and_eval_modes_agree_without_batch_statistics(case: str) -> None:
    flow = build(case)
    x = data(flow, 6)
    expected = flow.log_prob(x)
    torch.testing.assert_close(flow.train().log_prob(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("groups", [1, 3], ids=["dense", "block-sparse"])
@pytest.mark.parametrize("case", AUTOREGRESSIVE)
def test_data_writes_cannot_break_the_density(case: str, groups: int) -> None:
    """Initialisers and EMA write ``param.data``; masks must hold regardless."""
    flow = build(case, torch.float64)
    set_block_groups(flow, groups)
    x = data(flow, 3)
    flow.log_prob(x)  # a pass first: nothing may be cached from it
    generator = torch.Generator().manual_seed(5)
    for parameter in flow.parameters():
        noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
        parameter.data.copy_(0.3 * noise)
    for made in (m for m in flow.modules() if isinstance(m, MADE)):
        _assert_autoregressive(made, torch.randn(made.features, dtype=torch.float64))
    _assert_log_det_is_exact(flow, x)


@pytest.mark.parametrize("case", CASES)
def test_pickle_and_torch_save_of_the_whole_module(case: str) -> None:
    flow = build(case)
    x = data(flow, 4)
    expected = flow.log_prob(x)
    torch.testing.assert_close(pickle.loads(pickle.dumps(flow)).log_prob(x), expected)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded.log_prob(x), expected)


@pytest.mark.parametrize("batch", [8, 512])
@pytest.mark.parametrize("case", CASES)
def test_autocast_bf16_keeps_the_likelihood_in_fp32(case: str, batch: int) -> None:
    """Conditioners run in bf16 under autocast; densities and samples come back in fp32,
    close to the fp32 values. Sequential directions run in full precision by design."""
    flow = build(case)
    x = data(flow, batch)

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        torch.manual_seed(3)
        return (flow.log_prob(x), *flow.sample_and_log_prob(batch))

    reference = run()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = run()
    for got, expected in zip(mixed, reference, strict=True):
        assert got.dtype == torch.float32
        assert torch.isfinite(got).all()
        assert ((got - expected).abs() / (1.0 + expected.abs())).max() < 0.05
    changed = [not torch.equal(got, expected) for got, expected in zip(mixed, reference)]
    # AR(p) has no conditioner network: its linear prediction is the likelihood's mean and
    # stays in full precision by design.
    assert any(changed) or case.startswith("LinearPredictionAR"), "autocast was ignored"


@pytest.mark.parametrize("batch", [8, 512])
@pytest.mark.parametrize("case", CASES)
def test_double_backward(case: str, batch: int) -> None:
    """Gradient penalties and score matching differentiate ∂log p/∂x again."""
    flow = build(case)
    x = data(flow, batch).requires_grad_(True)
    (score,) = torch.autograd.grad(flow.log_prob(x).sum(), x, create_graph=True)
    score.square().sum().backward()
    grads = [p.grad for p in flow.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("groups", [None, 3], ids=["auto", "block-sparse"])
@pytest.mark.parametrize("case", CASES)
def test_torch_func_grad_and_vmap_over_functional_call(case: str, groups: int | None) -> None:
    flow = build(case)
    set_block_groups(flow, groups)
    x = data(flow, 6)
    params = {name: p.detach() for name, p in flow.named_parameters()}
    buffers = {name: b.clone() for name, b in flow.named_buffers()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return -functional_call(flow, (p, buffers), (x,)).mean()

    grads = torch.func.grad(loss)(params)
    (-flow.log_prob(x).mean()).backward()
    for name, parameter in flow.named_parameters():
        torch.testing.assert_close(grads[name], parameter.grad, rtol=1e-4, atol=1e-5)

    def one(row: torch.Tensor) -> torch.Tensor:
        return functional_call(flow, (params, buffers), (row.unsqueeze(0),)).squeeze(0)

    torch.testing.assert_close(torch.func.vmap(one)(x), flow.log_prob(x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
@pytest.mark.parametrize("batch", [8, 512])
@pytest.mark.parametrize("case", ["MAF", "IAF", "RealNVP"])
def test_jit_trace_and_torch_export(case: str, batch: int) -> None:
    torch.manual_seed(0)
    fresh = PRESETS[case]().eval()  # fresh: nothing has run yet
    x, other = data(fresh, batch), data(fresh, batch, seed=2)
    traced = torch.jit.trace(fresh, (x,), check_trace=False)
    torch.testing.assert_close(traced(other), fresh.log_prob(other))
    flow = build(case)
    exported = torch.export.export(flow, (x,)).module()
    torch.testing.assert_close(exported(other), flow.log_prob(other))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("case", CASES)
def test_empty_batches_are_valid_and_change_nothing(case: str, mode: str) -> None:
    flow = build(case).train(mode == "train")
    before = {name: b.clone() for name, b in flow.named_buffers()}
    assert flow.log_prob(data(flow, 0)).shape == (0,)
    assert flow.sample(0).shape == (0, *flow.event_shape)
    x, log_p = flow.sample_and_log_prob(0)
    assert x.shape == (0, *flow.event_shape) and log_p.shape == (0,)
    for name, buffer in flow.named_buffers():
        if not name.endswith("mask_index"):  # training mode moves to the next mask
            assert torch.equal(buffer, before[name]), f"{name} changed on an empty batch"


@pytest.mark.parametrize("case", VECTOR)
def test_batch_of_one_in_training_mode(case: str) -> None:
    """Batch statistics from one row are refused; other flows give the eval density."""
    flow = build(case).train()
    x = data(flow, 1)
    if has_batch_statistics(flow):
        before = {name: b.clone() for name, b in flow.named_buffers()}
        with pytest.raises(ValueError, match="batch of one"):
            flow.log_prob(x)
        for name, buffer in flow.named_buffers():
            assert torch.equal(buffer, before[name])
        return
    log_p = flow.log_prob(x)
    if _num_masks(flow) == 1:
        torch.testing.assert_close(log_p, flow.eval().log_prob(x))
    assert math.isfinite(float(log_p.detach()))


@pytest.mark.parametrize("case", VECTOR)
def test_integral_sample_counts_and_context_dtype(case: str) -> None:
    import numpy as np

    flow = build(case)
    assert flow.sample(np.int64(3)).shape == (3, *flow.event_shape)
    with pytest.raises(ValueError, match="chunk_size"):
        flow.sample(3, chunk_size=0)


@pytest.mark.parametrize("preset", [inv.MAF, inv.RealNVP])
def test_data_end_actnorm_standardises_the_first_training_batch(preset: type) -> None:
    """The default ActNorm next to the data starts from the first training batch: the
    layers behind it see zero-mean, unit-variance inputs; eval mode and ``actnorm=False``
    leave it out of the picture."""
    torch.manual_seed(0)
    x = torch.randn(256, 4) * torch.tensor([0.1, 2.0, 0.5, 10.0]) + torch.tensor([3.0, -1, 0, 5])
    flow = preset(4, num_layers=2, hidden_features=(16,), batch_norm=False)
    actnorm = flow.transform.transforms[-1]
    assert isinstance(actnorm, inv.ActNorm)
    flow.eval().log_prob(x)  # evaluation never initialises
    assert not bool(actnorm.initialized)
    flow.train().log_prob(x)
    z, ladj = actnorm.inverse(x)
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(ladj, -x.std(0).log().sum().expand(256))
    plain = preset(4, num_layers=2, hidden_features=(16,), batch_norm=False, actnorm=False)
    assert not any(isinstance(m, inv.ActNorm) for m in plain.modules())
