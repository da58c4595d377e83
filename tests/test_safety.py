"""Nothing lost, nothing silent: existing files and runs are never replaced without
``--overwrite``, bad options are refused, divergence is reported, ordinary mistakes end in
one clear ``error:`` line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import invertible as inv
from invertible.cli import app
from invertible.files import atomic_directory, recover_directory
from invertible.training import RunExistsError

runner = CliRunner()
SMALL = ["--option", "n_train=600", "--option", "n_val=100", "--option", "n_test=100"]
TINY = ["--size", "tiny", "--no-progress", "--batch-size", "128", *SMALL]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def assert_clean_error(result, pattern: str) -> None:
    """Exit status 1, an ``error:`` line matching ``pattern``, no traceback."""
    text = result.output
    assert result.exit_code == 1, text
    assert result.exception is None or isinstance(result.exception, SystemExit), text
    assert "Traceback" not in text, text
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert errors, text
    assert re.search(pattern, errors[0]), errors[0]


def _data(n: int = 512, d: int = 2, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    return SimpleNamespace(
        train=rng.normal(size=(n, d)).astype("float32"),
        val=rng.normal(size=(n // 4, d)).astype("float32"),
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("safety") / "run"
    result = invoke("train", "--model", "maf", "--data", "moons", "--steps", "40", "--out", out,
                    *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


# --------------------------------------------------------------------------- data lost


def test_sample_never_replaces_a_user_file(run: Path, tmp_path: Path) -> None:
    mine = tmp_path / "my_data.npy"
    np.save(mine, np.arange(1200.0).reshape(600, 2))
    before = mine.read_bytes()
    assert_clean_error(invoke("sample", run / "model", "-n", 5, "--out", mine), "already exists")
    assert mine.read_bytes() == before
    result = invoke("sample", run / "model", "-n", 5, "--out", mine, "--overwrite")
    assert result.exit_code == 0, result.output
    assert np.load(mine).shape == (5, 2)
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    assert_clean_error(invoke("sample", run / "model", "-n", 5, "--out", notes), "already exists")
    assert notes.read_text() == "keep me"
    other = tmp_path / "other.txt"
    assert_clean_error(invoke("sample", run / "model", "-n", 5, "--out", other), r"\.npy file")
    assert not other.exists()


def test_output_files_get_the_users_permissions(run: Path, tmp_path: Path) -> None:
    mask = os.umask(0o022)
    try:
        out = tmp_path / "s.npy"
        assert invoke("sample", run / "model", "-n", 3, "--out", out).exit_code == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "x").write_text("x")
        assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    finally:
        os.umask(mask)


def test_relaunch_without_resume_keeps_the_saved_state(run: Path, tmp_path: Path) -> None:
    interrupted = tmp_path / "interrupted"
    shutil.copytree(run, interrupted)
    shutil.rmtree(interrupted / "model")  # as if killed before the end
    state = (interrupted / "training" / "training_state.json").read_bytes()
    result = invoke("train", "--model", "maf", "--data", "moons", "--steps", "10", "--out",
                    interrupted, *TINY)  # fmt: skip
    assert_clean_error(result, "already holds an interrupted run.*--resume")
    assert (interrupted / "training" / "training_state.json").read_bytes() == state


def test_fit_refuses_an_existing_run_unless_asked(tmp_path: Path) -> None:
    data = _data()
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    inv.fit(flow, data, steps=10, batch_size=64, progress=False, out_dir=tmp_path)
    before = (tmp_path / "model" / "model.safetensors").read_bytes()
    with pytest.raises(RunExistsError, match="already holds a run"):
        inv.fit(flow, data, steps=10, batch_size=64, progress=False, out_dir=tmp_path)
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == before
    result = inv.fit(flow, data, steps=10, batch_size=64, progress=False, out_dir=tmp_path,
                     overwrite=True)  # fmt: skip
    assert result.steps == 10


def test_distill_and_lecture_refuse_a_previous_run(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    args = ("distill", "--teacher", run / "model", "--out", out, "--steps", 5, "--layers", 1,
            "--hidden", 8, "--batch-size", 32, "--loss", "mc", "--no-progress")  # fmt: skip
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    before = (out / "model" / "model.safetensors").read_bytes()
    assert_clean_error(invoke(*args), "already holds a distilled model.*--overwrite")
    assert (out / "model" / "model.safetensors").read_bytes() == before
    assert invoke(*args, "--overwrite").exit_code == 0
    lecture = tmp_path / "lecture"
    lecture.mkdir()
    (lecture / "report.md").write_text("my report")
    assert_clean_error(invoke("lecture", "--out", lecture, "--tiny"), "already holds a lecture")
    assert (lecture / "report.md").read_text() == "my report"


def test_lecture_checks_model_names_before_training(tmp_path: Path) -> None:
    result = invoke("lecture", "--out", tmp_path / "lec", "--tiny", "--models", "nice,foo")
    assert_clean_error(result, "foo")
    assert not (tmp_path / "lec" / "nice").exists()


def test_resume_after_a_kill_between_the_swap_renames(tmp_path: Path) -> None:
    data = _data()
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    config = inv.training.TrainConfig(steps=60, batch_size=64, eval_every=20)
    trainer = inv.training.Trainer(flow, data, config, out_dir=tmp_path, progress=False)
    trainer.run(until=40)
    # SIGKILL after "old → .previous", before "new → training": no training/ at all
    os.replace(tmp_path / "training", tmp_path / ".training.previous-abc")
    (tmp_path / ".training.tmp-def").mkdir()
    flow2 = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    trainer = inv.training.Trainer(flow2, data, config, out_dir=tmp_path, progress=False)
    trainer._start(resume=True)
    assert trainer.step == 40
    assert (tmp_path / "training" / "config.json").is_file()
    assert not list(tmp_path.glob(".training.*"))


def test_recover_directory_removes_leftovers(tmp_path: Path) -> None:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / ".ckpt.previous-1").mkdir()
    (tmp_path / ".ckpt.tmp-2").mkdir()
    assert recover_directory(tmp_path / "ckpt") is False
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


# --------------------------------------------------------------------------- silently wrong


@pytest.mark.parametrize("clip", [-1.0, float("nan")])
def test_negative_grad_clip_is_refused(clip: float) -> None:
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    with pytest.raises(ValueError, match="grad_clip"):
        inv.fit(flow, _data(), steps=5, grad_clip=clip, progress=False)


def test_cli_negative_grad_clip_is_refused(tmp_path: Path) -> None:
    result = invoke("train", "--model", "nice", "--data", "moons", "--steps", 5, "--grad-clip",
                    -1, "--out", tmp_path / "r", *TINY)  # fmt: skip
    assert_clean_error(result, "grad.clip")


def test_distill_zero_steps_and_zero_lr_are_refused(run: Path, tmp_path: Path) -> None:
    base = ("distill", "--teacher", run / "model", "--out", tmp_path / "s", "--no-progress")
    assert_clean_error(invoke(*base, "--steps", 0), "--steps")
    assert_clean_error(invoke(*base, "--lr", 0), "--lr")
    assert not (tmp_path / "s").exists()


def test_distill_divergence_is_an_error_and_saves_nothing(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    result = invoke("distill", "--teacher", run / "model", "--out", out, "--steps", 60,
                    "--layers", 2, "--hidden", 16, "--batch-size", 64, "--loss", "mc",
                    "--lr", 10, "--no-progress")  # fmt: skip
    assert_clean_error(result, "diverged.*lower the learning rate")
    assert not (out / "model").exists()


def test_empty_distillation_has_no_final_kl() -> None:
    t = inv.Flow(inv.ActNorm(2), inv.StandardNormal(2))
    s = inv.Flow(inv.ActNorm(2), inv.StandardNormal(2))
    result = inv.distill(t, s, steps=0, progress=False)
    assert np.isnan(result.final("kl"))


def test_results_json_of_a_run_is_valid(run: Path) -> None:
    summary = json.loads((run / "results.json").read_text())
    assert np.isfinite(summary["test"]["log_prob"])
    assert torch.isfinite(torch.tensor(summary["test"]["two_se"]))


def test_one_huge_finite_value_is_refused_with_its_row(tmp_path: Path) -> None:
    x = np.random.default_rng(0).normal(size=(600, 3)).astype("float32")
    x[5, 1] = 1e30
    np.save(tmp_path / "big.npy", x)
    result = invoke("train", "--model", "maf", "--data", tmp_path / "big.npy", "--steps", 10,
                    "--out", tmp_path / "r", "--size", "tiny", "--no-progress")  # fmt: skip
    assert_clean_error(result, "1 row.*beyond.*1e\\+30")
    data = _data()
    data.train[3, 0] = 1e30
    with pytest.raises(ValueError, match="row 3"):
        inv.fit(inv.MAF(2, num_layers=2, hidden_features=(8,)), data, steps=5, progress=False)


def test_too_few_rows_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "three.npy", np.arange(9.0).reshape(3, 3))
    result = invoke("train", "--model", "maf", "--data", tmp_path / "three.npy", "--steps", 10,
                    "--out", tmp_path / "r", "--size", "tiny", "--no-progress")  # fmt: skip
    assert_clean_error(result, "N >= 10")


def test_evaluation_of_one_point_has_no_error_bar() -> None:
    flow = inv.Flow(inv.Rescaling(2), inv.StandardNormal(2))
    result = inv.evaluate(flow, SimpleNamespace(name="one", test=np.zeros((1, 2), "float32")))
    assert np.isnan(result.two_se)
    assert "n/a" in str(result) and "no error bar" in str(result)


def test_outliers_show_in_median_and_minimum() -> None:
    flow = inv.Flow(inv.Rescaling(2), inv.StandardNormal(2))
    x = np.zeros((100, 2), "float32")
    x[:3] = 1e3
    result = inv.evaluate(flow, SimpleNamespace(name="x", test=x))
    assert result.median == pytest.approx(-1.838, abs=1e-3)
    assert result.minimum < -1e5
    assert "median -1.838" in str(result)


def test_resume_on_other_data_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(400, 2)).astype("float32"))
    np.save(tmp_path / "b.npy", rng.normal(size=(400, 2)).astype("float32"))
    args = ("train", "--model", "nice", "--steps", 20, "--eval-every", 10, "--out",
            tmp_path / "r", "--size", "tiny", "--no-progress", "--batch-size", 64)  # fmt: skip
    assert invoke(*args, "--data", tmp_path / "a.npy").exit_code == 0
    result = invoke(*args, "--data", tmp_path / "b.npy", "--resume", "--steps", 40)
    assert_clean_error(result, "cannot resume.*same --data")


def test_skipped_steps_are_a_console_warning_with_the_count(tmp_path: Path) -> None:
    from invertible.training import Trainer, TrainingWarning
    from invertible.training.config import TrainConfig

    class Bad(Trainer):
        def train_step(self, batch, lr):
            return None if self.step in (3, 4) else super().train_step(batch, lr)

    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    trainer = Bad(flow, _data(), TrainConfig(steps=20, batch_size=64), progress=False)
    with pytest.warns(TrainingWarning, match="2 of 20 steps were skipped"):
        result = trainer.run()
    assert result.warnings and "2 of 20" in result.warnings[0]


def test_no_finite_validation_is_an_error() -> None:
    from invertible.training import DivergedError, Trainer
    from invertible.training.config import TrainConfig

    class Nan(Trainer):
        def evaluate(self, x=None):
            return -float("inf")

    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    trainer = Nan(flow, _data(), TrainConfig(steps=20, batch_size=64), progress=False)
    with pytest.raises(DivergedError, match=r"diverged.*lower the learning rate"):
        trainer.run()


def test_fit_on_a_bare_array_is_a_clear_error() -> None:
    flow = inv.RealNVP(2, num_layers=2, hidden_features=(8,))
    with pytest.raises(TypeError, match="train split"):
        inv.fit(flow, np.zeros((100, 2), "float32"), steps=5, progress=False)


def _bad_files(tmp: Path) -> dict[str, Path]:
    (tmp / "text.npy").write_text("1 2\n3 4\n")
    (tmp / "semi.csv").write_text("\n".join(f"{i};{2 * i}" for i in range(30)))
    (tmp / "adir").mkdir()
    return {"text": tmp / "text.npy", "semi": tmp / "semi.csv", "dir": tmp / "adir"}


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["--size", "huge"], "unknown size 'huge'"),
        (["--device", "gpu0"], "unknown --device"),
        (["--device", "meta"], "--device meta"),
        (["--option", "n_train=-5"], "n_train=-5"),
        (["--data", "{dir}"], "is a directory"),
        (["--data", "{text}"], "not a numeric .npy.*rename it .csv"),
        (["--data", "{semi}"], "separated by ';'"),
        (["--lr", "0"], "--lr must be positive"),
        (["--eval-every", "0"], "--eval-every must be positive"),
        (["--max-time", "-1"], "--max-time must be positive"),
    ],
)
def test_train_mistakes_are_one_clear_line(tmp_path: Path, args: list[str], pattern: str) -> None:
    files = {k: str(v) for k, v in _bad_files(tmp_path).items()}
    args = [a.format(**files) for a in args]
    result = invoke("train", "--model", "nice", "--data", "moons", "--steps", 5, "--out",
                    tmp_path / "r", *TINY, *args)  # fmt: skip
    assert_clean_error(result, pattern)


def test_cuda_on_a_cpu_only_torch_is_one_clear_line(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    result = invoke("train", "--model", "nice", "--data", "moons", "--device", "cuda", "--out",
                    tmp_path / "r", *TINY)  # fmt: skip
    assert_clean_error(result, "no usable CUDA")


def test_csv_with_a_header_is_read(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("a,b\n" + "\n".join(f"{i},{(i * 7) % 5}" for i in range(40)))
    data, _ = inv.data.load_data(str(path))
    assert data.features == 2 and len(data.train) + len(data.val) + len(data.test) == 40


def test_other_commands_mistakes_are_one_clear_line(run: Path, tmp_path: Path) -> None:
    assert_clean_error(invoke("eval", run), "did you mean .*model")
    assert_clean_error(invoke("eval", run / "model", "--chunk-size", 0), "--chunk-size")
    assert_clean_error(invoke("sample", run / "model", "--chunk-size", 0, "--out",
                              tmp_path / "s.npy"), "--chunk-size")  # fmt: skip
    assert_clean_error(invoke("sample", run / "model", "-n", 10**13, "--out",
                              tmp_path / "s.npy"), "GB")  # fmt: skip
    assert not (tmp_path / "s.npy").exists()
    for hidden, pattern in (("-5", "--hidden"), ("10000000", "--hidden"), ("200000", "memory")):
        result = invoke("distill", "--teacher", run / "model", "--out", tmp_path / "d",
                        "--hidden", hidden, "--hidden", hidden, "--no-progress")  # fmt: skip
        assert_clean_error(result, pattern)
    assert not (tmp_path / "d").exists()


def test_printed_validation_is_what_eval_reproduces(tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = invoke("train", "--model", "maf", "--data", "moons", "--steps", 30, "--out", out,
                    *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = re.search(r"validation log-likelihood (-?\d+\.\d+)", result.output).group(1)
    again = invoke("eval", out / "model", "--split", "val")
    assert again.output.startswith(f"val log-likelihood: {printed} ±"), again.output


def test_ctrl_c_names_the_saved_state_and_the_resume_command(tmp_path: Path, monkeypatch) -> None:
    from invertible.cli.common import interrupted_message

    state = tmp_path / "training" / "training_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"loop": {"step": 277}}))
    argv = ["invertible", "train", "--data", "x.npy", "--out", str(tmp_path), "--overwrite"]
    monkeypatch.setattr("sys.argv", argv)
    message = interrupted_message("train", tmp_path)
    assert "step 277" in message
    assert f"invertible train --data x.npy --out {tmp_path} --resume" in message


def test_datasets_is_short_unless_verbose() -> None:
    short, verbose = invoke("datasets"), invoke("datasets", "--verbose")
    assert short.exit_code == 0 and verbose.exit_code == 0
    assert "put it at" not in short.output and "--verbose" in short.output
    assert len(short.output.splitlines()) < len(verbose.output.splitlines())


def test_help_shows_every_default() -> None:
    text = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"}).output
    for flag in ("--steps", "--eval-every", "--max-time", "--device"):
        line = next(x for x in text.splitlines() if f" {flag} " in x)
        assert "default" in line, line


def test_progress_follows_the_time_budget_and_shows_latest_and_best(capsys) -> None:
    from invertible.training import Trainer
    from invertible.training.config import TrainConfig

    flow = inv.MAF(2, num_layers=2, hidden_features=(8,))
    config = TrainConfig(steps=200_000, batch_size=64, eval_every=10, max_time=1.0, patience=None)
    trainer = Trainer(flow, _data(), config, progress=True)
    assert trainer._bar().total == 100.0
    result = trainer.run()
    assert result.stopped == "max_time"
    err = capsys.readouterr().err
    assert "of the budget" in err and "(best " in err
    assert "refreshing batch-norm statistics" in err


def test_plots_of_a_short_run_warn_nothing_and_keep_curves_in_view(tmp_path: Path) -> None:
    import warnings

    from invertible.reports.plots import kl_curve_figure, plot_training_curves

    history = [{"step": 10, "train_loss": 1.0, "val_log_prob": -1.0, "event": "eval"}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_training_curves({"maf": history}, tmp_path / "one.png")
        plot_training_curves({"maf": [{"step": 5, "event": "eval"}]}, tmp_path / "none.png")
        t = inv.Flow(inv.ActNorm(2), inv.StandardNormal(2))
        s = inv.Flow(inv.ActNorm(2), inv.StandardNormal(2))
        fig = kl_curve_figure([inv.distill(t, s, steps=0, progress=False)])
    assert "running mean of 1 steps" in fig.axes[0].get_title()


def test_non_finite_log_densities_are_counted_not_hidden() -> None:
    flow = inv.Flow(inv.Rescaling(2), inv.StandardNormal(2))
    x = np.zeros((10, 2), "float32")
    x[0] = 3e38  # its square overflows: log-density -inf
    result = inv.evaluate(flow, SimpleNamespace(name="x", test=x))
    assert result.nonfinite == 1 and result.log_prob == -np.inf
    assert "1 of 10 points have log-density -inf or NaN" in str(result)
    assert "nan" not in str(result)


def test_cli_unstable_training_ends_with_a_warning_line(tmp_path: Path) -> None:
    result = invoke("train", "--model", "nice", "--data", "moons", "--steps", 100, "--lr", 10,
                    "--eval-every", 50, "--out", tmp_path / "r", *TINY)  # fmt: skip
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.output.splitlines() if x.startswith("warning:")]
    assert warnings and re.search(r"unstable|skipped", " ".join(warnings)), result.output


def test_ctrl_c_during_train_prints_the_resume_command(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "invertible", "train", "--model", "maf", "--data", "moons",
           "--steps", "100000", "--eval-every", "20", "--out", str(out), *TINY]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

    # A shell that starts a job in the background (``cmd &``) ignores SIGINT for it, and
    # Python keeps an inherited SIG_IGN: give the child the default handler back.
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while not (out / "training" / "config.json").is_file():
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: the training state at step" in err and "Traceback" not in err, err
    assert "--resume" in err.splitlines()[-1] and "--steps 100000" in err.splitlines()[-1], err


def test_kl_figure_uses_a_log_axis_only_over_decades() -> None:
    from invertible.distillation import DistillResult
    from invertible.reports.plots import kl_curve_figure

    def result(kl: list[float]) -> DistillResult:
        keys = ("kl", "cross_entropy", "entropy")
        return DistillResult(None, "mc", {k: list(kl) for k in keys}, 0.0)

    assert kl_curve_figure([result([3.0, 2.5, 2.0])]).axes[0].get_yscale() == "linear"
    assert kl_curve_figure([result([500.0, 50.0, 2.0])]).axes[0].get_yscale() == "symlog"
