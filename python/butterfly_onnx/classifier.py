"""``Classifier``: run an exported butterfly_onnx model on images, with either backend.

>>> clf = Classifier("butterflies.onnx")                 # python backend
>>> clf.predict("photos/")[0].label                        # doctest: +SKIP
>>> Classifier("butterflies.onnx", backend="rust").logits(["a.jpg", "b.png"])  # doctest: +SKIP

The model's contract (labels + preprocessing, see ``docs/contract.md``) is read once; both
backends preprocess exactly like torchvision and run the same ONNX Runtime.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from ._backends import load_backend
from .contract import ModelContract, PreprocessSpec
from .errors import ContractError, ImageError, InvalidArgumentError, ModelNotFoundError
from .images import expand_images, pixel_limit_default

__all__ = ["Classifier", "Prediction", "TopK", "ImageSkippedWarning", "DEFAULT"]


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: ``max_image_pixels=DEFAULT``: twice ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's own
#: decompression-bomb error threshold, 178,956,970 pixels by default).
DEFAULT: Any = _Default()

ON_ERROR = ("raise", "skip")


class ImageSkippedWarning(UserWarning):
    """Issued once per image that ``on_error="skip"`` left out; the message names it."""


class TopK(NamedTuple):
    label: str
    index: int
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The result for one input image: its ``top_k`` classes, best first, or its ``error``
    (only with ``on_error="skip"``, then ``top_k`` is empty)."""

    source: str
    top_k: tuple[TopK, ...]
    error: ImageError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        return self.top_k[0].label if self.top_k else None

    @property
    def index(self) -> int | None:
        return self.top_k[0].index if self.top_k else None

    @property
    def probability(self) -> float | None:
        return self.top_k[0].probability if self.top_k else None


def _as_spec(preprocess: Any) -> PreprocessSpec | None:
    if preprocess is None or isinstance(preprocess, PreprocessSpec):
        return preprocess
    if isinstance(preprocess, Mapping):
        return PreprocessSpec.from_dict(preprocess)
    return PreprocessSpec.from_transforms(preprocess)  # a torchvision preset or Compose


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


class Classifier:
    """An exported classifier on one backend.

    Args:
        model: path of the ``.onnx`` file.
        backend: ``"python"`` (onnxruntime + Pillow + NumPy) or ``"rust"`` (native module).
        threads: bound on preprocessing workers and ONNX Runtime intra-op threads
            (None: all cores).
        labels, preprocess: override the contract's fields (both are required for a model
            without a contract).  ``preprocess`` is a PreprocessSpec, its dict form, or a
            torchvision ``weights.transforms()`` preset / ``Compose``.
        max_image_pixels: width * height above which an image is refused before decoding
            (ImageTooLargeError); None: no limit.
        on_error: ``"raise"`` (the first bad image's error is raised) or ``"skip"`` (bad images
            are left out with an :class:`ImageSkippedWarning` each); the per-call ``on_error``
            arguments override it.

    Safe to call from several threads at once.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        backend: str = "python",
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        preprocess: Any = None,
        max_image_pixels: int | None = DEFAULT,
        on_error: str = "raise",
    ) -> None:
        if isinstance(labels, str):
            raise TypeError("labels must be a sequence of strings, not one string")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"threads must be a positive int or None, got {threads!r}")
        self._on_error = self._check_on_error(on_error)
        if max_image_pixels is DEFAULT:
            max_image_pixels = pixel_limit_default()
        elif max_image_pixels is not None and (not isinstance(max_image_pixels, int) or max_image_pixels < 1):
            raise InvalidArgumentError(f"max_image_pixels must be a positive int or None, got {max_image_pixels!r}")
        self.max_image_pixels = max_image_pixels
        path = Path(model)
        if not path.exists():
            raise ModelNotFoundError(f"{path}: no such model file")
        try:
            spec = _as_spec(preprocess)
        except ContractError as exc:
            raise ContractError(f"{path}: preprocess: {exc}") from None
        backend_class = load_backend(backend)
        self._backend = backend_class(
            path,
            threads=threads,
            labels=list(labels) if labels is not None else None,
            preprocess=spec,
            max_image_pixels=max_image_pixels,
        )
        self.model_path = path
        self._threads = threads if threads is not None else (os.cpu_count() or 1)

    # -- properties ----------------------------------------------------------------------
    @property
    def spec(self) -> ModelContract:
        """The effective contract (the model's, with explicit overrides applied)."""
        return self._backend.contract

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        crop = self.spec.preprocess.crop_size
        return (3, crop, crop)

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def threads(self) -> int:
        return self._threads

    def __repr__(self) -> str:
        _, h, w = self.input_size
        return (
            f"Classifier(backend={self.backend!r}, model={self.model_path.name!r}, "
            f"classes={self.num_classes}, input=3x{h}x{w}, threads={self.threads})"
        )

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _check_on_error(on_error: str) -> str:
        if on_error not in ON_ERROR:
            raise InvalidArgumentError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        return on_error

    def _handle(self, errors: dict[int, ImageError], on_error: str | None) -> None:
        if not errors:
            return
        mode = self._check_on_error(on_error) if on_error is not None else self._on_error
        if mode == "raise":
            raise errors[min(errors)]
        for index in sorted(errors):
            warnings.warn(f"skipped {errors[index]}", ImageSkippedWarning, stacklevel=3)

    # -- the API -------------------------------------------------------------------------
    def preprocess(self, images: Any, on_error: str | None = None) -> np.ndarray:
        """The float32 (N, 3, crop, crop) batch the model sees, bit-exact with torchvision.
        With ``on_error="skip"`` the rows of failed images are left out (N = good images)."""
        batch, errors = self._backend.preprocess(expand_images(images))
        self._handle(errors, on_error)
        return batch

    def logits(self, images: Any, on_error: str | None = None) -> np.ndarray:
        """The raw model output, float32 (N, num_classes); failed images are left out when
        skipped, as in :meth:`preprocess`."""
        out, errors = self._backend.logits(expand_images(images))
        self._handle(errors, on_error)
        return out

    def predict(self, images: Any, top_k: int = 5, on_error: str | None = None) -> list[Prediction]:
        """One :class:`Prediction` per input image, in input order: the ``top_k`` classes with
        their softmax probabilities (float64 softmax, reported as float32), best first.  A
        skipped image keeps its place, with ``error`` set and no classes."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}")
        items = expand_images(images)
        out, errors = self._backend.logits(items)
        self._handle(errors, on_error)
        probabilities = out.astype(np.float32) if self.spec.output_kind == "probabilities" else _softmax(out)
        k = min(top_k, self.num_classes)
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        labels = self.labels
        predictions: list[Prediction] = []
        row = 0
        for index, (source, _) in enumerate(items):
            if index in errors:
                predictions.append(Prediction(source, (), errors[index]))
                continue
            best = tuple(
                TopK(labels[c], int(c), float(probabilities[row, c])) for c in order[row]
            )
            predictions.append(Prediction(source, best))
            row += 1
        return predictions
