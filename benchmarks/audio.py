"""Speed of the WaveNet teacher: density (one parallel pass) vs sampling (T sequential steps).

Measures, for the default :class:`invertible.WaveNetMAF` (float32, unconditional):

* its receptive field and parameter count;
* ``log_prob`` throughput (samples/s) at batch 4 × 8192 samples, without gradients;
* sampling throughput at batch 1 and 16 for one second of 16 kHz audio with the
  incremental sampler (ring buffers, about one network pass in all) and with the naive
  sampler (the whole network on the last R+1 samples at every step), the latter timed on
  a shorter length (``--naive-length``, where windows are still shorter than R, so it
  flatters the naive sampler) and estimated at steady state (one ``log_prob`` pass over
  R+1 samples per step); all as × real time at 16 kHz (aggregate over the batch, and per
  stream).

Before timing, the two samplers are run on the same base noise and must agree to 1e-4.
Public API only. Run on demand (not a unit test)::

    python -m benchmarks.audio [--threads 2] [--quick] [--out benchmarks/results/audio]

Writes ``speed.json`` to ``--out``. Single run; on a shared machine the figures are noisy.

``--part teacher`` trains the catalogue's ``wavenet`` (``--size small``: its linear
prediction shortcut fitted by least squares, so it starts at the logistic AR(32)
likelihood) on ``speech`` crops for ``--budget-minutes`` (``--resume`` continues the state
in ``--run-dir``), evaluates it and the baselines (Gaussian AR(32), Laplace AR(32),
i.i.d. Gaussian, fitted on train by least squares as flows) on whole test utterances,
writes one-second WAVs and spectrograms of real, baseline and teacher audio, times the
samplers of that teacher and writes ``results.json``::

    python -m benchmarks.audio --part teacher --threads 2 --budget-minutes 8

``--part speech`` runs the library's speech job (``invertible speech``: teacher, distilled
student, likelihood, quality and speed tables) in ``--run-dir`` for ``--budget-minutes``
and copies its ``results.json`` (the distillation history thinned to every 10th step),
WAVs and spectrograms to ``--out``/../speech (``--teacher-checkpoint`` distils a saved
teacher instead of training one)::

    python -m benchmarks.audio --part speech --threads 2 --budget-minutes 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

import invertible as inv
from invertible.catalog import build_model, initialize_from_data
from invertible.data import load_dataset
from invertible.data.speech import write_wav
from invertible.evaluation import (
    density_throughput,
    naive_steady_state_speed,
    sequence_sampling_speed,
    sequential_method,
)
from invertible.evaluation.audio import evaluate_speech, fit_baselines
from invertible.reports.plots import save_spectrogram_png
from invertible.reports.speech import (
    AUDIO,
    likelihood_section,
    quality_section,
    run_speech,
    speed_section,
)

SAMPLE_RATE = 16_000


def _teacher(seed: int = 0) -> inv.WaveNetMAF:
    """The default teacher with a perturbed head (a fresh one outputs a constant)."""
    torch.manual_seed(seed)
    teacher = inv.WaveNetMAF().eval()
    with torch.no_grad():
        teacher.transform.net.out.weight.normal_(std=1e-3)
    return teacher


@torch.no_grad()
def _agreement(teacher: inv.WaveNetMAF, length: int) -> float:
    outputs = []
    for method in ("incremental", "naive"):
        with sequential_method(teacher, method):
            torch.manual_seed(1)
            outputs.append(teacher.sample(2, length=length))
    difference = float((outputs[0] - outputs[1]).abs().max())
    if not difference <= 1e-4 * max(1.0, float(outputs[1].abs().max())):
        raise AssertionError(f"incremental and naive samplers differ by {difference:.2e}")
    return difference


def _legacy(row: dict) -> dict:
    """A library timing row under this benchmark's published keys."""
    return {**row, "x_real_time_aggregate": row["x_real_time"]}


def _sampling(teacher: inv.WaveNetMAF, method: str, batch: int, length: int) -> dict:
    row = sequence_sampling_speed(teacher, length=length, batch=batch, repeats=1,
                                  sequential=method)  # fmt: skip
    return _legacy(row)


def _density(teacher: inv.WaveNetMAF, batch: int, length: int) -> dict:
    rate = density_throughput(teacher, 0.1 * torch.randn(batch, length), n=batch, repeats=3)
    return {"batch": batch, "length": length, "seconds": batch / rate,
            "samples_per_s": rate * length}  # fmt: skip


def _naive_steady_state(teacher: inv.WaveNetMAF, batch: int) -> dict:
    """Once t > R, each naive step is one network pass over a window of R+1 samples, the
    cost of ``log_prob`` on ``[batch, R+1]``: the naive rate on long audio."""
    return _legacy(naive_steady_state_speed(teacher, batch=batch, repeats=3))


def run(sample_length: int, naive_length: int, batches: tuple[int, ...]) -> dict:
    teacher = _teacher()
    result = {
        "model": "WaveNetMAF()",
        "receptive_field": teacher.receptive_field,
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "agreement_max_abs": _agreement(teacher, 64),
        "density": _density(teacher, 4, 8192),
        "sampling": [],
    }
    for batch in batches:
        result["sampling"].append(_sampling(teacher, "incremental", batch, sample_length))
        result["sampling"].append(_sampling(teacher, "naive", batch, naive_length))
        result["sampling"].append(_naive_steady_state(teacher, batch))
    return result


# --------------------------------------------------------------------------- teacher vs AR


def _machine() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "note": "single run; the machine may be shared",
    }


def _train_teacher(data, args) -> tuple[inv.Flow, inv.TrainResult, float]:
    """The catalogue's wavenet at ``--size``, LP shortcut by least squares, fitted for the
    budget (resumable from ``--run-dir``)."""
    teacher = build_model("wavenet", args.crop, size=args.size, seed=0)
    start = time.perf_counter()
    initialize_from_data(teacher, data.eval_utterances("train"))
    init_seconds = time.perf_counter() - start
    result = inv.fit(
        teacher, data, max_time=args.budget_minutes * 60, steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every, patience=10,
        out_dir=args.run_dir, resume=args.resume, progress=False, seed=0, save_model=False,
    )  # fmt: skip
    return teacher, result, init_seconds


def _samples(teacher, baselines, data, out: Path, seconds: float) -> dict:
    """One-second WAVs and spectrograms of real, baseline and teacher audio (seed 0)."""
    length = int(seconds * SAMPLE_RATE)
    clips = {"real": data.test[0][:length].astype("float64") / 32768.0}
    timings = {}
    for name, flow in {"teacher": teacher, **baselines}.items():
        torch.manual_seed(0)
        start = time.perf_counter()
        clips[name] = flow.sample(1, length=length)[0]
        timings[name] = time.perf_counter() - start
    files = {}
    for name, x in clips.items():
        x = x.detach().numpy() if isinstance(x, torch.Tensor) else x
        write_wav(out / f"{name}.wav", x)
        save_spectrogram_png(x, out / f"{name}.png", title=f"{name} ({seconds:g} s)")
        rms = float((x**2).mean() ** 0.5)
        files[name] = {"wav": f"{name}.wav", "png": f"{name}.png", "rms": rms}
    return {"files": files, "sampling_seconds": timings}


def _sampler_speeds(teacher, naive_length: int) -> list[dict]:
    rows = []
    for batch in (1, 16):
        rows.append(_sampling(teacher, "incremental", batch, SAMPLE_RATE))
        rows.append(_sampling(teacher, "naive", batch, naive_length))
        rows.append(_naive_steady_state(teacher, batch))
    return rows


def run_teacher(args) -> dict:
    """Train, evaluate against the baselines, sample, time the samplers; the results."""
    data = load_dataset("speech", data_dir=args.data_dir, crop=args.crop)
    baselines = fit_baselines(data.eval_utterances("train"))
    teacher, result, init_seconds = _train_teacher(data, args)
    report = evaluate_speech(teacher, data, baselines=baselines)
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    return {
        "machine": _machine(),
        "data": {"name": data.name, "seconds": {k: data.seconds(k) for k in data.splits}},
        "teacher": {
            "model": f"catalogue wavenet, size {args.size}", "config": teacher.config,
            "receptive_field": teacher.receptive_field,
            "parameters": sum(p.numel() for p in teacher.parameters()),
        },
        "training": {
            "budget_minutes": args.budget_minutes, "steps": result.steps,
            "batch_size": args.batch_size, "crop": args.crop, "lr": args.lr,
            "train_time_s": result.train_time, "stopped": result.stopped,
            "best_step": result.best_step, "best_val_log_prob": result.best_val_log_prob,
            "least_squares_init_s": init_seconds, "resumed": bool(args.resume),
        },
        "evaluation": report.to_dict(),
        "samples": _samples(teacher, baselines, data, args.out, 1.0),
        "sampling": _sampler_speeds(teacher.eval(), args.naive_length),
    }  # fmt: skip


def markdown(payload: dict) -> str:
    """The teacher-vs-baselines table of ``results.json`` (for ``docs/benchmarks.md``)."""
    ev, tr, te = payload["evaluation"], payload["training"], payload["teacher"]
    lines = [
        "# Audio: WaveNet teacher against linear prediction on `speech`",
        "",
        f"Teacher: {te['model']}, {te['parameters']:,} parameters, receptive field "
        f"{te['receptive_field']}; trained {tr['steps']} steps ({tr['train_time_s'] / 60:.1f} "
        f"min of a {tr['budget_minutes']:g} min budget, batch {tr['batch_size']} × "
        f"{tr['crop']} samples) on {payload['machine']['threads']} threads. Test split: "
        f"whole utterances from zero history, mean ± 2 s.e. over "
        f"{ev['model']['utterances']} utterances.",
        "",
        "| model | nats/sample | bits/sample | ALSA real speech (nats/sample) |",
        "|---|---:|---:|---:|",
    ]
    alsa = ev["heldout"].get("alsa") or {}
    for key, row in [("model", ev["model"]), *ev["baselines"].items()]:
        held = alsa.get("model") if key == "model" else alsa.get("baselines", {}).get(key)
        held_s = f"{held['nats_per_sample']:.4f} ± {held['two_se']:.4f}" if held else "n/a"
        lines.append(
            f"| {row['name']} | {row['nats_per_sample']:.4f} ± {row['two_se']:.4f} | "
            f"{row['bits_per_sample']:.4f} | {held_s} |"
        )
    lines += ["", f"**{ev['verdict']['line']}**", "",
              "| sampler | batch | × real time (aggregate) |", "|---|---:|---:|"]  # fmt: skip
    for r in payload["sampling"]:
        lines.append(f"| {r['method']} | {r['batch']} | {r['x_real_time_aggregate']:.4f} |")
    return "\n".join(lines) + "\n"


def publish_speech(run_dir: Path, dest: Path) -> Path:
    """Copy a speech run's ``results.json`` (the distillation history thinned to every 10th
    step, the machine added), WAVs, spectrograms and curves to ``dest``."""
    summary = json.loads((run_dir / "results.json").read_text())
    history = summary["student"]["history"]
    summary["student"]["history"] = {k: v[::10] for k, v in history.items()}
    summary["machine"] = _machine()
    dest.mkdir(parents=True, exist_ok=True)
    names = [f"{name}{suffix}" for name in AUDIO for suffix in (".wav", ".png")]
    for name in [*names, "distillation.png"]:
        shutil.copy(run_dir / name, dest / name)
    (dest / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return dest


def run_speech_benchmark(args) -> Path:
    """The speech job in ``--run-dir`` (or the run ``--publish`` names), published next to
    ``--out``."""
    run_dir = args.publish or args.run_dir
    if args.publish is None:
        run_speech(
            run_dir, budget_minutes=args.budget_minutes, teacher_size=args.size,
            teacher_checkpoint=args.teacher_checkpoint, progress=False, overwrite=True,
            announce=print,
        )  # fmt: skip
    return publish_speech(run_dir, args.out.parent / "speech")


def speech_markdown(summary: dict) -> str:
    """The speech job's tables (for ``docs/benchmarks.md``)."""
    st, te = summary["student"], summary["teacher"]
    return "\n".join([
        "# Speech: Parallel WaveNet, teacher and distilled student", "",
        f"`python -m benchmarks.audio --part speech --threads {summary['threads']} "
        f"--budget-minutes {summary['budget_minutes']:g}` (the `invertible speech` job). "
        f"Teacher {te['preset']} ({te['parameters']:,} parameters, {te['training'].get('steps')} "
        f"steps); student WaveNetIAF `{st['size']}` ({st['parameters']:,} parameters, "
        f"{st['steps']} steps, loss `{st['distill']['loss']}`). Machine: "
        f"{summary['machine']['processor']}, {summary['machine']['note']}.", "",
        "## Likelihood", "", likelihood_section(summary), "",
        "## Sample quality", "", quality_section(summary), "",
        "## Sampling speed", "", speed_section(summary), "",
    ]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/audio"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--length", type=int, default=SAMPLE_RATE, help="incremental length")
    parser.add_argument("--naive-length", type=int, default=200, help="naive sampler length")
    parser.add_argument("--quick", action="store_true", help="short lengths (a smoke test)")
    parser.add_argument("--part", choices=("speed", "teacher", "speech"), default="speed",
                        help="speed: the default teacher's samplers; teacher: train a small "
                        "teacher and compare it with the AR baselines; speech: the speech "
                        "job (teacher and distilled student)")  # fmt: skip
    parser.add_argument(
        "--teacher-checkpoint", type=Path, default=None, help="speech: distil this saved teacher"
    )
    parser.add_argument("--publish", type=Path, default=None,
                        help="speech: publish this finished run, do not run one")  # fmt: skip
    parser.add_argument("--budget-minutes", type=float, default=8.0, help="teacher training")
    parser.add_argument("--max-steps", type=int, default=100_000, help="teacher step cap")
    parser.add_argument("--size", default="small", help="catalogue size of the teacher")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=8192, help="training crop, samples")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/bench-audio"),
                        help="resumable training state of the teacher")  # fmt: skip
    parser.add_argument("--resume", action="store_true", help="continue from --run-dir")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.part == "speech":
        if args.run_dir == Path("runs/bench-audio"):  # keep the teacher part's state
            args.run_dir = Path("runs/bench-speech")
        print(f"wrote {run_speech_benchmark(args)}")
        return 0
    if args.part == "teacher":
        payload = run_teacher(args)
        (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
        print(markdown(payload))
        return 0
    length, naive = (400, 20) if args.quick else (args.length, args.naive_length)
    result = run(length, naive, (1, 16))
    result["machine"] = {
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "processor": platform.processor() or platform.machine(),
        "note": "single run; the machine may be shared",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
