"""The catalogue of model names (what ``--model`` takes) → presets with sensible sizes for
the data dimension.

=============== ================= ==============================================
name            preset            notes
=============== ================= ==============================================
``nice``        ``NICE``          additive couplings + rescaling
``realnvp``     ``RealNVP``       affine couplings, batch norm between
``maf``         ``MAF``           MADE layers over x, batch norm (fast density)
``maf-mog``     ``MAF``           MAF with a MADE-MoG base (``mog_components``)
``iaf``         ``IAF``           MADE layers over u (fast sampling, slow density)
``gaussian-ar`` ``GaussianAR``    one Gaussian autoregressive layer (MADE)
``made-mog``    ``MADEMoG``       MADE with mixture-of-Gaussians conditionals
``realnvp-image`` ``RealNVPImage`` multi-scale RealNVP for ``ImageData``
``wavenet``     ``WaveNetMAF``    WaveNet teacher for ``SpeechData`` (waveforms)
=============== ================= ==============================================

Sizes: ``"default"`` scales the networks with the dimension D (wider for D ≥ 32),
``"small"`` is the CPU-friendly size the lecture job uses, ``"tiny"`` is for tests.
``realnvp-image`` is sized for a CPU (default: 2 scales, 1 residual block of 32 channels
per coupling network, about 0.2M parameters for 28x28; small: 16 channels; tiny: one scale,
8 channels); its logit λ follows :func:`image_lam` and its ``levels`` should be passed from
the data (``build_model(..., levels=data.levels)``).
``wavenet`` is a sequence model (waveforms of any length; ``features`` is the default
sample length): tiny (R = 8, for tests), small (32 channels, dilations 1..256, R = 512),
default (the preset's 64/128 channels, two cycles of 1..512, R = 2047); every size has a
linear-prediction shortcut of order 32 that :func:`initialize_from_data` fits by least
squares, so training starts at the Gaussian AR(32) likelihood.
Presets are looked up by class name in :attr:`invertible.Flow.registry`, so a name whose
preset is not installed raises :class:`ModelUnavailableError` (a one-line message).

Example:
    >>> flow = build_model("realnvp", 2, size="tiny")
    >>> type(flow).__name__, flow.config["hidden_features"]
    ('RealNVP', [16, 16])
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import invertible.presets  # noqa: F401  (fills Flow.registry, which build_model reads)
from invertible.core import Flow
from invertible.presets.wavenet import WaveNetMAF, init_linear_prediction
from invertible.transforms.normalization import Rescaling

__all__ = [
    "MODELS",
    "ModelSpec",
    "ModelUnavailableError",
    "UnknownModelNameError",
    "build_model",
    "image_lam",
    "initialize_from_data",
    "model_kwargs",
    "model_names",
    "model_spec",
]

SIZES = ("tiny", "small", "default")


class UnknownModelNameError(ValueError):
    """The model name is not one of :data:`MODELS`."""


class ModelUnavailableError(RuntimeError):
    """The model's preset is not installed in this version."""


def _hidden(features: int, size: str, *, big: int, small: int, depth: int = 2) -> list[int]:
    if size == "tiny":
        return [16, 16]
    width = small if size == "small" or features < 32 else big
    return [width] * depth


def _layers(size: str, default: int, small: int) -> int:
    return {"tiny": 2, "small": small, "default": default}[size]


@dataclass(frozen=True)
class ModelSpec:
    """How a command-line name maps to a preset and its default constructor arguments."""

    preset: str
    description: str
    kwargs: Callable[[int, str], dict[str, Any]]
    image: bool = False
    sequence: bool = False


MODELS: dict[str, ModelSpec] = {
    "nice": ModelSpec(
        "NICE",
        "NICE: additive couplings + diagonal rescaling (both directions parallel)",
        lambda d, s: {
            "num_layers": _layers(s, 4, 4),
            "hidden_features": _hidden(d, s, big=512, small=256, depth=3),
            "base": "logistic",
        },
    ),
    "realnvp": ModelSpec(
        "RealNVP",
        "RealNVP: affine couplings with batch norm (both directions parallel)",
        lambda d, s: {
            "num_layers": _layers(s, 6, 5),
            "hidden_features": _hidden(d, s, big=512, small=256),
            "batch_norm": True,
        },
    ),
    "maf": ModelSpec(
        "MAF",
        "MAF: MADE layers over x with batch norm (parallel density, sequential sampling)",
        lambda d, s: {
            "num_layers": _layers(s, 5, 5),
            "hidden_features": _hidden(d, s, big=512, small=256),
            "batch_norm": True,
        },
    ),
    "maf-mog": ModelSpec(
        "MAF",
        "MAF with a MADE mixture-of-Gaussians base (MAF MoG)",
        lambda d, s: {
            "num_layers": _layers(s, 5, 5),
            "hidden_features": _hidden(d, s, big=512, small=256),
            "batch_norm": True,
            "mog_components": 3 if s == "tiny" else 10,
        },
    ),
    "iaf": ModelSpec(
        "IAF",
        "IAF: MADE layers over u (parallel sampling, sequential density)",
        lambda d, s: {
            "num_layers": _layers(s, 5, 4),
            "hidden_features": _hidden(d, s, big=512, small=256),
        },
    ),
    "gaussian-ar": ModelSpec(
        "GaussianAR",
        "Gaussian autoregressive model: one MADE layer",
        lambda d, s: {"hidden_features": _hidden(d, s, big=1024, small=512)},
    ),
    "made-mog": ModelSpec(
        "MADEMoG",
        "MADE with mixture-of-Gaussians conditionals",
        lambda d, s: {
            "hidden_features": _hidden(d, s, big=1024, small=512),
            "components": 3 if s == "tiny" else 10,
        },
    ),
    "realnvp-image": ModelSpec(
        "RealNVPImage",
        "multi-scale RealNVP for images (ImageData)",
        lambda d, s: (
            {"num_scales": 1, "blocks_per_scale": 1, "channels": 8}
            if s == "tiny"
            else {"num_scales": 2, "blocks_per_scale": 1, "channels": 16 if s == "small" else 32}
        ),
        image=True,
    ),
    "wavenet": ModelSpec(
        "WaveNetMAF",
        "WaveNet teacher (MAF mode) for speech waveforms, AR(32) shortcut",
        lambda d, s: {
            "length": d,
            # speech residuals are heavy-tailed (Laplace AR(32) beats Gaussian AR(32) by
            # about 0.35 nats/sample on `speech`): logistic conditionals start closer
            "base": "logistic",
            "linear_order": 32,
            **(
                {"residual_channels": 8, "skip_channels": 8, "dilations": [1, 2, 4]}
                if s == "tiny"
                else {
                    "residual_channels": 32,
                    "skip_channels": 64,
                    "dilation_cycles": 1,
                    "max_dilation": 256,
                }
                if s == "small"
                else {}
            ),
        },
        sequence=True,
    ),
}


def model_names() -> list[str]:
    """The command-line model names, in table order."""
    return list(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The entry of ``name`` (case-insensitive, ``_`` or ``-``); raises
    :class:`UnknownModelNameError` listing the known names.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in MODELS:
        raise UnknownModelNameError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[key]


def model_kwargs(name: str, features: int, *, size: str = "default") -> dict[str, Any]:
    """Default constructor arguments of model ``name`` for dimension ``features``."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")
    return model_spec(name).kwargs(features, size)


def image_lam(shape: tuple[int, ...]) -> float:
    """λ of the logit preprocessing for images of ``shape`` ``(C, H, W)``: 1e-6 for
    grey-scale, MNIST-like data (the MAF paper's setting), 0.05 otherwise (RealNVP's).

    Example:
        >>> image_lam((1, 28, 28)), image_lam((3, 32, 32))
        (1e-06, 0.05)
    """
    return 1e-6 if shape[0] == 1 else 0.05


#: The network sizes ``--size`` takes.
SIZES = ("tiny", "small", "default")


def check_size(size: str) -> None:
    """Raise ``ValueError`` unless ``size`` is one of :data:`SIZES`."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {', '.join(SIZES)}")


def build_model(
    name: str,
    features: int | tuple[int, ...],
    *,
    size: str = "default",
    seed: int | None = None,
    **overrides: Any,
) -> Flow:
    """Build the preset for ``name`` for data of dimension ``features`` (an int, or the
    ``(C, H, W)`` shape for image models).

    ``overrides`` replace the defaults; keys the preset does not accept raise ``TypeError``.
    ``seed`` seeds torch before construction, so the initial weights are reproducible.

    Raises:
        UnknownModelNameError: not a known name.
        ModelUnavailableError: the preset is not installed.
    """
    spec = model_spec(name)
    check_size(size)
    cls = Flow.registry.get(spec.preset)
    if cls is None:
        raise ModelUnavailableError(
            f"model {name!r} needs the {spec.preset} preset, which is not available in this "
            "installation of invertible; upgrade it or choose another model"
        )
    if isinstance(features, (tuple, list)) != spec.image and not spec.sequence:
        kind = "images (C, H, W)" if spec.image else "vectors"
        hint = "choose a vector model" if spec.image else "for images use realnvp-image"
        raise ValueError(f"model {name!r} is for {kind}; got data of shape {features}; {hint}")
    dim = features if isinstance(features, int) else math.prod(features)
    kwargs = {**spec.kwargs(dim, size), **overrides}
    if spec.image and "lam" not in overrides:
        kwargs["lam"] = image_lam(tuple(features))  # type: ignore[arg-type]
    params = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = [k for k in kwargs if k not in params]
        for k in unknown:
            if k in overrides:
                raise TypeError(f"{spec.preset} does not take option {k!r}")
            kwargs.pop(k)  # a default the installed preset does not know
    if seed is not None:
        torch.manual_seed(seed)
    if spec.image:
        return cls(tuple(features), **kwargs)  # type: ignore[arg-type]
    if spec.sequence:  # waveforms of any length: features is only the default length
        return cls(**kwargs)
    return cls(features, **kwargs)


def initialize_from_data(flow: Flow, x: Any, *, max_rows: int = 10000) -> bool:
    """Data-dependent initialisation of NICE's diagonal rescaling, or of a WaveNet
    teacher's linear-prediction shortcut by least squares (returns True if applied).

    NICE's only non-volume-preserving layer is the final rescaling x = z ⊙ exp(s); with
    s = 0 at start and Adam moving each parameter by about ``lr`` per step, data of scale
    0.1 (8x8 patches) need thousands of steps just to learn the scale. Setting s to the log
    standard deviation of what the rescaling sees (the data passed back through the
    couplings) removes that. Other flows normalise with batch norm / ActNorm and are left
    alone.

    Example:
        >>> import torch
        >>> flow = build_model("nice", 3, size="tiny", seed=0)
        >>> initialize_from_data(flow, torch.randn(500, 3) * 0.1)
        True
        >>> bool(flow.transform.transforms[0].log_scale.mean() < -1.5)
        True
    """
    if isinstance(flow, WaveNetMAF):
        # the teacher starts at the AR(p) likelihood (x: a list of training waveforms)
        if not flow.transform.net.linear_order:  # type: ignore[union-attr]
            return False
        init_linear_prediction(flow, x)
        return True
    layers = getattr(flow.transform, "transforms", None)
    if not layers or not isinstance(layers[0], Rescaling):
        return False
    param = next(flow.parameters())
    h = torch.as_tensor(x[:max_rows]).to(device=param.device, dtype=param.dtype)
    with torch.no_grad():
        for layer in reversed(list(layers)[1:]):
            h = layer.inverse(h)[0]
        layers[0].log_scale.copy_(h.std(dim=0).clamp_min(1e-6).log())
    return True
