"""Datasets for density estimation: toys with known densities, an embedded patch set, the
MAF paper's benchmarks, and image sets.

Entry points:

- :func:`load_dataset` ``(name, *, data_dir=None, seed=0, **options)`` returns a
  :class:`TabularData` (float32 vectors, train/val/test), an :class:`ImageData` (raw
  ``uint8`` images) or a :class:`SpeechData` (whole ``int16`` utterances at 16 kHz).
- :func:`list_datasets` ``(data_dir=None)`` tells which datasets are available and, for the
  missing ones, which file to download from where and where to put it.

The data directory is the ``data_dir`` argument, else ``$INVERTIBLE_DATA_DIR``, else
``~/.local/share/invertible/data``. See ``docs/datasets.md`` for every dataset.

Example:
    >>> from invertible.data import load_dataset
    >>> data = load_dataset("checkerboard", n_train=1000, n_val=100, n_test=100)
    >>> data.train.shape, data.train.dtype.name, data.mean is None
    ((1000, 2), 'float32', True)
"""

from invertible.data.base import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DEFAULT_DATA_DIR,
    ChecksumWarning,
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetStatus,
    ImageData,
    RequiredFile,
    TabularData,
    nonfinite_rows,
    resolve_data_dir,
)
from invertible.data.files import check_finite_splits, load_array_file, load_data
from invertible.data.registry import dataset_names, list_datasets, load_dataset
from invertible.data.speech import AudioExtraMissingError, SpeechData

__all__ = [
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "DEFAULT_DATA_DIR",
    "AudioExtraMissingError",
    "ChecksumWarning",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetStatus",
    "ImageData",
    "RequiredFile",
    "SpeechData",
    "TabularData",
    "check_finite_splits",
    "dataset_names",
    "list_datasets",
    "load_array_file",
    "load_data",
    "load_dataset",
    "nonfinite_rows",
    "resolve_data_dir",
]
