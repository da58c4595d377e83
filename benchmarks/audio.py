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
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

import invertible as inv

SAMPLE_RATE = 16_000


def _teacher(seed: int = 0) -> inv.WaveNetMAF:
    """The default teacher with a perturbed head (a fresh one outputs a constant)."""
    torch.manual_seed(seed)
    teacher = inv.WaveNetMAF().eval()
    with torch.no_grad():
        teacher.transform.net.out.weight.normal_(std=1e-3)
    return teacher


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _set_sequential(flow: inv.Flow, method: str) -> None:
    for module in flow.modules():
        if isinstance(module, inv.WaveNetAutoregressive):
            module.sequential = method


@torch.no_grad()
def _agreement(teacher: inv.WaveNetMAF, length: int) -> float:
    outputs = []
    for method in ("incremental", "naive"):
        _set_sequential(teacher, method)
        torch.manual_seed(1)
        outputs.append(teacher.sample(2, length=length))
    _set_sequential(teacher, "incremental")
    difference = float((outputs[0] - outputs[1]).abs().max())
    if not difference <= 1e-4 * max(1.0, float(outputs[1].abs().max())):
        raise AssertionError(f"incremental and naive samplers differ by {difference:.2e}")
    return difference


@torch.no_grad()
def _sampling(teacher: inv.WaveNetMAF, method: str, batch: int, length: int) -> dict:
    _set_sequential(teacher, method)
    teacher.sample(batch, length=8)  # warm up
    seconds = _seconds(lambda: teacher.sample(batch, length=length))
    _set_sequential(teacher, "incremental")
    rate = batch * length / seconds
    return {
        "method": method,
        "batch": batch,
        "length": length,
        "seconds": seconds,
        "samples_per_s": rate,
        "x_real_time_aggregate": rate / SAMPLE_RATE,
        "x_real_time_per_stream": rate / SAMPLE_RATE / batch,
    }


@torch.no_grad()
def _density(teacher: inv.WaveNetMAF, batch: int, length: int) -> dict:
    x = 0.1 * torch.randn(batch, length)
    teacher.log_prob(x)  # warm up
    seconds = min(_seconds(lambda: teacher.log_prob(x)) for _ in range(3))
    return {
        "batch": batch,
        "length": length,
        "seconds": seconds,
        "samples_per_s": batch * length / seconds,
    }


@torch.no_grad()
def _naive_steady_state(teacher: inv.WaveNetMAF, batch: int) -> dict:
    """Once t > R, each naive step is one network pass over a window of R+1 samples, the
    cost of ``log_prob`` on ``[batch, R+1]``: the naive rate on long audio."""
    window = torch.zeros(batch, teacher.receptive_field + 1)
    teacher.log_prob(window)  # warm up
    seconds = min(_seconds(lambda: teacher.log_prob(window)) for _ in range(3))
    rate = batch / seconds
    return {
        "method": "naive (steady-state estimate: one R+1 window pass per step)",
        "batch": batch,
        "seconds_per_step": seconds,
        "samples_per_s": rate,
        "x_real_time_aggregate": rate / SAMPLE_RATE,
        "x_real_time_per_stream": rate / SAMPLE_RATE / batch,
    }


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/audio"))
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--length", type=int, default=SAMPLE_RATE, help="incremental length")
    parser.add_argument("--naive-length", type=int, default=200, help="naive sampler length")
    parser.add_argument("--quick", action="store_true", help="short lengths (a smoke test)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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
