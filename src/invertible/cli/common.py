"""What every command shares: the one-line error handling and checks of paths and flags."""

from __future__ import annotations

import atexit
import functools
import json
import os
import tempfile
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

__all__ = [
    "CLIError",
    "check_writable",
    "cli_errors",
    "ensure_writable_dir",
    "join_torchrun",
    "parse_options",
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


def cli_errors(fn: F) -> F:
    """Turn expected exceptions into ``error: <message>`` on stderr and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
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
    """``torch.set_num_threads(threads)`` (``None``: leave torch's default)."""
    if threads is None:
        return
    if threads < 1:
        raise CLIError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def join_torchrun(device: str | None) -> DistributedContext | None:
    """Under ``torchrun`` (``WORLD_SIZE`` > 1) join the process group and return its
    context; ``None`` for a single process.
    """
    if env_world_size() <= 1:
        return None
    ctx = init_distributed(device)
    atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    return ctx
