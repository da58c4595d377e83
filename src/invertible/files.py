"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The single implementation used by checkpoints, sample files, dataset caches and reports.
This module imports nothing of :mod:`invertible` (it sits below every other module).

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "note.txt"
    >>> atomic_write_text(path, "hello")
    >>> path.read_text()
    'hello'
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

__all__ = [
    "atomic_directory",
    "atomic_save_npy",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "fsync_write",
    "physical_memory",
    "recover_directory",
    "user_mode",
]


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (``None`` where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def user_mode(directory: bool = False) -> int:
    """The permissions a new file (or directory) gets from the user's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def fsync_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it (not atomic by itself)."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Fsync a directory entry, where the file system supports it."""
    with contextlib.suppress(OSError):  # not supported on every file system
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(
    path: str | os.PathLike[str], data: bytes, *, mode: int | None = None
) -> None:
    """Write ``data`` to a temporary sibling of ``path``, fsync it, then rename it (``mode``
    default: what the user's umask gives a new file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, user_mode() if mode is None else mode)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def atomic_save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as ``.npy`` (no pickle) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, user_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path``.

    The old directory is renamed to ``.NAME.previous-*``, the new one to ``NAME``, then the
    old one is removed. On any exception the temporary directory is removed and ``path`` is
    left untouched. ``path`` must not be an existing file (``FileExistsError``).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out"
        >>> with atomic_directory(target) as tmp:
        ...     _ = (tmp / "a.txt").write_text("hi")
        >>> (target / "a.txt").read_text()
        'hi'
    """
    target = Path(path)
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        recover_directory(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
        os.chmod(tmp, user_mode(directory=True))  # mkdtemp creates 0700
    except OSError as e:
        raise OSError(
            f"cannot write to {parent}: {e.strerror or e}; choose a writable location"
        ) from e
    try:
        yield tmp
        fsync_dir(tmp)
        if target.exists():
            if not target.is_dir():
                raise FileExistsError(
                    f"{target} exists and is not a directory; remove it or choose another path"
                )
            backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=parent))
            os.rmdir(backup)
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def recover_directory(path: str | os.PathLike[str]) -> bool:
    """Finish what an interrupted :func:`atomic_directory` swap left next to ``path``.

    A process killed between the swap's two renames leaves no ``path`` but the complete old
    version at ``.NAME.previous-*``: it is renamed back to ``path`` (and ``True`` returned).
    Leftover ``.NAME.previous-*`` and ``.NAME.tmp-*`` directories of finished or abandoned
    writes are removed.

    Example:
        >>> import tempfile, pathlib
        >>> parent = pathlib.Path(tempfile.mkdtemp())
        >>> (parent / ".state.previous-x").mkdir()
        >>> recover_directory(parent / "state"), (parent / "state").is_dir()
        (True, True)
    """
    target = Path(path)
    if not target.parent.is_dir():
        return False
    previous = sorted(
        target.parent.glob(f".{target.name}.previous-*"), key=lambda p: p.stat().st_mtime
    )
    recovered = False
    if previous and not target.exists():
        os.replace(previous.pop(), target)
        fsync_dir(target.parent)
        recovered = True
    for stale in [*previous, *target.parent.glob(f".{target.name}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    return recovered
