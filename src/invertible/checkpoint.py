"""Checkpoints: safetensors weights plus a JSON config, written atomically. No pickle anywhere.

Format (``format_version`` 3; versions 1 and 2 are read and upgraded). A checkpoint is a
**directory**::

    CKPT/
      config.json          what to rebuild, and from which data (see below)
      model.safetensors    flow.state_dict() (parameters and persistent buffers)
      training_state.json          } optional, written by the trainer for ``resume``:
      training_state.safetensors   } optimizer tensors, RNG states, best weights

``config.json`` holds::

    {"format": "invertible", "format_version": 3,
     "model": "<preset class name in Flow.registry>", "config": flow.config,
     "torch": "<version>", "invertible": "<version>",
     "data": {"name": ..., "features": D, "options": {...}, "preprocessing": ...,
              "mean": [...] | null, "std": [...] | null},
     "extra": {...}}

A directory is easy to inspect (``cat config.json``) and the same layout holds the
optional training state. Writes are atomic: everything is written into a temporary
sibling directory (each file fsync'ed), which then replaces the old checkpoint by two
renames (old → ``.NAME.previous-*``, new → ``NAME``) followed by removal of the old one. If
the process dies between the two renames, the old checkpoint is still complete under its
``.previous`` name and :func:`load`'s error message points at it. A state holding NaN or
inf is never written (:class:`NonFiniteStateError`), so a diverged run cannot overwrite a
good checkpoint.

Every failure raises a subclass of :class:`CheckpointError` whose message is one line that
names the problem and the fix.

Example:
    >>> import tempfile, torch, invertible
    >>> flow = invertible.RealNVP(3, num_layers=2, hidden_features=(8,))
    >>> path = tempfile.mkdtemp() + "/ckpt"
    >>> invertible.save(flow, path)
    >>> again = invertible.load(path)
    >>> x = torch.randn(4, 3)
    >>> torch.equal(flow.eval().log_prob(x), again.log_prob(x))
    True
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save
from torch import Tensor

import invertible.presets  # noqa: F401  (fills Flow.registry, which load() reads)
from invertible.core import Flow
from invertible.files import atomic_directory as _atomic_directory
from invertible.files import fsync_write, recover_directory
from invertible.tensors import dtype_device
from invertible.version import __version__

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "CheckpointError",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointVersionError",
    "NonFiniteStateError",
    "UnknownModelError",
    "atomic_directory",
    "check_tensors",
    "data_metadata",
    "fsync_write",
    "load",
    "load_tensors",
    "load_training_state",
    "load_weights",
    "read_metadata",
    "recover_checkpoint",
    "save",
    "save_tensors",
]

FORMAT = "invertible"
FORMAT_VERSION = 3
"""2: presets with an ``affine_shift`` argument default to ``"latent"``; a version-1
checkpoint of such a preset is read with ``affine_shift="data"``, the map it was trained
with (see :func:`read_metadata`). 3: ``MAF`` and ``RealNVP`` end in a data-end ActNorm
(``actnorm=True``); an older checkpoint of them is read with ``actnorm=False``."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_REQUIRED_KEYS = ("format", "format_version", "model", "config")


class CheckpointError(ValueError):
    """Base class of every checkpoint problem; the message is one line with the fix."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint directory or one of its files does not exist."""


class CheckpointFormatError(CheckpointError):
    """A checkpoint file is corrupt, truncated, or its JSON lacks required keys."""


class CheckpointVersionError(CheckpointError):
    """The checkpoint was written by a newer version of the format."""


class UnknownModelError(CheckpointError, KeyError):
    """The model named in the checkpoint is not a known preset."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class CheckpointMismatchError(CheckpointError):
    """The stored tensors do not match the model the config describes, or the data."""


class NonFiniteStateError(CheckpointError):
    """Refused to write a state that holds NaN or inf values."""


# --------------------------------------------------------------------------- low-level I/O


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """:func:`invertible.files.atomic_directory`, with a :class:`CheckpointError` when
    ``path`` is an existing file.
    """
    try:
        with _atomic_directory(path) as tmp:
            yield tmp
    except FileExistsError as e:
        raise CheckpointError(
            f"{path} exists and is not a checkpoint directory; remove it or choose another path"
        ) from e


def _check_finite(tensors: Mapping[str, Tensor], what: str) -> None:
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise NonFiniteStateError(
                f"{what}: tensor {name!r} holds NaN or inf; refusing to write it (any "
                "checkpoint already there is kept); check the data for extreme values and "
                "lower the learning rate"
            )


def _prepare(tensors: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # clone: safetensors refuses tensors that share memory (tied or viewed parameters)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor]) -> None:
    """Write ``tensors`` to a safetensors file at ``path`` (fsync'ed, not atomic by itself)."""
    fsync_write(path, _safetensors_save(_prepare(tensors)))


def load_tensors(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> dict:
    """Read a safetensors file; a missing, corrupt or truncated file raises a
    :class:`CheckpointError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"{path}: file not found; the checkpoint is incomplete, save it again"
        )
    try:
        tensors = _safetensors_load(path.read_bytes())
    except Exception as e:  # safetensors raises SafetensorError, or others on garbage
        raise CheckpointFormatError(
            f"{path}: corrupt or truncated safetensors file ({str(e).splitlines()[0]}); "
            "restore it from a backup or retrain"
        ) from e
    return {k: v.to(device) for k, v in tensors.items()}


def _write_json(path: Path, obj: Any) -> None:
    fsync_write(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"{path}: file not found; the checkpoint is incomplete, save it again"
        )
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointFormatError(
            f"{path}: not valid JSON ({e}); the file is corrupt or truncated, restore it or retrain"
        ) from e


# --------------------------------------------------------------------------- metadata


def _versions() -> dict[str, str]:
    return {"torch": torch.__version__, "invertible": __version__}


def _floats(a: Any) -> list[float] | None:
    if a is None:
        return None
    return [float(v) for v in np.asarray(a, dtype=np.float64).reshape(-1)]


def data_metadata(data: Any, *, options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``"data"`` entry of a checkpoint for a dataset (``TabularData``/``ImageData``).

    Records the name, the dimension, the loader options needed to rebuild the same splits,
    the preprocessing notes and the standardisation statistics (``mean``/``std``).

    Example:
        >>> import numpy as np
        >>> from types import SimpleNamespace
        >>> d = SimpleNamespace(name="toy", features=2, info={}, mean=None, std=None)
        >>> data_metadata(d, options={"seed": 0})["features"]
        2
    """
    info = dict(getattr(data, "info", {}) or {})
    return {
        "name": getattr(data, "name", None),
        "features": int(data.features) if hasattr(data, "features") else None,  # waveforms: none
        "shape": list(getattr(data, "shape", ()) or []) or None,
        "options": dict(options or {}),
        "preprocessing": info.get("preprocessing"),
        "standardization": info.get("standardization"),
        "mean": _floats(getattr(data, "mean", None)),
        "std": _floats(getattr(data, "std", None)),
    }


def _json_safe(obj: Any) -> Any:
    """Coerce numpy scalars/arrays and tuples to JSON types; non-finite floats to None."""
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _dtype_name(flow: Flow) -> str:
    """The floating dtype of the flow's parameters (``"float32"``, ``"float64"``, ...)."""
    return str(dtype_device(flow)[0]).removeprefix("torch.")


def _torch_dtype(name: str, path: Path) -> torch.dtype:
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise CheckpointFormatError(
            f"{path / CONFIG_FILE}: unknown dtype {name!r}; re-save the model"
        )
    return dtype


def _metadata(flow: Flow, data: Any, extra: Mapping[str, Any] | None) -> dict[str, Any]:
    name = type(flow).__name__
    if Flow.registry.get(name) is not type(flow):
        raise CheckpointError(
            f"{name} is not a registered preset; only Flow subclasses that set self.config "
            "can be saved (define the model as a Flow subclass)"
        )
    if not isinstance(getattr(flow, "config", None), dict) or not flow.config:
        raise CheckpointError(
            f"{name}.config is empty; a preset must record its constructor arguments in "
            "self.config to be saved"
        )
    if isinstance(data, Mapping):
        data_meta: Any = dict(data)
    elif data is not None:
        data_meta = data_metadata(data)
    else:
        data_meta = None
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": name,
        "config": flow.config,
        "dtype": _dtype_name(flow),
        **_versions(),
        "data": data_meta,
        "extra": dict(extra or {}),
    }
    try:
        json.dumps(meta, allow_nan=False)
    except (TypeError, ValueError):
        meta = _json_safe(meta)
    return meta


def save(
    flow: Flow,
    path: str | os.PathLike[str],
    *,
    extra: Mapping[str, Any] | None = None,
    data: Any = None,
    training_state: tuple[dict[str, Tensor], dict[str, Any]] | None = None,
) -> None:
    """Save ``flow`` to the checkpoint directory ``path`` atomically (see module docs).

    Args:
        flow: a preset (a registered :class:`~invertible.Flow` subclass with ``config``).
        path: the checkpoint directory; replaced atomically if it exists.
        extra: JSON-serialisable notes stored under ``"extra"`` (metrics, command line, ...).
        data: the dataset the flow was fit on (``TabularData``/``ImageData``) or a ready
            ``"data"`` dict (see :func:`data_metadata`).
        training_state: ``(tensors, json_state)`` for resuming (written by the trainer).

    Raises:
        NonFiniteStateError: a parameter or buffer holds NaN or inf (nothing is written).
    """
    meta = _metadata(flow, data, extra)
    state = flow.state_dict()
    _check_finite(state, type(flow).__name__)
    if training_state is not None:
        _check_finite(training_state[0], "training state")
    with atomic_directory(path) as tmp:
        save_tensors(tmp / WEIGHTS_FILE, state)
        if training_state is not None:
            save_tensors(tmp / "training_state.safetensors", training_state[0])
            _write_json(tmp / "training_state.json", _json_safe(training_state[1]))
        _write_json(tmp / CONFIG_FILE, meta)


def recover_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Finish an interrupted save of the checkpoint ``path``: restore the previous version
    that a process killed between the swap's two renames left as ``.NAME.previous-*``, and
    remove leftovers (:func:`invertible.files.recover_directory`). True if it restored one.
    """
    return recover_directory(path)


def _not_found(path: Path) -> CheckpointNotFoundError:
    previous = sorted(path.parent.glob(f".{path.name}.previous-*")) if path.parent.is_dir() else []
    hint = (
        f"; an interrupted save left the previous version at {previous[-1]}, rename it to "
        f"{path.name}"
        if previous
        else "; check the path (a checkpoint is the directory holding config.json)"
    )
    return CheckpointNotFoundError(f"checkpoint {path} not found{hint}")


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate ``config.json`` of a checkpoint (format, version, required keys).

    Example:
        >>> read_metadata("/nonexistent/ckpt")
        Traceback (most recent call last):
        ...
        invertible.checkpoint.CheckpointNotFoundError: checkpoint /nonexistent/ckpt not found; ...
    """
    path = Path(path)
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.exists():
        raise _not_found(path)
    if not path.is_dir():
        raise CheckpointFormatError(
            f"{path} is a file, not a checkpoint directory (config.json + model.safetensors); "
            "pass the directory written by invertible.save"
        )
    if not (path / CONFIG_FILE).is_file() and (path / "model" / CONFIG_FILE).is_file():
        raise CheckpointNotFoundError(
            f"{path} is a run directory, not a checkpoint; did you mean {path / 'model'}?"
        )
    meta = _read_json(path / CONFIG_FILE)
    if not isinstance(meta, dict):
        raise CheckpointFormatError(f"{path / CONFIG_FILE}: expected a JSON object; re-save it")
    missing = [k for k in _REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointFormatError(
            f"{path / CONFIG_FILE}: missing key(s) {', '.join(missing)}; the file is not an "
            "invertible checkpoint config or was edited, re-save the model"
        )
    if meta["format"] != FORMAT:
        raise CheckpointFormatError(
            f"{path / CONFIG_FILE}: format is {meta['format']!r}, expected {FORMAT!r}; "
            "this is not an invertible checkpoint"
        )
    version = meta["format_version"]
    if not isinstance(version, int) or version < 1:
        raise CheckpointFormatError(
            f"{path / CONFIG_FILE}: invalid format_version {version!r}; re-save the model"
        )
    if version > FORMAT_VERSION:
        raise CheckpointVersionError(
            f"{path}: checkpoint format_version {version} written by a newer invertible; "
            f"upgrade invertible (pip install -U invertible; this version reads format_version "
            f"<= {FORMAT_VERSION})"
        )
    if not isinstance(meta["config"], dict):
        raise CheckpointFormatError(
            f"{path / CONFIG_FILE}: 'config' must be a JSON object of constructor arguments"
        )
    return _upgrade(meta)


def _upgrade(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with its config in the current format.

    Version-1 presets shifted in data units; presets before version 3 had no data-end
    ActNorm.
    """
    cls = Flow.registry.get(meta["model"])
    parameters = inspect.signature(cls).parameters if cls is not None else {}
    if meta["format_version"] < 2 and "affine_shift" in parameters:
        meta["config"] = {"affine_shift": "data", **meta["config"]}
    if meta["format_version"] < 3 and "actnorm" in parameters:
        meta["config"] = {"actnorm": False, **meta["config"]}
    return meta


def build_from_config(model: str, config: Mapping[str, Any]) -> Flow:
    """Rebuild a preset from its registry name and constructor arguments."""
    cls = Flow.registry.get(model)
    if cls is None:
        known = ", ".join(sorted(Flow.registry))
        raise UnknownModelError(
            f"unknown model {model!r} in checkpoint (known: {known}); upgrade invertible or "
            "install the package that defines it"
        )
    try:
        inspect.signature(cls).bind(**config)
        return cls(**config)
    except TypeError as e:
        raise CheckpointFormatError(
            f"config of {model} does not match its constructor ({e}); the checkpoint was "
            "written by an incompatible version, re-save it"
        ) from e


def check_tensors(flow: Flow, tensors: Mapping[str, Tensor], path: Path) -> None:
    """Raise :class:`CheckpointMismatchError` unless ``tensors`` has exactly the names and
    shapes of ``flow.state_dict()`` (``path``: the checkpoint, for the message).
    """
    expected = flow.state_dict()
    where = path / WEIGHTS_FILE
    for name, t in expected.items():
        if name not in tensors:
            raise CheckpointMismatchError(
                f"{where}: tensor {name!r} (shape {list(t.shape)}) expected by the config is "
                "missing; the weights do not belong to this config"
            )
        if tuple(tensors[name].shape) != tuple(t.shape):
            raise CheckpointMismatchError(
                f"{where}: tensor {name!r} has shape {list(tensors[name].shape)} but the config "
                f"expects {list(t.shape)}; the weights do not belong to this config"
            )
    unexpected = sorted(set(tensors) - set(expected))
    if unexpected:
        raise CheckpointMismatchError(
            f"{where}: unexpected tensor {unexpected[0]!r} (shape "
            f"{list(tensors[unexpected[0]].shape)}) not in the model the config describes; the "
            "weights do not belong to this config"
        )


def load(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Flow:
    """Rebuild the flow saved at ``path`` and load its weights; returned in eval mode.

    The checkpoint's metadata is attached as ``flow.checkpoint_meta`` (a dict: data,
    extra, versions).

    Raises:
        CheckpointNotFoundError, CheckpointFormatError, CheckpointVersionError,
        UnknownModelError, CheckpointMismatchError: see the module docs.
    """
    path = Path(path)
    meta = read_metadata(path)
    if path.is_file():
        path = path.parent
    flow = build_from_config(meta["model"], meta["config"])
    if "dtype" in meta:  # older checkpoints were float32 only
        flow.to(_torch_dtype(meta["dtype"], path))
    load_weights(flow, path)
    flow.to(map_location)
    flow.eval()
    flow.checkpoint_meta = meta  # type: ignore[attr-defined]
    return flow


def load_weights(flow: Flow, path: str | os.PathLike[str]) -> None:
    """Load the weights of checkpoint ``path`` into ``flow`` (names and shapes checked)."""
    path = Path(path)
    tensors = load_tensors(path / WEIGHTS_FILE, "cpu")
    check_tensors(flow, tensors, path)
    flow.load_state_dict(tensors, strict=True)


def load_training_state(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read the optional training state of a checkpoint: ``(tensors, json_state)``."""
    path = Path(path)
    read_metadata(path)
    state = _read_json(path / "training_state.json")
    tensors = load_tensors(path / "training_state.safetensors", map_location)
    return tensors, state
