"""The package version, in a module of its own so that any module can read it without importing
the package ``__init__``.

The one place it is written is Cargo's ``[workspace.package] version`` (maturin gives it to the
wheel: pyproject.toml's ``dynamic = ["version"]``).  In a source checkout (this file under
``python/butterfly_onnx`` beside that Cargo.toml) it is read from there, so a stale installed
copy's metadata cannot mislead; an installed package reads its own metadata.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

__all__ = ["__version__", "DISTRIBUTION"]

DISTRIBUTION = "butterfly-onnx"
_CARGO_TOML = Path(__file__).resolve().parent.parent.parent / "Cargo.toml"


def _version() -> str:
    try:
        with open(_CARGO_TOML, "rb") as handle:
            return str(tomllib.load(handle)["workspace"]["package"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # neither a checkout nor installed (e.g. a copied tree)
        return "0+unknown"


__version__ = _version()
