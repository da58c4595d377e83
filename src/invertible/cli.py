"""The ``invertible`` command line (Typer): train, eval, sample, datasets, lecture.

Examples::

    invertible train --model maf --data patches --steps 5000 --out runs/maf
    invertible eval runs/maf/model --data patches
    invertible sample runs/maf/model -n 1000 --out samples.npy
    invertible datasets
    invertible lecture --out runs/lecture --budget-minutes 10

Bad input (NaN rows, a checkpoint for another dimension, a missing dataset file, a corrupt,
truncated or newer checkpoint, an unknown model or dataset, an unwritable output directory)
ends with one ``error: ...`` line on stderr and exit status 1, before anything is written.

Extending: other modules add commands without editing this file. Each module named in
:data:`EXTENSION_MODULES` (``invertible.distill_cli``, ``invertible.bench_cli``) is imported
if it exists and its ``register(app)`` function is called; it may also simply decorate
functions with ``@invertible.cli.app.command()`` at import time. Wrap the command body with
:func:`cli_errors` to get the same one-line error handling.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import typer

__all__ = ["EXTENSION_MODULES", "CLIError", "app", "cli_errors", "load_data", "main"]

app = typer.Typer(
    name="invertible",
    help=(
        "Normalizing flows: fit NICE, RealNVP, MAF, IAF, ... by maximum likelihood, evaluate "
        "them, sample from them.\n\n"
        "Examples:\n\n"
        "  invertible train --model maf --data patches --steps 5000 --out runs/maf\n\n"
        "  invertible eval runs/maf/model --data patches\n\n"
        "  invertible sample runs/maf/model -n 1000 --out samples.npy\n\n"
        "  invertible datasets\n\n"
        "  invertible lecture --out runs/lecture --budget-minutes 10"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules that may register more commands (``register(app)``), imported if present.
EXTENSION_MODULES = ("invertible.distill_cli", "invertible.bench_cli")

F = TypeVar("F", bound=Callable[..., Any])


class CLIError(Exception):
    """A user error with a one-line message (printed as ``error: ...``, exit status 1)."""


def _expected_errors() -> tuple[type[BaseException], ...]:
    from invertible.checkpoint import CheckpointError
    from invertible.models import ModelUnavailableError, UnknownModelNameError

    errors: list[type[BaseException]] = [
        CLIError,
        CheckpointError,
        ModelUnavailableError,
        UnknownModelNameError,
        ValueError,
        OSError,
        TypeError,
    ]
    try:
        from invertible.data import DatasetFormatError, DatasetNotFoundError

        errors += [DatasetNotFoundError, DatasetFormatError]
    except ImportError:
        pass
    return tuple(errors)


def cli_errors(fn: F) -> F:
    """Turn expected exceptions into ``error: <message>`` on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _expected_errors() as e:
            message = str(e) or type(e).__name__
            if isinstance(e, KeyError) and message.startswith("'"):
                message = message.strip("'")
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


# --------------------------------------------------------------------------- helpers


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Create ``path`` if needed and check a file can be written there (nothing is left)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        reason = e.strerror or str(e)
        raise CLIError(
            f"cannot write to {what} {path}: {reason}; choose another location"
        ) from None
    return path


def check_writable(path: str | os.PathLike[str], what: str = "output directory") -> Path:
    """Check that ``path`` could be created and written, without creating anything."""
    path = Path(path).expanduser().absolute()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise CLIError(
            f"cannot write to {what} {path}: {probe} is a file, not a directory; choose "
            "another location"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CLIError(
            f"cannot write to {what} {path}: permission denied on {probe}; choose another location"
        )
    return path


def _parse_options(options: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in options or []:
        if "=" not in item:
            raise CLIError(f"--option expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _load_file(path: Path, seed: int) -> Any:
    from invertible.data import TabularData

    if not path.is_file():
        raise CLIError(f"data file {path} not found; check the path")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            arr = np.loadtxt(path, delimiter="," if path.suffix == ".csv" else None, ndmin=2)
    except (ValueError, OSError, EOFError) as e:
        raise CLIError(f"cannot read data file {path}: {e}; expect an [N, D] .npy/.csv") from None
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] < 3:
        raise CLIError(
            f"data file {path}: expected a 2-D array [N, D] with N >= 3, got {arr.shape}"
        )
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise CLIError(
            f"data file {path}: {rows.size} row(s) contain NaN or inf (first: row {rows[0]}); "
            "remove or impute them"
        )
    perm = np.random.default_rng(seed).permutation(arr.shape[0])
    n_val = n_test = max(1, arr.shape[0] // 10)
    test, val, train = (
        arr[perm[:n_test]],
        arr[perm[n_test : n_test + n_val]],
        arr[perm[n_test + n_val :]],
    )
    info = {"source": str(path), "splits": "seeded random 80/10/10", "seed": seed}
    return TabularData(str(path), train, val, test, info=info)


def load_data(
    spec: str,
    *,
    data_dir: str | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Load a dataset by name, or an ``[N, D]`` array from a ``.npy``/``.csv``/``.txt`` file
    (split 80/10/10 with ``seed``). Returns ``(data, options to reload it)``."""
    options = dict(options or {})
    if spec.endswith((".npy", ".csv", ".txt")) or os.sep in spec:
        path = Path(spec).expanduser().resolve()
        return _load_file(path, seed), {"seed": seed, "path": str(path)}
    from invertible.data import load_dataset

    data = load_dataset(spec, data_dir=data_dir, seed=seed, **options)
    return data, {"seed": seed, **options}


def _check_finite_data(data: Any) -> None:
    for split in ("train", "val", "test"):
        x = getattr(data, split)
        if x.dtype.kind != "f":
            continue
        bad = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        if bad.any():
            raise CLIError(
                f"dataset {data.name!r} ({split}): {int(bad.sum())} row(s) contain NaN or inf "
                f"(first: row {int(np.flatnonzero(bad)[0])}); remove or impute them"
            )


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _load_extensions() -> None:
    for name in EXTENSION_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as e:
            if e.name == name:
                continue
            warnings.warn(f"could not load CLI extension {name}: {e}", stacklevel=2)
            continue
        register = getattr(module, "register", None)
        if callable(register):
            register(app)


#: Training images used to refresh batch-norm statistics at the end of image training
#: (each flow batch-norm layer costs a pass over them; convolutions are slow on CPUs).
IMAGE_REFRESH_BN_ROWS = 2000
#: Sampling temperatures of the sample grids written by ``train`` for image data.
IMAGE_TEMPERATURES = (1.0, 0.7)


def _image_plots(
    flow: Any, dataset: Any, history: list[dict[str, Any]], out: Path, model: str, seed: int
) -> None:
    """Figures of an image run: ``bits_per_dim.png`` (train/validation curve) and
    ``samples_T1.0.png``, ``samples_T0.7.png`` (quantised sample grids)."""
    from invertible.plots import plot_bits_per_dim, plot_image_samples

    plot_bits_per_dim(
        history, out / "bits_per_dim.png", features=dataset.features, levels=dataset.levels
    )
    for t in IMAGE_TEMPERATURES:
        plot_image_samples(
            flow,
            out / f"samples_T{t:.1f}.png",
            levels=dataset.levels,
            temperature=t,
            seed=seed,
            title=model,
        )


def _join_torchrun(device: str | None) -> Any:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group and return its
    :class:`~invertible.distributed.DistributedContext`; ``None`` for a single process."""
    from invertible.distributed import env_world_size, init_distributed

    if env_world_size() <= 1:
        return None
    import atexit

    import torch.distributed as dist

    ctx = init_distributed(device)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ctx


# --------------------------------------------------------------------------- commands


@app.command(
    epilog="Examples:\n\n"
    "  invertible train --model maf --data patches --steps 5000 --out runs/maf\n\n"
    "  invertible train --model realnvp --data moons --epochs 20 --size small\n\n"
    "  invertible train --model nice --data my_data.npy --max-time 60 --out runs/nice\n\n"
    "  invertible train --model maf --data patches --out runs/maf --resume --steps 10000"
)
@cli_errors
def train(
    model: Annotated[
        str,
        typer.Option(help="nice, realnvp, maf, maf-mog, iaf, gaussian-ar, made-mog, realnvp-image"),
    ] = "maf",
    data: Annotated[
        str,
        typer.Option(help="dataset name (see `invertible datasets`) or an [N, D] .npy/.csv file"),
    ] = "patches",
    steps: Annotated[int | None, typer.Option(help="optimisation steps")] = None,
    epochs: Annotated[float | None, typer.Option(help="passes over the training set")] = None,
    batch_size: Annotated[int, typer.Option(help="mini-batch size")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="L2 penalty")] = 0.0,
    schedule: Annotated[str, typer.Option(help="cosine, step or constant")] = "cosine",
    grad_clip: Annotated[float, typer.Option(help="max gradient norm (0: off)")] = 5.0,
    patience: Annotated[
        int, typer.Option(help="evaluations without improvement before stopping (0: off)")
    ] = 10,
    eval_every: Annotated[int | None, typer.Option(help="steps between evaluations")] = None,
    max_time: Annotated[float | None, typer.Option(help="training time cap, seconds")] = None,
    seed: Annotated[int, typer.Option(help="seed of data, weights and batches")] = 0,
    size: Annotated[str, typer.Option(help="model size: tiny, small or default")] = "default",
    out: Annotated[Path, typer.Option(help="run directory")] = Path("runs/run"),
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    option: Annotated[
        list[str] | None,
        typer.Option(help="dataset option KEY=VALUE, e.g. n_train=10000 (repeatable)"),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from OUT/training")] = False,
    checkpoint_every: Annotated[
        int, typer.Option(help="write the resumable OUT/training state every N evaluations")
    ] = 1,
    compile_: Annotated[
        bool,
        typer.Option(
            "--compile", help="torch.compile the training step (eager fallback if unavailable)"
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="replace a finished run in OUT")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, cuda:1, ...")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    threads: Annotated[
        int | None,
        typer.Option(help="torch CPU threads (default: torch's; use 1 on a busy machine)"),
    ] = None,
    val_max_rows: Annotated[
        int | None,
        typer.Option(help="validate on the first N validation rows only (faster evaluations)"),
    ] = None,
) -> None:
    """Fit a model by maximum likelihood; save checkpoint, metrics and plots; print the test
    log-likelihood (and bits/dim for images: sample grids at temperatures 1.0 and 0.7)."""
    import torch

    import invertible
    from invertible.checkpoint import data_metadata, save
    from invertible.evaluation import evaluate
    from invertible.models import (
        _spec,  # validates the name before anything is loaded
        build_model,
        initialize_from_data,
    )
    from invertible.plots import plot_samples, plot_training_curves
    from invertible.training import fit

    _spec(model)
    _set_threads(threads)
    dist_ctx = _join_torchrun(device)  # under torchrun: DDP, one process per GPU / CPU share
    if dist_ctx is not None:
        device = str(dist_ctx.device)
    if (out / "model").exists() and not (resume or overwrite):
        raise CLIError(
            f"{out} already holds a trained model; pass --resume to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    check_writable(out)
    dataset, reload = load_data(data, data_dir=data_dir, seed=seed, options=_parse_options(option))
    image = dataset.train.dtype == np.uint8  # ImageData: uint8 pixels, bits/dim
    _check_finite_data(dataset)
    if image:
        flow = build_model(model, tuple(dataset.shape), size=size, seed=seed, levels=dataset.levels)
    else:
        flow = build_model(model, dataset.features, size=size, seed=seed)
    if not resume and not image:
        initialize_from_data(flow, dataset.train)
    ensure_writable_dir(out)
    if device:
        flow.to(torch.device(device))
    meta = data_metadata(dataset, options=reload)
    n_params = sum(p.numel() for p in flow.parameters())
    typer.echo(
        f"{model}: {type(flow).__name__} with {n_params:,} parameters on "
        f"{dataset.name} (D={dataset.features}, N_train={len(dataset.train)})"
    )
    result = fit(
        flow,
        dataset,
        out_dir=out,
        progress=progress,
        resume=resume,
        data_meta=meta,
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,
        grad_clip=grad_clip or None,
        patience=patience or None,
        eval_every=eval_every,
        max_time=max_time,
        seed=seed,
        checkpoint_every=checkpoint_every,
        compile=compile_,
        **({"refresh_bn_rows": IMAGE_REFRESH_BN_ROWS} if image else {}),
        **({"val_max_rows": val_max_rows} if val_max_rows else {}),
    )
    if dist_ctx is not None and not dist_ctx.is_main:
        return  # rank 0 evaluates, saves and reports
    test = evaluate(flow, dataset)
    summary = {
        "model": model,
        "preset": type(flow).__name__,
        "parameters": n_params,
        "data": dataset.name,
        "test": test.to_dict(),
        "training": {k: v for k, v in result.to_dict().items() if k != "history"},
        "invertible": invertible.__version__,
    }
    extra = {"test": test.to_dict(), "training": summary["training"], "cli_model": model}
    save(flow, out / "model", data=meta, extra=extra)
    (out / "results.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    plot_training_curves({model: result.history}, out / "training_curves.png")
    try:
        if image:
            _image_plots(flow, dataset, result.history, out, model, seed)
        else:
            plot_samples(flow, dataset, out / "samples.png", title=model)
    except Exception as e:  # a picture is never worth a failed run
        warnings.warn(f"could not draw samples: {e}", stacklevel=1)
    typer.echo(
        f"trained {result.steps} steps in {result.train_time:.1f}s ({result.stopped}); "
        f"best validation log-likelihood {result.best_val_log_prob} at step {result.best_step}"
    )
    typer.echo(f"test log-likelihood: {test}")
    if test.bits_per_dim is not None:
        typer.echo(f"test bits/dim: {test.bits_per_dim:.4f}")
    typer.echo(f"saved {out / 'model'}")


@app.command(
    name="eval",
    epilog="Examples:\n\n  invertible eval runs/maf/model\n\n"
    "  invertible eval runs/maf/model --data patches --split val",
)
@cli_errors
def eval_(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory")],
    data: Annotated[
        str | None,
        typer.Option(help="dataset name or file (default: the one the model was trained on)"),
    ] = None,
    split: Annotated[str, typer.Option(help="test, val or train")] = "test",
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            "--batch-size",
            help="rows per chunk: peak memory stays bounded whatever the split's size",
        ),
    ] = 4096,
    device: Annotated[str, typer.Option(help="cpu, cuda, ...")] = "cpu",
    option: Annotated[
        list[str] | None,
        typer.Option(help="dataset option KEY=VALUE (with --data; repeatable)"),
    ] = None,
) -> None:
    """Evaluate a checkpoint: mean log-likelihood ± 2 standard errors (nats)."""
    from invertible.checkpoint import load
    from invertible.evaluation import check_data_matches, evaluate

    if split not in ("test", "val", "train"):
        raise CLIError(f"unknown split {split!r}; use test, val or train")
    flow = load(checkpoint, map_location=device)
    meta = flow.checkpoint_meta.get("data") or {}  # type: ignore[union-attr]
    stored = meta.get("options") or {}
    name = data or stored.get("path") or meta.get("name")
    if name is None:
        raise CLIError(f"{checkpoint} does not record its dataset; pass --data NAME")
    same = data is None or data == meta.get("name") or data == stored.get("path")
    options = {k: v for k, v in stored.items() if k not in ("seed", "path")} if same else {}
    options.update(_parse_options(option))
    seed = int(stored.get("seed", 0)) if same else 0
    dataset, _ = load_data(name, data_dir=data_dir, seed=seed, options=options)
    check_data_matches(flow, getattr(dataset, split)[:1], f"dataset {dataset.name!r}")
    result = evaluate(flow, dataset, split=split, batch_size=batch_size)
    typer.echo(f"{split} log-likelihood: {result}")
    if result.bits_per_dim is not None:
        typer.echo(f"{split} bits/dim: {result.bits_per_dim:.4f}")


@app.command(
    epilog="Examples:\n\n  invertible sample runs/maf/model -n 1000 --out samples.npy\n\n"
    "  invertible sample runs/maf/model -n 64 --out s.npy --raw"
)
@cli_errors
def sample(
    checkpoint: Annotated[Path, typer.Argument(help="checkpoint directory")],
    n: Annotated[int, typer.Option("-n", "--n", help="number of samples")] = 1000,
    out: Annotated[Path, typer.Option(help=".npy file to write")] = Path("samples.npy"),
    seed: Annotated[int, typer.Option(help="sampling seed")] = 0,
    raw: Annotated[
        bool,
        typer.Option(
            help="keep the standardised space (default: undo the dataset's standardisation)"
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--chunk-size",
            "--batch-size",
            help="samples per chunk: peak memory stays bounded (beyond the output) whatever -n",
        ),
    ] = 10000,
    temperature: Annotated[
        float, typer.Option(help="image models: scale of the base noise (e.g. 0.7)")
    ] = 1.0,
) -> None:
    """Draw samples from a checkpoint and save them as .npy (atomically). Image models write
    uint8 pixels (quantised like the data) and a PNG grid of the first 64 next to the .npy."""
    from invertible.checkpoint import load
    from invertible.evaluation import sample_images, sample_to_npy

    if n < 1:
        raise CLIError(f"-n must be a positive number of samples, got {n}")
    if not temperature > 0:
        raise CLIError(f"--temperature must be positive, got {temperature}")
    check_writable(out.parent)
    flow = load(checkpoint)
    if len(flow.event_shape) == 3 and "levels" in flow.config:
        from invertible.plots import plot_image_grid

        levels = int(flow.config["levels"])
        pixels = sample_images(
            flow,
            n,
            levels=levels,
            temperature=temperature,
            seed=seed,
            batch_size=batch_size,
            path=out,
        )
        grid = plot_image_grid(
            pixels[:64], out.with_suffix(".png"), levels=levels, title=f"T = {temperature:g}"
        )
        typer.echo(
            f"wrote {pixels.shape[0]} images of shape {list(pixels.shape[1:])} (uint8, "
            f"{levels} levels) to {out} and a grid to {grid}"
        )
        return
    if temperature != 1.0:
        raise CLIError("--temperature applies to image models only")
    meta = flow.checkpoint_meta.get("data") or {}  # type: ignore[union-attr]
    transform = None
    if not raw and meta.get("mean") is not None and meta.get("std") is not None:
        mean, std = np.asarray(meta["mean"]), np.asarray(meta["std"])

        def transform(x: np.ndarray) -> np.ndarray:
            return x * std + mean

    samples = sample_to_npy(flow, n, out, seed=seed, batch_size=batch_size, transform=transform)
    typer.echo(f"wrote {samples.shape[0]} samples of shape {list(samples.shape[1:])} to {out}")


@app.command(epilog="Example:\n\n  invertible datasets --data-dir ~/data")
@cli_errors
def datasets(
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
) -> None:
    """List the datasets: which are available, and for the others what to download and where
    to put it."""
    from invertible.data import list_datasets

    statuses = list_datasets(data_dir)
    width = max(len(s.name) for s in statuses)
    for s in statuses:
        mark = "available" if s.available else "MISSING"
        typer.echo(f"{s.name:<{width}}  {s.kind:<8}  {mark:<9}  {s.description}")
    for s in statuses:
        if not s.available and s.message:
            typer.echo(f"\n{s.name}:\n{s.message}")


@app.command(
    epilog="Examples:\n\n  invertible lecture --out runs/lecture\n\n"
    "  invertible lecture --out /tmp/lec --budget-minutes 2 --models nice,maf\n\n"
    "  invertible lecture --out /tmp/lec --tiny"
)
@cli_errors
def lecture(
    out: Annotated[Path, typer.Option(help="report directory")] = Path("runs/lecture"),
    budget_minutes: Annotated[float, typer.Option(help="total wall-clock budget")] = 10.0,
    data: Annotated[str, typer.Option(help="dataset (default: patches, D=63)")] = "patches",
    models: Annotated[str, typer.Option(help="comma-separated models")] = "nice,realnvp,maf,iaf",
    tiny: Annotated[bool, typer.Option(help="tiny models and data (a smoke test)")] = False,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    data_dir: Annotated[str | None, typer.Option(help="where dataset files live")] = None,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    threads: Annotated[
        int | None,
        typer.Option(help="torch CPU threads (default: torch's; use 1 on a busy machine)"),
    ] = None,
) -> None:
    """The lecture's main job: fit NICE, RealNVP, MAF and IAF on 8x8 patches within a time
    budget and write report.md with a comparison table and figures."""
    from invertible.report import run_lecture

    _set_threads(threads)
    ensure_writable_dir(out)
    report = run_lecture(
        out,
        budget_minutes=budget_minutes,
        dataset=data,
        models=[m.strip() for m in models.split(",") if m.strip()],
        tiny=tiny,
        seed=seed,
        data_dir=data_dir,
        progress=progress,
    )
    typer.echo(report.table_markdown())
    typer.echo(f"wrote {out / 'report.md'}")


_load_extensions()


def main() -> None:
    """Entry point of the ``invertible`` script."""
    app(prog_name="invertible")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
