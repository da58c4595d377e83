"""What a resumable run saves besides the weights: seeds, optimizer and RNG states."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "load_optimizer_state",
    "load_rng_state",
    "optimizer_state",
    "rng_state",
    "seed_everything",
]


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA).

    Example:
        >>> seed_everything(0); a = torch.rand(1)
        >>> seed_everything(0); bool(torch.rand(1) == a)
        True
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict]:
    """The optimizer's state as ``(tensors, json_state)`` for a safetensors checkpoint."""
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]
) -> None:
    """Restore what :func:`optimizer_state` returned."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith("optimizer."):
            continue
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, entry in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state() -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The torch (CPU, CUDA), numpy and python RNG states as ``(tensors, json_state)``."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(np_state[1], dtype=np.int64))
    py_state = random.getstate()
    meta = {
        "numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, meta


def load_rng_state(tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only for the same GPU count)."""
    if "rng.torch" in tensors:
        torch.set_rng_state(tensors["rng.torch"].cpu())
    if torch.cuda.is_available():
        cuda = [
            tensors[f"rng.cuda.{i}"].cpu()
            for i in range(torch.cuda.device_count())
            if f"rng.cuda.{i}" in tensors
        ]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if "rng.numpy" in tensors and "numpy" in meta:
        name, pos, has_gauss, cached = meta["numpy"]
        arr = tensors["rng.numpy"].cpu().numpy().astype(np.uint32)
        np.random.set_state((name, arr, int(pos), int(has_gauss), float(cached)))
    if "python" in meta:
        version, internal, gauss = meta["python"]
        random.setstate((version, tuple(internal), gauss))
