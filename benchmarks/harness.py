"""Generic speed and memory measurement of flow adapters (peers and ``invertible``).

Everything here talks to flows only through :class:`~benchmarks.adapter.FlowAdapter`.

Method:

- **Throughput** in samples per second, three figures per (library, model, D, threads):
  ``train`` = ``-log_prob(x).mean()`` + ``backward`` + Adam step (a fresh Adam, lr 1e-3,
  per adapter: the library's own if its adapter has ``make_optimizer`` (``invertible``:
  fused Adam, what ``invertible.fit`` uses), else ``torch.optim.Adam``, what the peers'
  examples use; ``zero_grad(set_to_none=True)`` each step), ``log_prob`` under
  ``torch.no_grad()``, and ``sample`` under ``torch.no_grad()``. Each figure is timed as
  a block of iterations calibrated during warm-up to last about ``target_s`` seconds; the
  reported figure is the median over ``repeats`` blocks. A sampling call that alone takes
  more than ``slow_s`` seconds (MAF at D = 784 on a peer: ~10 s) is not repeated.
- **Interleaving**: all adapters are built and warmed up first; then every repeat visits
  every (model, D) and, within it, every library, the library order rotating from one
  repeat to the next, so that slow drift of the machine hits all libraries alike.
  ``torch.set_num_threads`` is set per thread count (outer loop).
- **Peak memory of a training step**, method ``"profiler"`` (default): one training step
  (after warm-up, gradients set to ``None`` first) is run under
  ``torch.profiler.profile(profile_memory=True, record_shapes=True, with_stack=True)``;
  the profiler's memory timeline (``export_memory_timeline``, which follows every
  allocation of the CPU allocator and labels it parameter / optimizer state / input /
  activation / gradient / temporary) gives the high-water mark of live tensor bytes.
  It is deterministic, independent of the allocator's caching and of other processes,
  and counts parameters + Adam state + batch + activations + gradients.
  Method ``"rss"``: a fresh subprocess per (library, model, D) builds the flow, the
  batch and Adam, records its resident set size, resets the kernel's peak-RSS counter
  (``/proc/self/clear_refs``) and reports the rise of ``VmHWM`` over one (the first)
  training step: process-level, includes allocator overheads, excludes the parameters.
- **Sample check**: the samples of the timed sampling call are fed back to ``log_prob``;
  both must be finite (:func:`check_sample_exact`). Recorded, not enforced.

Adapters are looked up in :data:`ADAPTERS` (library name -> builder). The peers come from
:mod:`benchmarks.peers`, ``invertible``'s from :mod:`benchmarks.invertible_adapter`;
libraries listed in :data:`OURS` get an ``<ours>/best peer`` ratio column.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from benchmarks import invertible_adapter
from benchmarks.adapter import KINDS, AdapterBuilder, FlowAdapter, ModelKind, make_optimizer
from benchmarks.peers import available_peers, peer_versions
from benchmarks.probes import peak_rss_kib, run_fresh

__all__ = [
    "ADAPTERS",
    "DEFAULT_DIMS",
    "DEFAULT_LIBRARIES",
    "METRICS",
    "OURS",
    "Bench",
    "SpeedConfig",
    "check_param_parity",
    "check_sample_exact",
    "default_batch",
    "default_sample_n",
    "make_markdown",
    "make_plot",
    "measure",
    "peak_train_memory_profiler",
    "peak_train_memory_rss",
    "run_speed",
    "to_json",
]

DEFAULT_DIMS = (2, 8, 63, 784)
_Y_TICKS = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
METRICS = ("train", "log_prob", "sample")
"""Throughput figures (samples/s) measured per (library, config, threads)."""

PARAM_TOLERANCE = 0.05
"""Parameter counts must agree within 5% (relative to ours, else to the peers' median)."""

# --------------------------------------------------------------------------------------
# Adapter registry
# --------------------------------------------------------------------------------------

ADAPTERS: dict[str, AdapterBuilder] = dict(available_peers(variants=True))
"""Library name -> ``builder(kind, dim)``: the importable peers (and their opt-in variants,
see :data:`benchmarks.peers.VARIANT_BUILDERS`) plus, if present, ours."""

DEFAULT_LIBRARIES: list[str] = list(available_peers())
"""Libraries measured when none are named: the importable peers, then ours."""

OURS: tuple[str, ...] = ()
"""Names in :data:`ADAPTERS` that are our own library (get a ratio-to-best-peer column)."""

ADAPTERS.update(invertible_adapter.ADAPTERS)
OURS = tuple(invertible_adapter.ADAPTERS)
DEFAULT_LIBRARIES += OURS


# --------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------


def default_batch(dim: int) -> int:
    """Training / log_prob batch: 512, or 128 from D = 784 on."""
    return 128 if dim >= 784 else 512


def default_sample_n(kind: str, dim: int) -> int:
    """Samples per sampling call: 1000, but 100 for MAF at D >= 784 (D passes per layer)."""
    return 100 if kind == "maf" and dim >= 784 else 1000


@dataclass(frozen=True)
class SpeedConfig:
    """One (model, D) cell of the benchmark."""

    kind: ModelKind
    dim: int
    batch: int
    sample_n: int

    @classmethod
    def default(cls, kind: ModelKind, dim: int) -> SpeedConfig:
        """The benchmark batch and sample sizes for ``(kind, dim)``."""
        return cls(kind, dim, default_batch(dim), default_sample_n(kind, dim))

    @property
    def label(self) -> str:
        """Row label such as ``"MAF D=63 (b=512)"``."""
        name = "MAF" if self.kind == "maf" else "coupling"
        return f"{name} D={self.dim} (b={self.batch})"


# --------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------


def check_sample_exact(
    adapter: FlowAdapter, samples: Tensor | None = None, n: int = 64
) -> dict[str, Any]:
    """Feed samples back to ``log_prob`` and check that everything is finite.

    Args:
        adapter: The flow.
        samples: Samples to check (e.g. those of a timed call); drawn (``n``) if ``None``.
        n: Number of samples to draw when ``samples`` is ``None``.

    Returns:
        ``{"n", "finite_samples", "finite_log_prob", "mean_log_prob", "ok"}``.
    """
    with torch.no_grad():
        if samples is None:
            samples = adapter.sample(n)
        lp = adapter.log_prob(samples)
    finite_samples = bool(torch.isfinite(samples).all())
    finite_lp = bool(torch.isfinite(lp).all())
    mean_lp = float(lp[torch.isfinite(lp)].mean()) if bool(torch.isfinite(lp).any()) else math.nan
    return {
        "n": int(samples.shape[0]),
        "finite_samples": finite_samples,
        "finite_log_prob": finite_lp,
        "mean_log_prob": mean_lp,
        "ok": finite_samples and finite_lp and tuple(lp.shape) == (samples.shape[0],),
    }


def check_param_parity(
    counts: dict[str, int], ours: Sequence[str] = (), tolerance: float = PARAM_TOLERANCE
) -> dict[str, Any]:
    """Check that parameter counts agree within ``tolerance``.

    The reference is the first library of ``ours`` present in ``counts``, else the median
    of all counts.

    Returns:
        ``{"reference", "reference_count", "deviation": {lib: rel}, "offenders", "ok"}``.
    """
    present = [name for name in ours if name in counts]
    if present:
        ref_name, ref = present[0], counts[present[0]]
    else:
        ref_name, ref = "median", int(statistics.median(counts.values()))
    deviation = {name: c / ref - 1.0 for name, c in counts.items()}
    offenders = [name for name, d in deviation.items() if abs(d) > tolerance]
    return {
        "reference": ref_name,
        "reference_count": ref,
        "deviation": deviation,
        "offenders": offenders,
        "ok": not offenders,
    }


# --------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------

_TIMELINE_CATEGORIES = (
    "parameter",
    "optimizer_state",
    "input",
    "temporary",
    "activation",
    "gradient",
    "autograd_detail",
    "unknown",
)
"""Column order of ``export_memory_timeline`` (after a leading zero column), torch 2.x."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (the profiler's start/stop chatter) inside the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _train_step(adapter: FlowAdapter, opt: torch.optim.Optimizer, x: Tensor) -> float:
    opt.zero_grad(set_to_none=True)
    loss = -adapter.log_prob(x).mean()
    loss.backward()
    opt.step()
    return float(loss.detach())


def peak_train_memory_profiler(
    adapter: FlowAdapter, opt: torch.optim.Optimizer, x: Tensor
) -> dict[str, Any]:
    """High-water mark of live CPU tensor bytes during one training step.

    Run after at least one warm-up step, so that Adam's state exists (it is counted).

    Returns:
        ``{"method": "profiler", "peak_mib", "at_peak_mib": {category: MiB}}``.
    """
    from torch.profiler import ProfilerActivity, profile

    opt.zero_grad(set_to_none=True)
    gc.collect()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), _quiet_stderr():
        warnings.simplefilter("ignore")
        with profile(
            activities=[ProfilerActivity.CPU],
            profile_memory=True,
            record_shapes=True,
            with_stack=True,
        ) as prof:
            loss = -adapter.log_prob(x).mean()
            loss.backward()
            opt.step()
        path = Path(tmp) / "timeline.json"
        prof.export_memory_timeline(str(path), device="cpu")
        _, sizes = json.loads(path.read_text())
    totals = [sum(row) for row in sizes]
    i = max(range(len(totals)), key=totals.__getitem__)
    breakdown = dict(zip(_TIMELINE_CATEGORIES, sizes[i][1:], strict=False))
    mib = 2.0**20
    return {
        "method": "profiler",
        "peak_mib": totals[i] / mib,
        "at_peak_mib": {k: v / mib for k, v in breakdown.items() if v},
    }


def _rss_probe(library: str, kind: str, dim: int, batch: int, threads: int) -> dict[str, Any]:
    """Body of the ``rss`` memory probe; runs inside a fresh interpreter."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    adapter = ADAPTERS[library](kind, dim)
    x = torch.randn(batch, dim)
    opt = make_optimizer(adapter)
    with torch.no_grad():  # lazy one-time initialisations outside the measured window
        adapter.log_prob(x[:2])
    baseline, peak, _ = peak_rss_kib(lambda: _train_step(adapter, opt, x))
    return {
        "method": "rss",
        "peak_mib": (peak - baseline) / 1024.0,
        "baseline_mib": baseline / 1024,
    }


def peak_train_memory_rss(
    library: str, kind: str, dim: int, batch: int, threads: int = 1
) -> dict[str, Any]:
    """Rise of peak RSS during the first training step, in a fresh subprocess (Linux)."""
    code = (
        "import json, sys; from benchmarks.harness import _rss_probe; "
        "print(json.dumps(_rss_probe(*sys.argv[1:3], *map(int, sys.argv[3:]))))"
    )
    return run_fresh(code, [library, kind, str(dim), str(batch), str(threads)])


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _system_busy_s() -> float | None:
    """CPU seconds all processes spent busy (``/proc/stat``, steal included); Linux only."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


class _ForeignLoad:
    """Measures how many cores *other* processes kept busy during a block.

    ``busy CPU of the machine - CPU of this process``, divided by wall time. About 0 on a
    quiet machine; on the 2-core benchmark machine anything above ~0.25 means another job
    competed with the timed threads (and oversubscribed OpenMP threads slow down a lot).
    """

    def __enter__(self) -> _ForeignLoad:
        self.cores: float = math.nan
        self._busy = _system_busy_s()
        self._own = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _system_busy_s()
        if busy is None or self._busy is None:
            return
        wall = time.perf_counter() - self._wall
        own = time.process_time() - self._own
        self.cores = max(0.0, (busy - self._busy - own) / max(wall, 1e-9))


@dataclass
class Bench:
    """Timing state of one adapter on one configuration.

    Args:
        library: Library name (column).
        config: Model kind, D, batch and sample size.
        adapter: The flow.
        target_s: Wall time one timed block aims at.
        slow_s: A single sampling call slower than this is not repeated.
        max_foreign: A block during which other processes kept more than this many cores
            busy is discarded and timed again (at most ``retries`` times, then kept).
        retries: See ``max_foreign``.
    """

    library: str
    config: SpeedConfig
    adapter: FlowAdapter
    target_s: float = 0.25
    slow_s: float = 5.0
    max_foreign: float = 0.25
    retries: int = 2
    x: Tensor = field(init=False, repr=False)
    opt: torch.optim.Optimizer = field(init=False, repr=False)
    iters: dict[str, int] = field(default_factory=dict)
    runs: dict[str, list[float]] = field(default_factory=dict)
    foreign: dict[str, list[float]] = field(default_factory=dict)
    discarded: int = 0
    last_samples: Tensor | None = field(default=None, repr=False)
    nonfinite_loss: bool = False

    def __post_init__(self) -> None:
        gen = torch.Generator().manual_seed(1234 + self.config.dim)
        self.x = torch.randn(self.config.batch, self.config.dim, generator=gen)
        self.opt = make_optimizer(self.adapter)

    # -- single operations ----------------------------------------------------------------
    def _op(self, metric: str) -> Callable[[], int]:
        """The operation behind ``metric``; returns how many samples it processed."""
        if metric == "train":

            def train() -> int:
                loss = _train_step(self.adapter, self.opt, self.x)
                if not math.isfinite(loss):
                    self.nonfinite_loss = True
                return self.config.batch

            return train
        if metric == "log_prob":

            def log_prob() -> int:
                with torch.no_grad():
                    self.adapter.log_prob(self.x)
                return self.config.batch

            return log_prob
        if metric == "sample":

            def sample() -> int:
                with torch.no_grad():
                    self.last_samples = self.adapter.sample(self.config.sample_n)
                return self.config.sample_n

            return sample
        raise ValueError(f"unknown metric {metric!r}")

    def warmup(self, warmup_iters: int = 2) -> None:
        """Run every operation a few times and calibrate the block lengths."""
        for metric in METRICS:
            op = self._op(metric)
            reps = 1 if metric == "sample" else warmup_iters
            with _ForeignLoad() as load:
                start = time.perf_counter()
                for _ in range(reps):
                    op()
                elapsed = (time.perf_counter() - start) / reps
            if metric == "sample" and elapsed > self.slow_s:
                self.iters[metric] = 1
                # The warm-up call (the code paths are warm from building and log_prob)
                # was a full measurement already: keep it rather than spend as long again.
                self.runs.setdefault(metric, []).append(self.config.sample_n / elapsed)
                self.foreign.setdefault(metric, []).append(load.cores)
            else:
                self.iters[metric] = max(1, math.ceil(self.target_s / max(elapsed, 1e-9)))

    def time_once(self, metric: str) -> float | None:
        """One timed block of ``metric``; returns samples/s (``None`` if skipped as slow)."""
        done = self.runs.setdefault(metric, [])
        slow = bool(done) and self.config.sample_n / done[-1] > self.slow_s
        if metric == "sample" and self.iters[metric] == 1 and slow:
            return None
        op = self._op(metric)
        n = self.iters[metric]
        for attempt in range(self.retries + 1):
            processed = 0
            with _ForeignLoad() as load:
                start = time.perf_counter()
                for _ in range(n):
                    processed += op()
                rate = processed / (time.perf_counter() - start)
            if not load.cores > self.max_foreign or attempt == self.retries:
                break
            self.discarded += 1
            time.sleep(1.0)
        done.append(rate)
        self.foreign.setdefault(metric, []).append(load.cores)
        return rate

    def median(self, metric: str) -> float:
        """Median throughput of ``metric`` over the blocks timed so far."""
        values = self.runs.get(metric, [])
        return statistics.median(values) if values else math.nan

    def reset_runs(self) -> None:
        """Forget measured blocks (e.g. before the next thread count)."""
        self.runs = {}
        self.foreign = {}
        self.discarded = 0


def measure(
    adapter: FlowAdapter,
    D: int,
    batch: int,
    *,
    repeats: int,
    threads: int,
    kind: ModelKind = "maf",
    sample_n: int | None = None,
    target_s: float = 0.25,
    memory: str = "profiler",
) -> dict[str, Any]:
    """Measure one adapter alone (no interleaving); see the module docstring.

    ``memory="rss"`` needs ``adapter.name`` to be a key of :data:`ADAPTERS` (it rebuilds
    the flow in a subprocess).

    Returns:
        ``{"train", "log_prob", "sample"}`` medians (samples/s), ``"runs"`` (all blocks),
        ``"params"``, ``"memory"`` and ``"sample_check"``.
    """
    torch.set_num_threads(threads)
    n = default_sample_n(kind, D) if sample_n is None else sample_n
    bench = Bench(adapter.name, SpeedConfig(kind, D, batch, n), adapter, target_s=target_s)
    bench.warmup()
    for _ in range(repeats):
        for metric in METRICS:
            bench.time_once(metric)
    result: dict[str, Any] = {m: bench.median(m) for m in METRICS}
    result["runs"] = bench.runs
    result["params"] = adapter.num_params()
    result["memory"] = _measure_memory(memory, bench, adapter.name, threads)
    result["sample_check"] = check_sample_exact(adapter, bench.last_samples)
    return result


def _environment(threads: Sequence[int], ours: Sequence[str]) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {"torch": torch.__version__, **peer_versions()}
    for name in ours:
        with contextlib.suppress(Exception):
            from importlib import metadata

            versions[name] = metadata.version(name)
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": list(threads),
        "versions": versions,
        "dtype": "float32",
    }


def run_speed(
    libraries: Sequence[str],
    configs: Sequence[SpeedConfig],
    *,
    threads: Sequence[int] = (1, 2),
    repeats: int = 5,
    target_s: float = 0.25,
    slow_s: float = 5.0,
    max_foreign: float = 0.25,
    retries: int = 2,
    memory: str = "profiler",
    log: Callable[[str], None] = print,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure every library on every configuration, interleaved; see the module docstring.

    Args:
        libraries: Keys of :data:`ADAPTERS`.
        configs: The (model, D) cells.
        threads: Values for ``torch.set_num_threads`` (outer loop).
        repeats: Timed blocks per figure (the median is reported).
        target_s: Wall time of one timed block.
        slow_s: Sampling calls slower than this are not repeated.
        max_foreign: Blocks during which other processes kept more cores busy than this
            are timed again, at most ``retries`` times (see :class:`Bench`).
        retries: See ``max_foreign``.
        memory: ``"profiler"``, ``"rss"`` or ``"none"``.
        log: Receives one line per measured figure.
        checkpoint: Called with the partial result after each thread count (to save it).

    Returns:
        A JSON-serialisable dict: ``meta``, ``configs``, ``libraries``, ``ours`` and
        ``results`` (one record per library x config x threads).
    """
    unknown = [lib for lib in libraries if lib not in ADAPTERS]
    if unknown:
        raise KeyError(f"unknown libraries {unknown}; available: {sorted(ADAPTERS)}")
    ours = [lib for lib in libraries if lib in OURS]
    t0 = time.perf_counter()
    load_start = _loadavg()

    benches: dict[tuple[SpeedConfig, str], Bench] = {}
    for cfg in configs:
        for lib in libraries:
            torch.manual_seed(0)
            adapter = ADAPTERS[lib](cfg.kind, cfg.dim)
            benches[cfg, lib] = Bench(
                lib,
                cfg,
                adapter,
                target_s=target_s,
                slow_s=slow_s,
                max_foreign=max_foreign,
                retries=retries,
            )

    params = {
        cfg.label: {lib: benches[cfg, lib].adapter.num_params() for lib in libraries}
        for cfg in configs
    }
    parity = {label: check_param_parity(c, ours) for label, c in params.items()}
    for label, p in parity.items():
        if not p["ok"]:
            log(f"WARNING parameter counts differ by more than 5% for {label}: {p['deviation']}")

    mem: dict[tuple[SpeedConfig, str], dict[str, Any] | None] = {}
    records: list[dict[str, Any]] = []

    def assemble(done: Sequence[int]) -> dict[str, Any]:
        meta = _environment(done, ours)
        meta.update(
            {
                "repeats": repeats,
                "target_s": target_s,
                "slow_s": slow_s,
                "memory_method": memory,
                "max_foreign": max_foreign,
                "retries": retries,
                "loadavg_start": load_start,
                "loadavg_end": _loadavg(),
                "foreign_cores": _foreign_summary(records, max_foreign),
                "wall_s": time.perf_counter() - t0,
                "complete": list(done) == list(threads),
            }
        )
        return {
            "meta": meta,
            "configs": [asdict(c) | {"label": c.label} for c in configs],
            "libraries": list(libraries),
            "ours": ours,
            "params": params,
            "param_parity": parity,
            "results": list(records),
        }

    for t in threads:
        torch.set_num_threads(t)
        for bench in benches.values():
            bench.reset_runs()
            bench.warmup()
        for r in range(repeats):
            for cfg in configs:
                k = r % len(libraries)
                order = [*libraries[k:], *libraries[:k]]
                for lib in order:
                    bench = benches[cfg, lib]
                    for metric in METRICS:
                        rate = bench.time_once(metric)
                        if rate is not None:
                            log(
                                f"threads={t} rep={r + 1}/{repeats} {cfg.kind:8s} D={cfg.dim:<4d} "
                                f"{lib:12s} {metric:8s} {rate:>12,.1f} samples/s"
                            )
        for cfg in configs:
            for lib in libraries:
                bench = benches[cfg, lib]
                if (cfg, lib) not in mem:
                    mem[cfg, lib] = _measure_memory(memory, bench, lib, t)
                    m = mem[cfg, lib]
                    if m is not None:
                        log(
                            f"memory ({m['method']}) {cfg.kind:8s} D={cfg.dim:<4d} {lib:12s} "
                            f"peak train step {m['peak_mib']:,.1f} MiB"
                        )
                check = check_sample_exact(bench.adapter, bench.last_samples)
                records.append(
                    {
                        "library": lib,
                        **asdict(cfg),
                        "label": cfg.label,
                        "threads": t,
                        "params": params[cfg.label][lib],
                        **{m: bench.median(m) for m in METRICS},
                        "runs": {m: list(v) for m, v in bench.runs.items()},
                        "foreign_cores": {m: list(v) for m, v in bench.foreign.items()},
                        "discarded_blocks": bench.discarded,
                        "iters_per_block": dict(bench.iters),
                        "memory": mem[cfg, lib],
                        "sample_check": check,
                        "nonfinite_loss": bench.nonfinite_loss,
                    }
                )
        if checkpoint is not None:
            checkpoint(assemble(threads[: threads.index(t) + 1]))
    return assemble(threads)


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return None


def _foreign_summary(records: Sequence[dict[str, Any]], limit: float) -> dict[str, float | int]:
    """Median / max foreign load over the timed blocks kept, how many of them exceeded
    ``limit`` (kept after all retries), and how many blocks were discarded."""
    values = [
        v for r in records for vs in r["foreign_cores"].values() for v in vs if not math.isnan(v)
    ]
    return {
        "median": statistics.median(values) if values else math.nan,
        "max": max(values) if values else math.nan,
        "kept_over_limit": sum(v > limit for v in values),
        "kept": len(values),
        "discarded": sum(r["discarded_blocks"] for r in records),
    }


def _measure_memory(method: str, bench: Bench, lib: str, threads: int) -> dict[str, Any] | None:
    if method == "none":
        return None
    if method == "profiler":
        return peak_train_memory_profiler(bench.adapter, bench.opt, bench.x)
    if method == "rss":
        cfg = bench.config
        return peak_train_memory_rss(lib, cfg.kind, cfg.dim, cfg.batch, threads)
    raise ValueError(f"unknown memory method {method!r}")


# --------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def to_json(data: Any) -> str:
    """Strict JSON of a result (NaN / infinities written as ``null``)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and not math.isfinite(obj):
            return None
        if isinstance(obj, dict):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    return json.dumps(clean(data), indent=1, allow_nan=False)


def make_markdown(data: dict[str, Any]) -> str:
    """Markdown tables (one per thread count) of a :func:`run_speed` result.

    Rows: configuration x metric (throughputs in samples/s, higher is better; peak memory
    of a training step in MiB, lower is better). Columns: each library, then for each of
    ours ``<ours>/best peer`` (throughput: ours / max over peers; memory: ours / min).
    """
    libs: list[str] = data["libraries"]
    ours: list[str] = data["ours"]
    peers = [lib for lib in libs if lib not in ours]
    meta = data["meta"]
    by_key = {(r["label"], r["threads"], r["library"]): r for r in data["results"]}
    labels = [c["label"] for c in data["configs"]]
    sample_ns = {c["label"]: c["sample_n"] for c in data["configs"]}
    lines = [
        "# Speed benchmark",
        "",
        f"{meta['date']}; {meta['cpu']} ({meta['cpu_count']} CPUs); "
        f"torch {meta['versions']['torch']}; "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if k != "torch")
        + ".",
        "",
        f"Medians over {meta['repeats']} interleaved repeats (blocks of ~{meta['target_s']} s); "
        "throughput in samples/s (higher is better); peak memory of one training step in MiB "
        f"(method `{meta['memory_method']}`, lower is better). "
        f"Sampling calls slower than {meta['slow_s']} s are measured once."
        + (
            " Ratio columns: ours / best peer (throughput: > 1 is better; memory: ours / "
            "lowest peer, < 1 is better)."
            if ours and peers
            else ""
        ),
        "",
    ]
    if not meta.get("complete", True):
        lines += ["**Partial result** (the run did not finish every thread count).", ""]
    fl = meta.get("foreign_cores")
    if fl:
        lines += [
            f"Other processes kept a median of {fl['median']:.2f} cores busy during the timed "
            f"blocks (max {fl['max']:.2f}); {fl['discarded']} blocks were re-timed because "
            f"that exceeded {meta['max_foreign']} cores, and {fl['kept_over_limit']} of "
            f"{fl['kept']} kept blocks still exceed it. Load average at start / end: "
            f"{meta['loadavg_start']} / {meta['loadavg_end']}.",
            "",
        ]
        if fl["kept_over_limit"] > 0.1 * max(fl["kept"], 1):
            lines += ["**Warning: the machine was busy; these figures are unreliable.**", ""]
    odd = sorted({f"{lab}: n = {n}" for lab, n in sample_ns.items() if n != 1000})
    if odd:
        lines += ["Sampling uses n = 1000 per call except " + "; ".join(odd) + ".", ""]
    ratio_cols = [f"{o}/best peer" for o in ours] if peers else []
    header = ["config", "metric", *libs, *ratio_cols]
    for t in meta["threads"]:
        lines += [f"## {t} thread{'s' if t != 1 else ''}", ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for label in labels:
            rows: list[tuple[str, dict[str, float | None], bool]] = []
            for metric in METRICS:
                name = f"{metric} (n={sample_ns[label]})" if metric == "sample" else metric
                rows.append((name, {lib: by_key[label, t, lib][metric] for lib in libs}, True))
            mems = {lib: (by_key[label, t, lib]["memory"] or {}).get("peak_mib") for lib in libs}
            if any(v is not None for v in mems.values()):
                rows.append(("peak train MiB", mems, False))
            for name, values, higher_better in rows:
                cells = [_fmt(values[lib]) for lib in libs]
                for o in ours if peers else []:
                    pv = [values[p] for p in peers if values[p] is not None]
                    pv = [v for v in pv if not math.isnan(v)]
                    mine = values[o]
                    if not pv or mine is None or math.isnan(mine):
                        cells.append("—")
                    else:
                        best = max(pv) if higher_better else min(pv)
                        cells.append(f"{mine / best:.2f}×")
                lines.append("| " + " | ".join([label, name, *cells]) + " |")
        lines.append("")
    lines += ["## Parameter counts and sample check", ""]
    lines += ["| config | " + " | ".join(libs) + " | within 5% |", "|" + "---|" * (len(libs) + 2)]
    t0 = meta["threads"][0]
    for label in labels:
        cells = []
        for lib in libs:
            r = by_key[label, t0, lib]
            flag = "" if r["sample_check"]["ok"] else " (non-finite samples/log_prob!)"
            cells.append(f"{r['params']:,}{flag}")
        p = data["param_parity"][label]
        ok = "yes" if p["ok"] else "NO: " + ", ".join(p["offenders"])
        lines.append("| " + " | ".join([label, *cells, ok]) + " |")
    lines.append("")
    return "\n".join(lines)


def make_plot(data: dict[str, Any], path: str | Path) -> Path:
    """Plot throughput vs D per library (grid: model kind x metric; one line per
    library and thread count) and save it as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    kinds = [k for k in KINDS if any(c["kind"] == k for c in data["configs"])]
    libs: list[str] = data["libraries"]
    threads: list[int] = data["meta"]["threads"]
    dims = sorted({c["dim"] for c in data["configs"]})
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(
        len(kinds), len(METRICS), figsize=(4.2 * len(METRICS), 3.4 * len(kinds)), squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, kind in enumerate(kinds):
        for j, metric in enumerate(METRICS):
            ax = axes[i][j]
            for li, lib in enumerate(libs):
                for ti, t in enumerate(threads):
                    recs = sorted(
                        (
                            r
                            for r in data["results"]
                            if r["library"] == lib and r["kind"] == kind and r["threads"] == t
                        ),
                        key=lambda r: r["dim"],
                    )
                    if not recs:
                        continue
                    ax.plot(
                        [r["dim"] for r in recs],
                        [r[metric] for r in recs],
                        styles[ti % len(styles)],
                        marker="o",
                        color=colors[li % len(colors)],
                        label=f"{lib} ({t} thr)",
                    )
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(dims)
            ax.xaxis.set_major_formatter(ticker.ScalarFormatter())
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=_Y_TICKS))
            ax.yaxis.set_major_formatter(
                ticker.FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
            )
            ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            ax.set_title(f"{'MAF' if kind == 'maf' else 'coupling'}: {metric}")
            ax.set_xlabel("D")
            ax.set_ylabel("samples / s")
            ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
