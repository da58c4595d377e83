"""MADE passes and wall time of MAF/IAF density and sampling: incremental vs naive sequential.

For MAF and IAF (5 layers, MADE hidden (512, 512)) at D in {2, 8, 63, 784} this measures
``log_prob`` and ``sample`` and counts MADE work in *pass equivalents* (one full network
evaluation = 1; the incremental sequential path uses every weight once, so it counts 1 per
layer although it runs in D small steps; the naive path runs D full passes per layer).

Run on demand (not a unit test)::

    python -m benchmarks.passes --out results/passes [--threads 2] [--quick]

Prints a markdown table and writes ``passes.md`` and ``passes.png`` to ``--out``. Before
timing, each sequential direction is run both ways on the same input (the same base noise
for sampling) and the two results must agree to 1e-4 (relative to their scale). The
naive sequential path at D = 784 is slow (3920 full passes per call): it is timed on a
small batch (``--naive-batch-784``) and reported per sample.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

import invertible as inv


def _timeit(fn: Callable[[], object], min_time: float = 0.5, max_repeats: int = 20) -> float:
    """Median-free simple timer: best of repeats until ``min_time`` seconds are spent."""
    fn()  # warm up
    best, spent, repeats = float("inf"), 0.0, 0
    while repeats < max_repeats and (spent < min_time or repeats < 2):
        start = time.perf_counter()
        fn()
        elapsed = time.perf_counter() - start
        best, spent, repeats = min(best, elapsed), spent + elapsed, repeats + 1
        if elapsed > 5 * min_time:
            break
    return best


def _passes(flow: inv.Flow, fn: Callable[[], object]) -> int:
    """Full MADE network passes made by ``fn``, counted with forward hooks (the incremental
    sequential pass makes none: it computes each unit once, in D small steps)."""
    count = [0]
    hooks = [
        m.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
        for m in flow.modules()
        if isinstance(m, inv.nn.MADE)
    ]
    try:
        fn()
    finally:
        for hook in hooks:
            hook.remove()
    return count[0]


def _set_sequential(flow: inv.Flow, method: str) -> None:
    for layer in flow.modules():
        if isinstance(layer, inv.AffineAutoregressive):
            layer.sequential = method


def _agreement(flow: inv.Flow, op: str, x: torch.Tensor) -> float:
    """Max abs difference between the incremental and the naive sequential path on the same
    input (``log_prob``) or the same base noise (``sample``); raises above 1e-4 (relative
    to the values' scale)."""
    outputs = []
    for method in ("incremental", "naive"):
        _set_sequential(flow, method)
        torch.manual_seed(1)
        outputs.append(flow.log_prob(x) if op == "log_prob" else flow.sample(x.shape[0]))
    _set_sequential(flow, "incremental")
    difference = float((outputs[0] - outputs[1]).abs().max())
    scale = max(1.0, float(outputs[1].abs().max()))
    if not difference <= 1e-4 * scale:
        raise AssertionError(f"incremental and naive paths differ by {difference:.2e}")
    return difference


def run(dims: list[int], layers: int, hidden: tuple[int, ...], naive_batch_784: int) -> list[dict]:
    rows = []
    for D in dims:
        batch = 128 if D >= 784 else 512
        for name in ("MAF", "IAF"):
            torch.manual_seed(0)
            flow = inv.Flow.registry[name](D, num_layers=layers, hidden_features=hidden)
            with torch.no_grad():  # leave the identity initialisation: realistic work
                for p in flow.parameters():
                    p.add_(0.01 * torch.randn_like(p))
            flow.eval()
            x = torch.randn(batch, D)
            with torch.no_grad(), inv.validation(False):
                for op in ("log_prob", "sample"):
                    sequential = (name == "MAF") == (op == "sample")
                    methods = ("incremental", "naive") if sequential else ("parallel",)
                    if sequential:
                        print(f"{name} D={D} {op}: incremental and naive agree to "
                              f"{_agreement(flow, op, x[:4]):.1e}")  # fmt: skip
                    for method in methods:
                        if method != "parallel":
                            _set_sequential(flow, method)
                        n = batch
                        if method == "naive" and D >= 784:
                            n = naive_batch_784
                        xb = x[:n]
                        fn: Callable[[], object] = (
                            (lambda xb=xb, flow=flow: flow.log_prob(xb))
                            if op == "log_prob"
                            else (lambda n=n, flow=flow: flow.sample(n))
                        )
                        passes = _passes(flow, fn)
                        seconds = _timeit(fn, min_time=0.3 if method == "naive" else 0.5)
                        rows.append(
                            {
                                "model": name,
                                "D": D,
                                "op": op,
                                "path": method,
                                "batch": n,
                                "passes": passes,
                                "seconds": seconds,
                                "per_second": n / seconds,
                            }
                        )
                        print(
                            f"{name} D={D} {op} {method}: batch {n}, {passes} passes, "
                            f"{seconds * 1e3:.2f} ms, {n / seconds:,.0f} samples/s",
                            flush=True,
                        )
                _set_sequential(flow, "incremental")
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | D | op | path | batch | MADE pass equivalents | time per call | samples/s | "
        "speed-up vs naive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    naive = {(r["model"], r["D"], r["op"]): r["per_second"] for r in rows if r["path"] == "naive"}
    for r in rows:
        key = (r["model"], r["D"], r["op"])
        speedup = (
            f"{r['per_second'] / naive[key]:,.1f}x"
            if r["path"] == "incremental" and key in naive
            else ""
        )
        lines.append(
            f"| {r['model']} | {r['D']} | {r['op']} | {r['path']} | {r['batch']} | "
            f"{r['passes']} | {r['seconds'] * 1e3:,.2f} ms | {r['per_second']:,.0f} | {speedup} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, name in zip(axes, ("MAF", "IAF")):
        for op in ("log_prob", "sample"):
            for path_kind, style in (("parallel", "-o"), ("incremental", "-s"), ("naive", "--x")):
                points = [
                    (r["D"], r["per_second"])
                    for r in rows
                    if r["model"] == name and r["op"] == op and r["path"] == path_kind
                ]
                if points:
                    ds, ps = zip(*points)
                    ax.plot(ds, ps, style, label=f"{op} ({path_kind})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("D")
        ax.set_title(f"{name}, 5 layers, MADE (512, 512)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("samples per second")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 63, 784])
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--naive-batch-784", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="D in {2, 8} only (smoke test)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dims = [2, 8] if args.quick else args.dims
    rows = run(dims, args.layers, tuple(args.hidden), args.naive_batch_784)
    table = markdown(rows)
    print()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, CPU")
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "passes.md").write_text(table + "\n")
    plot(rows, args.out / "passes.png")
    print(f"wrote {args.out / 'passes.md'} and {args.out / 'passes.png'}")


if __name__ == "__main__":
    main()
