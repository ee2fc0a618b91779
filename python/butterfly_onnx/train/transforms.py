"""The image transforms of fine-tuning: the weights' eval pipeline and the training augmentation
(torchvision, on PIL images)."""

from __future__ import annotations

from typing import Any

from ..contract import PreprocessSpec

__all__ = ["eval_transforms", "train_transforms"]


def _interpolation(spec: PreprocessSpec) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR


def eval_transforms(spec: PreprocessSpec) -> Any:
    """The weights' eval pipeline (torchvision's ImageClassification preset, on PIL images)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(spec.resize_size, interpolation=_interpolation(spec), max_size=spec.max_size),
            T.CenterCrop(spec.crop_size),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )


def train_transforms(spec: PreprocessSpec) -> Any:
    """Training-only augmentation: RandomResizedCrop to the crop size and a horizontal flip."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(spec.crop_size, interpolation=_interpolation(spec)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )
