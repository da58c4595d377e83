"""The installed version of :mod:`invertible`, read from the package metadata.

``pyproject.toml`` is the one place the version is written; this module imports nothing
of :mod:`invertible`, so any layer may use it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("invertible")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
