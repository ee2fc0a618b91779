"""``verify_onnx``: torch eager vs ONNX Runtime on the same real images, preprocessed once by the
project's own preprocessing; beyond the thresholds it raises ExportVerificationError."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .._backends.providers import resolve_providers
from ..contract import ModelContract, PreprocessSpec
from ..errors import ExportError, ExportVerificationError
from .inputs import batches, normalise_samples, preprocess_fn, require_torch
from .reports import VerificationReport
from .session import compare, ort_run, ort_session

__all__ = ["torch_outputs", "verify_onnx"]


def torch_outputs(model: Any, inputs: Iterable[np.ndarray]) -> np.ndarray:
    """``model``'s float32 outputs over the ``inputs`` batches (inference mode), concatenated."""
    torch = require_torch()
    outs = []
    with torch.inference_mode():
        for batch in inputs:
            outs.append(model(torch.from_numpy(batch)).float().numpy())
    return np.concatenate(outs)


def verify_onnx(
    onnx_path: str | os.PathLike[str],
    model: Any,
    images: Any,
    *,
    preprocess: Any = None,
    probabilities: bool | None = None,
    max_abs_diff: float = 1e-4,
    min_top1_agreement: float = 1.0,
    batch_size: int = 16,
    threads: int | None = None,
    enforce: bool = True,
    providers: Any = None,
    device: str | None = None,
) -> VerificationReport:
    """Compare ``model`` (torch, eager, eval mode) with the ONNX file on real images.

    ``images``: image paths, a directory, or (path, class index) pairs (then accuracies are
    reported too).  Both runtimes get the same batch from the project's preprocessing (the
    spec is ``preprocess`` or the file's contract).  ``probabilities``: apply softmax to the
    torch output first (default: when the contract's output kind says so).  With ``enforce``
    a result beyond the thresholds raises ExportVerificationError with the numbers.
    ``providers``/``device``: the execution providers ONNX Runtime runs on, as ``Classifier``
    takes them (default: the CPU provider; a GPU's TF32 or fp16 may need a looser
    ``max_abs_diff``, docs/inference.md "Execution providers").
    """
    torch = require_torch()
    requested = None if providers is None and device is None else resolve_providers(providers, device)
    onnx_path = Path(onnx_path)
    samples = normalise_samples(images, "verify images")
    if not samples:
        raise ExportError("verification needs real images: pass images (paths or (path, class index) pairs)")
    if preprocess is None or probabilities is None:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        contract = ModelContract.from_metadata(meta, source=str(onnx_path))
        spec = PreprocessSpec.coerce(preprocess) if preprocess is not None else contract.preprocess
        if probabilities is None:
            probabilities = contract.output_kind == "probabilities"
    else:
        spec = PreprocessSpec.coerce(preprocess)
    # eval() on the wrapper too: the TorchScript exporter restores the wrapper's own mode
    # afterwards, and a fresh Sequential is in training mode (it would put the model there)
    was_training = model.training
    module = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval() if probabilities else model
    model.eval()
    try:
        preprocess_batch = preprocess_fn(spec)
        session = ort_session(onnx_path, threads, requested)
        torch_out, onnx_out = [], []
        for chunk in batches(samples, batch_size):
            batch = preprocess_batch([p for p, _ in chunk])
            torch_out.append(torch_outputs(module, [batch]))
            onnx_out.append(ort_run(session, [batch]))
    finally:
        model.train(was_training)
    result = compare(np.concatenate(torch_out), np.concatenate(onnx_out), samples)
    passed = result.max_abs_diff <= max_abs_diff and result.top1_agreement >= min_top1_agreement
    report = VerificationReport(
        num_images=len(samples),
        max_abs_diff=result.max_abs_diff,
        mean_abs_diff=result.mean_abs_diff,
        top1_agreement=result.top1_agreement,
        max_abs_diff_threshold=max_abs_diff,
        min_top1_agreement=min_top1_agreement,
        passed=passed,
        torch_accuracy=result.reference_accuracy,
        onnx_accuracy=result.candidate_accuracy,
        disagreements=result.disagreements,
    )
    if enforce and not passed:
        error = ExportVerificationError(
            f"{onnx_path}: ONNX Runtime disagrees with PyTorch: {report.summary()}"
            + (
                f"; first disagreements (image, torch, onnx): {report.disagreements[:3]}"
                if report.disagreements
                else ""
            )
        )
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report
