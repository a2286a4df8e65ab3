"""The package version, read from the installed distribution's metadata.

``pyproject.toml`` is the one place the version is written; ``glasspool.__version__``,
``glasspool --version`` and the default ``User-Agent`` all read it from here.
"""

from __future__ import annotations

import importlib.metadata
from typing import Final

__all__ = ["__version__"]


def _installed_version() -> str:
    try:
        return importlib.metadata.version("glasspool")
    except importlib.metadata.PackageNotFoundError:  # imported from a tree never installed
        return "0+unknown"


__version__: Final = _installed_version()
