"""Profile of one training step (log_prob + backward + Adam) of ``invertible``'s flows.

    python -m benchmarks.profile_step                         # MAF and coupling, D = 784
    python -m benchmarks.profile_step --kinds maf --dims 63 784 --threads 2 --rows 25

For each (model, D) with the benchmark architecture and batch (:mod:`benchmarks.invertible_adapter`,
:func:`benchmarks.harness.default_batch`):

1. **Where the time goes**: a ``torch.profiler`` table of the step's operators, sorted by
   self CPU time (after warm-up; ``--steps`` steps profiled).
2. **Achieved FLOP/s**: the step's floating-point operations are counted by
   ``torch.utils.flop_counter.FlopCounterMode`` (matrix products, forward and backward:
   the FLOPs actually executed, so block-sparse MADE products count only their blocks),
   and also as the *dense-equivalent* count of the same architecture (what a dense masked
   implementation executes, the peers' work). Both are divided by the median step time.
3. **Matmul peak**, measured in the same run and the same thread count: the best
   throughput of ``torch.mm`` over square products (1024, 2048) and over the shapes of
   the step itself (batch x width products). The ratio achieved / peak is printed.

Timings on the shared 2-core machine drift; the peak and the step are timed interleaved
(``--rounds`` alternations), and medians are reported.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.adapter import (
    COUPLING_HIDDEN,
    COUPLING_LAYERS,
    MAF_HIDDEN,
    MAF_LAYERS,
    make_optimizer,
)
from benchmarks.harness import default_batch
from benchmarks.invertible_adapter import build_invertible

__all__ = ["dense_flops", "main", "matmul_peak", "profile_config"]


def dense_flops(kind: str, dim: int, batch: int) -> float:
    """FLOPs of a dense training step (forward 2·b·in·out per linear, backward twice that
    except the input gradient of the very first layer, which is not needed)."""
    if kind == "maf":
        widths = [dim, *MAF_HIDDEN, 2 * dim]
        linears = [(a, b) for a, b in itertools.pairwise(widths)]
        layers = MAF_LAYERS
    else:
        kept, changed = (dim + 1) // 2, dim // 2  # averaged over alternating parities below
        widths_a = [kept, *COUPLING_HIDDEN, 2 * changed]
        widths_b = [changed, *COUPLING_HIDDEN, 2 * kept]
        la = [(a, b) for a, b in itertools.pairwise(widths_a)]
        lb = [(a, b) for a, b in itertools.pairwise(widths_b)]
        total = 0.0
        for i in range(COUPLING_LAYERS):
            for a, b in la if i % 2 == 0 else lb:
                total += 6.0 * batch * a * b
        return total
    per_layer = sum(6.0 * batch * a * b for a, b in linears)
    return layers * per_layer


def _time(fn: Callable[[], object], min_s: float = 0.2) -> float:
    """Seconds per call of ``fn`` (a block of calls lasting about ``min_s``)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_s:
            return elapsed / n


def matmul_peak(shapes: list[tuple[int, int, int]]) -> dict[str, float]:
    """FLOP/s of ``torch.mm`` for each ``(m, k, n)`` in ``shapes`` (one block each)."""
    out = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        c = torch.empty(m, n)
        sec = _time(lambda a=a, b=b, c=c: torch.mm(a, b, out=c))
        out[f"{m}x{k}x{n}"] = 2.0 * m * k * n / sec
    return out


def profile_config(
    kind: str, dim: int, *, steps: int, rounds: int, rows: int, table: bool
) -> dict[str, float]:
    """Profile one (model, D); prints the table and the FLOP/s figures."""
    batch = default_batch(dim)
    torch.manual_seed(0)
    adapter = build_invertible(kind, dim)
    opt = make_optimizer(adapter)  # what the speed harness uses: ours is fused Adam
    x = torch.randn(batch, dim)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = -adapter.log_prob(x).mean()
        loss.backward()
        opt.step()

    def forward_backward() -> None:
        opt.zero_grad(set_to_none=True)
        (-adapter.log_prob(x).mean()).backward()

    for _ in range(3):
        step()
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    executed = float(counter.get_total_flops())
    dense = dense_flops(kind, dim, batch)

    if kind == "maf":
        width = MAF_HIDDEN[0]
        shapes = [(batch, dim, width), (batch, width, width), (batch, width, 2 * dim)]
    else:
        width = COUPLING_HIDDEN[0]
        shapes = [(batch, (dim + 1) // 2, width), (batch, width, width), (batch, width, dim)]
    square = [(1024, 1024, 1024), (2048, 2048, 2048)]
    step_s, fb_s, peaks, shape_peaks = [], [], [], []
    for _ in range(rounds):  # interleaved: step, matmul peak, step, ...
        step_s.append(_time(step, 0.5))
        fb_s.append(_time(forward_backward, 0.3))
        peaks.append(max(matmul_peak(square).values()))
        shape_peaks.append(matmul_peak(shapes))
    t_step, t_fb = statistics.median(step_s), statistics.median(fb_s)
    peak = statistics.median(peaks)
    per_shape = {k: statistics.median(p[k] for p in shape_peaks) for k in shape_peaks[0]}
    best_shape = max(per_shape.values())

    label = f"{'MAF' if kind == 'maf' else 'coupling'} D={dim} (batch {batch})"
    print(f"\n=== {label}, {torch.get_num_threads()} threads ===")
    if table:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))
    gf = 1e-9
    print(
        f"step {t_step * 1e3:.1f} ms ({batch / t_step:,.0f} samples/s); "
        f"forward+backward only {t_fb * 1e3:.1f} ms "
        f"(Adam + zero_grad ~{(t_step - t_fb) * 1e3:.1f} ms)"
    )
    print(
        f"FLOPs per step: executed {executed * gf:.2f} GFLOP (FlopCounterMode), "
        f"dense-equivalent {dense * gf:.2f} GFLOP"
    )
    print(
        f"matmul peak: square {peak * gf:.1f} GFLOP/s; step's shapes "
        + ", ".join(f"{k}: {v * gf:.1f}" for k, v in per_shape.items())
        + " GFLOP/s"
    )
    result = {
        "step_s": t_step,
        "fb_s": t_fb,
        "executed_flops": executed,
        "dense_flops": dense,
        "peak": peak,
        "shape_peak": best_shape,
    }
    print(
        f"achieved: executed {executed / t_step * gf:.1f} GFLOP/s = "
        f"{executed / t_step / peak:.0%} of square peak; dense-equivalent "
        f"{dense / t_step * gf:.1f} GFLOP/s = {dense / t_step / peak:.0%} of square peak "
        f"({dense / t_step / best_shape:.0%} of the best step-shape matmul); "
        f"forward+backward alone: dense-equivalent {dense / t_fb / peak:.0%} of square peak"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kinds", nargs="+", default=["maf", "coupling"], choices=["maf", "coupling"])
    p.add_argument("--dims", nargs="+", type=int, default=[784])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--rows", type=int, default=20, help="rows of the profiler table")
    p.add_argument("--no-table", action="store_true", help="FLOP/s figures only")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    for kind in args.kinds:
        for dim in args.dims:
            profile_config(
                kind,
                dim,
                steps=args.steps,
                rounds=args.rounds,
                rows=args.rows,
                table=not args.no_table,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
