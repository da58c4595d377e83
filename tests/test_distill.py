"""Probability density distillation: known answers, a frozen teacher, refusals, a 2-D run."""

from __future__ import annotations

import math

import pytest
import torch

import invertible
from invertible.distillation import (
    LOSSES,
    check_closed_form,
    distill,
    distillation_losses,
    evaluate_student,
    frozen,
    gaussian_kl,
    gradient_variance,
    init_data_scale,
    make_student,
    median_ratio,
)
from invertible.distillation.losses import ContrastTarget, anchor_term
from invertible.evaluation import mmd_test

BOUND = 5.0  # the presets' default log_scale_bound: alpha = BOUND * tanh(raw / BOUND)


def _raw(alpha: torch.Tensor) -> torch.Tensor:
    return BOUND * torch.atanh(alpha / BOUND)


def _actnorm_gaussian(shift: torch.Tensor, log_scale: torch.Tensor) -> invertible.Flow:
    layer = invertible.ActNorm(shift.numel())
    with torch.no_grad():
        layer.shift.copy_(shift)
        layer.log_scale.copy_(log_scale)
        layer.initialized.fill_(True)
    return invertible.Flow(layer, invertible.StandardNormal(shift.numel())).eval()


def _constant_ar(layer: torch.nn.Module, shift: torch.Tensor, alpha: torch.Tensor) -> None:
    """Make an affine AR layer input-independent with x = u·e^α + μ: zero last MADE weight,
    bias = (b, α_raw) with b = μ (shift in data units) or μ·e^(−α) (in latent units)."""
    last = layer.made.layers[-1]
    if layer.elementwise.shift == "latent":
        shift = shift * (-alpha).exp()
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.stack([shift, _raw(alpha)], dim=1).flatten())


def _estimate(teacher, student, loss, n=4000, batches=25, seed=0):
    """Mean KL estimate and its standard error over independent batches."""
    torch.manual_seed(seed)
    with torch.no_grad(), invertible.validation(False):
        values = torch.tensor(
            [float(distillation_losses(teacher, student, n, loss)["kl"]) for _ in range(batches)],
            dtype=torch.float64,
        )
    return float(values.mean()), float(values.std() / math.sqrt(batches))


def _diag_kl(mu_s, ls_s, mu_t, ls_t) -> float:
    return float(gaussian_kl(mu_s, ls_s, mu_t, ls_t).sum())


# ----------------------------------------------------------------- known answers


def test_known_answer_diagonal_gaussians_actnorm():
    g = torch.Generator().manual_seed(0)
    mu_t, ls_t = torch.randn(5, generator=g), 0.5 * torch.randn(5, generator=g)
    mu_s, ls_s = torch.randn(5, generator=g), 0.5 * torch.randn(5, generator=g)
    teacher, student = _actnorm_gaussian(mu_t, ls_t), _actnorm_gaussian(mu_s, ls_s)
    expected = _diag_kl(mu_s, ls_s, mu_t, ls_t)
    for loss in ("mc", "analytic-entropy"):
        mean, se = _estimate(teacher, student, loss)
        assert abs(mean - expected) < 4 * se + 1e-4, (loss, mean, se, expected)
    with pytest.raises(ValueError, match="closed-form"):
        distillation_losses(teacher, student, 8, "closed-form")


def test_student_equal_to_teacher_gives_zero():
    g = torch.Generator().manual_seed(1)
    mu, ls = torch.randn(3, generator=g), 0.3 * torch.randn(3, generator=g)
    teacher, student = _actnorm_gaussian(mu, ls), _actnorm_gaussian(mu, ls)
    with torch.no_grad():
        parts = distillation_losses(teacher, student, 20000, "mc")
    assert abs(float(parts["kl"])) < 1e-5  # per-sample log S(x) = log T(x) up to rounding
    mean, se = _estimate(teacher, student, "analytic-entropy")
    assert abs(mean) < 4 * se + 1e-4


def _ar_pair(shared_ordering=(2, 0, 3, 1)):
    D = len(shared_ordering)
    g = torch.Generator().manual_seed(2)
    teacher = invertible.GaussianAR(D, hidden_features=(8,), ordering=list(shared_ordering))
    student = make_student(teacher, num_layers=2, hidden_features=(8,))
    mu_t, a_t = torch.randn(D, generator=g), 0.5 * torch.randn(D, generator=g)
    mu1, a1 = torch.randn(D, generator=g), 0.4 * torch.randn(D, generator=g)
    mu2, a2 = torch.randn(D, generator=g), 0.4 * torch.randn(D, generator=g)
    _constant_ar(teacher.transform, mu_t, a_t)
    _constant_ar(student.transform[0], mu1, a1)
    _constant_ar(student.transform[1], mu2, a2)
    # Student: x = e^{a2}(e^{a1} u + mu1) + mu2 = N(e^{a2} mu1 + mu2, e^{2(a1 + a2)}).
    mu_s, ls_s = a2.exp() * mu1 + mu2, a1 + a2
    return teacher.eval(), student.eval(), (mu_s, ls_s, mu_t, a_t)


def test_known_answer_autoregressive_gaussians_all_estimators():
    teacher, student, params = _ar_pair()
    expected = _diag_kl(*params)
    for loss in LOSSES:
        mean, se = _estimate(teacher, student, loss, batches=10)
        assert abs(mean - expected) < 4 * se + 1e-4, (loss, mean, se, expected)
    # With input-independent conditionals the closed form has no Monte-Carlo error at all.
    with torch.no_grad():
        closed = float(distillation_losses(teacher, student, 7, "closed-form")["kl"])
    assert closed == pytest.approx(expected, abs=1e-5)


def test_closed_form_exactly_zero_when_student_matches_teacher():
    teacher, student, (_, _, mu_t, a_t) = _ar_pair()
    _constant_ar(student.transform[0], mu_t, a_t)
    _constant_ar(student.transform[1], torch.zeros_like(mu_t), torch.zeros_like(a_t))
    with torch.no_grad():
        parts = distillation_losses(teacher, student, 100, "closed-form")
    assert abs(float(parts["kl"])) < 1e-6


def test_closed_form_matches_monte_carlo_with_input_dependent_conditionals():
    torch.manual_seed(0)
    teacher = invertible.GaussianAR(4, hidden_features=(16,), ordering=[1, 3, 0, 2])
    student = make_student(teacher, num_layers=3, hidden_features=(16,))
    for flow in (teacher, student):
        for p in flow.parameters():
            torch.nn.init.normal_(p, std=0.3)
    teacher.eval(), student.eval()
    mc, se_mc = _estimate(teacher, student, "mc", batches=10)
    cf, se_cf = _estimate(teacher, student, "closed-form", batches=10)
    assert abs(mc - cf) < 4 * math.hypot(se_mc, se_cf), (mc, se_mc, cf, se_cf)


# ------------------------------------------------------------------ frozen teacher


def test_teacher_bit_identical_and_flags_restored():
    torch.manual_seed(0)
    teacher = invertible.MAF(2, num_layers=2, hidden_features=(8,), batch_norm=True)
    for p in teacher.parameters():
        torch.nn.init.normal_(p, std=0.2)
    with torch.no_grad():  # MADE zeroes its masked weight entries in place on first use
        teacher.eval().log_prob(torch.randn(4, 2))
    frozen_by_user = next(iter(teacher.parameters()))
    frozen_by_user.requires_grad_(False)
    teacher.train()
    flags = [p.requires_grad for p in teacher.parameters()]
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = invertible.IAF(2, num_layers=2, hidden_features=(8,))
    for loss in ("mc", "analytic-entropy"):
        distill(teacher, student, steps=5, batch_size=32, loss=loss, progress=False)
    assert [p.requires_grad for p in teacher.parameters()] == flags
    assert all(m.training for m in teacher.modules())
    assert all(p.grad is None for p in teacher.parameters())
    for k, v in teacher.state_dict().items():  # parameters and batch-norm statistics
        assert torch.equal(v, state[k]), k


def test_frozen_restores_on_error():
    net = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError), frozen(net):
        raise RuntimeError
    assert net.weight.requires_grad and net.training


# ------------------------------------------------------------------------ refusals


def test_closed_form_refusals_name_the_condition():
    deep = invertible.MAF(3, num_layers=2, hidden_features=(8,), batch_norm=False)
    with pytest.raises(ValueError, match=r"single Gaussian autoregressive layer.*analytic"):
        check_closed_form(deep, make_student(deep, 2, (8,)))
    teacher = invertible.GaussianAR(3, hidden_features=(8,))
    mismatched = invertible.IAF(3, num_layers=2, hidden_features=(8,), ordering="alternate")
    with pytest.raises(ValueError, match="does not share the teacher's ordering"):
        check_closed_form(teacher, mismatched)
    gated = invertible.IAF(3, num_layers=1, hidden_features=(8,), gated=True, ordering="natural")
    with pytest.raises(ValueError, match="plain Affine"):
        check_closed_form(teacher, gated)
    maf_student = invertible.MAF(3, num_layers=1, hidden_features=(8,), actnorm=False)
    with pytest.raises(ValueError, match="mode='iaf'"):
        check_closed_form(teacher, maf_student)
    with pytest.raises(ValueError, match=r"single Gaussian|AffineAutoregressive"):
        check_closed_form(_actnorm_gaussian(torch.zeros(3), torch.zeros(3)), gated)
    one_layer_maf = invertible.MAF(
        3, num_layers=1, hidden_features=(8,), ordering="natural", actnorm=False
    )
    check_closed_form(one_layer_maf, make_student(one_layer_maf, 2, (8,)))  # accepted
    with_actnorm = invertible.MAF(3, num_layers=1, hidden_features=(8,), ordering="natural")
    with pytest.raises(ValueError, match=r"actnorm=False.*ActNorm"):
        check_closed_form(with_actnorm, make_student(with_actnorm, 2, (8,)))
    with pytest.raises(ValueError, match="loss"):
        distill(teacher, make_student(teacher, 1, (8,)), steps=1, loss="kl", progress=False)


def test_gradient_variance_of_the_three_estimators():
    teacher, student, _ = _ar_pair()
    out = {
        loss: gradient_variance(teacher, student, loss, batch_size=16, num_batches=8)
        for loss in LOSSES
    }
    # Same draws: the analytic entropy changes the value of the estimate, not its gradient
    # (d log p_Z(z) / d theta = 0), so both have the same gradient and variance.
    assert out["mc"]["trace_var"] == pytest.approx(out["analytic-entropy"]["trace_var"])
    assert out["analytic-entropy"]["kl_std"] < out["mc"]["kl_std"]
    # Input-independent conditionals: the closed-form value has no Monte-Carlo error and
    # its gradient is less noisy.
    assert out["closed-form"]["kl_std"] < 1e-5
    assert out["closed-form"]["trace_var"] < out["mc"]["trace_var"]


# ------------------------------------------------------------- end-to-end in 2-D


def _banana(n: int, g: torch.Generator) -> torch.Tensor:
    x1 = torch.randn(n, generator=g)
    x2 = 0.25 * x1.square() - 0.25 + 0.5 * torch.randn(n, generator=g)
    return torch.stack([x1, x2], dim=1)


def test_distilled_student_passes_two_sample_test_against_teacher():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = _banana(4000, g)
    teacher = invertible.MAF(2, num_layers=2, hidden_features=(32, 32), batch_norm=False)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    for _ in range(150):
        batch = data[torch.randint(0, data.shape[0], (256,), generator=g)]
        loss = -teacher.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    teacher.eval()
    student = invertible.IAF(2, num_layers=2, hidden_features=(32, 32))
    torch.manual_seed(1)
    with torch.no_grad():
        untrained = student.sample(400)
    result = distill(teacher, student, steps=300, batch_size=256, lr=5e-3, progress=False, seed=0)
    assert result.final("kl") < 0.1
    torch.manual_seed(2)
    with torch.no_grad():
        reference, distilled = teacher.sample(400), student.sample(400)
    _, p_distilled = mmd_test(distilled, reference, permutations=200, seed=0)
    _, p_untrained = mmd_test(untrained, reference, permutations=200, seed=0)
    assert p_untrained < 0.01  # the test has power: the untrained student fails it
    assert p_distilled > 0.05


def test_median_ratio_matches_the_delta_method_standard_error() -> None:
    g = torch.Generator().manual_seed(0)
    n = 40_000
    a, b = 3 + torch.randn(n, generator=g), 2 + torch.randn(n, generator=g)
    ratio, se = median_ratio(a, b)
    assert ratio == pytest.approx(float(a.median() / b.median()))
    # median of N(m, 1): s.e. sqrt(pi / 2) / sqrt(n); the ratio's by the delta method
    se_median = math.sqrt(math.pi / 2 / n)
    expected = 1.5 * math.hypot(se_median / 3, se_median / 2)
    assert se == pytest.approx(expected, rel=0.25)
    _, se_small = median_ratio(a[:400], b[:400])
    assert se_small / se == pytest.approx(10, rel=0.4)


def test_evaluate_student_blocks_share_one_kernel_and_fall_back_to_one_block() -> None:
    torch.manual_seed(0)
    teacher = invertible.MAF(3, num_layers=2, hidden_features=(16, 16), batch_norm=False).eval()
    student = invertible.IAF(3, num_layers=2, hidden_features=(16, 16)).eval()
    with torch.no_grad():
        test = teacher.sample(500)
    options = {"n_samples": 600, "throughput_batch": 50, "repeats": 1, "mmd_rows": 100}
    m = evaluate_student(teacher, student, test, mmd_blocks=4, **options)
    assert m["teacher_ll_ratio"] == pytest.approx(
        m["teacher_ll_student_samples_median"] / m["teacher_ll_teacher_samples_median"]
    )
    assert m["teacher_ll_ratio_se"] > 0
    assert m["mmd_student_se"] > 0 and m["mmd_teacher_se"] > 0
    # the teacher's own samples against test rows it drew itself: MMD² near zero
    assert abs(m["mmd_teacher"]) < 3 * m["mmd_teacher_se"] + 1e-3
    one = evaluate_student(teacher, student, test[:150], mmd_blocks=4, **options)
    assert math.isnan(one["mmd_student_se"]) and 0 < one["mmd_student_p"] <= 1


def test_anchor_every_adds_the_data_term_on_every_kth_step_only() -> None:
    torch.manual_seed(0)
    teacher = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
    student = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
    data = torch.randn(100, 2)
    result = invertible.distill(
        teacher, student, steps=6, data_anchor=0.5, data=data, anchor_every=3, progress=False
    )
    anchored = [not math.isnan(v) for v in result.history["anchor"]]
    assert anchored == [True, False, False, True, False, False]
    assert result.config["anchor_every"] == 3


# --------------------------------------------------------- student start, teacher-latent term


@pytest.mark.parametrize("robust", [False, True])
def test_init_data_scale_starts_the_student_at_the_data_gaussian(robust: bool) -> None:
    torch.manual_seed(0)
    mean, std = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.05, 0.2, 3.0])
    data = torch.randn(4000, 3) * std + mean
    student = invertible.IAF(3, num_layers=2, hidden_features=(8,))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    assert init_data_scale(student, data, robust=robust) is student
    x = student.sample(20000)
    assert ((x.mean(0) - data.mean(0)).abs() < 0.05 * std).all()  # within 0.05 σ
    assert torch.allclose(x.std(0), data.std(0), rtol=0.05)
    changed = [k for k, v in student.state_dict().items() if not torch.equal(v, before[k])]
    assert changed == ["transform.transforms.1.made.layers.1.bias"]  # output of the layer next to x


def test_init_data_scale_refuses_a_gated_student() -> None:
    with pytest.raises(ValueError, match="Affine map"):
        init_data_scale(invertible.IAF(2, num_layers=1, hidden_features=(4,), gated=True),
                        torch.randn(10, 2))  # fmt: skip


def test_teacher_latent_term_is_zero_at_the_teacher_and_trains_towards_it() -> None:
    torch.manual_seed(0)
    teacher = _actnorm_gaussian(torch.tensor([1.0, -1.0]), torch.tensor([-1.0, 0.5]))
    data = teacher.sample(256)
    at_teacher = anchor_term(teacher, data, "teacher-latent", 64, None, teacher).detach()
    assert float(at_teacher) == pytest.approx(0.0, abs=1e-10)
    with pytest.raises(ValueError, match="needs the teacher"):
        anchor_term(teacher, data, "teacher-latent", 64, None)
    student = invertible.Flow(invertible.ActNorm(2), invertible.StandardNormal(2))
    result = invertible.distill(
        teacher, student, steps=300, lr=0.05, data_anchor=1.0, data=data,
        anchor="teacher-latent", progress=False,
    )  # fmt: skip
    assert result.history["anchor"][-1] < 0.01 * result.history["anchor"][0]
    assert result.final("kl") < 0.05


def test_contrast_target_quantiles_and_gap() -> None:
    torch.manual_seed(0)
    data = torch.randn(20000, 6)
    target = ContrastTarget(data)
    assert float(target.gap(torch.randn(2000, 6))) < 5e-3  # same distribution
    scaled = float(target.gap(0.5 * data + 0.5 * target.center.float()))
    assert scaled == pytest.approx(math.log(2) ** 2, rel=1e-2)  # (ln g)² for a gain g
    # the quantiles interpolate the order statistics at (k - 1/2)/n
    q = target.quantiles(4)
    expected = torch.quantile(target.sorted, torch.tensor([0.125, 0.375, 0.625, 0.875]).double())
    assert torch.allclose(q, expected)
    x = torch.randn(64, 6, requires_grad=True)
    target.gap(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="at least 2"):
        ContrastTarget(data[:1])


def test_contrast_term_spreads_the_student_over_a_scale_mixture() -> None:
    # Data: a scale mixture (half at scale 0.1, half at 3); the student is one ActNorm, so
    # no single scale matches it; the term pulls the student's log-norm distribution to the
    # data's median contrast band, and the anchor history falls.
    torch.manual_seed(0)
    scales = torch.where(torch.rand(4000, 1) < 0.5, 0.1, 3.0)
    data = torch.randn(4000, 4) * scales
    teacher = invertible.Flow(invertible.ActNorm(4), invertible.StandardNormal(4))
    student = invertible.Flow(invertible.ActNorm(4), invertible.StandardNormal(4))
    with torch.no_grad():
        student.transform.log_scale.fill_(math.log(20.0))
    result = invertible.distill(
        teacher, student, steps=200, lr=0.05, data_anchor=10.0, data=data, anchor="contrast",
        progress=False,
    )  # fmt: skip
    assert result.config["anchor"] == "contrast"
    assert result.history["anchor"][-1] < 0.2 * result.history["anchor"][0]
    with pytest.raises(ValueError, match="unknown data term 'radial'"):
        invertible.distill(teacher, student, steps=1, data_anchor=1.0, data=data,
                           anchor="radial", progress=False)  # fmt: skip
