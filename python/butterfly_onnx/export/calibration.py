"""The int8 recipe: which images calibrate it (a seeded draw from the training split in which every
class is represented), how it is quantized (QDQ, S8S8 or U8S8, per-channel weights, MinMax /
Percentile / Entropy ranges, each Conv's bias corrected for its weights' rounding), and which
nodes stay in float (the most sensitive ones by ONNX Runtime's ``qdq_loss_debug`` per-tensor
error, added until the quantized model agrees with fp32 on the calibration images).  docs/export.md has the measurements behind the defaults.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import tempfile
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import PreprocessSpec
from ..errors import BackendUnavailableError, ExportError
from .inputs import Sample, batches, preprocess_fn
from .session import ort_run, ort_session

__all__ = [
    "DEFAULT_CALIBRATION_SIZE",
    "DEFAULT_INT8_FORMAT",
    "INT8_FORMATS",
    "INT8_METHODS",
    "Int8Recipe",
    "Int8Search",
    "apply_bias_shifts",
    "bias_shifts",
    "calibration_draw",
    "correct_biases",
    "error_spread",
    "float_units",
    "node_sensitivity",
    "preprocessed_batches",
    "prepare_for_quantization",
    "quantize_int8",
    "search_int8",
]

#: int8 activation/weight types: ``s8s8`` = signed activations and weights (ONNX Runtime's first
#: choice for QDQ on x86), ``u8s8`` = unsigned activations, signed weights.
INT8_FORMATS = ("s8s8", "u8s8")
#: the default: as accurate as s8s8 and faster here (docs/export.md, "int8 recipes")
DEFAULT_INT8_FORMAT = "u8s8"
#: calibration methods (onnxruntime.quantization.CalibrationMethod): MinMax is fast; Percentile
#: and Entropy build histograms (several times slower) and can clip outliers.
INT8_METHODS = ("minmax", "percentile", "entropy")
#: Entropy's histogram: 2048 bins searched for the 128-level threshold of least KL divergence, as in
#: TensorRT's calibrator, which ONNX Runtime's Entropy follows.  quantize_static leaves Entropy at its
#: defaults of 128 bins for 128 levels, whose only candidate is the whole range (MinMax's).
ENTROPY_BINS = 2048
ENTROPY_LEVELS = 128
#: calibration images drawn from the training split by default: a few hundred, every class in.
DEFAULT_CALIBRATION_SIZE = 300
#: the most sensitive nodes the search leaves in float (each with its input's producers): each costs speed
MAX_FLOAT_NODES = 4
#: images the per-tensor error is measured on (every intermediate tensor is kept in memory)
SENSITIVITY_IMAGES = 16


@dataclass(frozen=True)
class Int8Recipe:
    """How an int8 variant is made (recorded in its provenance and the export report)."""

    format: str = DEFAULT_INT8_FORMAT
    method: str = "minmax"
    per_channel: bool = True
    #: nodes of the pre-processed graph kept in float
    float_nodes: tuple[str, ...] = ()
    #: shift each Conv's bias by the mean error its int8 weights cause (:func:`correct_biases`)
    bias_correction: bool = True

    def check(self) -> None:
        if self.format not in INT8_FORMATS:
            raise ExportError(f"int8_format must be one of {INT8_FORMATS}, got {self.format!r}")
        if self.method not in INT8_METHODS:
            raise ExportError(f"int8_method must be one of {INT8_METHODS}, got {self.method!r}")

    def describe(self, images: int) -> str:
        weights = "per-channel" if self.per_channel else "per-tensor"
        corrected = ", bias-corrected" if self.bias_correction else ""
        text = (
            f"static int8 (QDQ {self.format.upper()}, {weights} weights{corrected}, {self.method}) "
            f"calibrated on {images} images"
        )
        if self.float_nodes:
            text += f", {len(self.float_nodes)} nodes in float ({', '.join(self.float_nodes)})"
        return text


# --------------------------------------------------------------------------- which images
def calibration_draw(samples: Sequence[Sample], size: int, rng: np.random.Generator) -> list[Sample]:
    """A seeded draw of ``size`` samples in which every class is represented.

    Classes are visited round-robin (each class's images in a seeded order) so that the draw is
    as balanced as the split allows; when ``size`` is below the number of classes it is raised to
    one image per class.  Samples without class indices are drawn uniformly.  The original order
    is kept.
    """
    if size <= 0 or size >= len(samples):
        return list(samples)
    by_class: dict[int | None, list[int]] = {}
    for index, (_, target) in enumerate(samples):
        by_class.setdefault(target, []).append(index)
    if list(by_class) == [None]:
        return [samples[i] for i in np.sort(rng.choice(len(samples), size=size, replace=False))]
    queues = [list(rng.permutation(indices)) for _, indices in sorted(by_class.items(), key=lambda kv: str(kv[0]))]
    size = max(size, len(queues))
    picked: list[int] = []
    while len(picked) < size:
        for queue in queues:
            if queue and len(picked) < size:
                picked.append(int(queue.pop()))
    return [samples[i] for i in sorted(picked)]


class _Reader:
    """onnxruntime.quantization.CalibrationDataReader over preprocessed image batches."""

    def __init__(self, input_name: str, inputs: Sequence[np.ndarray]):
        self._input_name = input_name
        self._inputs = list(inputs)
        self._next = iter(self._inputs)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._next, None)
        return None if batch is None else {self._input_name: batch}

    def rewind(self) -> None:
        """Start over (calibrators that read the data more than once call this)."""
        self._next = iter(self._inputs)


def _reader(input_name: str, inputs: Sequence[np.ndarray]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(_Reader, CalibrationDataReader):
        pass

    return Reader(input_name, inputs)


def preprocessed_batches(paths: Sequence[Path], spec: PreprocessSpec, batch_size: int) -> list[np.ndarray]:
    """The images through the project's preprocessing, in batches (what the backends feed)."""
    preprocess: Callable[[Sequence[Path]], np.ndarray] = preprocess_fn(spec)
    return [preprocess(chunk) for chunk in batches(list(paths), batch_size)]


# --------------------------------------------------------------------------- quantization
def prepare_for_quantization(fp32_path: Path, out_path: Path) -> None:
    """ONNX Runtime's recommended pre-processing: symbolic shape inference and graph
    optimisation, so that quantization sees fused Conv+BN and known shapes."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=False)


#: ONNX Runtime's symmetric int8 weight range (quant_utils.get_qmin_qmax_for_qType, symmetric=True)
_WEIGHT_QMAX = 127


def correct_biases(prepared: Path, out_path: Path, inputs: Sequence[np.ndarray], per_channel: bool = True) -> int:
    """Write ``prepared`` with every Conv's bias corrected for its int8 weights (:func:`bias_shifts`
    on the calibration ``inputs``).  Returns how many Convs were corrected."""
    return apply_bias_shifts(prepared, out_path, bias_shifts(prepared, inputs, per_channel))


def bias_shifts(prepared: Path, inputs: Sequence[np.ndarray], per_channel: bool = True) -> dict[str, np.ndarray]:
    """Each Conv's (by node name, or output name for an unnamed one) mean output error that
    rounding its weights to symmetric int8 (as ``quantize_int8`` will) causes on the calibration
    ``inputs``, per output channel: ``sum((W_int8 - W) * mean(input))``, the input's per-channel
    mean taken over the images and positions (bias correction, Nagel et al. 2019, "Data-Free
    Quantization").  Rounding 9 or 25 depthwise taps per channel biases each output; on
    EfficientNet-Lite0 correcting it alone took int8 top-1 agreement with fp32 from 76% to 90%
    (docs/export.md, "int8 recipes")."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(prepared))
    initializers = {init.name: init for init in model.graph.initializer}
    convs = _biased_convs(model.graph)
    if not convs:
        return {}
    input_name, _ = _input_name_and_batch(prepared)
    outputs = {out.name for out in model.graph.output}
    for node in convs:
        if node.input[0] not in outputs:
            model.graph.output.append(onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None))
            outputs.add(node.input[0])
    with tempfile.TemporaryDirectory(prefix="butterfly_bias_") as tmp:
        probe_path = Path(tmp) / "probe.onnx"
        onnx.save(model, str(probe_path))
        session = ort_session(probe_path)
        names = [out.name for out in session.get_outputs()]
        sums: dict[str, np.ndarray] = {}
        count = 0
        for batch in inputs:  # one batch at a time: every conv input of a batch is held at once
            values = dict(zip(names, session.run(None, {input_name: batch}), strict=True))
            for node in convs:
                if node.input[0] not in sums:
                    sums[node.input[0]] = np.zeros(values[node.input[0]].shape[1])
                sums[node.input[0]] += values[node.input[0]].mean(axis=(2, 3), dtype=np.float64).sum(axis=0)
            count += len(batch)
    shifts = {}
    for node in convs:
        weight = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        axes = tuple(range(1, weight.ndim)) if per_channel else tuple(range(weight.ndim))
        scale = np.abs(weight).max(axis=axes, keepdims=True) / _WEIGHT_QMAX
        scale[scale == 0] = 1.0
        error = np.round(weight / scale) * scale - weight  # (out, in/group, kh, kw)
        mean = sums[node.input[0]] / count
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        per_group = error.shape[1]
        # output channel o reads input channels [g * per_group, (g + 1) * per_group) of its group g
        group_of = np.arange(error.shape[0]) // (error.shape[0] // groups)
        means = mean.reshape(groups, per_group)[group_of]  # (out, in/group)
        shifts[_conv_key(node)] = (error.sum(axis=(2, 3)) * means).sum(axis=1)
    return shifts


def apply_bias_shifts(
    prepared: Path, out_path: Path, shifts: Mapping[str, np.ndarray], *, keep: Collection[str] = ()
) -> int:
    """Write ``prepared`` with ``bias -= shift`` for each Conv in ``shifts`` but not in ``keep``:
    a Conv kept in float has no rounded weights to make up for, so its bias stays as it is.
    Returns how many Convs were corrected."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(prepared))
    initializers = {init.name: init for init in model.graph.initializer}
    corrected = 0
    for node in _biased_convs(model.graph):
        if _conv_key(node) not in shifts or node.name in keep:
            continue
        bias = numpy_helper.to_array(initializers[node.input[2]])
        fixed = (bias - shifts[_conv_key(node)]).astype(bias.dtype)
        initializers[node.input[2]].CopyFrom(numpy_helper.from_array(fixed, node.input[2]))
        corrected += 1
    onnx.save(model, str(out_path))
    return corrected


def _biased_convs(graph: Any) -> list[Any]:
    """The Convs whose weights and bias are initializers (those bias correction can fix)."""
    initializers = {init.name for init in graph.initializer}
    return [
        node
        for node in graph.node
        if node.op_type == "Conv"
        and len(node.input) == 3
        and node.input[1] in initializers
        and node.input[2] in initializers
    ]


def _conv_key(node: Any) -> str:
    """A Conv's key in :func:`bias_shifts`: its name, or its output's when it has none."""
    return str(node.name or node.output[0])


def _input_name_and_batch(path: Path) -> tuple[str, int]:
    import onnx

    graph_input = onnx.load(str(path), load_external_data=False).graph.input[0]
    return graph_input.name, graph_input.type.tensor_type.shape.dim[0].dim_value


def quantize_int8(
    prepared: Path, out_path: Path, recipe: Int8Recipe, inputs: Sequence[np.ndarray], cache: Path
) -> None:
    """Quantize ``prepared`` (see prepare_for_quantization) by ``recipe``.  The calibrated ranges
    are kept in ``cache`` (a JSON file) so that re-quantizing with other float nodes or another
    format does not calibrate again (ONNX Runtime >= 1.27; older ones calibrate every time)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    recipe.check()
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    input_name, _ = _input_name_and_batch(prepared)
    cached = _has_calibration_cache()
    if recipe.method != "minmax":
        if cached and not cache.is_file():
            _histogram_ranges(prepared, input_name, inputs, cache, recipe.method)
        elif recipe.method == "entropy" and not cached:
            # quantize_static would run its own 128-bin Entropy: MinMax's ranges
            import onnxruntime

            raise BackendUnavailableError(
                "int8_method='entropy' needs onnxruntime >= 1.27 (its calibration cache); "
                f"this is onnxruntime {onnxruntime.__version__}"
            )
    activation = QuantType.QInt8 if recipe.format == "s8s8" else QuantType.QUInt8
    # the histogram calibrators print their progress to stdout, where the CLI's --json output goes
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        quantize_static(
            str(prepared),
            str(out_path),
            # quantize_static calibrates only without a cache (a histogram method then wants even batches)
            _reader(input_name, inputs if recipe.method == "minmax" or cached else _uniform_batches(inputs)),
            quant_format=QuantFormat.QDQ,
            per_channel=recipe.per_channel,
            activation_type=activation,
            weight_type=QuantType.QInt8,
            calibrate_method=methods[recipe.method],
            nodes_to_exclude=list(recipe.float_nodes),
            **({"calibration_cache_path": cache} if cached else {}),
        )


def _has_calibration_cache() -> bool:
    """Whether this ONNX Runtime's quantize_static reads and writes calibrated ranges (1.27+)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _histogram_ranges(prepared: Path, input_name: str, inputs: Sequence[np.ndarray], cache: Path, method: str) -> None:
    """Calibrate ``prepared`` by Percentile (ONNX Runtime's defaults, as quantize_static's) or
    Entropy (over ENTROPY_BINS) and write the ranges to ``cache`` for quantize_static.  The
    batches go in one at a time: ONNX Runtime's collector merges each batch's histograms into the
    ones so far, so memory holds one batch's activations (quantize_static collects every batch's
    activations first: gigabytes for a few hundred images), and batches may differ in size."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, save_tensors_data

    histogram = {
        "percentile": (CalibrationMethod.Percentile, {}),
        "entropy": (CalibrationMethod.Entropy, {"num_bins": ENTROPY_BINS, "num_quantized_bins": ENTROPY_LEVELS}),
    }
    calibrate_method, options = histogram[method]
    with tempfile.TemporaryDirectory(prefix="butterfly_histogram_") as tmp, contextlib.redirect_stdout(io.StringIO()):
        calibrator = create_calibrator(
            prepared,
            None,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=calibrate_method,
            extra_options=options,
        )
        for batch in inputs:
            calibrator.collect_data(_reader(input_name, [batch]))
            _bound_histograms(calibrator.collector.histogram_dict, 2 * calibrator.collector.num_bins)
        save_tensors_data(calibrator.compute_data(), cache)


def _bound_histograms(histograms: dict[str, tuple[Any, ...]], limit: int) -> None:
    """Halve the bins of every histogram of ONNX Runtime's HistogramCollector that has more than
    ``limit``, in place.  The first batch sets a histogram's bin width and a later, wider batch
    adds bins of that width: a tensor 100x wider later would hold 100x the bins, and Entropy's
    threshold search costs the square of the bins.  All at once, ONNX Runtime has ``num_bins``
    over the whole range; with ``limit`` = 2 ``num_bins`` the bins stay at least as fine.

    Percentile's histograms are of absolute values, ``(hist, edges, min, max)`` from the first
    edge up; Entropy's are of values, ``(hist, edges, min, max, threshold)`` over
    [-threshold, threshold], and keep zero on an edge."""
    for name, (hist, edges, *rest) in histograms.items():
        while len(hist) > limit:
            step = edges[1] - edges[0]
            if len(rest) == 2 and len(hist) % 2:  # absolute values: one empty bin at the top
                hist = np.append(hist, 0)
                edges = np.append(edges, edges[-1] + step).astype(edges.dtype)
            elif len(rest) == 3 and len(hist) % 4:  # values: an empty bin at each end, zero stays an edge
                hist = np.concatenate(([0], hist, [0])).astype(hist.dtype)
                rest[2] = np.asarray(rest[2] + step, dtype=edges.dtype)
                edges = np.linspace(-rest[2], rest[2], len(hist) + 1, dtype=edges.dtype)
            hist, edges = hist.reshape(-1, 2).sum(axis=1), edges[::2]
        histograms[name] = (hist, edges, *rest)


def _uniform_batches(inputs: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
    """``inputs`` with every batch the same size, for quantize_static's own Percentile (ONNX Runtime
    < 1.27, without the calibration cache): it stacks each tensor's values over all batches and
    fails on a shorter last batch; then each image is a batch of its own."""
    if len({len(batch) for batch in inputs}) <= 1:
        return inputs
    return [image[None] for batch in inputs for image in batch]


def node_sensitivity(prepared: Path, quantized: Path, inputs: Sequence[np.ndarray]) -> list[tuple[str, float]]:
    """Nodes of ``prepared`` ranked most sensitive first: each node by the signal-to-quantization-
    noise ratio (dB) of its output in the quantized model against fp32 (ONNX Runtime's
    ``qdq_loss_debug``: ``xmodel_err``), less the SQNR of its inputs, i.e. the noise the node's own
    quantization adds.  Nodes whose outputs are not quantized are left out."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    input_name, _ = _input_name_and_batch(prepared)
    with tempfile.TemporaryDirectory(prefix="butterfly_sqnr_") as tmp:
        float_aug, qdq_aug = Path(tmp) / "float.onnx", Path(tmp) / "qdq.onnx"
        modify_model_output_intermediate_tensors(str(prepared), str(float_aug))
        modify_model_output_intermediate_tensors(str(quantized), str(qdq_aug))
        float_acts = collect_activations(str(float_aug), _reader(input_name, inputs))
        qdq_acts = collect_activations(str(qdq_aug), _reader(input_name, inputs))
    errors = compute_activation_error(create_activation_matching(qdq_acts, float_acts))
    sqnr = {name: err["xmodel_err"] for name, err in errors.items() if "xmodel_err" in err}
    graph = onnx.load(str(prepared), load_external_data=False).graph
    ranked = []
    for node in graph.node:
        outs = [sqnr[o] for o in node.output if o in sqnr]
        if not outs or not node.name:
            continue
        ins = [sqnr[i] for i in node.input if i in sqnr]
        # the SQNR lost in this node (inputs' SQNR minus its output's); the graph input has none
        drop = (min(ins) if ins else max(outs)) - min(outs)
        ranked.append((node.name, float(drop)))
    ranked.sort(key=lambda item: -item[1])
    return ranked


# --------------------------------------------------------------------------- the search
@dataclass
class Int8Search:
    """What :func:`search_int8` tried: (float nodes, agreement on the calibration images)."""

    recipe: Int8Recipe
    agreement: float
    tried: list[tuple[tuple[str, ...], float]] = field(default_factory=list)
    #: the kept model's largest error spread on the calibration images (:func:`error_spread`)
    error_spread: float = 0.0


def error_spread(fp32_out: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per row, how far ``out``'s error against ``fp32_out`` moves one class against another
    (max minus min of the row's differences): two classes whose fp32 scores are further apart
    than this keep their order.  Its largest value on the calibration images is the int8
    variant's ``fallback_margin`` (:func:`butterfly_onnx.classifier.near_ties`)."""
    diff = out.astype(np.float64) - fp32_out
    return diff.max(axis=1) - diff.min(axis=1)


def _compare(session_path: Path, inputs: Sequence[np.ndarray], fp32_out: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement with fp32, largest error spread) of a quantized model on ``inputs``."""
    out = ort_run(ort_session(session_path), inputs)
    return float((out.argmax(axis=1) == fp32_out.argmax(axis=1)).mean()), float(error_spread(fp32_out, out).max())


def search_int8(
    fp32_path: Path,
    out_path: Path,
    recipe: Int8Recipe,
    inputs: Sequence[np.ndarray],
    *,
    target: float,
    max_float_nodes: int = MAX_FLOAT_NODES,
) -> Int8Search:
    """Quantize ``fp32_path`` into ``out_path`` by ``recipe``; while its top-1 agreement with fp32
    on the calibration batches ``inputs`` is below ``target``, keep the most sensitive nodes
    (:func:`node_sensitivity`, each with its input's producers: :func:`float_units`) in float,
    1, 2, 4, ... up to ``max_float_nodes`` of them, and keep the best try.  ``target`` 0
    quantizes once."""
    with tempfile.TemporaryDirectory(prefix="butterfly_int8_") as tmp:
        prepared, cache = Path(tmp) / "prepared.onnx", Path(tmp) / "ranges.json"
        prepare_for_quantization(fp32_path, prepared)
        fp32_out = ort_run(ort_session(prepared), inputs)
        shifts = bias_shifts(prepared, inputs, recipe.per_channel) if recipe.bias_correction else {}
        corrected = Path(tmp) / "corrected.onnx"

        def quantize(candidate: Int8Recipe) -> tuple[float, float]:
            """``candidate``'s model in ``out_path`` (each Conv it quantizes bias-corrected), its
            agreement with fp32 and its error spread.  The ranges are calibrated on the first
            try's graph and reused (ONNX Runtime >= 1.27): a Conv kept in float shifts its output
            by its small correction, not worth calibrating again for."""
            apply_bias_shifts(prepared, corrected, shifts, keep=candidate.float_nodes)
            quantize_int8(corrected, out_path, candidate, inputs, cache)
            return _compare(out_path, inputs, fp32_out)

        agreement, spread = quantize(recipe)
        search = Int8Search(recipe, agreement, [(recipe.float_nodes, agreement)], spread)
        if agreement >= target or max_float_nodes <= 0:
            return search
        ranked = float_units(
            corrected, [name for name, _ in node_sensitivity(corrected, out_path, _first_images(inputs))]
        )
        best_path = Path(tmp) / "best.onnx"
        out_path.replace(best_path)
        count = 1
        while True:
            count = min(count, max_float_nodes, len(ranked))
            kept = dict.fromkeys([*recipe.float_nodes, *(name for unit in ranked[:count] for name in unit)])
            candidate = Int8Recipe(
                recipe.format, recipe.method, recipe.per_channel, tuple(kept), recipe.bias_correction
            )
            agreement, spread = quantize(candidate)
            search.tried.append((candidate.float_nodes, agreement))
            if agreement > search.agreement:
                search.recipe, search.agreement, search.error_spread = candidate, agreement, spread
                out_path.replace(best_path)
            if search.agreement >= target or count >= min(max_float_nodes, len(ranked)):
                break
            count *= 2
        best_path.replace(out_path)
    return search


def float_units(prepared: Path, ranked: Sequence[str]) -> list[tuple[str, ...]]:
    """Each ranked node with the nodes that produce its activation input (back through a Clip or
    Relu to a Conv): a node's input stays 8-bit unless its producer is in float too, and that
    input's quantization is most of the error measured at the node."""
    import onnx

    graph = onnx.load(str(prepared), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    units = []
    for name in ranked:
        unit = [name]
        for tensor in by_name[name].input:
            node = producer.get(tensor)
            if node is not None and node.op_type in ("Clip", "Relu"):
                unit.append(node.name)
                node = producer.get(node.input[0])
            if node is not None and node.op_type == "Conv":
                unit.append(node.name)
        units.append(tuple(unit))
    return units


def _first_images(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The first batches of ``inputs`` that hold SENSITIVITY_IMAGES images."""
    picked: list[np.ndarray] = []
    for batch in inputs:
        if sum(len(b) for b in picked) >= SENSITIVITY_IMAGES:
            break
        picked.append(batch)
    return picked
