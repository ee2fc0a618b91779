"""Inference backends: ``python`` (onnxruntime + Pillow + NumPy) and ``rust`` (the native
module).  Each is ``class Backend`` in ``_backends/<name>.py`` with the same protocol (see
``docs/inference.md``); this module picks one and holds the decode-ahead pipeline both use
(the contract both resolve is :func:`butterfly_onnx.contract.resolve_contract`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError

__all__ = ["BACKENDS", "MAX_MODEL_BATCH", "RUN_TARGET", "load_backend", "model_batch_for", "pipelined_logits"]

BACKENDS = ("python", "rust")

#: The model batch rule, the same in both backends (the Rust core's ``classifier::pipeline``
#: constants of the same names): a model with a fixed batch size is fed that size; otherwise
#: the smallest power of two ``b`` with ``b * t1 >= RUN_TARGET`` (seconds), ``t1`` one image's
#: run time (the fastest of 3 runs after a warm-up), at most ``MAX_MODEL_BATCH``; measured
#: once per classifier, on first use.  On CPU ONNX Runtime's per-image cost grows with the
#: batch (EfficientNet-Lite0 on the 2-core VM: 5.7 ms/image at batch 1, 7.6 at 32), so a model
#: whose single run already takes 4 ms gets 1, and only tiny models get large batches.
MAX_MODEL_BATCH = 32
RUN_TARGET = 0.004


def model_batch_for(seconds_per_image: float) -> int:
    """The model batch of the rule above for a model whose one-image run takes
    ``seconds_per_image``."""
    size = 1
    while size < MAX_MODEL_BATCH and seconds_per_image * size < RUN_TARGET:
        size *= 2
    return size


def load_backend(name: str) -> type:
    """The ``Backend`` class of backend ``name`` (its module is imported on first use)."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    try:
        module = importlib.import_module(f".{name}", __name__)
    except BackendUnavailableError:
        raise
    except ImportError as exc:
        raise BackendUnavailableError(f"the {name} backend cannot be loaded: {exc}") from exc
    return module.Backend


Errors = dict  # {item index: ImageError}


def pipelined_logits(
    preprocess: Callable[[list], tuple[np.ndarray, Errors]],
    run: Callable[[np.ndarray], np.ndarray],
    items: Sequence[Any],
    batch_size: int,
    model_batch: int,
    num_classes: int,
) -> Iterator[tuple[np.ndarray, Errors]]:
    """Logits of ``items`` chunk by chunk: yields, per consecutive chunk of ``batch_size``
    items, ``(logits of its good items (n_ok, C), {index in items: error})``.

    The next chunk is decoded on a helper thread while the model runs on the current one
    (Pillow, the native module and ONNX Runtime all release the GIL), and the model is fed
    ``model_batch`` rows at a time.  At most two decoded chunks exist at once, so memory is
    bounded by ``batch_size``, not by ``len(items)``.
    """
    n = len(items)
    if n == 0:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="butterfly-decode-ahead") as ahead:
        pending = ahead.submit(preprocess, list(items[0:batch_size]))
        for start in range(0, n, batch_size):
            batch, errors = pending.result()
            following = start + batch_size
            if following < n:
                pending = ahead.submit(preprocess, list(items[following : following + batch_size]))
            parts = [run(batch[i : i + model_batch]) for i in range(0, len(batch), model_batch)]
            del batch
            if not parts:
                out = np.zeros((0, num_classes), dtype=np.float32)
            elif len(parts) == 1:
                out = parts[0]
            else:
                out = np.concatenate(parts)
            yield out, {start + index: error for index, error in errors.items()}
