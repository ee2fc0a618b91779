"""ONNX Runtime for export's checks (the CPU provider unless others are asked for): a session, batched runs, and the comparison of two
models' outputs on the same images (verification and variants both use it)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._backends.providers import Provider, check_available, check_in_use
from .inputs import Sample

__all__ = ["Comparison", "compare", "ort_run", "ort_session"]


def ort_session(
    path: Path | bytes, threads: int | None = None, providers: Sequence[Provider] | None = None, **options: Any
) -> Any:
    """An ``onnxruntime.InferenceSession`` on ``providers`` (resolved ones, as
    ``_backends.providers.resolve_providers`` gives them; None: the CPU provider), refused as
    the Classifier refuses a missing or dropped provider (``options``: SessionOptions fields)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only: fp16/int8 graphs log benign warnings
    for key, value in options.items():
        setattr(so, key, value)
    model = str(path) if isinstance(path, Path) else path
    if providers is None:
        return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
    check_available(providers, ort.get_available_providers())
    session = ort.InferenceSession(model, sess_options=so, providers=list(providers), enable_fallback=0)
    session.disable_fallback()
    check_in_use(providers, session.get_providers())
    return session


def ort_run(session: Any, inputs: Iterable[np.ndarray]) -> np.ndarray:
    """The first output over all ``inputs`` batches, concatenated (fixed-batch models get slices)."""
    (inp,) = session.get_inputs()
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None  # dynamic_batch=False models
    outs = []
    for batch in inputs:
        for part in [batch] if fixed is None else [batch[i : i + fixed] for i in range(0, len(batch), fixed)]:
            outs.append(session.run(None, {inp.name: part})[0])
    return np.concatenate(outs).astype(np.float32, copy=False)


@dataclass(frozen=True)
class Comparison:
    """A candidate model's outputs against a reference's on the same images."""

    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    #: (image, reference class, candidate class) of the first 20 images whose top-1 differs
    disagreements: list[tuple[str, int, int]] = field(default_factory=list)
    #: accuracies when every image's class index is known, else None
    reference_accuracy: float | None = None
    candidate_accuracy: float | None = None


def compare(reference: np.ndarray, candidate: np.ndarray, samples: Sequence[Sample]) -> Comparison:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    ref_top1 = reference.argmax(axis=1)
    cand_top1 = candidate.argmax(axis=1)
    agree = ref_top1 == cand_top1
    reference_accuracy = candidate_accuracy = None
    targets = [t for _, t in samples]
    if targets and all(t is not None for t in targets):
        targets_arr = np.asarray(targets)
        reference_accuracy = float((ref_top1 == targets_arr).mean())
        candidate_accuracy = float((cand_top1 == targets_arr).mean())
    return Comparison(
        max_abs_diff=float(diff.max()) if diff.size else 0.0,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        top1_agreement=float(agree.mean()) if agree.size else 1.0,
        disagreements=[(str(samples[i][0]), int(ref_top1[i]), int(cand_top1[i])) for i in np.flatnonzero(~agree)[:20]],
        reference_accuracy=reference_accuracy,
        candidate_accuracy=candidate_accuracy,
    )
