"""``val`` / butterfly_onnx.evaluate: the metrics equal scikit-learn's on the same predictions,
labels map by name (a subset is fine, an unknown name is an error), the CLI's JSON, the plot,
and -- on a split that finetune held out -- the accuracy finetune itself reported."""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx.cli import main
from butterfly_onnx.errors import DatasetError
from butterfly_onnx.evaluate import classification_report, evaluate
from contract_models import LABELS


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, corpus, classifiers):
    """A class-per-folder tree of real photos under 3 of the model's labels: each photo filed
    under its predicted class or a wrong one, so top-1 is neither 0 nor 1."""
    photos = [corpus[n] for n in sorted(corpus) if n.startswith(("skimage_", "sklearn_", "matplotlib_grace"))]
    predicted = classifiers("python").predict(photos, top_k=1)
    root = tmp_path_factory.mktemp("val")
    for i, (photo, p) in enumerate(zip(photos, predicted, strict=True)):
        label = p.label if i % 3 else LABELS[(p.index + 1) % 3]
        (root / label).mkdir(exist_ok=True)
        shutil.copy(photo, root / label / f"{i}_{photo.name}")
    return root


def test_metrics_equal_scikit_learn(labelled, backend, classifiers):
    metrics = pytest.importorskip("sklearn.metrics")
    report = evaluate(classifiers(backend), labelled)
    y_true, y_pred = np.array(report.targets), np.array(report.predicted)
    assert report.count == len(y_true) == sum(1 for _ in labelled.rglob("*.*"))
    assert 0 < report.top1 < 1
    assert report.top1 == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    logits = classifiers(backend).logits(sorted(labelled.rglob("*.*")))  # same order as the folder reader
    assert report.top5 == pytest.approx(metrics.top_k_accuracy_score(y_true, logits, k=5, labels=range(len(LABELS))))
    used = sorted(set(y_true) | set(y_pred))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=used, zero_division=0
    )
    assert report.labels == [LABELS[c] for c in used]
    for i, c in enumerate(used):
        got = report.per_class[LABELS[c]]
        assert got["precision"] == pytest.approx(precision[i]) and got["recall"] == pytest.approx(recall[i])
        assert got["f1"] == pytest.approx(f1[i]) and got["support"] == support[i]
    assert report.confusion_matrix == metrics.confusion_matrix(y_true, y_pred, labels=used).tolist()


def test_val_lists_the_misclassified_files(labelled, contract_model, classifiers, capsys):
    """``val --errors`` and ``--json``: each misclassified file with its true and predicted label."""
    report = evaluate(classifiers("python"), labelled)
    wrong = [
        (s, LABELS[t], LABELS[p])
        for s, t, p in zip(report.sources, report.targets, report.predicted, strict=True)
        if t != p
    ]
    assert wrong and len(wrong) < report.count
    assert [(m["source"], m["true"], m["predicted"]) for m in report.misclassified] == wrong
    for source, true, _ in wrong:
        assert f"/{true}/" in source  # the folder it was filed under is its true label
    assert main(["val", str(contract_model.path), str(labelled), "--errors", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"misclassified: {len(wrong)} of {report.count}" in out
    for source, true, predicted in wrong:
        assert f"{source}\t{true} -> {predicted} (" in out
    assert main(["val", str(contract_model.path), str(labelled), "--json", "--no-progress"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert [(m["source"], m["true"], m["predicted"]) for m in document["misclassified"]] == wrong


def test_classification_report_on_edge_cases():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(6)]
    y_true, y_pred = rng.integers(0, 4, 200), rng.integers(1, 6, 200)  # class 0 never predicted, 5 never true
    used, per_class, matrix = classification_report(y_pred, y_true, names)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=used, zero_division=0
    )
    assert np.allclose([per_class[names[c]]["f1"] for c in used], f1)
    assert np.allclose([per_class[names[c]]["precision"] for c in used], precision)
    assert matrix == metrics.confusion_matrix(y_true, y_pred, labels=used).tolist()


def test_unknown_label_is_an_error_and_the_cli(labelled, contract_model, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(labelled, data)
    assert main(["val", str(contract_model.path), str(data), "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"top1", "top5", "count", "per_class"} <= set(result) and result["count"] > 0
    plot = tmp_path / "confusion.png"
    assert main(["val", str(contract_model.path), str(data), "--plot", str(plot), "--no-progress"]) == 0
    with Image.open(plot) as image:  # closed: an unclosed file is a ResourceWarning (an error here)
        assert image.format == "PNG" and "top-1" in capsys.readouterr().out
    (data / "not_a_species").mkdir()
    shutil.copy(next(data.rglob("*.*")), data / "not_a_species" / "x.jpg")
    with pytest.raises(DatasetError, match="not_a_species"):
        evaluate(contract_model.path, data)
    assert main(["val", str(contract_model.path), str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not_a_species" in err
    shutil.rmtree(data / "not_a_species")
    (next(data.iterdir()) / "broken.jpg").write_text("not an image")  # one bad image: exit 1
    assert main(["val", str(contract_model.path), str(data), "--json", "--no-progress"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["failed"] == 1 and "broken.jpg" in err


def test_val_checks_the_plot_path_first_and_never_prints_nan(contract_model, tmp_path, capsys):
    """``--plot missing/x.png`` fails before any work (here: before the missing model is even
    opened); with no image scored, the report's undefined metrics are null (valid JSON) and
    ``val`` exits 2 with one line per failure and one saying nothing was scored."""
    assert main(["val", str(tmp_path / "no.onnx"), str(tmp_path), "--plot", str(tmp_path / "missing" / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "plot" in err and "missing" in err and "no.onnx" not in err
    data = tmp_path / "data"
    (data / LABELS[0]).mkdir(parents=True)
    for name in ("a.jpg", "b.png"):
        (data / LABELS[0] / name).write_text("not an image")
    report = evaluate(contract_model.path, data)
    assert report.count == 0 and len(report.failed) == 2
    as_json = json.dumps(report.to_dict(), allow_nan=False)  # raises on NaN
    assert json.loads(as_json)["top1"] is None and json.loads(as_json)["top5"] is None
    assert main(["val", str(contract_model.path), str(data), "--json", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 3 and "no image could be scored" in err


@pytest.mark.train
def test_val_gives_the_accuracy_finetune_reported(tmp_path, corpus):
    """A tiny real fine-tune (frozen-backbone head, one epoch) on real photos, exported, then
    scored by `val` on the validation split finetune held out."""
    pytest.importorskip("torch")
    from butterfly_onnx.contract import PreprocessSpec
    from butterfly_onnx.export import export_onnx
    from butterfly_onnx.train import finetune

    photos = [corpus[n] for n in sorted(corpus) if n.startswith(("skimage_", "sklearn_", "matplotlib_grace"))]
    data = tmp_path / "data"
    for i in range(24):  # two classes of real photo crops
        photo = Image.open(photos[i % len(photos)]).convert("RGB")
        w, h = photo.size
        crop = photo.crop((i % 4 * w // 8, i % 3 * h // 8, w - i % 5 * w // 10, h - i % 2 * h // 6))
        (data / f"class_{i % 2}").mkdir(parents=True, exist_ok=True)
        crop.resize((160, 120)).save(data / f"class_{i % 2}" / f"{i}.jpg", quality=90)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = finetune(
            data,
            model="efficientnet_lite0",
            weights="DEFAULT",
            epochs=1,
            out_dir=tmp_path / "run",
            batch_size=8,
            val_fraction=0.34,
            num_workers=0,
            seed=0,
            progress=False,
            preprocess=PreprocessSpec(146, 128, mean=(0.5,) * 3, std=(0.5,) * 3),
        )
    onnx_path = export_onnx(result, tmp_path / "model.onnx", verify_images=[p for p, _ in result.val_samples])
    pairs = [(p, result.labels[c]) for p, c in result.val_samples]
    report = evaluate(onnx_path, pairs)
    assert report.count == len(result.val_samples)
    assert report.top1 == pytest.approx(result.metrics["val_acc1"], abs=1e-9)


def test_val_and_the_submission_are_torch_free(labelled, contract_model, tmp_path):
    import subprocess
    import sys

    listed = sorted(labelled.rglob("*.*"))
    (tmp_path / "test").mkdir()
    for i, path in enumerate(listed):
        shutil.copy(path, tmp_path / "test" / f"Image_{i}{path.suffix}")
    names = [f"Image_{i}{p.suffix}" for i, p in enumerate(listed)]
    (tmp_path / "Testing_set.csv").write_text("filename\n" + "".join(f"{n}\n" for n in names))
    code = (
        "import sys\n"
        "from butterfly_onnx.cli import main\n"
        f"assert main(['val', {str(contract_model.path)!r}, {str(labelled)!r}, '--json']) == 0\n"
        f"assert main(['predict', {str(contract_model.path)!r}, {str(tmp_path / 'Testing_set.csv')!r},"
        f" '-o', {str(tmp_path / 'submission.csv')!r}]) == 0\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad[:5]\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["count"] == len(listed)
    rows = (tmp_path / "submission.csv").read_text().splitlines()
    assert rows[0] == "filename,label" and [r.split(",")[0] for r in rows[1:]] == names
