"""Fine-tuning (needs the ``train`` extra: torch and torchvision are imported only here).

- :func:`build_model`, :func:`weights_preprocess`, :data:`ARCHITECTURES` (``models``)
- :func:`save_checkpoint`, :func:`load_checkpoint` (``checkpoint``)
- :func:`load_dataset`, :func:`health_report` (``data``)
- :func:`finetune` (``loop``: the run as named steps over ``state.Run``), :class:`FinetuneResult`
  (``report``), :class:`FinetuneSettings` (``butterfly_onnx.settings``, torch-free)
- one job per module: ``transforms``, ``distributed``, ``hardware`` (cores, precision, memory
  format), ``epochs``, ``features`` (cache and probe), ``progress`` (bars, log lines), ``metrics``
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    from ..errors import BackendUnavailableError

    raise BackendUnavailableError(
        "butterfly_onnx.train needs torch and torchvision: pip install 'butterfly-onnx[train]'"
    ) from exc

from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .models import ARCHITECTURES, build_model, list_architectures, weights_preprocess

_LAZY = {
    "finetune": ".loop",
    "FinetuneResult": ".report",
    "FinetuneSettings": "..settings",
    "load_dataset": ".data",
    "Dataset": ".data",
    "health_report": ".data",
    "HealthReport": ".data",
    "split_dataset": ".data",
    "load_unlabelled": ".data",
}

__all__ = [
    "ARCHITECTURES",
    "build_model",
    "list_architectures",
    "weights_preprocess",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'butterfly_onnx.train' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
