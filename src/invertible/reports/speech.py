"""The speech job's report: Parallel WaveNet on ``speech``, teacher against student.

:func:`run_speech` runs :func:`invertible.jobs.speech_job` and writes, next to its
checkpoints and ``results.json``, ``report.md`` with the likelihood, quality and speed
tables, a WAV file and a spectrogram PNG of real, teacher, student and Laplace AR(32)
audio, and the distillation curves (``distillation.png``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from invertible.data.speech import write_wav
from invertible.files import atomic_write_text
from invertible.jobs import SPEECH_BUDGET, SpeechJob, speech_job
from invertible.reports.markdown import markdown_table
from invertible.reports.plots import plot_sequence_distillation, save_spectrogram_png

__all__ = [
    "AUDIO",
    "likelihood_section",
    "quality_section",
    "run_speech",
    "speech_report",
    "speed_section",
]

#: The audio written for listening, in the report's order.
AUDIO = ("real", "teacher", "student", "laplace-ar32")


def _num(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def _ll_row(row: dict[str, Any]) -> list[str]:
    return [row["name"], f"{_num(row['nats_per_sample'])} ± {_num(row['two_se'])}",
            _num(row["bits_per_sample"])]  # fmt: skip


def likelihood_section(summary: dict[str, Any]) -> str:
    """Whole test utterances (teacher, baselines), then the crops every model is scored on
    (the student through its exact sequential inverse), then the KL.
    """
    whole = summary["teacher"]["test"]
    header = ["model", "nats/sample (± 2 s.e.)", "bits/sample"]
    rows = [_ll_row(whole["model"]), *(_ll_row(b) for b in whole["baselines"].values())]
    crops = summary["likelihood"]
    crop_rows = [_ll_row(r) for r in crops["models"].values()]
    kl = (f"KL(student ‖ teacher), the distillation's estimate per sample (mean of its last 50 "
          f"steps): **{_num(crops['kl_final'])} nats/sample**, from {_num(crops['kl_first'])} at "
          "the first step.")  # fmt: skip
    return "\n".join([
        f"Whole test utterances from zero history ({whole['model']['utterances']} utterances):",
        "", markdown_table(header, rows), "", f"**{whole['verdict']['line']}**", "",
        f"The first {crops['seconds']:g} s of {crops['utterances']} test utterances, every "
        "model (the student's density is its exact sequential inverse, T steps per flow):",
        "", markdown_table(header, crop_rows), "", kl,
    ])  # fmt: skip


def quality_section(summary: dict[str, Any]) -> str:
    """Distribution-level distances of each model's samples to the real test utterances."""
    q = summary["quality"]
    header = ["samples", "log-mel distance (nats)", "Fréchet log-mel", "MCD (dB)",
              "long-term spectrum (dB)", "RMS ratio", "clipped"]  # fmt: skip
    rows = [[name, _num(m["log_mel"], ".3f"), _num(m["frechet_log_mel"], ".1f"),
             _num(m["mcd_db"], ".2f"), _num(m["spectrum_db"], ".2f"),
             _num(m["rms_ratio"], ".3f"), _num(m["clipped"], ".2e")]
            for name, m in q["models"].items()]  # fmt: skip
    return "\n".join([
        f"{q['clips']} samples of {q['clip_seconds']:g} s per model against all real test "
        "utterances. The models are unconditional, so nothing is time-aligned: each measure "
        "compares pooled frames (average log-mel frame, Gaussian fits of the frames, average "
        "mel-cepstrum, long-term power spectrum) or levels. `real (val)` is real audio from "
        "the validation split: the floor of each distance. Lower is better; RMS ratio 1 is "
        "the real level.", "", markdown_table(header, rows),
    ])  # fmt: skip


def speed_section(summary: dict[str, Any]) -> str:
    """The samplers' rates and the student's speed-ups (one run, median of the repeats)."""
    sp = summary["speed"]
    header = ["model", "sampler", "batch", "length (samples)", "samples/s",
              "× real time (16 kHz, aggregate)"]  # fmt: skip
    rows = [[r["model"], "parallel (one pass)" if r["model"] == "student" else r["method"],
             r["batch"], r["length"] if r["length"] else "R+1 window per step",
             _num(r["samples_per_s"], ",.0f"), _num(r["x_real_time"], ".3f")]
            for r in sp["rows"]]  # fmt: skip
    ups = markdown_table(["student speed-up", "×"],
                         [[k, _num(v, ",.1f")] for k, v in sp["speedups"].items()])  # fmt: skip
    return "\n".join([
        f"One run on {summary['threads']} threads, fp32, median of {sp['repeats']} rounds "
        "after a warm-up; each round times every sampler once (interleaved), so a change in "
        "the machine's load hits all of them alike. The naive sampler runs the whole network "
        "on the last R+1 samples at every step; its steady-state rate is timed from that "
        "step's cost (one `log_prob` pass over R+1 samples). The incremental sampler's cost "
        "per sample does not depend on the length, so it is timed on a shorter one.", "",
        markdown_table(header, rows), "", ups,
    ])  # fmt: skip


def speech_report(summary: dict[str, Any], audio: dict[str, dict[str, str]]) -> str:
    """The markdown of ``report.md`` from the job's summary and the written audio files."""
    st, te = summary["student"], summary["teacher"]
    training = te["training"]
    minutes = summary["budget_minutes"]
    trained = (
        f"trained {training['steps']} steps in {training['train_time'] / 60:.1f} min (share "
        f"{SPEECH_BUDGET['teacher']:.0%})"
        if "checkpoint" not in te
        else f"loaded from `{te['checkpoint']}` (trained {training.get('steps', '?')} steps)"
    )
    intro = (
        f"Budget {minutes:g} min on {summary['threads']} threads: the teacher "
        f"({te['preset']}, {te['parameters']:,} parameters) {trained}; "
        f"the student (WaveNetIAF `{st['size']}`, {st['parameters']:,} parameters) was "
        f"distilled {st['steps']} steps in {st['wall_time_s'] / 60:.1f} min (share "
        f"{SPEECH_BUDGET['student']:.0%}) with loss `{st['distill']['loss']}` and power-loss "
        f"weight {st['distill'].get('power_loss', 0):g}. Data: `{summary['data']['name']}`, "
        + ", ".join(f"{k} {v:.0f} s" for k, v in summary["data"]["seconds"].items())
        + "."
    )
    listen = markdown_table(
        ["audio", "WAV", "spectrogram"],
        [
            [name, f"[{f['wav']}]({f['wav']})", f"![{name}]({f['png']})"]
            for name, f in audio.items()
        ],
    )
    return "\n".join([
        "# Parallel WaveNet on speech: teacher and distilled student", "", intro, "",
        "## Likelihood", "", likelihood_section(summary), "",
        "## Sample quality", "", quality_section(summary), "",
        "## Sampling speed", "", speed_section(summary), "",
        "## Audio", "", listen, "",
        "## Distillation", "", "![distillation](distillation.png)", "",
    ])  # fmt: skip


def _write_audio(job: SpeechJob, out: Path) -> dict[str, dict[str, str]]:
    files = {}
    for name in AUDIO:
        x = job.clips[name][0]
        write_wav(out / f"{name}.wav", x)
        save_spectrogram_png(x, out / f"{name}.png", title=name)
        files[name] = {"wav": f"{name}.wav", "png": f"{name}.png"}
    return files


def run_speech(out: str | os.PathLike[str], **job_options: Any) -> SpeechJob:
    """Run :func:`~invertible.jobs.speech_job` and write its report, audio and curves.

    Example:
        >>> import inspect
        >>> "budget_minutes" in inspect.signature(speech_job).parameters
        True
    """
    job = speech_job(out, **job_options)
    audio = _write_audio(job, job.out)
    plot_sequence_distillation(job.distillation, job.out / "distillation.png")
    atomic_write_text(job.out / "report.md", speech_report(job.summary, audio))
    return job
