"""Optional export variants of an fp32 ONNX classifier, and how they compare with it.

- ``optimized``: the graph ONNX Runtime builds at ORT_ENABLE_EXTENDED, saved with
  ``SessionOptions.optimized_model_filepath``.  EXTENDED (not ALL) because ALL adds layout
  transforms (NCHWc) tied to the CPU's instruction set, which ORT warns make the file
  non-portable; EXTENDED fusions run on any ONNX Runtime CPU build, which is what both
  butterfly_onnx backends use.
- ``fp16``: weights and activations in float16 (``onnxruntime.transformers.float16``) with
  ``keep_io_types=True``, so the input stays float32 as the contract says.  On CPUs without
  fp16 arithmetic ONNX Runtime inserts casts; it mainly halves the file.
- ``int8``: static quantization (``quantize_static``), QDQ format, per-channel weights (each
  Conv's bias corrected for their rounding), calibrated on training images through the project's
  own preprocessing; the recipe and the search for nodes to keep in float are in
  :mod:`.calibration`.

Used by :func:`butterfly_onnx.export.export_onnx`; every variant file gets the contract too.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._backends import near_ties
from ..contract import PreprocessSpec
from ..errors import BackendUnavailableError, ExportError
from .calibration import DEFAULT_INT8_FORMAT, INT8_FORMATS, INT8_METHODS, Int8Recipe, preprocessed_batches, search_int8
from .inputs import Sample, batches, preprocess_fn
from .reports import NearTieFallback, SpeedRow, VariantReport, wilson_interval
from .session import compare, ort_run, ort_session

__all__ = [
    "INT8_FORMATS",
    "INT8_METHODS",
    "RUNTIME_PRECISIONS",
    "VARIANTS",
    "answered_near_ties",
    "build_variant",
    "measure_runtime_precision",
    "measure_speed",
    "measure_variants",
    "openvino_session",
    "require_openvino",
]

#: The optional variants export_onnx can produce next to the fp32 model.
VARIANTS = ("optimized", "fp16", "int8")


def build_variant(
    name: str,
    fp32_path: Path,
    out_path: Path,
    *,
    spec: PreprocessSpec,
    calibration: Sequence[Path] | None = None,
    batch_size: int = 16,
    int8_method: str = "minmax",
    int8_format: str = DEFAULT_INT8_FORMAT,
    min_agreement: float = 0.0,
) -> dict[str, Any]:
    """Write variant ``name`` of ``fp32_path`` to ``out_path``; returns its provenance entries:
    ``variant_notes`` (how it was made) and, for int8, ``fallback_margin`` (its largest error
    spread on the calibration images, the margin ``Classifier(fallback_model=)`` defaults to).

    int8: ``min_agreement`` > 0 keeps the most sensitive nodes in float until the variant agrees
    with fp32 on that share of the calibration images (:func:`.calibration.search_int8`)."""
    if name == "optimized":
        return {"variant_notes": _optimized(fp32_path, out_path)}
    if name == "fp16":
        return {"variant_notes": _fp16(fp32_path, out_path)}
    if name == "int8":
        if not calibration:
            raise ExportError("the int8 variant needs calibration images")
        recipe = Int8Recipe(format=int8_format, method=int8_method)
        return _int8(fp32_path, out_path, spec, calibration, batch_size, recipe, min_agreement)
    raise ExportError(f"unknown variant {name!r}")


def _optimized(fp32_path: Path, out_path: Path) -> str:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out_path)
    so.log_severity_level = 3
    ort.InferenceSession(str(fp32_path), sess_options=so, providers=["CPUExecutionProvider"])
    if not out_path.is_file():
        raise ExportError(f"ONNX Runtime did not write the optimized model to {out_path}")
    return "ONNX Runtime ORT_ENABLE_EXTENDED graph (CPU execution provider; may use com.microsoft ops)"


def _fp16(fp32_path: Path, out_path: Path) -> str:
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:  # pragma: no cover - part of the onnxruntime wheel
        raise BackendUnavailableError("the fp16 variant needs onnxruntime.transformers") from exc
    model = onnx.load(str(fp32_path))
    with warnings.catch_warnings():
        # it warns for every weight outside fp16 range that it clamps; the report measures the effect
        warnings.simplefilter("ignore")
        converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(out_path))
    return "float16 weights and activations, float32 input/output (keep_io_types)"


def _int8(
    fp32_path: Path,
    out_path: Path,
    spec: PreprocessSpec,
    calibration: Sequence[Path],
    batch_size: int,
    recipe: Int8Recipe,
    target: float,
) -> dict[str, Any]:
    import onnx

    recipe.check()
    graph_input = onnx.load(str(fp32_path), load_external_data=False).graph.input[0]
    fixed_batch = graph_input.type.tensor_type.shape.dim[0].dim_value
    if fixed_batch > 0:  # a dynamic_batch=False model takes batches of exactly that size
        batch_size = fixed_batch
    inputs = preprocessed_batches(calibration, spec, batch_size)
    search = search_int8(fp32_path, out_path, recipe, inputs, target=target)
    notes = search.recipe.describe(len(calibration)) + f"; top-1 agreement on them {search.agreement:.2%}"
    return {"variant_notes": notes, "fallback_margin": search.error_spread}


#: the backends and thread counts every variant's speed is measured on (None: all cores)
SPEED_BACKENDS = ("python", "rust")
SPEED_THREADS = (1, None)


def measure_speed(
    models: Mapping[str, Path],
    images: Sequence[Path],
    *,
    batch_size: int,
    rounds: int,
    backends: Sequence[str] = SPEED_BACKENDS,
    thread_counts: Sequence[int | None] = SPEED_THREADS,
) -> dict[tuple[str, int], dict[str, float]]:
    """Best ms/image end to end (``Classifier.logits`` on ``images``: decode, preprocess, model)
    of each model, per (backend, threads), the models interleaved in every round so that a busy
    machine slows them alike.  A backend that cannot load here (no rust extension) is left out."""
    from ..classifier import Classifier

    cores = os.cpu_count() or 1
    result: dict[tuple[str, int], dict[str, float]] = {}
    for backend in backends:
        for threads in dict.fromkeys(t or cores for t in thread_counts):
            try:
                clfs = {name: Classifier(path, backend=backend, threads=threads) for name, path in models.items()}
            except BackendUnavailableError:
                break
            best = dict.fromkeys(clfs, math.inf)
            for clf in clfs.values():  # warm-up
                clf.logits(images[:1])
            for _ in range(max(rounds, 1)):
                for name, clf in clfs.items():
                    start = time.perf_counter()
                    clf.logits(images, batch_size=batch_size)
                    best[name] = min(best[name], (time.perf_counter() - start) * 1e3 / len(images))
            result[(backend, threads)] = best
    return result


def measure_variants(
    fp32_path: Path,
    built: Sequence[tuple[str, Path, Path, Mapping[str, Any]]],
    samples: Sequence[Sample],
    *,
    spec: PreprocessSpec,
    batch_size: int = 16,
    threads: int | None = None,
    rounds: int = 7,
) -> list[VariantReport]:
    """Each variant against fp32 on all of ``samples``: top-1 agreement with its 95 % Wilson
    interval, fp32's top-1 inside the variant's top-5, max logit difference, accuracies; and speed:
    the median ONNX Runtime latency of one batch (``threads``) and ms/image end to end on each
    backend at one thread and all cores (:func:`measure_speed`).

    A variant whose provenance entries give a ``fallback_margin`` (int8) also reports its answers
    with fp32's on the images it would run twice (:class:`.reports.NearTieFallback`).

    ``built``: (name, file to measure, final path to report, its provenance entries).  Latency
    is measured in interleaved rounds (fp32, then each variant, repeated) so that load on a
    shared machine affects all models alike.
    """
    preprocess = preprocess_fn(spec)
    inputs = [preprocess([p for p, _ in chunk]) for chunk in batches(list(samples), batch_size)]
    fp32_session = ort_session(fp32_path, threads)
    fp32_out = ort_run(fp32_session, inputs)
    sessions = {"fp32": fp32_session}
    for name, vpath, _, _ in built:
        sessions[name] = ort_session(vpath, threads)

    timing_batch = inputs[0]
    if len(timing_batch) < batch_size:  # time a full batch even with few images
        reps = -(-batch_size // len(timing_batch))
        timing_batch = np.ascontiguousarray(np.concatenate([timing_batch] * reps)[:batch_size])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for session in sessions.values():  # warm-up
        ort_run(session, [timing_batch])
    for _ in range(rounds):
        for name, session in sessions.items():
            start = time.perf_counter()
            ort_run(session, [timing_batch])
            times[name].append((time.perf_counter() - start) * 1e3)
    fp32_ms = statistics.median(times["fp32"])
    paths = [p for p, _ in samples]
    speed_images = (paths * -(-batch_size // len(paths)))[:batch_size]
    speed = measure_speed(
        {"fp32": fp32_path, **{name: vpath for name, vpath, _, _ in built}},
        speed_images,
        batch_size=batch_size,
        rounds=rounds,
    )

    reports: list[VariantReport] = []
    for name, vpath, final_path, entries in built:
        out = ort_run(sessions[name], inputs)
        cmp = compare(fp32_out, out, samples)
        fp32_top1 = fp32_out.argmax(axis=1)
        agreed = int((out.argmax(axis=1) == fp32_top1).sum())
        top5 = np.argsort(-out, axis=1)[:, :5]
        margin = entries.get("fallback_margin")
        reports.append(
            VariantReport(
                name=name,
                path=str(final_path),
                size_bytes=vpath.stat().st_size,
                num_images=len(samples),
                top1_agreement=cmp.top1_agreement,
                max_abs_diff=cmp.max_abs_diff,
                accuracy=cmp.candidate_accuracy,
                fp32_accuracy=cmp.reference_accuracy,
                batch_size=len(timing_batch),
                ms_per_batch=statistics.median(times[name]),
                fp32_ms_per_batch=fp32_ms,
                threads=threads,
                notes=entries["variant_notes"],
                agreement_interval=wilson_interval(agreed, len(samples)),
                fp32_top1_in_top5=float((top5 == fp32_top1[:, None]).any(axis=1).mean()),
                speed=[
                    SpeedRow(backend, n_threads, ms[name], ms["fp32"]) for (backend, n_threads), ms in speed.items()
                ],
                fallback=None if margin is None else _near_tie_fallback(fp32_out, out, margin),
            )
        )
    return reports


def answered_near_ties(fp32_out: np.ndarray, out: np.ndarray, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """``out`` answered as ``Classifier(fallback_model=)`` answers it (fp32's rows on its
    :func:`near_ties`), and those rows."""
    rows = near_ties(out, margin)
    answered = out.copy()
    answered[rows] = fp32_out[rows]
    return answered, rows


def _near_tie_fallback(fp32_out: np.ndarray, out: np.ndarray, margin: float) -> NearTieFallback:
    answered, rows = answered_near_ties(fp32_out, out, margin)
    agreed = int((answered.argmax(axis=1) == fp32_out.argmax(axis=1)).sum())
    n = len(out)
    return NearTieFallback(margin, len(rows) / n, agreed / n, wilson_interval(agreed, n))


# --------------------------------------------------------------------------- runtime precisions
#: precisions a runtime applies to the fp32 file itself (no file written): ``bf16`` is OpenVINO's
#: CPU plugin with INFERENCE_PRECISION_HINT=bf16 (native on CPUs with AVX512-BF16 or AMX).
RUNTIME_PRECISIONS = ("bf16",)
_OPENVINO = "OpenVINOExecutionProvider"


def require_openvino() -> None:
    """BackendUnavailableError unless ONNX Runtime here has the OpenVINO execution provider."""
    import onnxruntime as ort

    if _OPENVINO not in ort.get_available_providers():
        raise BackendUnavailableError(
            "the bf16 precision needs ONNX Runtime's OpenVINO execution provider: pip install "
            "onnxruntime-openvino (in an environment of its own: it replaces the onnxruntime package)"
        )


def openvino_session(path: Path, threads: int, precision: str) -> Any:
    """An ONNX Runtime session on OpenVINO's CPU plugin at ``precision`` ("bf16", "f32")."""
    import onnxruntime as ort

    require_openvino()
    so = ort.SessionOptions()
    so.log_severity_level = 3
    config = {"CPU": {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": str(threads)}}
    options = {"device_type": "CPU", "load_config": json.dumps(config)}
    return ort.InferenceSession(str(path), sess_options=so, providers=[(_OPENVINO, options)])


def measure_runtime_precision(
    fp32_path: Path,
    final_path: Path,
    samples: Sequence[Sample],
    *,
    spec: PreprocessSpec,
    precision: str = "bf16",
    batch_size: int = 16,
    rounds: int = 7,
) -> VariantReport:
    """``precision`` run by its runtime on the fp32 file against ONNX Runtime's CPU provider in
    fp32, with the figures of :func:`measure_variants`; speed is the model alone on one ready batch
    (OpenVINO is not one of the backends), at one thread and all cores, best of interleaved
    rounds.  Not bit-exact by design: bf16 keeps 8 bits of mantissa."""
    if precision not in RUNTIME_PRECISIONS:
        raise ExportError(f"unknown runtime precision {precision!r}; choose from {RUNTIME_PRECISIONS}")
    preprocess = preprocess_fn(spec)
    inputs = [preprocess([p for p, _ in chunk]) for chunk in batches(list(samples), batch_size)]
    cores = os.cpu_count() or 1
    speed: list[SpeedRow] = []
    out = fp32_out = np.empty(0)
    for threads in dict.fromkeys((1, cores)):
        sessions = {"fp32": ort_session(fp32_path, threads), precision: openvino_session(fp32_path, threads, precision)}
        if threads == 1:
            fp32_out, out = ort_run(sessions["fp32"], inputs), ort_run(sessions[precision], inputs)
        best = dict.fromkeys(sessions, math.inf)
        for session in sessions.values():  # warm-up
            ort_run(session, inputs[:1])
        for _ in range(max(rounds, 1)):
            for name, session in sessions.items():
                start = time.perf_counter()
                ort_run(session, inputs[:1])
                best[name] = min(best[name], (time.perf_counter() - start) * 1e3 / len(inputs[0]))
        speed.append(SpeedRow("openvino", threads, best[precision], best["fp32"]))
    cmp = compare(fp32_out, out, samples)
    fp32_top1 = fp32_out.argmax(axis=1)
    agreed = int((out.argmax(axis=1) == fp32_top1).sum())
    top5 = np.argsort(-out, axis=1)[:, :5]
    return VariantReport(
        name=precision,
        path=str(final_path),
        size_bytes=fp32_path.stat().st_size,
        num_images=len(samples),
        top1_agreement=cmp.top1_agreement,
        max_abs_diff=cmp.max_abs_diff,
        accuracy=cmp.candidate_accuracy,
        fp32_accuracy=cmp.reference_accuracy,
        batch_size=len(inputs[0]),
        ms_per_batch=speed[0].ms_per_image * len(inputs[0]),
        fp32_ms_per_batch=speed[0].fp32_ms_per_image * len(inputs[0]),
        threads=1,
        notes=f"the fp32 file run by OpenVINO's CPU plugin with INFERENCE_PRECISION_HINT={precision} (not bit-exact)",
        agreement_interval=wilson_interval(agreed, len(samples)),
        fp32_top1_in_top5=float((top5 == fp32_top1[:, None]).any(axis=1).mean()),
        speed=speed,
    )
