"""Inference backends: ``python`` (onnxruntime + Pillow + NumPy) and ``rust`` (the native
module).  Each is ``class Backend`` in ``_backends/<name>.py``, both satisfying the
:class:`Backend` protocol here (docs/inference.md); this module picks one and holds what both
share: the thread count (:func:`resolve_threads`), the thread and model-batch rules, and the
decode-ahead pipeline (the contract both resolve is
:func:`butterfly_onnx.contract.resolve_contract`; the providers rule is in ``providers.py``)."""

from __future__ import annotations

import importlib
import json
import math
import numbers
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import BackendUnavailableError, ContractError, InvalidArgumentError

if TYPE_CHECKING:
    from ..contract import ModelContract, PreprocessSpec
    from ..errors import ImageError
    from .providers import Provider

__all__ = [
    "BACKENDS",
    "Backend",
    "MAX_CONCURRENT_RUNS",
    "MAX_MODEL_BATCH",
    "RUN_TARGET",
    "SESSION_MEMORY_BUDGET",
    "THREAD_RULE_FILE",
    "available_cpus",
    "check_fallback_arguments",
    "check_fallback_margin",
    "check_same_question",
    "fallback_margin_for",
    "load_backend",
    "model_batch_for",
    "near_ties",
    "pipelined_logits",
    "resolve_threads",
    "thread_split",
]

BACKENDS = ("python", "rust")

#: (source, payload) items, as :func:`butterfly_onnx.images.expand_images` makes them.
Items = Sequence[tuple[str, Any]]
Errors = dict  # {item index: ImageError}


class Backend(Protocol):
    """What :class:`butterfly_onnx.Classifier` needs of a backend; ``_backends/python.py``
    and ``_backends/rust.py`` both satisfy it (mypy checks each against it)."""

    name: str
    #: The threads the backend really uses (:func:`resolve_threads`).
    threads: int
    #: The execution providers the sessions use, in priority order, ONNX Runtime's CPU
    #: provider last (``providers.py``).
    providers: tuple[str, ...]
    model_path: Path | None
    contract: ModelContract

    def __init__(
        self,
        model: Path | bytes,
        *,
        threads: int | None,
        labels: Sequence[str] | None,
        preprocess: PreprocessSpec | None,
        max_image_pixels: int | None,
        jpeg_draft: bool = ...,
        providers: Sequence[Provider] = ...,
        fallback: Backend | None = ...,
        fallback_margin: float | None = ...,
    ) -> None: ...

    @property
    def jpeg_draft(self) -> bool: ...

    @property
    def fallback_margin(self) -> float | None:
        """The margin below which ``fallback`` answers an image (None: no fallback)."""

    @property
    def fallbacks(self) -> int:
        """Images ``fallback`` has answered so far."""

    @property
    def model_batch(self) -> int: ...

    def preprocess(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]: ...

    def run(self, batch: np.ndarray) -> np.ndarray: ...

    def logits(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]: ...

    def iter_logits(self, items: Items, batch_size: int) -> Iterator[tuple[np.ndarray, dict[int, ImageError]]]: ...


def _cgroup_cpu_limit() -> int | None:
    """The CPU quota of this process's cgroup (v2 ``cpu.max``, the tightest along its path; v1
    ``cpu.cfs_quota_us``), in whole CPUs (at least 1), as Rust's
    ``std::thread::available_parallelism`` counts it; None without a quota."""
    limits = []
    try:
        lines = Path("/proc/self/cgroup").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: walk up from the process's group to the root
            group = Path("/sys/fs/cgroup" + path)
            for folder in [group, *group.parents]:
                if not str(folder).startswith("/sys/fs/cgroup"):
                    break
                try:
                    quota, period = (folder / "cpu.max").read_text(encoding="utf-8").split()[:2]
                except (OSError, ValueError):
                    continue
                if quota != "max" and int(period) > 0:
                    limits.append(max(1, int(quota) // int(period)))
        elif "cpu" in controllers.split(","):  # v1
            base = Path("/sys/fs/cgroup/cpu,cpuacct")
            base = base if base.exists() else Path("/sys/fs/cgroup/cpu")
            try:
                quota_us = int((base / "cpu.cfs_quota_us").read_text(encoding="utf-8"))
                period_us = int((base / "cpu.cfs_period_us").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if quota_us > 0 and period_us > 0:
                limits.append(max(1, quota_us // period_us))
    return min(limits) if limits else None


def available_cpus() -> int:
    """The CPUs this process may use: its CPU affinity, bounded by its cgroup's quota (what
    the Rust core's ``std::thread::available_parallelism`` reports), not ``os.cpu_count()``."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows: no affinity call
        count = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(count, limit) if limit else count)


def resolve_threads(threads: Any) -> int:
    """The one check of a ``threads`` argument (both backends call it): a positive int, or
    None for :func:`available_cpus`."""
    if threads is None:
        return available_cpus()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InvalidArgumentError(f"threads must be a positive int or None, got {threads!r}")
    return threads


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


def load_backend(name: str) -> type[Backend]:
    """The ``Backend`` class of backend ``name`` (its module is imported on first use)."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    try:
        module = importlib.import_module(f".{name}", __name__)
    except BackendUnavailableError:
        raise
    except ImportError as exc:
        raise BackendUnavailableError(f"the {name} backend cannot be loaded: {exc}") from exc
    backend: type[Backend] = module.Backend
    return backend


def near_ties(out: np.ndarray, margin: float) -> np.ndarray:
    """Indices of the rows of ``out`` whose best two scores are less than ``margin`` apart: the
    answers a model whose error moves two classes by up to ``margin`` could have swapped
    (``Classifier(..., fallback_model=)`` runs them again; the export report counts them).  A
    row that is not all finite is never picked: it is an error.  The Rust core's
    ``classifier::near_ties`` is the same rule."""
    if out.shape[1] < 2:
        return np.zeros(0, dtype=np.intp)
    finite = np.flatnonzero(np.isfinite(out).all(axis=1))
    top2 = np.partition(out[finite], -2, axis=1)[:, -2:]
    return finite[top2[:, 1] - top2[:, 0] < margin]


def check_fallback_margin(margin: Any, source: str) -> float:
    """``margin`` as a float, when it is a finite number >= 0 (NumPy scalars too)."""
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not math.isfinite(margin) or margin < 0:
        raise InvalidArgumentError(f"{source}: fallback_margin must be a finite number >= 0, got {margin!r}")
    return float(margin)


def check_fallback_arguments(fallback_model: Any, fallback_margin: Any, source: str) -> float | None:
    """``Classifier``'s and ``serve``'s ``fallback_margin``, checked before anything loads
    (None: the model's recorded one, or no fallback)."""
    if fallback_margin is None:
        return None
    if fallback_model is None:
        raise InvalidArgumentError("fallback_margin needs fallback_model (the model that answers near-ties)")
    return check_fallback_margin(fallback_margin, source)


def fallback_margin_for(contract: ModelContract, margin: float | None, source: str) -> float:
    """``margin``, else the ``fallback_margin`` ``contract`` records, checked (as the Rust core's
    ``Classifier::with_fallback`` does)."""
    if margin is None:
        margin = contract.provenance.get("fallback_margin")
        if margin is None:
            raise InvalidArgumentError(
                f"{source}: records no fallback_margin (an int8 variant written by export_onnx does): give one"
            )
    return check_fallback_margin(margin, source)


def check_same_question(model: ModelContract, fallback: ModelContract, source: str, fallback_source: str) -> None:
    """A fallback model must map the same preprocessed rows to the same classes the same way."""
    for what, ours, theirs in (
        ("labels", model.labels, fallback.labels),
        ("preprocessing", model.preprocess, fallback.preprocess),
        ("output kind", model.output_kind, fallback.output_kind),
    ):
        if ours != theirs:
            raise ContractError(
                f"{fallback_source}: its {what} differ from {source}'s, so it cannot answer that model's near-ties"
            )


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
