"""``butterfly_onnx.bench`` and ``butterfly_onnx.parity``: tiny runs on real photos.

Parity is checked against torchvision and torch themselves (not stored numbers): both backends
must reproduce every stage exactly and agree on top-1; and parity must see a real difference
where there is one (a contract recorded under another Pillow's pass order, on a tall photo
where the orders disagree). The bench is checked for structure only (speed goals live in
benchmarks/), and for its agreement columns."""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx import bench, parity
from butterfly_onnx.contract import ModelContract, PreprocessSpec, current_resample_order, write_contract
from contract_models import native_available

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

BACKENDS = ["python"] + (["rust"] if native_available()[0] else [])
LABELS = tuple(f"class_{i}" for i in range(5))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[str]:
    """sklearn's two real photos (640x427 JPEGs) and a tall crop of one (PNG, 300x900 after an
    upscale: Pillow 13 resizes it vertical first)."""
    folder = Path(sklearn_datasets.__file__).parent / "images"
    tall = tmp_path_factory.mktemp("photos") / "china_tall.png"
    with Image.open(folder / "china.jpg") as img:
        img.convert("RGB").crop((170, 0, 270, 300)).resize((300, 900), Image.Resampling.BICUBIC).save(tall)
    return [str(folder / "china.jpg"), str(folder / "flower.jpg"), str(tall)]


def _export(module, path: Path, spec: PreprocessSpec) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, spec.crop_size, spec.crop_size),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    write_contract(path, ModelContract(labels=LABELS, preprocess=spec, provenance={"arch": "test"}))
    return path


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A seeded small CNN (conv, ReLU, pooling, linear) at 256/224 with ImageNet mean/std."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4),
        torch.nn.Flatten(),
        torch.nn.Linear(128, len(LABELS)),
    ).eval()
    spec = PreprocessSpec(256, 224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    return _export(module, tmp_path_factory.mktemp("model") / "small.onnx", spec), module


def test_parity_is_exact_at_every_stage_on_real_photos(small_model, photos):
    path, module = small_model
    result = parity.run_parity(path, photos, backends=BACKENDS, torch_module=module)
    assert result.backends == BACKENDS and result.reference == "torchvision + torch"
    assert len(result.per_image) == len(photos)
    for backend in BACKENDS:
        for stage in ("decoded", "resized", "cropped", "tensor"):
            assert result.max_diff[stage][backend] == 0.0, (stage, backend, result.format_table())
        # Same tensor: only ONNX Runtime vs torch float rounding is left in the logits.
        assert result.max_diff["logits"][backend] < 1e-3
        assert result.top1_agreement[backend] == 1.0
    assert "top-1 agreement" in result.format_table()


def test_parity_finds_a_pass_order_difference_at_the_resize_stage(tmp_path, small_model, photos):
    """A contract of another Pillow's rule: both backends follow the contract, so on the tall
    photo they leave the installed Pillow (torchvision's reference) at the resize stage, and
    nowhere before it."""
    _, module = small_model
    other = "pillow_12_1" if current_resample_order() == "pillow_13" else "pillow_13"
    spec = PreprocessSpec(256, 224, resample_order=other)
    path = _export(module, tmp_path / "other_rule.onnx", spec)
    result = parity.run_parity(path, [photos[2]], backends=BACKENDS)
    for backend in BACKENDS:
        assert result.max_diff["decoded"][backend] == 0.0
        assert result.max_diff["resized"][backend] >= 1.0, result.format_table()
        assert result.max_diff["tensor"][backend] > 0.0


def test_parity_cli_exit_code_and_json(small_model, photos, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    parity.add_arguments(parser)
    out = tmp_path / "parity.json"
    args = parser.parse_args([str(small_model[0]), photos[0], "--backends", ",".join(BACKENDS), "--json", str(out)])
    assert parity.run(args) == 0
    assert "tensor" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["max_diff"]["tensor"]["python"] == 0.0 and data["images"] == [photos[0]]


def test_bench_rows_ratios_agreement_json_and_plot(small_model, photos, tmp_path):
    path, module = small_model
    result = bench.run_bench(
        path,
        photos[:2],
        batch_sizes=[1, 2],
        threads=[1],
        rounds=1,
        torch_module=module,
        contenders=["torchvision", "handwritten", *BACKENDS],
    )
    assert {(r.contender, r.batch_size) for r in result.rows} == {
        (c, b) for c in ["torchvision", "handwritten", *BACKENDS] for b in (1, 2)
    }
    assert result.images == 2 and result.reference == "torchvision"
    for row in result.rows:
        assert row.end_to_end_ms > 0 and row.inference_ms > 0 and row.decode_preprocess_ms > 0
        assert row.images_per_s == pytest.approx(1000.0 / row.end_to_end_ms)
        assert row.p50_ms >= row.end_to_end_ms and row.p90_ms >= row.p50_ms
        assert row.vs_floor > 0 and row.vs_torchvision is not None
        # Each row's ratio to the hand-written loop is its time against that loop's, same config.
        hand = next(h for h in result.rows if (h.contender, h.batch_size) == ("handwritten", row.batch_size))
        assert row.vs_handwritten == pytest.approx(hand.end_to_end_ms / row.end_to_end_ms)
        if row.contender == "torchvision":
            assert row.vs_torchvision == 1.0 and row.top1_agreement is None
        else:
            # Exact preprocessing (the hand-written Pillow + NumPy loop too): top-1 as torch's,
            # logits as close as ORT vs torch allows.
            assert row.top1_agreement == 1.0 and row.max_logit_diff < 1e-3
    assert (row.decode_ms is None) == (row.contender == "rust")
    assert set(result.floor_ms) == {"batch 1, threads 1", "batch 2, threads 1"}
    result.write_json(tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text())["rows"][0]["contender"] == "torchvision"
    result.plot(tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = result.format_table()
    assert "x floor" in table and "x hand" in table
    for column in bench.COLUMNS:  # every column explained under the table
        assert f"{column:>10}: " in table and column in table.splitlines()[1]


def test_bench_cli_arguments(small_model, photos, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "b.json"
    args = parser.parse_args(
        [
            str(small_model[0]),
            photos[0],
            "--batch-sizes",
            "1",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--contenders",
            "python",
            "--json",
            str(out),
        ]
    )
    assert bench.run(args) == 0
    assert "python" in capsys.readouterr().out
    assert [r["contender"] for r in json.loads(out.read_text())["rows"]] == ["python"]
    with pytest.raises(SystemExit):
        parser.parse_args([str(small_model[0]), photos[0], "--batch-sizes", "0"])
    with pytest.raises(Exception, match="unknown contenders"):
        bench.run_bench(small_model[0], photos[:1], contenders=["opencv"])
    assert np.isfinite(json.loads(out.read_text())["rows"][0]["end_to_end_ms"])


def test_bad_images_are_clear_errors(small_model, tmp_path):
    from butterfly_onnx.errors import ImageDecodeError, ImageNotFoundError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        parity.run_parity(small_model[0], [str(broken)], backends=["python"])
    with pytest.raises(ImageNotFoundError, match="missing.jpg"):
        bench.run_bench(small_model[0], [str(tmp_path / "missing.jpg")], contenders=["python"])


@pytest.fixture(scope="module")
def small_int8(small_model, photos, tmp_path_factory):
    """The small model's int8 variant (export's recipe, calibrated on the photos) with its contract."""
    from butterfly_onnx import Classifier
    from butterfly_onnx.export.variants import build_variant

    path, _ = small_model
    out = tmp_path_factory.mktemp("int8") / "small.int8.onnx"
    contract = Classifier(path).contract
    build_variant("int8", path, out, spec=contract.preprocess, calibration=[Path(p) for p in photos], batch_size=2)
    write_contract(out, contract)
    return out


def test_bench_and_parity_put_a_variant_beside_the_model(small_model, small_int8, photos, capsys):
    from butterfly_onnx import Classifier

    path, _ = small_model
    result = bench.run_bench(path, photos, threads=[1], rounds=1, contenders=BACKENDS, variants=[small_int8])
    rows = {r.contender: r for r in result.rows}
    assert set(rows) == {*BACKENDS, *(f"{b}:int8" for b in BACKENDS)}
    parity_result = parity.run_parity(path, photos, backends=BACKENDS, variants=[small_int8])
    for backend in BACKENDS:
        # against the same backend on the fp32 file, computed here independently
        fp32 = Classifier(path, backend=backend, threads=1).logits(photos)
        int8 = Classifier(small_int8, backend=backend, threads=1).logits(photos)
        agreement = float((fp32.argmax(1) == int8.argmax(1)).mean())
        diff = float(np.abs(fp32.astype(np.float64) - int8).max())
        assert 0 < diff < 1  # a real variant: close, not identical
        row = rows[f"{backend}:int8"]
        assert row.top1_agreement == agreement and row.max_logit_diff == pytest.approx(diff, rel=1e-6)
        assert row.end_to_end_ms > 0
        figures = parity_result.variants["int8"][backend]
        assert figures["top1_agreement"] == agreement and figures["max_logit_diff"] == pytest.approx(diff, rel=1e-6)
        assert figures["ms_per_image"] > 0 and figures["fp32_ms_per_image"] > 0
    assert "python:int8" in result.format_table() and "int8" in parity_result.format_table()
