"""The dataset registry: :func:`load_dataset` and :func:`list_datasets`."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invertible.data import images, patches, speech, tabular, toy
from invertible.data.base import (
    DatasetStatus,
    ImageData,
    Located,
    TabularData,
    missing_message,
    resolve_data_dir,
)
from invertible.data.speech import SpeechData

__all__ = ["dataset_names", "list_datasets", "load_dataset"]


@dataclass(frozen=True)
class _Spec:
    name: str
    kind: str  # "toy" | "embedded" | "file"
    description: str
    loader: Callable[..., TabularData | ImageData | SpeechData]
    locate: Callable[[Path], Located] | None = None
    wants_data_dir: bool = False
    requires: tuple[str, str] | None = None  # (module, remedy) for a generated set


def _mnist_locator(roles: tuple[str, ...], dataset: str = "mnist") -> Callable[[Path], Located]:
    return lambda d: images.locate_idx(dataset, d, roles)


_TOY_DESCRIPTIONS = {
    "moons": "2-D two moons (no closed-form density)",
    "rings": "2-D concentric rings (exact density)",
    "8gaussians": "2-D mixture of 8 Gaussians (exact density)",
    "checkerboard": "2-D checkerboard (exact density)",
    "pinwheel": "2-D pinwheel (no closed-form density)",
    "spirals": "2-D two spirals (no closed-form density)",
}

_SPECS: dict[str, _Spec] = {}
for _n in toy.TOY_2D:
    _SPECS[_n] = _Spec(_n, "toy", _TOY_DESCRIPTIONS[_n], functools.partial(toy.load_toy, _n))
_SPECS.update(
    {
        "gmm8": _Spec(
            "gmm8",
            "toy",
            "8-D mixture of 5 full-covariance Gaussians (exact density)",
            toy.load_gmm8,
        ),
        "patches": _Spec(
            "patches",
            "embedded",
            "BSDS300-protocol 8x8 patches (D=63) of scikit-learn's two sample photos",
            patches.load_patches,
        ),
        "digits": _Spec(
            "digits", "embedded", "scikit-learn 8x8 digits, dequantised (D=64)", images.load_digits
        ),
        "digits-images": _Spec(
            "digits-images",
            "embedded",
            "scikit-learn 8x8 digits as images (17 levels)",
            images.load_digits_images,
        ),
        "power": _Spec(
            "power",
            "file",
            "MAF POWER (UCI household power, D=6)",
            tabular.load_power,
            tabular.locate_power,
            True,
        ),
        "gas": _Spec(
            "gas",
            "file",
            "MAF GAS (UCI ethylene_CO, D=8)",
            tabular.load_gas,
            tabular.locate_gas,
            True,
        ),
        "hepmass": _Spec(
            "hepmass",
            "file",
            "MAF HEPMASS (UCI, D=21)",
            tabular.load_hepmass,
            tabular.locate_hepmass,
            True,
        ),
        "miniboone": _Spec(
            "miniboone",
            "file",
            "MAF MINIBOONE (UCI, D=43)",
            tabular.load_miniboone,
            tabular.locate_miniboone,
            True,
        ),
        "bsds300": _Spec(
            "bsds300",
            "file",
            "MAF BSDS300 8x8 patches (D=63)",
            images.load_bsds300,
            images.locate_bsds300,
            True,
        ),
        "mnist": _Spec(
            "mnist",
            "file",
            "MNIST 28x28, MAF split 50k/10k/10k (uint8 images)",
            images.load_mnist,
            _mnist_locator(("train_images", "test_images")),
            True,
        ),
        "mnist-test": _Spec(
            "mnist-test",
            "file",
            "MNIST official test set only, split 70/10/20 (not the paper's protocol)",
            functools.partial(images.load_mnist, splits="test"),
            _mnist_locator(("test_images",)),
            True,
        ),
        "fashion-mnist": _Spec(
            "fashion-mnist",
            "file",
            "Fashion-MNIST 28x28, split 50k/10k/10k (uint8 images)",
            images.load_fashion_mnist,
            _mnist_locator(("train_images", "test_images"), "fashion-mnist"),
            True,
        ),
        "speech": _Spec(
            "speech",
            "embedded",
            "synthetic English speech, 16 kHz int16 utterances; built offline by eSpeak NG "
            "(espeakng-loader wheel) from seeded sentences, cached",
            speech.load_speech,
            wants_data_dir=True,
            requires=("espeakng_loader", speech.AUDIO_EXTRA_HINT),
        ),
        "speech-wav": _Spec(
            "speech-wav",
            "file",
            "your 16-bit PCM WAV speech (e.g. LJSpeech, VCTK), resampled to 16 kHz",
            speech.load_speech_wav,
            speech.locate_speech_wav,
            True,
        ),
    }
)


def dataset_names() -> list[str]:
    """All registered dataset names, in display order.

    Example:
        >>> "moons" in dataset_names() and "bsds300" in dataset_names()
        True
    """
    return list(_SPECS)


def _normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _spec(name: str) -> _Spec:
    key = _normalize(name)
    if key not in _SPECS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(_SPECS)}")
    return _SPECS[key]


def _option_names(fn: Callable[..., Any]) -> list[str]:
    params = inspect.signature(fn).parameters
    return [p.name for p in params.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    **options: Any,
) -> TabularData | ImageData | SpeechData:
    """Load a dataset by name.

    Args:
        name: A registered name (see :func:`list_datasets`); case-insensitive, ``_`` and
            ``-`` are interchangeable.
        data_dir: Directory holding downloaded files; default ``$INVERTIBLE_DATA_DIR``,
            else ``~/.local/share/invertible/data``. Ignored by toy/embedded datasets.
        seed: Seed for everything random the loader does (sampling, noise, splits); MAF's own
            fixed seeds (e.g. POWER's ``RandomState(42)``) are reproduced regardless.
        **options: Dataset-specific keyword options (e.g. ``n_train``, ``standardize``);
            an unknown option raises ``TypeError`` listing the valid ones.

    Returns:
        :class:`TabularData` (vectors), :class:`ImageData` (raw ``uint8`` images) or
        :class:`~invertible.data.speech.SpeechData` (``int16`` utterances).

    Raises:
        ValueError: Unknown name (the message lists the known names).
        DatasetNotFoundError: A needed file is missing (the message names the file, its URL
            and the full path to put it at).
        DatasetFormatError: A file is corrupt or holds NaN/inf rows.

    Example:
        >>> load_dataset("moons").train.shape
        (20000, 2)
        >>> load_dataset("8gaussians", n_train=500, n_val=100, n_test=100).features
        2
    """
    spec = _spec(name)
    allowed = _option_names(spec.loader)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"load_dataset({spec.name!r}) got unknown option(s) {', '.join(unknown)}; "
            f"valid options: {', '.join(a for a in allowed if a != 'seed') or 'none'}"
        )
    kwargs = dict(options, seed=seed) if "seed" in allowed else dict(options)
    if spec.wants_data_dir:
        return spec.loader(resolve_data_dir(data_dir), **kwargs)
    return spec.loader(**kwargs)


def list_datasets(data_dir: str | os.PathLike[str] | None = None) -> list[DatasetStatus]:
    """The status of every dataset: kind, availability, and what to download if missing.

    Example:
        >>> status = {s.name: s for s in list_datasets("/nonexistent")}
        >>> status["moons"].available, status["power"].available
        (True, False)
        >>> status["power"].missing[0].destination
        PosixPath('/nonexistent/power/individual+household+electric+power+consumption.zip')
    """
    root = resolve_data_dir(data_dir)
    sklearn_ok = importlib.util.find_spec("sklearn") is not None
    out = []
    for spec in _SPECS.values():
        if spec.requires is not None:
            ok = importlib.util.find_spec(spec.requires[0]) is not None
            msg = "" if ok else f"needs {spec.requires[0]}: {spec.requires[1]}"
            out.append(DatasetStatus(spec.name, spec.kind, ok, spec.description, message=msg))
            continue
        if spec.locate is None:
            ok = spec.kind == "toy" or sklearn_ok
            msg = "" if ok else "needs scikit-learn: pip install scikit-learn"
            out.append(DatasetStatus(spec.name, spec.kind, ok, spec.description, message=msg))
            continue
        loc = spec.locate(root)
        out.append(
            DatasetStatus(
                spec.name,
                spec.kind,
                loc.available,
                spec.description,
                found=tuple(loc.found.values()),
                missing=tuple(loc.routes[0]) if loc.routes else (),
                message=""
                if loc.available
                else missing_message(spec.name, loc.routes, root, loc.found.values())
                + ("\n" + loc.note if loc.note else ""),
            )
        )
    return out
