"""Sequence presets: WaveNet teacher (MAF), Parallel WaveNet student (IAF), AR(p) baseline."""

from __future__ import annotations

import math

import pytest
import torch

import invertible as inv

TINY = {"residual_channels": 4, "skip_channels": 4, "dilations": [1, 2, 4]}


def _perturb(flow: torch.nn.Module, scale: float = 0.2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return flow


def _teacher(**kwargs) -> inv.WaveNetMAF:
    return _perturb(inv.WaveNetMAF(**{**TINY, **kwargs}).double())  # type: ignore[return-value]


def _student(**kwargs) -> inv.WaveNetIAF:
    options = {**TINY, "num_flows": 3, **kwargs}
    return _perturb(inv.WaveNetIAF(**options).double())  # type: ignore[return-value]


def _jacobian_log_det(fn, x: torch.Tensor) -> torch.Tensor:
    jacobian = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], x[0])
    return torch.linalg.slogdet(jacobian).logabsdet


@pytest.mark.parametrize("base", ["normal", "logistic"])
def test_teacher_density_is_the_product_of_its_conditionals(base: str) -> None:
    teacher = _teacher(base=base)
    x = 0.3 * torch.randn(3, 25, dtype=torch.float64)
    mu, log_sigma = teacher.conditionals(x)
    u = (x - mu) * (-log_sigma).exp()
    if base == "normal":
        expected = torch.distributions.Normal(mu, log_sigma.exp()).log_prob(x).sum(1)
    else:
        expected = (-torch.nn.functional.softplus(u) - torch.nn.functional.softplus(-u)).sum(1)
        expected = expected - log_sigma.sum(1)
    torch.testing.assert_close(teacher.log_prob(x), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("build", [_teacher, _student], ids=["teacher", "student"])
def test_log_det_matches_autograd_on_a_short_sequence(build) -> None:
    flow = build()
    x = 0.3 * torch.randn(1, 9, dtype=torch.float64)
    _, ladj = flow.transform.inverse(x)
    torch.testing.assert_close(
        ladj[0], _jacobian_log_det(flow.transform.inverse, x), rtol=1e-9, atol=1e-9
    )
    _, ladj_fwd = flow.transform(x)
    torch.testing.assert_close(
        ladj_fwd[0], _jacobian_log_det(flow.transform.forward, x), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("mel", [0, 3])
def test_teacher_incremental_equals_naive_equals_parallel_inverse(mel: int) -> None:
    teacher = _teacher(mel_channels=mel, hop_length=5, linear_order=3)
    context = torch.randn(2, 3, 6, dtype=torch.float64) if mel else None
    torch.manual_seed(1)
    z = torch.randn(2, 30, dtype=torch.float64)
    layer = teacher.transform
    samples = {}
    for method in ("incremental", "naive"):
        layer.sequential = method
        samples[method] = layer(z, context)
    torch.testing.assert_close(samples["incremental"], samples["naive"], rtol=0, atol=1e-9)
    x, ladj = samples["incremental"]
    z_back, ladj_inv = layer.inverse(x, context)  # one parallel pass
    torch.testing.assert_close(z_back, z, rtol=0, atol=1e-9)
    torch.testing.assert_close(ladj_inv, -ladj, rtol=0, atol=1e-9)


def test_student_own_density_is_parallel_and_equals_the_sequential_one() -> None:
    student = _student(mel_channels=2, hop_length=4)
    context = torch.randn(3, 2, 5, dtype=torch.float64)
    x, log_p = student.sample_and_log_prob(3, context)  # length 20 from the context
    assert x.shape == (3, 20)
    for method in ("incremental", "naive"):
        for flow in student.transform.transforms:
            flow.sequential = method
        torch.testing.assert_close(student.log_prob(x, context), log_p, rtol=1e-9, atol=1e-9)


def test_student_conditionals_compose_the_flows() -> None:
    student = _student()
    z = torch.randn(2, 16, dtype=torch.float64)
    shift, log_scale = student.conditionals(z)
    x, ladj = student.transform(z)
    torch.testing.assert_close(z * log_scale.exp() + shift, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(log_scale.sum(1), ladj, rtol=1e-10, atol=1e-10)
    # Causality of the composition: log s^tot_t and μ^tot_t depend on z_{<t} only.
    jac = torch.autograd.functional.jacobian(lambda v: student.conditionals(v[None])[0][0], z[0])
    assert jac.triu().abs().max() == 0


@pytest.mark.parametrize("build", [_teacher, _student], ids=["teacher", "student"])
def test_variable_length_and_sampling(build) -> None:
    flow = build()
    for T in (1, 7, 40):
        x = flow.sample(2, length=T)
        assert x.shape == (2, T)
        assert flow.log_prob(x).shape == (2,)
    assert flow.sample(3).shape == (3, flow.length)
    assert flow.sample(5, length=4, chunk_size=2).shape == (5, 4)


def test_validation_names_the_problem() -> None:
    teacher = inv.WaveNetMAF(**TINY, mel_channels=3, hop_length=4)
    with pytest.raises(ValueError, match=r"unsqueeze\(0\)"):
        teacher.log_prob(torch.zeros(8), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match=r"log-mel spectrogram \[batch, 3, frames\]"):
        teacher.log_prob(torch.zeros(1, 8))
    with pytest.raises(ValueError, match="cover less than T = 12"):
        teacher.log_prob(torch.zeros(1, 12), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="NaN"):
        teacher.log_prob(torch.full((1, 8), math.nan), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="unconditional"):
        inv.WaveNetMAF(**TINY).log_prob(torch.zeros(1, 8), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError, match="length"):
        inv.WaveNetMAF(**TINY).sample(1, length=0)
    with pytest.raises(ValueError, match="base"):
        inv.LinearPredictionAR(2, base="logistic")


def test_log_scale_bound_allows_16_bit_resolution() -> None:
    teacher = inv.WaveNetMAF(**TINY)
    with torch.no_grad():
        teacher.transform.net.out.bias[1] = -20.0  # soft-clamped to about -10.7
    _, log_sigma = teacher.conditionals(torch.zeros(1, 4))
    assert log_sigma.max() < math.log(1 / 32768)


@pytest.mark.parametrize(
    "build",
    [
        lambda: _teacher(
            mel_channels=3,
            hop_length=4,
            upsample="transposed",
            linear_order=2,
            linear_coefficients=[0.5, -0.2],
        ),
        lambda: _teacher(base="logistic"),
        lambda: _student(gated=True),
        lambda: _perturb(inv.LinearPredictionAR(3, base="laplace").double()),
    ],
    ids=["teacher-mel", "teacher-logistic", "student-gated", "linear-prediction"],
)
def test_checkpoint_round_trip(build, tmp_path) -> None:
    flow = build().eval()
    inv.save(flow, tmp_path / "model")
    loaded = inv.load(tmp_path / "model").double()
    assert type(loaded) is type(flow) and loaded.config == flow.config
    context = torch.randn(2, 3, 3, dtype=torch.float64) if flow.context_features else None
    x = 0.1 * torch.randn(2, 12, dtype=torch.float64)
    torch.testing.assert_close(loaded.log_prob(x, context), flow.log_prob(x, context))


def _ar2(n: int, T: int, sigma: float, seed: int = 0) -> torch.Tensor:
    """Gaussian AR(2): x_t = 1.3 x_{t-1} − 0.6 x_{t-2} + σ ε_t (poles inside the unit circle)."""
    generator = torch.Generator().manual_seed(seed)
    noise = sigma * torch.randn(n, T, generator=generator, dtype=torch.float64)
    x = torch.zeros(n, T, dtype=torch.float64)
    for t in range(T):
        x[:, t] = noise[:, t]
        if t >= 1:
            x[:, t] += 1.3 * x[:, t - 1]
        if t >= 2:
            x[:, t] -= 0.6 * x[:, t - 2]
    return x


def test_linear_prediction_recovers_the_entropy_rate_of_a_gaussian_ar2() -> None:
    sigma = 0.01
    train, test = _ar2(4, 4000, sigma, seed=0), _ar2(4, 4000, sigma, seed=1)
    model = inv.LinearPredictionAR(order=4).double().fit_least_squares(train)
    coefficients = model.coefficients.detach()
    torch.testing.assert_close(
        coefficients, torch.tensor([1.3, -0.6, 0.0, 0.0], dtype=torch.float64), atol=0.03, rtol=0
    )
    entropy_rate = 0.5 * math.log(2 * math.pi * math.e * sigma**2)
    nats = -model.log_prob(test).sum().item() / test.numel()
    assert abs(nats - entropy_rate) < 0.02
    # The Laplace baseline is worse on Gaussian residuals, by about KL(N ‖ best Laplace).
    laplace = inv.LinearPredictionAR(order=4, base="laplace").double().fit_least_squares(train)
    nats_laplace = -laplace.log_prob(test).sum().item() / test.numel()
    best_scale = sigma * math.sqrt(2 / math.pi)  # E|r| of the Gaussian residual
    expected_gap = 1 + math.log(2 * best_scale) - entropy_rate
    assert abs((nats_laplace - nats) - expected_gap) < 0.02


def test_teacher_initialised_by_least_squares_starts_at_the_ar_likelihood() -> None:
    data = _ar2(2, 2000, 0.02, seed=2)
    baseline = inv.LinearPredictionAR(order=3).double().fit_least_squares(data)
    teacher = inv.WaveNetMAF(**TINY, linear_order=3).double()
    fit = inv.init_linear_prediction(teacher, data)
    assert fit["coefficients"].shape == (3,)
    torch.testing.assert_close(
        teacher.log_prob(data), baseline.log_prob(data), rtol=1e-9, atol=1e-6
    )
    # The same shortcut survives sampling: the fresh teacher samples an AR(3) process.
    x = teacher.sample(2, length=50)
    torch.testing.assert_close(
        teacher.transform.inverse(x)[0].std(),
        torch.tensor(1.0, dtype=torch.float64),
        atol=0.35,
        rtol=0,
    )


def test_registered_and_default_teacher_receptive_field() -> None:
    for name in ("WaveNetMAF", "WaveNetIAF", "LinearPredictionAR"):
        assert name in inv.Flow.registry
    assert inv.WaveNetMAF().receptive_field == 2047


def test_distillation_terms_carry_over() -> None:
    """The library's MC and analytic-entropy losses run unchanged on the sequence presets,
    and the ClariNet per-step Gaussian KL from the two ``conditionals`` agrees with MC."""
    from invertible.distill import distillation_losses, gaussian_kl

    options = {**TINY, "length": 16}
    teacher, student = _teacher(**options), _student(num_flows=2, **options)
    torch.manual_seed(3)
    mc = distillation_losses(teacher, student, 8, loss="mc")
    analytic = distillation_losses(teacher, student, 8, loss="analytic-entropy")
    assert torch.isfinite(mc["kl"]) and torch.isfinite(analytic["kl"])
    with torch.no_grad():
        z = torch.randn(4000, 16, dtype=torch.float64)
        shift, log_scale = student.conditionals(z)
        x = z * log_scale.exp() + shift
        log_s = student.base.log_prob(z) - log_scale.sum(1)
        per_sample_mc = log_s - teacher.log_prob(x)
        mu_t, log_sigma_t = teacher.conditionals(x)
        per_sample_closed = gaussian_kl(shift, log_scale, mu_t, log_sigma_t).sum(1)
    difference = per_sample_mc.mean() - per_sample_closed.mean()
    standard_error = (per_sample_mc - per_sample_closed).std() / 4000**0.5
    assert abs(difference) < 4 * standard_error + 1e-9


def test_base_draws_the_context_length() -> None:
    student = _student(mel_channels=2, hop_length=4)
    context = torch.randn(3, 2, 5, dtype=torch.float64)
    assert student.base.rsample(3, context).shape == (3, 20)
    assert student.base.entropy(10) == pytest.approx(10 * 0.5 * math.log(2 * math.pi * math.e))


def test_library_trainer_fits_a_teacher_started_at_the_ar_likelihood() -> None:
    """``inv.fit`` trains a sequence flow like any flow (events of ``length`` samples)."""
    from types import SimpleNamespace

    data = SimpleNamespace(
        train=_ar2(32, 64, 0.05, seed=4).float(), val=_ar2(8, 64, 0.05, seed=5).float()
    )
    teacher = inv.WaveNetMAF(**TINY, linear_order=2, length=64)
    inv.init_linear_prediction(teacher, data.train)
    start = teacher.log_prob(data.val).mean().item()
    result = inv.fit(teacher, data, steps=6, batch_size=8, lr=1e-3, progress=False, patience=None)
    assert math.isfinite(result.best_val_log_prob)
    assert result.best_val_log_prob >= start - 1.0  # starts (and stays) near AR(2)
    assert start / 64 > 1.0  # AR(2) with σ = 0.05: about 1.58 nats per sample
