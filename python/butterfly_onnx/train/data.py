"""Labelled image datasets for fine-tuning.  The readers (layouts, the health report, the
split) are torch-free and live in :mod:`butterfly_onnx.datasets`, shared with ``val`` and
``predict``; this module re-exports them and adds the torch dataset over the samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..datasets import (
    IMAGE_EXTENSIONS,
    KAGGLE_TEST_CSV,
    KAGGLE_TRAIN_CSV,
    Dataset,
    HealthReport,
    health_report,
    load_dataset,
    load_rgb,
    load_unlabelled,
    split_dataset,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "KAGGLE_TEST_CSV",
    "KAGGLE_TRAIN_CSV",
    "Dataset",
    "HealthReport",
    "ImageSamples",
    "load_dataset",
    "load_unlabelled",
    "health_report",
    "split_dataset",
    "load_rgb",
]


# --- torch dataset --------------------------------------------------------------------------
def _torch_dataset_base() -> type:
    import torch.utils.data

    return torch.utils.data.Dataset


class ImageSamples(_torch_dataset_base()):  # type: ignore[misc]
    """A map-style torch dataset over ``(path, class index)`` with its OWN transform: the
    train and validation splits are separate objects, so augmentation never reaches
    validation."""

    def __init__(self, samples: Sequence[tuple[Path, int]], transform: Any):
        self.samples = list(samples)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return self.transform(load_rgb(path)), label
