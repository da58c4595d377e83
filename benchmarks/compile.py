"""Speed-up of ``torch.compile`` for training steps and ``log_prob`` (CPU by default).

Times, for one preset, (a) a training step (forward, backward, Adam) through
:class:`invertible.training.Trainer` and (b) ``log_prob`` of an evaluation batch, eager
versus compiled (``compile=...`` / :func:`invertible.training.compile_flow`), after warm-up;
reports the one-off compile time, the median step times and the speed-up, and checks that
both give the same numbers. Prints a JSON line (and writes it with ``--out``).

Usage::

    python -m benchmarks.compile                       # realnvp, D=8, batch 256, CPU
    python -m benchmarks.compile --model maf --features 63 --size default --threads 2
    python -m benchmarks.compile --device cuda --batch-size 4096
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from invertible.catalog import build_model
from invertible.training import TrainConfig, Trainer, compile_flow


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by the parsed command-line ``args``."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch_size * 8, args.features)).astype("float32")
    data = SimpleNamespace(train=x, val=x[: args.batch_size])
    result: dict[str, Any] = {
        "model": args.model,
        "size": args.size,
        "features": args.features,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": args.threads,
        "backend": args.backend,
        "torch": torch.__version__,
    }

    # -- training step -------------------------------------------------------------------
    step_ms = {}
    losses = {}
    for mode in ("eager", "compiled"):
        flow = build_model(args.model, args.features, size=args.size, seed=0).to(device)
        cfg = TrainConfig(steps=10**6, batch_size=args.batch_size, grad_clip=5.0)
        trainer = Trainer(flow, data, cfg, progress=False)
        if mode == "compiled":
            from invertible.training import CompiledModule

            trainer.model = CompiledModule(trainer.model, backend=args.backend)
        flow.train()
        batch = trainer.sample_batch(0)
        start = time.perf_counter()
        losses[mode] = trainer.train_step(batch, 1e-3)  # first call: compiles
        _sync(device)
        first = time.perf_counter() - start
        for _ in range(args.warmup):
            trainer.train_step(batch, 1e-3)
        step_ms[mode] = 1e3 * _median_time(
            lambda t=trainer, b=batch: t.train_step(b, 1e-3), device, args.repeats
        )
        result[f"train_first_call_s_{mode}"] = round(first, 2)
    result["train_step_ms"] = {k: round(v, 3) for k, v in step_ms.items()}
    result["train_speedup"] = round(step_ms["eager"] / step_ms["compiled"], 3)
    result["train_first_loss_abs_diff"] = abs(losses["eager"] - losses["compiled"])

    # -- log_prob ------------------------------------------------------------------------
    flow = build_model(args.model, args.features, size=args.size, seed=0).to(device).eval()
    fast = compile_flow(flow, backend=args.backend)
    xb = torch.from_numpy(x[: args.eval_batch_size]).to(device)
    with torch.no_grad():
        start = time.perf_counter()
        compiled_lp = fast.log_prob(xb)
        _sync(device)
        result["log_prob_first_call_s_compiled"] = round(time.perf_counter() - start, 2)
        eager_lp = flow.log_prob(xb)
        result["log_prob_max_abs_diff"] = float((compiled_lp - eager_lp).abs().max())
        lp_ms = {
            "eager": 1e3 * _median_time(lambda: flow.log_prob(xb), device, args.repeats),
            "compiled": 1e3 * _median_time(lambda: fast.log_prob(xb), device, args.repeats),
        }
    result["log_prob_ms"] = {k: round(v, 3) for k, v in lp_ms.items()}
    result["log_prob_speedup"] = round(lp_ms["eager"] / lp_ms["compiled"], 3)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; prints and returns the result dict."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="realnvp")
    parser.add_argument("--size", default="small")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--backend", default="inductor")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args)
    line = json.dumps(result)
    print(line)
    if args.out is not None:
        args.out.write_text(line + "\n")
    return result


if __name__ == "__main__":
    main()
