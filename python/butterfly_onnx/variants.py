"""Deprecated: moved to :mod:`butterfly_onnx.export.variants` (kept for one release)."""

from __future__ import annotations

import warnings

from .export.variants import INT8_METHODS, VARIANTS, build_variant, measure_variants

__all__ = ["INT8_METHODS", "VARIANTS", "build_variant", "measure_variants"]

warnings.warn(
    "butterfly_onnx.variants is deprecated: import from butterfly_onnx.export.variants",
    DeprecationWarning,
    stacklevel=2,
)
