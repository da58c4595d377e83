"""``python -m benchmarks steps``: the training step of every library in every configuration.

A grid, per (model, D, batch): every library (the importable peers and ours, through the
speed harness's adapters, equal parameter counts checked) × precision (``fp32``, ``bf16``:
the forward pass and loss under ``torch.autocast``) × optimizer (``adam``:
``torch.optim.Adam(lr=1e-3)`` with torch's default implementation; ``fused``:
``Adam(fused=True)``) × mode (``eager``, and with ``--compile`` the loss compiled by
``torch.compile``, where that works for the library). Every cell gets its own freshly
built flow (seed 0) and optimizer. One training step is ``zero_grad(set_to_none=True)``,
``-log_prob(x).mean()``, ``backward``, ``step``.

Timing: after warm-up (which calibrates a block of steps to ``--target-seconds``), every
repeat times one block of every cell, the cell order rotating between repeats, so that
drift of the machine hits all cells alike; the figure is the median milliseconds per step.

FLOP/s: the matmul FLOPs of the architecture's linear layers, counted dense (masked MADE
weights included, what a dense implementation executes): 2·B·in·out per layer forward,
×3 for forward and backward. Our block-sparse MADE product skips the masked-out
rectangles, so its *executed* FLOPs are fewer than the count. The peak is the best of
square ``torch.mm`` products (512 to 2048 on CPU, up to 8192 on CUDA) in each precision,
timed before and after the grid.

Writes ``steps.json`` (every block, environment) and ``steps.md`` (tables generated from
the JSON; ``ours/best``: the best peer configuration's time over ours, > 1 means ours is
faster) into ``--out`` (default ``benchmarks/results/steps``).

Example::

    python -m benchmarks steps --dims 8 --repeats 1 --target-seconds 0.05 --out /tmp/steps
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks.adapter import architecture
from benchmarks.harness import ADAPTERS, DEFAULT_LIBRARIES, OURS, check_param_parity, to_json
from benchmarks.peers import peer_versions
from benchmarks.probes import run_fresh

__all__ = [
    "OPTIMIZERS",
    "PRECISIONS",
    "Cell",
    "add_parser",
    "compile_check",
    "compile_probe",
    "make_markdown",
    "matmul_peak",
    "run",
    "run_grid",
    "step_flops",
]

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}
"""Precision of the forward pass and loss (``None``: no autocast)."""

OPTIMIZERS = ("adam", "fused")
"""``torch.optim.Adam`` with torch's default implementation, and ``Adam(fused=True)``."""


# --------------------------------------------------------------------------------------
# FLOPs and the matmul peak
# --------------------------------------------------------------------------------------


def _linear_shapes(kind: str, dim: int) -> list[tuple[int, int]]:
    """``(in, out)`` of every linear layer of the benchmark architecture of ``kind``."""
    layers, hidden = architecture(kind)
    if kind == "maf":
        widths = [dim, *hidden, 2 * dim]
        return list(itertools.pairwise(widths)) * layers
    shapes = []
    for i in range(layers):  # the kept half alternates between ceil(D/2) and floor(D/2)
        kept = (dim + 1) // 2 if i % 2 == 0 else dim // 2
        shapes += itertools.pairwise([kept, *hidden, 2 * (dim - kept)])
    return shapes


def step_flops(kind: str, dim: int, batch: int) -> float:
    """Dense matmul FLOPs of one training step: 3 × Σ 2·B·in·out over the linear layers.

    Example:
        >>> step_flops("maf", 2, 1) == 3 * 5 * 2 * (2 * 512 + 512 * 512 + 512 * 4)
        True
    """
    return 3.0 * sum(2.0 * batch * a * b for a, b in _linear_shapes(kind, dim))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, min_s: float = 0.2) -> dict[str, Any]:
    """Best FLOP/s of square ``torch.mm`` in ``dtype`` on ``device`` over a few sizes
    (smallest first; larger ones are skipped once one product takes ``min_s``)."""
    sizes = (512, 1024, 2048) if device.type == "cpu" else (1024, 4096, 8192)
    best: dict[str, Any] = {"flops_per_s": 0.0, "n": None}
    for n in sizes:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)
        _sync(device)
        reps, start = 0, time.perf_counter()
        while time.perf_counter() - start < min_s:
            torch.mm(a, b)
            reps += 1
            _sync(device)
        rate = 2.0 * n**3 * reps / (time.perf_counter() - start)
        if rate > best["flops_per_s"]:
            best = {"flops_per_s": rate, "n": n}
        if reps <= 1:
            # One product already fills the timing window: a dtype this slow (bf16 emulated
            # on a CPU without native support runs ~300x below fp32) gains nothing from
            # larger sizes, and the next size would take 8x as long.
            break
    return best


# --------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------


def _optimizer(name: str, params: Sequence[Tensor]) -> torch.optim.Optimizer:
    if name == "fused":
        return torch.optim.Adam(params, lr=1e-3, fused=True)
    return torch.optim.Adam(params, lr=1e-3)


@dataclass
class Cell:
    """One (library, precision, optimizer, mode) of one (model, D, batch)."""

    library: str
    kind: str
    dim: int
    batch: int
    precision: str
    optimizer: str
    mode: str
    device: torch.device
    params: int = 0
    iters: int = 1
    runs_ms: list[float] = field(default_factory=list)
    error: str | None = None
    step: Callable[[], None] | None = field(default=None, repr=False)

    def build(self) -> None:
        """Build the flow, its optimizer and the step (recording an error instead of
        raising, so that one library that cannot run a configuration spoils nothing)."""
        if self.mode == "compile":
            self.error = compile_probe(self)
            if self.error:
                return
        try:
            torch.manual_seed(0)
            adapter = ADAPTERS[self.library](self.kind, self.dim)
            adapter.module.to(self.device)
            self.params = adapter.num_params()
            params = [p for p in adapter.module.parameters() if p.requires_grad]
            opt = _optimizer(self.optimizer, params)
            gen = torch.Generator().manual_seed(1234 + self.dim)
            x = torch.randn(self.batch, self.dim, generator=gen).to(self.device)

            def loss_of(batch: Tensor) -> Tensor:
                return -adapter.log_prob(batch).mean()

            loss_fn = torch.compile(loss_of) if self.mode.startswith("compile") else loss_of
            dtype = PRECISIONS[self.precision]
            cast = (
                (lambda: torch.autocast(self.device.type, dtype=dtype))
                if dtype is not None
                else contextlib.nullcontext
            )

            def step() -> None:
                opt.zero_grad(set_to_none=True)
                with cast():
                    loss = loss_fn(x)
                loss.backward()
                opt.step()

            self.step = step
        except Exception as e:  # a peer without fused Adam on this device, and the like
            self.error = f"{type(e).__name__}: {e}"[:300]

    def warmup(self, target_s: float) -> None:
        """A few steps (compiling, if asked), then a block length of about ``target_s``."""
        if self.step is None:
            return
        try:
            for _ in range(2):
                self.step()
            _sync(self.device)
            start = time.perf_counter()
            self.step()
            _sync(self.device)
            elapsed = time.perf_counter() - start
        except Exception as e:  # e.g. torch.compile failing on a library's code
            self.error, self.step = f"{type(e).__name__}: {e}"[:300], None
            return
        self.iters = max(1, math.ceil(target_s / max(elapsed, 1e-6)))

    def time_block(self) -> None:
        """Time one block of steps; appends milliseconds per step."""
        if self.step is None:
            return
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(self.iters):
            self.step()
        _sync(self.device)
        self.runs_ms.append(1e3 * (time.perf_counter() - start) / self.iters)

    @property
    def median_ms(self) -> float | None:
        """Median milliseconds per step (``None`` if the cell did not run)."""
        return statistics.median(self.runs_ms) if self.runs_ms else None

    def record(self, peaks: dict[str, float]) -> dict[str, Any]:
        """The cell as a JSON record, with FLOP/s against the peak of its precision."""
        flops = step_flops(self.kind, self.dim, self.batch)
        ms = self.median_ms
        rate = flops / (ms / 1e3) if ms else None
        peak = peaks.get(self.precision)
        return {
            "library": self.library, "kind": self.kind, "dim": self.dim, "batch": self.batch,
            "precision": self.precision, "optimizer": self.optimizer, "mode": self.mode,
            "params": self.params, "step_ms": ms, "runs_ms": list(self.runs_ms),
            "iters_per_block": self.iters, "flops": flops, "flops_per_s": rate,
            "fraction_of_peak": rate / peak if rate and peak else None, "error": self.error,
        }  # fmt: skip


def compile_check(
    library: str, kind: str, dim: str, batch: str, precision: str, device: str, threads: str
) -> dict:
    """Compile one library's loss and take three steps; ``{"error": None or why not}``.
    Runs in the fresh interpreter of :func:`compile_probe`."""
    torch.set_num_threads(int(threads))
    cell = Cell(library, kind, int(dim), int(batch), precision, "adam", "compile-probe",
                torch.device(device))  # fmt: skip
    # "compile-probe": build the compiled step without probing again
    cell.build()
    cell.mode = "compile"
    cell.warmup(0.0)
    return {"error": cell.error}


_PROBED: dict[tuple[Any, ...], str | None] = {}


def compile_probe(cell: Cell) -> str | None:
    """Why ``torch.compile`` cannot train the flow of ``cell`` (``None``: it can), tried
    once per (library, model, D, batch, precision, device, threads) in a fresh interpreter:
    on some libraries it crashes the process (zuko 1.6 with torch 2.13 on CPU, 2 threads,
    batch 512: a segmentation fault; not at 1 thread or batch 64), which no ``except`` in
    this one could survive."""
    args = [cell.library, cell.kind, str(cell.dim), str(cell.batch), cell.precision,
            str(cell.device), str(torch.get_num_threads())]  # fmt: skip
    key = tuple(args)
    if key not in _PROBED:
        code = (
            "import json, sys; from benchmarks.steps import compile_check; "
            "print(json.dumps(compile_check(*sys.argv[1:])))"
        )
        try:
            _PROBED[key] = run_fresh(code, args)["error"]
        except subprocess.CalledProcessError as e:
            _PROBED[key] = f"torch.compile crashed the interpreter (exit status {e.returncode})"
    return _PROBED[key]


# --------------------------------------------------------------------------------------
# The grid
# --------------------------------------------------------------------------------------


def _group(
    libraries: Sequence[str], kind: str, dim: int, batch: int, options: dict[str, Any]
) -> list[Cell]:
    modes = ["eager", "compile"] if options["compile"] else ["eager"]
    combos = itertools.product(libraries, options["precisions"], options["optimizers"], modes)
    return [Cell(lib, kind, dim, batch, p, o, m, options["device"]) for lib, p, o, m in combos]


def _run_group(cells: list[Cell], repeats: int, target_s: float, log: Callable) -> None:
    """Build, warm up and time the cells of one (model, D, batch), interleaved."""
    for cell in cells:
        cell.build()
        cell.warmup(target_s)
        if cell.error:
            log(f"  {cell.library} {cell.precision} {cell.optimizer} {cell.mode}: {cell.error}")
    for r in range(repeats):
        k = r % len(cells)
        for cell in [*cells[k:], *cells[:k]]:
            cell.time_block()
    for cell in cells:
        ms = cell.median_ms
        figure = f"{ms:8.2f} ms" if ms is not None else "  failed"
        log(f"  {cell.library:12s} {cell.precision} {cell.optimizer:5s} {cell.mode:7s} {figure}")


def _peaks(device: torch.device, precisions: Sequence[str]) -> dict[str, float]:
    return {
        p: matmul_peak(device, PRECISIONS[p] or torch.float32)["flops_per_s"] for p in precisions
    }


def _environment(device: torch.device, threads: int) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "versions": {"torch": torch.__version__, **peer_versions()},
    }


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def run_grid(
    libraries: Sequence[str],
    groups: Sequence[tuple[str, int, int]],
    *,
    options: dict[str, Any],
    repeats: int = 5,
    target_s: float = 0.25,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every cell of every ``(kind, dim, batch)`` group; returns the JSON payload.

    ``options``: ``device``, ``precisions``, ``optimizers``, ``compile`` (bool), ``threads``.
    """
    start = time.perf_counter()
    device = options["device"]
    ours = [lib for lib in libraries if lib in OURS]
    peaks_before = _peaks(device, options["precisions"])
    records, parity = [], {}
    for kind, dim, batch in groups:
        log(f"{kind} D={dim} batch={batch}")
        cells = _group(libraries, kind, dim, batch, options)
        _run_group(cells, repeats, target_s, log)
        counts = {c.library: c.params for c in cells if c.params}
        parity[f"{kind} D={dim}"] = check_param_parity(counts, ours) if counts else None
        records += [cell.record(peaks_before) for cell in cells]
        del cells  # free the group's flows before building the next
    peaks_after = _peaks(device, options["precisions"])
    peaks = {p: max(peaks_before[p], peaks_after[p]) for p in peaks_before}
    for rec in records:  # against the best peak seen, before or after the grid
        rate, peak = rec["flops_per_s"], peaks.get(rec["precision"])
        rec["fraction_of_peak"] = rate / peak if rate and peak else None
    meta = _environment(device, options["threads"])
    meta |= {"repeats": repeats, "target_s": target_s, "wall_s": time.perf_counter() - start}
    meta |= {"compile": options["compile"], "precisions": list(options["precisions"])}
    meta |= {"optimizers": list(options["optimizers"])}
    return {
        "meta": meta, "libraries": list(libraries), "ours": ours,
        "matmul_peak_flops_per_s": peaks, "param_parity": parity, "results": records,
    }  # fmt: skip


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _config(rec: dict[str, Any]) -> str:
    return f"{rec['precision']} / {rec['optimizer']} / {rec['mode']}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _best(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    timed = [r for r in records if r["step_ms"] is not None]
    return min(timed, key=lambda r: r["step_ms"]) if timed else None


def _group_table(records: list[dict[str, Any]], libs: list[str], ours: list[str]) -> list[str]:
    """Rows: configurations; columns: libraries (ms per step), ours/best, our GFLOP/s."""
    best_peer = _best([r for r in records if r["library"] not in ours])
    header = ["precision / optimizer / mode", *libs]
    if ours:
        header += [f"{ours[0]}/best", f"{ours[0]} GFLOP/s (% of peak)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    configs = list(dict.fromkeys(_config(r) for r in records))
    for config in configs:
        row = {r["library"]: r for r in records if _config(r) == config}
        cells = [_ms(row[lib]["step_ms"]) if lib in row else "—" for lib in libs]
        mine = row.get(ours[0]) if ours else None
        if ours:
            ratio, flops = "—", "—"
            if mine and mine["step_ms"] and best_peer:
                ratio = f"{best_peer['step_ms'] / mine['step_ms']:.2f}×"
            if mine and mine["flops_per_s"]:
                share = mine["fraction_of_peak"]
                flops = f"{mine['flops_per_s'] / 1e9:.1f} ({100 * share:.0f}%)" if share else "—"
            cells += [ratio, flops]
        lines.append("| " + " | ".join([config, *cells]) + " |")
    return lines


def _summary_table(data: dict[str, Any]) -> list[str]:
    """One row per group: the best peer configuration, ours at its best, the ratio."""
    ours = data["ours"]
    lines = [
        "| model | best peer (configuration) | ms | ours at its best | ms | ours/best |",
        "|---|---|---|---|---|---|",
    ]
    for (kind, dim, batch), records in _grouped(data["results"]).items():
        peer = _best([r for r in records if r["library"] not in ours])
        mine = _best([r for r in records if r["library"] in ours])
        if peer is None or mine is None:
            continue
        lines.append(
            f"| {kind} D={dim} b={batch} | {peer['library']} ({_config(peer)}) | "
            f"{peer['step_ms']:.2f} | {_config(mine)} | {mine['step_ms']:.2f} | "
            f"{peer['step_ms'] / mine['step_ms']:.2f}× |"
        )
    return lines


def _grouped(records: list[dict[str, Any]]) -> dict[tuple[str, int, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault((rec["kind"], rec["dim"], rec["batch"]), []).append(rec)
    return groups


def make_markdown(data: dict[str, Any]) -> str:
    """The tables of a :func:`run_grid` result (milliseconds per training step, lower is
    better; ``ours/best``: the best peer configuration's time over ours, > 1: ours faster).
    """
    meta, libs, ours = data["meta"], data["libraries"], data["ours"]
    peaks = data["matmul_peak_flops_per_s"]
    lines = [
        "# Training step: every library in every configuration",
        "",
        f"{meta['date']}; {meta['device_name']} ({meta['device']}, {meta['threads']} threads); "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
        + ".",
        "",
        f"Median ms per step over {meta['repeats']} interleaved repeats (blocks of "
        f"~{meta['target_s']} s). Matmul peak: "
        + ", ".join(f"{p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items())
        + ". GFLOP/s count the dense matmul FLOPs of the architecture (3 × 2·B·in·out).",
        "",
        "## Summary",
        "",
        *_summary_table(data),
        "",
    ]
    for (kind, dim, batch), records in _grouped(data["results"]).items():
        lines += [f"## {kind} D={dim}, batch {batch}", "", *_group_table(records, libs, ours)]
        parity = data["param_parity"].get(f"{kind} D={dim}")
        if parity and not parity["ok"]:
            lines += ["", f"**Parameter counts differ by more than 5%: {parity['offenders']}**"]
        failed = [r for r in records if r["error"]]
        lines += [""] + [f"- {r['library']} {_config(r)} did not run: {r['error']}" for r in failed]
        lines += [""] if failed else []
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``steps`` subcommand on ``subparsers`` (see ``benchmarks.__main__``)."""
    p = subparsers.add_parser(
        "steps",
        help="training step time: libraries x precision x optimizer (x compile), FLOP/s",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--kinds", nargs="+", default=["maf", "coupling"], choices=["maf", "coupling"])
    p.add_argument("--dims", type=int, nargs="+", default=[63, 784], metavar="D")
    p.add_argument("--batches", type=int, nargs="+", default=[512], metavar="B")
    p.add_argument("--libs", nargs="+", default=None, metavar="LIB")
    p.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=OPTIMIZERS)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd losses")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks per cell (median)")
    p.add_argument("--target-seconds", type=float, default=0.25, help="length of a block")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/steps"), metavar="DIR")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Run the grid with parsed ``args``; writes ``steps.json`` and ``steps.md``."""
    torch.set_num_threads(args.threads)
    libs = args.libs or list(DEFAULT_LIBRARIES)
    unknown = [lib for lib in libs if lib not in ADAPTERS]
    if unknown:
        print(f"unknown libraries {unknown}; available: {sorted(ADAPTERS)}")
        return 1
    options = {
        "device": torch.device(args.device), "precisions": args.precisions,
        "optimizers": args.optimizers, "compile": args.compile, "threads": args.threads,
    }  # fmt: skip
    groups = [(k, d, b) for k in args.kinds for d in args.dims for b in args.batches]
    data = run_grid(
        libs, groups, options=options, repeats=args.repeats, target_s=args.target_seconds
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "steps.json").write_text(to_json(data))
    markdown = make_markdown(data)
    (args.out / "steps.md").write_text(markdown)
    print(markdown)
    print(f"total {data['meta']['wall_s']:.1f} s; wrote {args.out / 'steps.json'}, steps.md")
    return 0
