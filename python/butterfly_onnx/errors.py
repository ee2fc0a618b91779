"""The one exception hierarchy of butterfly_onnx.

Every error the package raises on purpose derives from :class:`ButterflyError` and also
from the built-in exception a caller would naturally catch (``ValueError``,
``FileNotFoundError``, ``ImportError``, ``RuntimeError``).  Both inference backends raise
the same classes for the same bad input, and every message names the offending input.

The Rust core maps its error kinds onto these classes by name (see
``rust/butterfly-onnx-python/src/lib.rs``); keep the two lists in step.
"""

from __future__ import annotations

__all__ = [
    "ButterflyError",
    "ImageError",
    "ImageNotFoundError",
    "ImageDecodeError",
    "ImageTooLargeError",
    "NonFiniteOutputError",
    "ModelError",
    "ModelNotFoundError",
    "InvalidModelError",
    "ContractError",
    "BackendUnavailableError",
    "DatasetError",
    "ExportError",
    "ExportVerificationError",
    "TrainingError",
    "ArchitectureError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
]


class ButterflyError(Exception):
    """Base class of every error raised by butterfly_onnx."""


class InvalidArgumentError(ButterflyError, ValueError):
    """An argument is out of range (threads, top_k, on_error, max_image_pixels, batch shape)."""


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument of the wrong type (a model that is neither a path nor bytes, an image of
    an unsupported kind); also a ``TypeError``."""


# --- images -------------------------------------------------------------------------
class ImageError(ButterflyError, ValueError):
    """An input image cannot be used. ``source`` names the input (path or description)."""

    def __init__(self, message: str, source: str | None = None):
        super().__init__(message)
        self.source = source


class ImageNotFoundError(ImageError, FileNotFoundError):
    """An image path does not exist (or a directory/glob matched no image)."""


class ImageDecodeError(ImageError):
    """The bytes are not a decodable image: empty, truncated, corrupt or an unknown format."""


def decode_error(source: str, reason: str) -> ImageDecodeError:
    """``source`` cannot be decoded for ``reason``, worded as the Rust core words it."""
    return ImageDecodeError(f"{source}: cannot decode image: {reason}", source=source)


class ImageTooLargeError(ImageError):
    """The image has more pixels than the decompression-bomb limit allows."""


class NonFiniteOutputError(ImageError):
    """The model's output for this image holds NaN or infinity, so no class can be named:
    a per-image failure (it follows ``on_error``), never a prediction."""


# --- models -------------------------------------------------------------------------
class ModelError(ButterflyError, ValueError):
    """A model file cannot be used."""


class ModelNotFoundError(ModelError, FileNotFoundError):
    """The model path does not exist."""


class InvalidModelError(ModelError):
    """The file is not a loadable ONNX model, or its inputs/outputs do not fit a classifier."""


class ContractError(ModelError):
    """The model's butterfly_onnx metadata (the contract) is missing, invalid or of an
    unknown schema version, or explicit labels/preprocessing are inconsistent with it."""


# --- environment --------------------------------------------------------------------
class BackendUnavailableError(ButterflyError, ImportError):
    """A requested backend or optional dependency (the native module, torch) is missing."""


# --- training and export ------------------------------------------------------------
class DatasetError(ButterflyError, ValueError):
    """A dataset cannot be used for training: empty, one class, bad CSV, unsafe paths."""


class TrainingError(ButterflyError, RuntimeError):
    """Fine-tuning failed (bad configuration, unknown architecture, resume mismatch)."""


class ArchitectureError(ButterflyError, ValueError):
    """An unknown architecture name, or a model whose classification head cannot be found."""


class ExportError(ButterflyError, RuntimeError):
    """Exporting a model to ONNX failed."""


class ExportVerificationError(ExportError):
    """The exported ONNX model disagrees with PyTorch beyond the allowed thresholds."""
