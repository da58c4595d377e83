"""Distillation for sequences: the estimators against an analytic KL, the power loss,
the refusals, the frozen teacher and the WaveNet student's start."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

import invertible as inv
from invertible.distillation import (
    SEQUENCE_LOSSES,
    power_loss,
    real_spectrum,
    sequence_distillation_losses,
    time_averaged_spectrum,
)

T = 12


def _ar1_teacher(a: float = 0.8, sigma: float = 0.5) -> inv.LinearPredictionAR:
    """Gaussian AR(1): x_t = a x_{t-1} + sigma u_t, x_{-1} = 0."""
    teacher = inv.LinearPredictionAR(order=1, length=T).double()
    net = teacher.transform.net
    net.set_linear_prediction(torch.tensor([a], dtype=torch.float64), 0.0)
    with torch.no_grad():
        net.out_bias[1] = math.log(sigma)
    return teacher


def _ma2_student(s: float, b: tuple[float, float], c: float, base: str = "normal"):
    """One IAF flow without residual layers: x_t = c + s z_t + b1 z_{t-1} + b2 z_{t-2}."""
    student = inv.WaveNetIAF(num_flows=1, dilations=[], linear_order=2, base=base,
                             log_scale_bound=None, length=T).double()  # fmt: skip
    net = student.transform.transforms[0].net
    net.set_linear_prediction(torch.tensor(b, dtype=torch.float64), c)
    with torch.no_grad():
        net.head_bias.zero_()
        net.head_bias[1] = math.log(s)
    return student


def _analytic_kl_per_sample(a, sigma, s, b, c) -> float:
    eye = torch.eye(T, dtype=torch.float64)
    shift = torch.diag(torch.ones(T - 1, dtype=torch.float64), -1)
    mix = s * eye + b[0] * shift + b[1] * shift @ shift  # x = c + M z
    student = MultivariateNormal(torch.full((T,), c, dtype=torch.float64), mix @ mix.T)
    inv_a = torch.linalg.inv(eye - a * shift)  # x = A^{-1} sigma u
    teacher = MultivariateNormal(torch.zeros(T, dtype=torch.float64), sigma**2 * inv_a @ inv_a.T)
    return float(kl_divergence(student, teacher)) / T


def _kl(teacher, student, n: int, loss: str, **options) -> float:
    return float(sequence_distillation_losses(teacher, student, n, loss, **options)["kl"].detach())


@pytest.mark.parametrize("loss", SEQUENCE_LOSSES)
def test_estimators_agree_with_the_analytic_kl_of_linear_gaussian_sequences(loss):
    a, sigma, s, b, c = 0.8, 0.5, 0.7, (0.3, -0.2), 0.1
    teacher, student = _ar1_teacher(a, sigma), _ma2_student(s, b, c)
    exact = _analytic_kl_per_sample(a, sigma, s, b, c)
    torch.manual_seed(0)
    n, repeats = 4000, 5
    values = [_kl(teacher, student, n, loss, length=T, draws=4) for _ in range(repeats)]
    mean = sum(values) / repeats
    spread = (sum((v - mean) ** 2 for v in values) / (repeats - 1)) ** 0.5
    assert exact > 0.1  # a non-trivial pair
    assert abs(mean - exact) < max(4 * spread / repeats**0.5, 0.002), (loss, mean, exact)


def test_all_estimators_are_zero_for_a_student_equal_to_its_teacher():
    teacher = _ar1_teacher(0.0, 0.7)  # i.i.d. N(0, 0.49): the student below is the same
    student = _ma2_student(0.7, (0.0, 0.0), 0.0)
    for loss in ("mc", "closed-form"):  # exact per sample; the others sample H(S, T)
        parts = sequence_distillation_losses(teacher, student, 16, loss, length=T)
        assert abs(float(parts["kl"].detach())) < 1e-9, loss
    for loss in ("analytic-entropy", "conditional-mc"):
        parts = sequence_distillation_losses(teacher, student, 4000, loss, length=T)
        assert abs(float(parts["kl"].detach())) < 0.01, loss


def test_closed_form_is_refused_for_logistic_conditionals():
    teacher = inv.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1], base="logistic")
    student = inv.WaveNetIAF(num_flows=1, residual_channels=4, skip_channels=4, dilations=[1],
                             base="logistic")  # fmt: skip
    with pytest.raises(ValueError, match=r"no closed form.*conditional-mc"):
        inv.distill(teacher, student, steps=1, loss="closed-form", length=32, progress=False)


def test_wrong_pairs_and_options_are_refused():
    teacher = inv.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1])
    student = inv.WaveNetIAF(num_flows=1, residual_channels=4, skip_channels=4, dilations=[1])
    mlp_student = inv.IAF(4, num_layers=1, hidden_features=(8,))
    with pytest.raises(ValueError, match="WaveNetIAF student"):
        inv.distill(teacher, mlp_student, steps=1, progress=False)
    with pytest.raises(ValueError, match="WaveNetMAF or LinearPredictionAR teacher"):
        inv.distill(student, student, steps=1, length=16, progress=False)
    with pytest.raises(ValueError, match=r"unknown loss.*conditional-mc"):
        inv.distill(teacher, student, steps=1, loss="ml", length=16, progress=False)
    with pytest.raises(ValueError, match="needs real="):
        inv.distill(teacher, student, steps=1, length=16, power_loss=1.0, progress=False)
    with pytest.raises(ValueError, match="warmup"):
        inv.distill(teacher, student, steps=1, length=16, warmup=16, progress=False)


def _tiny_pair(base: str = "logistic"):
    torch.manual_seed(0)
    kernel = (0.9 ** torch.arange(100.0)).flip(0).view(1, 1, -1)  # a stationary AR(1)
    x = torch.nn.functional.conv1d(1e-2 * torch.randn(2, 1, 3000), kernel, padding=99)
    x = x[:, 0, :3000]
    teacher = inv.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1, 2],
                             base=base, linear_order=4, length=1024)  # fmt: skip
    inv.init_linear_prediction(teacher, x)
    student = inv.make_wavenet_student(teacher, "tiny", utterances=x)
    return teacher, student, x


def test_teacher_is_frozen_and_the_run_records_the_monitors():
    teacher, student, x = _tiny_pair()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    flags = [p.requires_grad for p in teacher.parameters()]
    real = x[:, :2048]
    result = inv.distill(teacher, student, steps=6, batch_size=2, length=1024,
                         loss="conditional-mc", power_loss=0.5, real=real, monitor_every=3,
                         progress=False)  # fmt: skip
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in teacher.parameters())
    assert [p.requires_grad for p in teacher.parameters()] == flags
    h = result.history
    assert len(h["kl"]) == 6 and all(math.isfinite(v) for v in h["kl"])
    assert all(math.isfinite(v) for v in h["power"])
    monitored = [i for i, v in enumerate(h["rms_ratio"]) if math.isfinite(v)]
    assert monitored == [0, 3]
    assert all(math.isfinite(h["teacher_ll_real"][i]) for i in monitored)
    assert result.config["warmup"] == teacher.receptive_field  # the first receptive field
    assert result.config["loss"] == "conditional-mc"


def test_distillation_lowers_the_kl_of_a_tiny_pair():
    teacher, student, _ = _tiny_pair("normal")
    first = _kl(teacher, student, 32, "closed-form", length=512)
    inv.distill(teacher, student, steps=60, batch_size=4, length=512, loss="closed-form",
                lr=3e-3, progress=False, log_scale_floor=-12.0, regularizer=0.1)  # fmt: skip
    torch.manual_seed(1)
    after = _kl(teacher, student, 32, "closed-form", length=512)
    assert after < first


def test_max_time_stops_a_sequence_run():
    teacher, student, _ = _tiny_pair()
    result = inv.distill(teacher, student, steps=10**6, max_time=1.0, batch_size=1, length=256,
                         progress=False)  # fmt: skip
    assert result.wall_time < 30 and 0 < len(result.history["kl"]) < 10**6


def test_lr_warmup_ramps_the_learning_rate():
    teacher, student, _ = _tiny_pair()
    result = inv.distill(teacher, student, steps=8, batch_size=1, length=128, lr=1e-3,
                         lr_warmup_steps=4, schedule="constant", progress=False)  # fmt: skip
    lr = result.history["lr"]
    assert lr[0] < lr[1] < lr[2] < lr[3] <= 1e-3 and lr[-1] == pytest.approx(1e-3)
    assert result.config["lr_warmup_steps"] == 4


def test_the_student_starts_at_the_level_and_spectrum_of_the_data():
    _, student, x = _tiny_pair()
    samples = student.sample(16, length=2048)
    ratio = float(samples.std() / x.std())
    assert 0.5 < ratio < 2.0, ratio
    fresh = inv.WaveNetIAF(**{**student.config, "linear_order": 32}).sample(4, length=2048)
    assert float(fresh.std() / x.std()) > 50  # the identity start: loud white noise


def test_power_loss_target_is_the_whole_set_spectrum():
    g = torch.Generator().manual_seed(3)
    real = torch.randn(10, 2048, generator=g) * torch.linspace(0.01, 1.0, 10)[:, None]
    target = real_spectrum(real, chunk=3)  # chunks of unequal size average like one pass
    torch.testing.assert_close(target, time_averaged_spectrum(real))
    x = torch.randn(2, 2048, generator=g)
    torch.testing.assert_close(power_loss(x, target=target), power_loss(x, real))
    # against the whole set, the spectrum's own level wins; against single quiet and loud
    # crops in turn, a relative gap rewards a level below it (the whispering bias)
    level = (time_averaged_spectrum(real).mean() / time_averaged_spectrum(x).mean()).sqrt()
    for scale in (0.5, 2.0):
        assert float(power_loss(level * x, target=target)) < float(
            power_loss(scale * level * x, target=target)
        )
    per_crop = [sum(float(power_loss(s * level * x, real[i : i + 1])) for i in range(10))
                for s in (0.5, 1.0)]  # fmt: skip
    assert per_crop[0] < per_crop[1]
    with pytest.raises(ValueError, match="exactly one"):
        power_loss(x)


def test_power_loss_is_zero_for_identical_spectra_and_positive_otherwise():
    y = torch.randn(3, 4096, generator=torch.Generator().manual_seed(0))
    assert float(power_loss(y, y)) == 0.0
    assert float(power_loss(y.flip(1), y)) < 0.01  # same spectrum, other waveform
    x = (0.3 * y).requires_grad_()
    loss = power_loss(x, y)
    loss.backward()
    assert float(loss.detach()) > 0.1 and x.grad is not None and bool(x.grad.abs().sum() > 0)
    assert time_averaged_spectrum(y).shape == (513,)
    with pytest.raises(ValueError, match="n_fft"):
        power_loss(y[:, :100], y)
