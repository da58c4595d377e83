"""Peak memory of ``log_prob`` and ``sample`` for growing n: chunked versus all at once.

Each measurement runs in a fresh subprocess (so one measurement's peak cannot hide
another's). The subprocess builds the flow and its input, resets the kernel's resident-set
high-water mark (``/proc/self/clear_refs`` ← 5; Linux), runs one pass under ``no_grad``
and reads ``VmHWM`` from ``/proc/self/status``. Reported: the peak *above* the resident
size just before the pass, minus the bytes of the result (``n`` floats for ``log_prob``,
``n × D`` for ``sample``, which any method must hold), i.e. the working memory of the pass.
With chunking it stays flat as ``n`` grows 10x and 100x; without, it grows linearly.

Usage::

    python -m benchmarks.memory                          # realnvp, D=8, n = 1e4, 1e5, 1e6
    python -m benchmarks.memory --model maf --features 63 --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks.probes import run_fresh

CHILD = r"""
import json, sys
import torch
from invertible.catalog import build_model
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
flow = build_model(cfg["model"], cfg["features"], size=cfg["size"], seed=0).eval()
n, chunk = cfg["n"], cfg["chunk_size"]
x = torch.randn(n, cfg["features"]) if cfg["what"] == "log_prob" else None

from benchmarks.probes import peak_rss_kib

with torch.no_grad():
    flow.log_prob(torch.randn(8, cfg["features"]))  # warm-up: lazy allocations
    flow.sample(8)
    if cfg["what"] == "log_prob":
        run = lambda: flow.log_prob_chunked(x, chunk_size=chunk) if chunk else flow.log_prob(x)
    else:
        run = lambda: flow.sample(n, chunk_size=chunk) if chunk else flow.sample(n)
    before, peak, out = peak_rss_kib(run)
print(json.dumps({"before_kb": before, "peak_kb": peak,
                  "output_bytes": out.numel() * out.element_size()}))
"""


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns sizes in MiB."""
    got = run_fresh(CHILD, [json.dumps(cfg)])
    extra_mib = (got["peak_kb"] - got["before_kb"]) / 1024
    out_mib = got["output_bytes"] / 2**20
    return {
        "what": cfg["what"],
        "n": cfg["n"],
        "chunk_size": cfg["chunk_size"],
        "peak_above_start_mib": round(extra_mib, 1),
        "output_mib": round(out_mib, 1),
        "working_mib": round(max(0.0, extra_mib - out_mib), 1),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Command-line entry point; prints a table and returns the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="realnvp")
    parser.add_argument("--size", default="default")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--chunk-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--what", nargs="+", default=["log_prob", "sample"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for what in args.what:
        for chunk in (None, args.chunk_size):
            for n in args.sizes:
                cfg = {
                    "model": args.model,
                    "size": args.size,
                    "features": args.features,
                    "threads": args.threads,
                    "what": what,
                    "n": n,
                    "chunk_size": chunk,
                }
                row = measure(cfg)
                rows.append(row)
                peak, out, work = (
                    row["peak_above_start_mib"],
                    row["output_mib"],
                    row["working_mib"],
                )
                print(
                    f"{what:>8}  chunk={chunk!s:>5}  n={n:>9,}  peak +{peak:8.1f} MiB  "
                    f"output {out:7.1f} MiB  working {work:8.1f} MiB",
                    flush=True,
                )
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
