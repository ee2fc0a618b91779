"""What export reads: the optional packages it needs, labels, and real images (paths, a directory,
or (path, class index) pairs) fed through the project's own preprocessing.  Preprocessing given
in any form is converted by :meth:`PreprocessSpec.coerce <butterfly_onnx.contract.PreprocessSpec.coerce>`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..contract import PreprocessSpec
from ..errors import BackendUnavailableError, ContractError, ExportError
from ..images import IMAGE_EXTENSIONS

__all__ = [
    "Sample",
    "batches",
    "coerce_labels",
    "normalise_samples",
    "preprocess_fn",
    "require_onnx",
    "require_torch",
]

#: One real image: its path and, when known, its class index.
Sample = tuple[Path, int | None]

_T = TypeVar("_T")


def require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the train extra is installed in CI
        raise BackendUnavailableError("export_onnx needs torch: install butterfly-onnx[train]") from exc
    return torch


def require_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover
        raise BackendUnavailableError("export_onnx needs the onnx package: install butterfly-onnx[train]") from exc
    return onnx


def coerce_labels(labels: Any, *, what: str = "labels") -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise ContractError(f"{what} must be a sequence of class names, got {type(labels).__name__}")
    labels = list(labels)
    if not all(isinstance(label, str) for label in labels):
        raise ContractError(f"{what} must be strings")
    return labels


def normalise_samples(images: Any, what: str) -> list[Sample]:
    """Paths (or a directory of images) or (path, class index) pairs -> [(Path, idx|None)]."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                raise ExportError(f"{what}: the directory {root} holds no images")
            return [(p, None) for p in found]
        images = [images]
    samples: list[Sample] = []
    for item in images:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            path, target = item
            if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer))):
                raise ExportError(f"{what}: the class index of {path} must be an int, got {target!r}")
            samples.append((Path(path), None if target is None else int(target)))
        elif isinstance(item, (str, os.PathLike)):
            samples.append((Path(item), None))
        else:
            raise ExportError(f"{what}: expected image paths or (path, class index) pairs, got {item!r}")
    return samples


def preprocess_fn(spec: PreprocessSpec) -> Callable[[Sequence[Path]], np.ndarray]:
    """Image paths -> float32 NCHW batch through the project's own Python preprocessing
    (torchvision's loader and eval transforms, bit for bit; see preprocess.py), so that
    verification and calibration see exactly what the inference backends feed the model."""
    from ..images import decode_rgb, pixel_limit_default
    from ..preprocess import preprocess_batch

    limit = pixel_limit_default()

    def run(paths: Sequence[Path]) -> np.ndarray:
        images = [decode_rgb((str(path), Path(path)), limit) for path in paths]
        return preprocess_batch(images, spec)

    return run


def batches(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
