"""Inference backends: ``python`` (onnxruntime + Pillow + NumPy) and ``rust`` (the native
module).  Each is ``class Backend`` in ``_backends/<name>.py`` with the same protocol (see
``docs/inference.md``); this module picks one and holds the decode-ahead pipeline both use
(the contract both resolve is :func:`butterfly_onnx.contract.resolve_contract`)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailableError

__all__ = [
    "BACKENDS",
    "MAX_CONCURRENT_RUNS",
    "MAX_MODEL_BATCH",
    "RUN_TARGET",
    "SESSION_MEMORY_BUDGET",
    "THREAD_RULE_FILE",
    "load_backend",
    "model_batch_for",
    "pipelined_logits",
    "thread_split",
]

BACKENDS = ("python", "rust")

#: The constants of the two rules below are data, read by both backends (the Rust core
#: includes the same file): ``data/thread_rule.json``.
THREAD_RULE_FILE = Path(__file__).parent.parent / "data" / "thread_rule.json"
_RULE = json.loads(THREAD_RULE_FILE.read_text(encoding="utf-8"))

#: The model batch rule, the same in both backends (the Rust core's ``classifier::pipeline``
#: statics of the same names, read from the same file): a model with a fixed batch size is
#: fed that size; otherwise the smallest power of two ``b`` with ``b * t1 >= RUN_TARGET``
#: (seconds), ``t1`` one image's run time (the fastest of 3 runs after a warm-up), at most
#: ``MAX_MODEL_BATCH``; measured once per classifier, on first use.  On CPU ONNX Runtime's
#: per-image cost grows with the batch (EfficientNet-Lite0 on the 2-core VM: 5.7 ms/image at
#: batch 1, 7.6 at 32), so a model whose single run already takes 4 ms gets 1, and only tiny
#: models get large batches.
MAX_MODEL_BATCH: int = int(_RULE["max_model_batch"])
RUN_TARGET: float = float(_RULE["run_target_seconds"])


def model_batch_for(seconds_per_image: float) -> int:
    """The model batch of the rule above for a model whose one-image run takes
    ``seconds_per_image``."""
    size = 1
    while size < MAX_MODEL_BATCH and seconds_per_image * size < RUN_TARGET:
        size *= 2
    return size


#: The thread rule, the same in both backends (the Rust core's ``classifier::pipeline::
#: thread_split``; docs/inference.md, "Threads"): ``threads=N`` is what a classifier may use
#: in all.  Decoding and preprocessing get a pool of ``N`` threads; inference gets
#: ``runs = min(N, MAX_CONCURRENT_RUNS, SESSION_MEMORY_BUDGET // model file bytes)`` (at least
#: 1) ONNX Runtime runs at once, with ``max(1, N // runs)`` intra-op threads each (``N=2``: two
#: concurrent one-thread runs).  On a small model one run scales poorly over intra-op
#: threads, two independent runs nearly double the throughput when the cores are free.  The
#: budget bounds the model copies of the Rust core (one session per run); the python backend
#: shares one session between runs of one intra-op thread.
MAX_CONCURRENT_RUNS: int = int(_RULE["max_concurrent_runs"])
SESSION_MEMORY_BUDGET: int = int(_RULE["session_memory_budget_mib"]) << 20


def thread_split(threads: int, model_bytes: int) -> tuple[int, int]:
    """``(concurrent ONNX Runtime runs, intra-op threads per run)`` for ``threads`` and a model
    file of ``model_bytes`` (the rule above; 0 threads count as 1)."""
    runs = max(1, min(max(threads, 1), MAX_CONCURRENT_RUNS, SESSION_MEMORY_BUDGET // max(model_bytes, 1)))
    return runs, max(1, threads // runs)


def piece_rows(rows: int, size: int, runs: int) -> int:
    """Rows per ONNX Runtime run when ``rows`` rows are fed ``size`` at a time over ``runs``
    concurrent runs: ``size``, but at most ``ceil(rows / runs)`` so every run gets work (the
    Rust core's ``Model::run`` does the same)."""
    return max(1, min(size, -(-rows // runs)))


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
    run_pieces: Callable[[np.ndarray, int], np.ndarray],
    items: Sequence[Any],
    batch_size: int,
    model_batch: int,
) -> Iterator[tuple[np.ndarray, Errors]]:
    """Logits of ``items`` chunk by chunk: yields, per consecutive chunk of ``batch_size``
    items, ``(logits of its good items (n_ok, C), {index in items: error})``.

    The next chunk is decoded on a helper thread while the model runs on the current one
    (Pillow, the native module and ONNX Runtime all release the GIL), and
    ``run_pieces(batch, model_batch)`` feeds the model ``model_batch`` rows per run, the
    pieces spread over the concurrent runs of :func:`thread_split`.  At most two decoded
    chunks exist at once, so memory is bounded by ``batch_size``, not by ``len(items)``.
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
            out = run_pieces(batch, model_batch)
            del batch
            yield out, {start + index: error for index, error in errors.items()}
