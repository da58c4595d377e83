"""The shared property suite: every transform of the library, the same checks.

For each case (see ``cases.py`` and ``cases_*.py``):

* log-det of both directions equals log|det| of the autograd Jacobian (float64);
* inverse(forward(z)) == z (float32 and float64), and the inverse log-det is minus the
  forward one at the corresponding points;
* gradients reach every parameter;
* a state_dict saved to safetensors and loaded into a freshly built (differently seeded)
  transform gives identical outputs (masks, permutations and running statistics included);
* moving to another dtype gives the same numbers, and moving to another device (``meta``
  here, CUDA when present) leaves no tensor behind.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
from safetensors.torch import load, save

import tests.transforms as package
from tests.transforms.cases import Case

CASES: list[Case] = []
for module in pkgutil.iter_modules(package.__path__):
    if module.name == "cases" or module.name.startswith("cases_"):
        CASES += importlib.import_module(f"{package.__name__}.{module.name}").CASES

BATCH = 4


def _prepared(case: Case, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.nn.Module:
    """Build, warm up (data-dependent init, running statistics), perturb, then eval mode.

    Zero-initialised last layers make a fresh transform the identity, which would hide
    errors; random perturbation of every parameter makes the checks meaningful.
    """
    torch.manual_seed(seed)
    transform = case.build().to(dtype)
    transform.train()
    with torch.no_grad():
        for _ in range(3):
            transform.inverse(*_inputs(case, 32, dtype))
        for parameter in transform.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    return transform.eval()


def _inputs(
    case: Case, batch: int = BATCH, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = torch.randn(batch, *case.event_shape, dtype=dtype)
    context = (
        torch.randn(batch, case.context_features, dtype=dtype) if case.context_features else None
    )
    return x, context


def _jacobian_log_dets(direction, values: torch.Tensor, context: torch.Tensor | None):
    dets = []
    for i in range(values.shape[0]):
        ctx = None if context is None else context[i : i + 1]

        def flat(v: torch.Tensor, i: int = i, ctx=ctx) -> torch.Tensor:
            out, _ = direction(v.view(1, *values.shape[1:]), ctx)
            return out.flatten()

        jacobian = torch.autograd.functional.jacobian(flat, values[i].flatten())
        dets.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(dets)


@pytest.fixture(params=CASES, ids=[case.name for case in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    return request.param


def test_log_det_matches_autograd_jacobian(case: Case) -> None:
    transform = _prepared(case)
    z, context = _inputs(case)
    x, ladj_forward = transform(z, context)
    assert ladj_forward.shape == (BATCH,)
    torch.testing.assert_close(
        ladj_forward, _jacobian_log_dets(transform.forward, z, context), rtol=1e-7, atol=1e-7
    )
    _, ladj_inverse = transform.inverse(x, context)
    assert ladj_inverse.shape == (BATCH,)
    torch.testing.assert_close(
        ladj_inverse, _jacobian_log_dets(transform.inverse, x, context), rtol=1e-7, atol=1e-7
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_round_trip(case: Case, dtype: torch.dtype) -> None:
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    transform = _prepared(case, dtype)
    z, context = _inputs(case, 16, dtype)
    x, ladj_forward = transform(z, context)
    z_back, ladj_inverse = transform.inverse(x, context)
    torch.testing.assert_close(z_back, z, rtol=tol, atol=tol)
    torch.testing.assert_close(ladj_inverse, -ladj_forward, rtol=tol, atol=tol)
    x_again, _ = transform(z_back, context)
    torch.testing.assert_close(x_again, x, rtol=tol, atol=tol)


def test_gradients_reach_every_parameter(case: Case) -> None:
    transform = _prepared(case)
    z, context = _inputs(case)
    z.requires_grad_(True)
    x, ladj_forward = transform(z, context)
    z_back, ladj_inverse = transform.inverse(z, context)
    loss = x.square().sum() + ladj_forward.sum() + z_back.square().sum() + ladj_inverse.sum()
    loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all(), "no finite gradient w.r.t. input"
    for name, parameter in transform.named_parameters():
        assert parameter.grad is not None, f"no gradient reaches {name}"
        assert torch.isfinite(parameter.grad).all(), f"non-finite gradient for {name}"
        assert parameter.grad.abs().sum() > 0, f"zero gradient for {name}"


def test_save_load_round_trip(case: Case) -> None:
    transform = _prepared(case, seed=0)
    blob = save({k: v.contiguous() for k, v in transform.state_dict().items()})
    fresh = _prepared(case, seed=1)
    fresh.load_state_dict(load(blob), strict=True)
    z, context = _inputs(case)
    for direction in ("forward", "inverse"):
        expected = getattr(transform, direction)(z, context)
        actual = getattr(fresh, direction)(z, context)
        torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_dtype_and_device_moves(case: Case) -> None:
    transform = _prepared(case, torch.float64)
    z, context = _inputs(case)
    expected, _ = transform(z, context)
    single = transform.to(torch.float32)
    actual, ladj32 = single(z.float(), None if context is None else context.float())
    assert actual.dtype == torch.float32 and ladj32.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-4, atol=1e-4)
    devices = ["meta"] if case.meta else []
    if torch.cuda.is_available():
        devices.append("cuda")
    for device in devices:
        moved = transform.to(device)
        for name, tensor in [*moved.named_parameters(), *moved.named_buffers()]:
            assert tensor.device.type == device, f"{name} stayed on {tensor.device}"
        z_dev = z.float().to(device)
        ctx = None if context is None else context.float().to(device)
        out, ladj_dev = moved(z_dev, ctx)
        back, _ = moved.inverse(out, ctx)
        assert out.device.type == device and ladj_dev.shape == (BATCH,)
        assert back.device.type == device
        if device == "cuda":
            torch.testing.assert_close(out.cpu().double(), expected, rtol=1e-4, atol=1e-4)
