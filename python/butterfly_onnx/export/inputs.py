"""What export reads: the optional packages it needs, labels, preprocessing, and real images
(paths, a directory, or (path, class index) pairs) fed through the project's own preprocessing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..contract import PreprocessSpec, current_resample_order
from ..errors import BackendUnavailableError, ContractError, ExportError
from ..images import IMAGE_EXTENSIONS

__all__ = [
    "Sample",
    "batches",
    "coerce_labels",
    "coerce_preprocess",
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


def coerce_preprocess(value: Any, *, what: str = "preprocess") -> PreprocessSpec:
    """A PreprocessSpec from a spec, a torchvision preset (``weights.transforms()``), a
    ``Compose``, or a dict with resize_size, crop_size, mean, std (and optionally
    interpolation, default "bilinear" like torchvision; max_size; resample_order, default the
    installed Pillow's rule)."""
    if isinstance(value, PreprocessSpec):
        return value
    if isinstance(value, Mapping):
        data = dict(value)
        missing = {"resize_size", "crop_size", "mean", "std"} - set(data)
        if missing:
            raise ContractError(f"{what} is missing {sorted(missing)}")
        data.setdefault("interpolation", "bilinear")
        data.setdefault("max_size", None)
        data.setdefault("resample_order", current_resample_order())
        return PreprocessSpec.from_dict(data)
    return PreprocessSpec.from_transforms(value)


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
