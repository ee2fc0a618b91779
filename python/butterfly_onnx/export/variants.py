"""Optional export variants of an fp32 ONNX classifier, and how they compare with it.

- ``optimized``: the graph ONNX Runtime builds at ORT_ENABLE_EXTENDED, saved with
  ``SessionOptions.optimized_model_filepath``.  EXTENDED (not ALL) because ALL adds layout
  transforms (NCHWc) tied to the CPU's instruction set, which ORT warns make the file
  non-portable; EXTENDED fusions run on any ONNX Runtime CPU build, which is what both
  butterfly_onnx backends use.
- ``fp16``: weights and activations in float16 (``onnxruntime.transformers.float16``) with
  ``keep_io_types=True``, so the input stays float32 as the contract says.  On CPUs without
  fp16 arithmetic ONNX Runtime inserts casts; it mainly halves the file.
- ``int8``: static quantization (``quantize_static``), QDQ format, per-channel weights,
  calibrated on training images through the project's own preprocessing.

Used by :func:`butterfly_onnx.export.export_onnx`; every variant file gets the contract too.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..contract import PreprocessSpec
from ..errors import BackendUnavailableError, ExportError
from .inputs import Sample, batches, preprocess_fn
from .reports import VariantReport
from .session import compare, ort_run, ort_session

__all__ = ["INT8_METHODS", "VARIANTS", "build_variant", "measure_variants"]

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
) -> str:
    """Write variant ``name`` of ``fp32_path`` to ``out_path``; returns a note for provenance."""
    if name == "optimized":
        return _optimized(fp32_path, out_path)
    if name == "fp16":
        return _fp16(fp32_path, out_path)
    if name == "int8":
        if not calibration:
            raise ExportError("the int8 variant needs calibration images")
        return _int8(fp32_path, out_path, spec, calibration, batch_size, int8_method)
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


class _CalibrationReader:
    """onnxruntime.quantization.CalibrationDataReader over preprocessed image batches."""

    def __init__(self, input_name: str, paths: Sequence[Path], spec: PreprocessSpec, batch_size: int):
        self._input_name = input_name
        self._preprocess = preprocess_fn(spec)
        self._all_chunks = list(batches(list(paths), batch_size))
        self._chunks = iter(self._all_chunks)

    def get_next(self) -> dict[str, np.ndarray] | None:
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        return {self._input_name: self._preprocess(chunk)}

    def rewind(self) -> None:
        """Start over (calibrators that read the data more than once call this)."""
        self._chunks = iter(self._all_chunks)


#: int8 calibration methods (onnxruntime.quantization.CalibrationMethod): MinMax is fast; Percentile
#: and Entropy build histograms (about 3x slower) and can clip outliers better.
INT8_METHODS = ("minmax", "percentile", "entropy")


def _int8(
    fp32_path: Path,
    out_path: Path,
    spec: PreprocessSpec,
    calibration: Sequence[Path],
    batch_size: int,
    method: str = "minmax",
) -> str:
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    graph_input = onnx.load(str(fp32_path), load_external_data=False).graph.input[0]
    input_name = graph_input.name
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    if method not in methods:
        raise ExportError(f"int8_method must be one of {INT8_METHODS}, got {method!r}")
    fixed_batch = graph_input.type.tensor_type.shape.dim[0].dim_value
    if fixed_batch > 0:  # a dynamic_batch=False model takes batches of exactly that size
        batch_size = fixed_batch

    class Reader(_CalibrationReader, CalibrationDataReader):
        pass

    with tempfile.TemporaryDirectory(prefix="butterfly_int8_") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # ORT's recommended pre-processing: symbolic shape inference + graph optimisation,
        # so that quantization sees fused Conv+BN and known shapes.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_static(
                str(prepared),
                str(out_path),
                Reader(input_name, calibration, spec, batch_size),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[method],
            )
    return (
        f"static int8 (QDQ, per-channel QInt8 weights, QUInt8 activations, {method}) calibrated on "
        f"{len(calibration)} images"
    )


def measure_variants(
    fp32_path: Path,
    built: Sequence[tuple[str, Path, Path, str]],
    samples: Sequence[Sample],
    *,
    spec: PreprocessSpec,
    batch_size: int = 16,
    threads: int | None = None,
    rounds: int = 7,
) -> list[VariantReport]:
    """Accuracy against fp32 on ``samples`` and median CPU latency per batch for each variant.

    ``built``: (name, file to measure, final path to report, note).  Latency is measured in
    interleaved rounds (fp32, then each variant, repeated) so that load on a shared machine
    affects all models alike.
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

    reports: list[VariantReport] = []
    for name, vpath, final_path, notes in built:
        out = ort_run(sessions[name], inputs)
        cmp = compare(fp32_out, out, samples)
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
                notes=notes,
            )
        )
    return reports
