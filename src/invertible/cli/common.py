"""What every command shares: the one-line error handling and checks of paths and flags."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import typer

from invertible.catalog import ModelUnavailableError, UnknownModelNameError
from invertible.checkpoint import CheckpointError
from invertible.data import DatasetFormatError, DatasetNotFoundError
from invertible.data.speech import AudioExtraMissingError
from invertible.training.ddp import DistributedContext, env_world_size, init_distributed
from invertible.training.fit import existing_run

__all__ = [
    "CLIError",
    "check_device",
    "check_positive",
    "check_writable",
    "cli_errors",
    "ensure_writable_dir",
    "join_torchrun",
    "parse_options",
    "refuse_existing",
    "refuse_existing_run",
    "set_threads",
]

F = TypeVar("F", bound=Callable[..., Any])


class CLIError(Exception):
    """A user error with a one-line message (printed as ``error: ...``, exit status 1)."""


#: Exceptions that end a command with ``error: <message>`` and exit status 1.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    CLIError,
    CheckpointError,
    ModelUnavailableError,
    UnknownModelNameError,
    DatasetNotFoundError,
    DatasetFormatError,
    AudioExtraMissingError,  # the audio extra is not installed: one line naming the fix
    ValueError,
    OSError,
    TypeError,
)


def resume_command(argv: list[str]) -> str:
    """The command line that continues the interrupted ``invertible train`` of ``argv``."""
    args = [a for a in argv if a not in ("--overwrite", "--resume")]
    return shlex.join(["invertible", *args, "--resume"])


def interrupted_message(command: str, out: Any) -> str:
    """What Ctrl-C leaves: the saved state of a run and the exact command to resume it."""
    state = Path(out) / "training" / "training_state.json" if out is not None else None
    if command != "train" or state is None or not state.is_file():
        return "interrupted"
    try:
        step = json.loads(state.read_text())["loop"]["step"]
    except (OSError, ValueError, KeyError):
        step = "?"
    return (
        f"interrupted: the training state at step {step} is saved in {Path(out) / 'training'}; "
        f"continue with:\n  {resume_command(sys.argv[1:])}"
    )


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    """Print a warning as one ``warning: ...`` line on stderr (no file, line or source)."""
    typer.echo(f"warning: {message}", err=True)


def cli_errors(fn: F) -> F:
    """Turn expected exceptions into ``error: <message>`` on stderr and exit status 1, and
    warnings into ``warning: <message>`` lines.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                warnings.filterwarnings("default", category=UserWarning)  # each run's own
                return fn(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo(interrupted_message(fn.__name__, kwargs.get("out")), err=True)
            raise typer.Exit(130) from None
        except EXPECTED_ERRORS as e:
            message = str(e) or type(e).__name__
            if isinstance(e, KeyError) and message.startswith("'"):
                message = message.strip("'")
            typer.echo(f"error: {message}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


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


def refuse_existing_run(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse to start a new run in ``out`` over a previous one (trained or interrupted)."""
    found = existing_run(out)
    if found and not (resume or overwrite):
        what = "a trained model" if "model" in found else "an interrupted run"
        raise CLIError(
            f"{out} already holds {what} ({', '.join(found)}); pass --resume to continue it, "
            "--overwrite to replace it, or choose another --out"
        )


def refuse_existing(path: Path, *, overwrite: bool = False, flag: str = "--out") -> None:
    """Refuse to replace an existing file or directory ``path`` without ``--overwrite``."""
    if path.exists() and not overwrite:
        kind = "directory" if path.is_dir() else "file"
        raise CLIError(
            f"{path} already exists ({kind}); pass --overwrite to replace it, or choose another "
            f"{flag}"
        )


def check_device(device: str | None) -> str | None:
    """A ``--device`` this torch can train on, or one clear error (``None``: the default)."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise CLIError(f"unknown --device {device!r}; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(
            f"--device {device}: this torch build has no usable CUDA device; use --device cpu"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise CLIError(
            f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) visible"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise CLIError(f"--device {device}: MPS is not available here; use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise CLIError(f"--device {device}: cannot train or evaluate there; use cpu or cuda")
    return device


def check_positive(**values: float | None) -> None:
    """Raise a one-line error for any flag value that is not positive (``None``: unset)."""
    for name, value in values.items():
        if value is not None and not value > 0:
            flag = "--" + name.replace("_", "-")
            raise CLIError(f"{flag} must be positive, got {value}")


def parse_options(options: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict (values parsed as JSON where they parse)."""
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


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)``; ``None``: torch's default less the cores that
    other processes keep busy (:func:`free_cores`), with a note on stderr when that is fewer.

    Why: torch's OpenMP workers busy-wait between parallel regions, so threads beyond the
    idle cores wait for time slices on every small op. On a 2-core machine with one core
    held by another process, 2 threads trained a MAF 40x and sampled it 70x slower than 1.
    Passive waiting (``OMP_WAIT_POLICY=PASSIVE``) avoids that but cost 1.7-2.3x on the idle
    machine, so the CLI chooses the thread count instead.
    """
    if threads is None:
        default = torch.get_num_threads()
        free = free_cores()
        if free is not None and free < default:
            torch.set_num_threads(free)
            print(f"note: {free} torch thread(s), not {default}: the load average says the "
                  "other cores are busy (--threads to choose)", file=sys.stderr)  # fmt: skip
        return
    if threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def free_cores() -> int | None:
    """Cores not kept busy by other processes: the CPU count less the rounded 1-minute load
    average, at least 1 (``None`` where the load average is unavailable, e.g. Windows).
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return max(1, (os.cpu_count() or 1) - round(load))


def join_torchrun(device: str | None) -> DistributedContext | None:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group and return its
    context; ``None`` for a single process.
    """
    if env_world_size() <= 1:
        return None
    ctx = init_distributed(device)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ctx
