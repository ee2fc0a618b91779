"""The whole job on real photos: Kaggle-layout data -> finetune -> export_onnx -> Classifier.

The issue's bar: the exported file, run by either backend, reproduces the validation accuracy
that fine-tuning measured with PyTorch, exactly (same top-1 on every validation image).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from butterfly_onnx import Classifier, ExportReport, export_onnx, finetune  # noqa: E402
from butterfly_onnx.contract import PreprocessSpec  # noqa: E402
from butterfly_onnx.sample_data import tuxpaint_available, tuxpaint_photo_dataset  # noqa: E402

pytestmark = [
    pytest.mark.train,
    pytest.mark.slow,
    pytest.mark.skipif(not tuxpaint_available(), reason="tuxpaint-stamps-default is not installed"),
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workflow")
    data = tuxpaint_photo_dataset(
        tmp / "kaggle", categories=["birds", "flowers", "fruit", "mammals"], size=144, per_class=16, layout="kaggle"
    )
    spec = PreprocessSpec(resize_size=146, crop_size=128, mean=(0.5,) * 3, std=(0.5,) * 3)
    result = finetune(
        data,
        model="efficientnet_lite0",
        weights="DEFAULT",
        epochs=2,
        head_epochs=2,
        batch_size=16,
        lr=3e-3,
        val_fraction=0.25,
        preprocess=spec,
        out_dir=tmp / "run",
        progress=False,
        seed=1,
    )
    path = export_onnx(result, tmp / "photos.onnx")
    return result, path, ExportReport.load(path)


def test_export_verified_on_the_validation_split(exported):
    result, _, report = exported
    verification = report.verification
    assert verification.passed and verification.num_images == len(result.val_samples)
    assert verification.max_abs_diff <= 1e-4 and verification.top1_agreement == 1.0
    assert verification.onnx_accuracy == pytest.approx(result.metrics["val_acc1"])
    assert result.metrics["val_acc1"] >= 0.6  # 4 classes: chance is 0.25
    # never worse than the linear probe on the same frozen features and split (within one image)
    assert result.metrics["val_acc1"] >= result.metrics["probe_acc1"] - 1 / len(result.val_samples) - 1e-9


def test_both_backends_reproduce_the_validation_accuracy_exactly(exported, backend):
    result, path, report = exported
    classifier = Classifier(path, backend=backend)
    assert list(classifier.labels) == result.labels
    assert classifier.contract.preprocess == result.preprocess
    paths = [p for p, _ in result.val_samples]
    truth = np.array([label for _, label in result.val_samples])
    predictions = classifier.predict(paths, top_k=1)
    predicted = np.array([p.index for p in predictions])
    correct = int((predicted == truth).sum())
    assert correct / len(truth) == pytest.approx(result.metrics["val_acc1"])
    assert correct / len(truth) == pytest.approx(report.verification.onnx_accuracy)
    assert [p.label for p in predictions] == [result.labels[i] for i in predicted]
