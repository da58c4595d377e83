"""Mixed precision (``precision=``): bf16 trains, the likelihood stays float32, fp16 is
CUDA-only with a gradient scaler, the block-sparse MADE product honours autocast.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import invertible as inv
from invertible.cli import app
from invertible.nn import MADE
from invertible.nn.blocksparse import BlockPlan, masked_linear
from invertible.training import TrainConfig, Trainer, fit
from invertible.training import precision as precision_module
from invertible.training.precision import (
    autocast,
    check_precision,
    cpu_bf16_speedup,
    make_scaler,
    resolve_precision,
)

BF16 = torch.bfloat16


def _vectors(features: int, n: int = 512, seed: int = 0) -> SimpleNamespace:
    """Correlated Gaussian rows: a flow learns them quickly from a poor start."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(features, features)) / np.sqrt(features)
    x = (rng.normal(size=(n + 128, features)) @ mix + 1.0).astype("float32")
    return SimpleNamespace(train=x[:n], val=x[n:])


def _waves(length: int = 64, n: int = 64) -> SimpleNamespace:
    """Noisy sinusoids of random phase, ``[N, T]``."""
    rng = np.random.default_rng(0)
    t = np.arange(length)
    phase = rng.uniform(0, 2 * np.pi, size=(n + 16, 1))
    x = 0.5 * np.sin(0.3 * t + phase) + 0.05 * rng.normal(size=(n + 16, length))
    x = x.astype("float32")
    return SimpleNamespace(train=x[:n], val=x[n:])


FLOWS = {
    "maf": lambda: inv.MAF(6, num_layers=2, hidden_features=(32, 32), batch_norm=False),
    "realnvp": lambda: inv.RealNVP(6, num_layers=4, hidden_features=(32,), batch_norm=True),
    "nice": lambda: inv.NICE(6, num_layers=4, hidden_features=(32,)),
    "wavenet": lambda: inv.WaveNetMAF(residual_channels=4, skip_channels=4, dilations=[1, 2]),
}


def _data(case: str) -> SimpleNamespace:
    return _waves() if case == "wavenet" else _vectors(6)


@pytest.mark.parametrize("case", sorted(FLOWS))
def test_bf16_training_decreases_the_loss(case: str) -> None:
    torch.manual_seed(0)
    flow = FLOWS[case]()
    steps = 60
    result = fit(
        flow, _data(case), steps=steps, batch_size=64, lr=3e-3, eval_every=20, patience=None,
        precision="bf16", progress=False,
    )  # fmt: skip
    losses = [r["train_loss"] for r in result.history if r.get("event") == "eval"]
    assert result.steps == steps and result.skipped_steps == 0
    assert losses[-1] < losses[0], losses
    assert result.precision == "bf16"
    assert np.isfinite(result.final_val_log_prob)


@pytest.mark.parametrize("case", sorted(FLOWS))
def test_log_dets_and_log_prob_stay_fp32_under_autocast(case: str) -> None:
    torch.manual_seed(0)
    flow = FLOWS[case]().train()
    x = torch.as_tensor(_data(case).train[:512])
    with torch.autocast("cpu", dtype=BF16):
        z, ladj = flow.transform.inverse(x)
        log_prob = flow.log_prob(x)
    assert z.dtype == ladj.dtype == log_prob.dtype == torch.float32


def test_conditioner_outputs_are_cast_before_the_soft_clamp() -> None:
    """MADE, the coupling MLP and the WaveNet return their input's dtype under autocast."""
    made = MADE(6, hidden_features=(64, 64))
    wavenet = FLOWS["wavenet"]().transform.net
    with torch.autocast("cpu", dtype=BF16):
        assert made(torch.randn(512, 6)).dtype == torch.float32
        assert wavenet(torch.randn(4, 32)).dtype == torch.float32


def _block_case(batch: int = 512) -> tuple[torch.Tensor, ...]:
    torch.manual_seed(0)
    mask = torch.ones(256, 256, dtype=torch.bool).tril()
    x = torch.randn(batch, 256)
    weight = torch.randn(256, 256) / 16
    bias = torch.randn(256)
    return x, weight, bias, mask


def test_block_sparse_product_runs_in_the_autocast_dtype() -> None:
    x, weight, bias, mask = _block_case()
    plan = BlockPlan(mask, 4)
    grads = {}
    for name, use_plan, precision in (("dense", None, "fp32"), ("blocks", plan, "bf16")):
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias)]
        with autocast(precision, torch.device("cpu")):
            out = masked_linear(leaves[0], leaves[1], leaves[2], mask, use_plan)
        assert out.dtype == (BF16 if use_plan is not None else torch.float32)
        (out.float().square().sum() / x.shape[0]).backward()
        grads[name] = [t.grad for t in leaves]
        for leaf in leaves:
            assert leaf.grad.dtype == leaf.dtype == torch.float32
    for got, expected in zip(grads["blocks"], grads["dense"], strict=True):
        scale = expected.abs().max()
        assert (got - expected).abs().max() / scale < 0.03  # bf16: 8-bit mantissa
    assert torch.all(grads["blocks"][1][~mask] == 0), "a masked-out weight got a gradient"


@pytest.mark.parametrize("groups", [None, 4])
def test_made_under_autocast_on_the_block_path(groups: int | None) -> None:
    """Automatic plans run bf16 products of this size dense (faster); forced blocks too
    run in bf16 and agree."""
    made = MADE(63, hidden_features=(512, 512))
    made.block_groups = groups
    assert made._plan(1, 512) is not None, "the fp32 block path does not run at this size"
    blocks = made._plan(1, 512, BF16) is not None
    assert blocks == (groups is not None)
    with torch.no_grad():
        made.layers[-1].weight.normal_(std=0.05)
    x = torch.randn(512, 63)
    reference = made(x)
    with torch.autocast("cpu", dtype=BF16):
        mixed = made(x)
    assert mixed.dtype == torch.float32
    assert not torch.equal(mixed, reference), "autocast was ignored"
    assert (mixed - reference).abs().max() < 0.05 * reference.abs().max() + 1e-3


def test_fp16_is_refused_off_cuda() -> None:
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        check_precision("fp16", "cpu")
    flow = FLOWS["maf"]()
    with pytest.raises(ValueError, match=r"'fp16' needs a CUDA device.*bf16"):
        fit(flow, _vectors(6), steps=1, precision="fp16", progress=False)


def test_unknown_precision_is_refused_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="precision must be one of 'auto', 'fp32', 'bf16', 'fp16'"):
        TrainConfig(precision="half")
    with pytest.raises(ValueError, match="precision must be one of"):
        fit(FLOWS["nice"](), _vectors(6), steps=1, precision="bfloat16", progress=False)
    assert make_scaler("fp32", torch.device("cpu")) is None


#: the hardware probe itself (the suite's conftest stubs the module attribute to "not fast")
REAL_FAST_BF16 = precision_module.fast_bf16


@pytest.mark.parametrize("fast", [True, False])
def test_auto_trains_in_bf16_only_where_bf16_is_fast(fast: bool, monkeypatch) -> None:
    """The default ``"auto"`` resolves by the hardware (here: a stubbed probe), and the
    result and the distillation config record what ran, not "auto"."""
    monkeypatch.setattr(precision_module, "fast_bf16", lambda device: fast)
    expected = "bf16" if fast else "fp32"
    assert resolve_precision("auto", "cpu") == expected
    assert resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice is kept
    torch.manual_seed(0)
    result = fit(FLOWS["realnvp"](), _vectors(6), steps=3, batch_size=32, progress=False)
    assert result.precision == expected
    teacher = inv.MAF(4, num_layers=1, hidden_features=(8,), batch_norm=False)
    student = inv.IAF(4, num_layers=1, hidden_features=(8,))
    distilled = inv.distill(teacher, student, steps=2, batch_size=16, progress=False)
    assert distilled.config["precision"] == expected


def test_cpu_probe_measures_a_ratio_and_caches_it() -> None:
    ratio = cpu_bf16_speedup(torch.get_num_threads())
    assert math.isfinite(ratio) and ratio > 0
    assert cpu_bf16_speedup(torch.get_num_threads()) == ratio  # measured once per process
    native = precision_module.cpu_bf16_flags()
    fast = ratio >= precision_module.AUTO_BF16_SPEEDUP if native is None else native
    assert REAL_FAST_BF16("cpu") == fast
    assert REAL_FAST_BF16("meta") is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 amx_tile amx_bf16\n", True),
        ("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n", False),
        ("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\n", None),  # ARM: the probe decides
    ],
)
def test_cpu_flags_decide_native_bf16_on_linux_x86(
    text: str, expected: bool | None, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(precision_module.platform, "system", lambda: "Linux")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(text)
    assert precision_module.cpu_bf16_flags(str(cpuinfo)) is expected
    assert precision_module.cpu_bf16_flags(str(tmp_path / "missing")) is None


def test_a_resumed_run_keeps_the_precision_auto_chose_at_its_start(
    tmp_path: Path, monkeypatch
) -> None:
    data = _vectors(6)
    monkeypatch.setattr(precision_module, "fast_bf16", lambda device: True)
    torch.manual_seed(0)
    first = fit(FLOWS["realnvp"](), data, steps=4, eval_every=2, out_dir=tmp_path, progress=False)
    assert first.precision == "bf16"
    monkeypatch.setattr(precision_module, "fast_bf16", lambda device: False)
    torch.manual_seed(0)
    resumed = fit(
        FLOWS["realnvp"](), data, steps=6, eval_every=2, out_dir=tmp_path, resume=True,
        progress=False,
    )  # fmt: skip
    assert resumed.steps == 6 and resumed.precision == "bf16"
    torch.manual_seed(0)
    fresh = fit(FLOWS["realnvp"](), data, steps=2, progress=False)
    assert fresh.precision == "fp32"  # a new run resolves "auto" anew


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_auto_on_cuda_follows_the_compute_capability() -> None:
    ampere = torch.cuda.get_device_capability() >= (8, 0)
    assert resolve_precision("auto", "cuda") == ("bf16" if ampere else "fp32")


def test_evaluation_after_bf16_training_is_fp32() -> None:
    torch.manual_seed(0)
    data = _vectors(6)
    flow = FLOWS["realnvp"]()
    trainer = Trainer(flow, data, TrainConfig(steps=20, batch_size=64, precision="bf16"),
                      progress=False)  # fmt: skip
    result = trainer.run()
    val = torch.as_tensor(data.val)
    with torch.no_grad():
        exact = float(flow.log_prob(val).double().mean())
    with torch.autocast("cpu", dtype=BF16):  # even inside a caller's autocast region
        inside = trainer.evaluate()
    assert inside == pytest.approx(exact, abs=1e-9)
    assert result.final_val_log_prob == pytest.approx(exact, abs=1e-9)
    assert trainer.config.precision == "bf16" and trainer.scaler is None


def test_distill_in_bf16_records_the_precision() -> None:
    torch.manual_seed(0)
    teacher = inv.MAF(4, num_layers=2, hidden_features=(16,))
    student = inv.IAF(4, num_layers=2, hidden_features=(16,))
    result = inv.distill(teacher, student, steps=20, batch_size=32, loss="analytic-entropy",
                         precision="bf16", progress=False)  # fmt: skip
    assert result.config["precision"] == "bf16"
    assert np.isfinite(result.history["kl"]).all()
    with pytest.raises(ValueError, match="'fp16' needs a CUDA device"):
        inv.distill(teacher, student, steps=1, precision="fp16", progress=False)


def _cli_args(out: Path, precision: str) -> list[str]:
    return ["train", "--model", "maf", "--data", "moons", "--steps", "30", "--batch-size", "64",
            "--size", "tiny", "--option", "n_train=500", "--option", "n_val=100", "--option",
            "n_test=100", "--no-progress", "--precision", precision, "--out", str(out)]  # fmt: skip


def test_cli_train_bf16(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    out = tmp_path / "run"
    result = CliRunner().invoke(app, _cli_args(out, "bf16"))
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["training"]["precision"] == "bf16"
    assert "bf16" in (out / "model" / "config.json").read_text()  # the checkpoint's training info
    refused = CliRunner().invoke(app, _cli_args(tmp_path / "b", "fp16"))
    assert refused.exit_code == 1 and "needs a CUDA device" in refused.output
    assert not (tmp_path / "b").exists()
    with torch.autocast("cpu", dtype=BF16):  # evaluate is float32 inside autocast too
        test = inv.evaluate(inv.load(out / "model"), inv.data.load_dataset("moons", n_test=100))
    assert isinstance(test.log_prob, float) and np.isfinite(test.log_prob)
    distill = ["distill", "--teacher", str(out / "model"), "--out", str(tmp_path / "d"),
               "--steps", "5", "--precision", "fp16"]  # fmt: skip
    refused = CliRunner().invoke(app, distill)
    assert refused.exit_code == 1 and "needs a CUDA device" in refused.output


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with a GradScaler needs CUDA")
def test_fp16_with_grad_scaler_on_cuda() -> None:
    torch.manual_seed(0)
    flow = inv.MAF(16, num_layers=3, hidden_features=(256, 256), batch_norm=False).cuda()
    data = _vectors(16, n=4096)
    config = TrainConfig(steps=80, batch_size=512, lr=1e-3, eval_every=40, patience=None,
                         precision="fp16")  # fmt: skip
    trainer = Trainer(flow, data, config, progress=False)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    result = trainer.run()
    losses = [r["train_loss"] for r in result.history if r.get("event") == "eval"]
    assert losses[-1] < losses[0], losses
    assert result.skipped_steps < 10  # the scaler's first overflows only
    x = torch.as_tensor(data.val, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        assert flow.log_prob(x).dtype == torch.float32
    assert 0 < trainer.scaler.get_scale() <= 2.0**16


def test_ddp_strategy_trains_in_bf16() -> None:
    """The data-parallel step takes the same autocast path (one gloo process here)."""
    import torch.distributed as dist

    from invertible.training.ddp import DDPStrategy

    # an in-process store: no sockets, nothing to wait for
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        config = TrainConfig(steps=40, batch_size=64, lr=3e-3, eval_every=20, patience=None,
                             precision="bf16")  # fmt: skip
        trainer = Trainer(FLOWS["maf"](), _vectors(6), config, progress=False,
                          strategy=DDPStrategy())  # fmt: skip
        result = trainer.run()
    finally:
        dist.destroy_process_group()
    losses = [r["train_loss"] for r in result.history if r.get("event") == "eval"]
    assert losses[-1] < losses[0] and result.skipped_steps == 0
    assert result.precision == "bf16"


def test_scaler_overflows_lower_the_scale_not_the_learning_rate() -> None:
    """Overflowing scaled gradients (fp16's first steps) are skipped and lower the scale;
    unlike other non-finite steps they never restore the last state and halve the lr."""
    torch.manual_seed(0)
    config = TrainConfig(steps=15, batch_size=64, eval_every=15, patience=None)
    data = _vectors(6)
    data.train, data.val = 1e3 * data.train, 1e3 * data.val  # gradients of about 1e6
    trainer = Trainer(FLOWS["nice"](), data, config, progress=False)
    # a CPU scaler at a scale where every scaled gradient overflows float32
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)
    with pytest.warns(inv.training.TrainingWarning, match="steps were skipped"):
        result = trainer.run()
    # more than max_bad_steps = 10 in a row, yet no restore-and-halve
    assert result.skipped_steps > 10 and result.lr_halvings == 0
    assert trainer.scaler.get_scale() <= 2.0 ** (127 - result.skipped_steps)
