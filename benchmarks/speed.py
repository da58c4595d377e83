"""``python -m benchmarks speed``: throughput and memory of MAF / coupling flows.

Writes ``speed.json`` (every block timed, environment, versions), ``speed.md`` (tables)
and ``speed.png`` (throughput vs D) into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["FULL", "QUICK", "add_parser", "run"]

FULL: dict[str, Any] = {
    "dims": [2, 8, 63, 784],
    "repeats": 5,
    "threads": [1, 2],
    "target_s": 0.25,
    "retries": 2,
    "out": "benchmarks/results/speed",
}
"""Defaults of a normal run."""

QUICK: dict[str, Any] = {
    "dims": [8, 63],
    "repeats": 1,
    "threads": [2],
    "target_s": 0.1,
    "retries": 0,
}
"""Defaults under ``--quick`` (peers only: well under a minute on 2 quiet cores).
Options given explicitly on the command line still win."""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``speed`` subcommand on ``subparsers`` (see ``benchmarks.__main__``)."""
    p = subparsers.add_parser(
        "speed",
        help="training / log_prob / sampling throughput and peak memory vs the peers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: D in {8, 63}, 1 repeat, 2 threads, short blocks",
    )
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        metavar="T",
        help="torch.set_num_threads values (default 1 2; quick: 2)",
    )
    p.add_argument(
        "--dims",
        type=int,
        nargs="+",
        metavar="D",
        help="dimensions (default 2 8 63 784; quick: 8 63)",
    )
    p.add_argument("--kinds", nargs="+", default=["maf", "coupling"], choices=["maf", "coupling"])
    p.add_argument(
        "--libs",
        nargs="+",
        default=None,
        metavar="LIB",
        help="libraries to measure (default: the importable peers, then ours; opt-in: "
        "normflows-iaf-costs)",
    )
    p.add_argument("--repeats", type=int, help="timed blocks per figure, median (default 5)")
    p.add_argument("--target-seconds", type=float, help="length of a timed block (default 0.25 s)")
    p.add_argument(
        "--slow-seconds",
        type=float,
        default=5.0,
        help="sampling calls slower than this are measured once",
    )
    p.add_argument(
        "--max-foreign",
        type=float,
        default=0.25,
        help="re-time blocks during which other processes used more cores than this",
    )
    p.add_argument("--retries", type=int, help="re-timings per block (default 2; quick: 0)")
    p.add_argument(
        "--memory",
        choices=["profiler", "rss", "none"],
        default="profiler",
        help="peak-memory method (see benchmarks/harness.py)",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="output folder (default benchmarks/results/speed, quick: .../speed-quick)",
    )
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the speed benchmark with parsed ``args``; returns the exit status."""
    from benchmarks import harness

    preset = QUICK if args.quick else FULL

    def pick(value: Any, key: str) -> Any:
        return preset[key] if value is None else value

    dims, repeats = pick(args.dims, "dims"), pick(args.repeats, "repeats")
    threads, target = pick(args.threads, "threads"), pick(args.target_seconds, "target_s")
    retries = pick(args.retries, "retries")
    libs = args.libs or list(harness.DEFAULT_LIBRARIES)
    if not libs:
        print("no library available: pip install --no-deps -r requirements-peers.txt")
        return 1
    configs = [harness.SpeedConfig.default(k, d) for k in args.kinds for d in dims]
    print(f"libraries: {', '.join(libs)}; dims {dims}; threads {threads}; repeats {repeats}")
    out: Path = args.out or Path("benchmarks/results/speed-quick" if args.quick else FULL["out"])
    out.mkdir(parents=True, exist_ok=True)

    def save(data: dict[str, Any]) -> list[Path]:
        data["meta"]["quick"] = bool(args.quick)
        (out / "speed.json").write_text(harness.to_json(data))
        (out / "speed.md").write_text(harness.make_markdown(data))
        written = [out / "speed.json", out / "speed.md"]
        if not args.no_plot:
            written.append(harness.make_plot(data, out / "speed.png"))
        return written

    data = harness.run_speed(
        libs,
        configs,
        threads=threads,
        repeats=repeats,
        target_s=target,
        slow_s=args.slow_seconds,
        max_foreign=args.max_foreign,
        retries=retries,
        memory=args.memory,
        checkpoint=save,
    )
    written = save(data)
    md = harness.make_markdown(data)
    print()
    print(md)
    print(f"total {data['meta']['wall_s']:.1f} s; wrote " + ", ".join(map(str, written)))
    return 0
