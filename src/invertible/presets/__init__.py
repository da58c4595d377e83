"""Presets: the lecture's models assembled from transforms, networks and base distributions."""

from invertible.presets.autoregressive import IAF, MAF, GaussianAR, MADEMoG, MixtureMADE
from invertible.presets.coupling import NICE, RealNVP
from invertible.presets.image import NICEImage, RealNVPImage, save_image_grid
from invertible.presets.wavenet import (
    IIDSequence,
    LinearPredictionAR,
    SequenceFlow,
    WaveNetIAF,
    WaveNetMAF,
    impulse_response,
    init_linear_prediction,
    init_moving_average,
    linear_prediction_least_squares,
)

__all__ = [
    "IAF",
    "MAF",
    "NICE",
    "GaussianAR",
    "IIDSequence",
    "LinearPredictionAR",
    "MADEMoG",
    "MixtureMADE",
    "NICEImage",
    "RealNVP",
    "RealNVPImage",
    "SequenceFlow",
    "WaveNetIAF",
    "WaveNetMAF",
    "impulse_response",
    "init_linear_prediction",
    "init_moving_average",
    "linear_prediction_least_squares",
    "save_image_grid",
]
