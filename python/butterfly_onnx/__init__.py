"""butterfly_onnx: fine-tune a torchvision classifier, export one self-describing ONNX file,
and run it without torch from Python or Rust, with torchvision-exact preprocessing.

``import butterfly_onnx`` stays light: torch, onnxruntime and the native module are imported
only when the names that need them are first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .contract import ModelContract, PreprocessSpec, write_contract
from .errors import *  # noqa: F403  (the one exception hierarchy is public)
from .errors import __all__ as _error_names

# name -> module that defines it, imported on first access (PEP 562).
_LAZY = {
    "Classifier": ".classifier",
    "Prediction": ".classifier",
    "ClassScore": ".classifier",
    "write_predictions": ".results",
    "write_submission": ".results",
    "evaluate": ".evaluate",
    "ImageSkippedWarning": ".classifier",
    "ExportReport": ".export",
    "export_onnx": ".export",
    "verify_onnx": ".export",
    "finetune": ".train",
    "FinetuneResult": ".train",
    "build_model": ".train",
    "load_dataset": ".train",
    "model_catalog": ".catalog",
    "serve": ".serving",
}

__all__ = [
    "ModelContract",
    "PreprocessSpec",
    "write_contract",
    *_LAZY,
    *_error_names,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'butterfly_onnx' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover
    from .catalog import model_catalog
    from .classifier import Classifier, ClassScore, ImageSkippedWarning, Prediction
    from .evaluate import evaluate
    from .export import ExportReport, export_onnx, verify_onnx
    from .results import write_predictions, write_submission
    from .serving import serve
    from .train import FinetuneResult, build_model, finetune, load_dataset
