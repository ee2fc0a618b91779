"""The butterfly-onnx command (python/butterfly_onnx/cli.py), run in-process."""

from __future__ import annotations

import json

import pytest

from butterfly_onnx.classifier import Classifier
from butterfly_onnx.cli import main


@pytest.fixture(scope="module")
def photos(corpus):
    return [corpus[name] for name in sorted(corpus) if name.startswith(("skimage_", "sklearn_"))][:4]


def test_predict_prints_the_classifiers_top_k(backend, contract_model, photos, capsys):
    assert main(["predict", str(contract_model.path), *map(str, photos), "--backend", backend, "--top-k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = Classifier(contract_model.path, backend="python").predict(photos, top_k=3)
    assert [line["source"] for line in lines] == [p.source for p in expected]
    for line, prediction in zip(lines, expected):
        assert [t["label"] for t in line["top_k"]] == [t.label for t in prediction.top_k]
        assert line["top_k"][0]["probability"] == pytest.approx(prediction.probability, abs=1e-6)


def test_predict_reports_bad_images_and_keeps_going(backend, contract_model, photos, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_text("not a jpeg")
    args = ["predict", str(contract_model.path), str(photos[0]), str(broken), "--backend", backend]
    assert main(args + ["--keep-going"]) == 2
    out, err = capsys.readouterr()
    assert out.startswith(str(photos[0])) and len(out.splitlines()) == 1
    assert "broken.jpg" in err
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == "" and "error" in err and "broken.jpg" in err


def test_info_shows_the_contract(contract_model, capsys):
    assert main(["info", str(contract_model.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == contract_model.contract.to_dict()
    assert main(["info", str(contract_model.path)]) == 0
    out = capsys.readouterr().out
    assert contract_model.contract.preprocess.describe() in out and "species_00" in out


def test_missing_model_is_one_clear_line(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.onnx")]) == 1
    assert "nope.onnx" in capsys.readouterr().err


def test_models_lists_the_catalog(capsys):
    pytest.importorskip("torchvision")
    assert main(["models", "--max-gflops", "0.1", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("arch,weights,") and len(rows) > 2
    assert all(float(row.split(",")[6]) <= 0.1 for row in rows[1:])


def test_export_a_checkpoint_then_predict(contract_model, photos, tmp_path, capsys):
    pytest.importorskip("torch")
    from butterfly_onnx.train import save_checkpoint

    checkpoint = save_checkpoint(tmp_path / "best.pt", contract_model.module, {
        "arch": "efficientnet_lite0", "num_classes": 10, "labels": list(contract_model.contract.labels),
        "weights": "DEFAULT", "preprocess": contract_model.contract.preprocess, "metrics": {},
        "epoch": 1, "train_config": {},
    })
    out_path = tmp_path / "cli.onnx"
    assert main(["export", str(checkpoint), str(out_path), "--verify-images", *map(str, photos)]) == 0
    assert "exported" in capsys.readouterr().out
    ours = Classifier(out_path, backend="rust").logits(photos)
    reference = Classifier(contract_model.path, backend="python").logits(photos)
    assert abs(ours - reference).max() <= 1e-4
    with pytest.raises(SystemExit):  # verification images or --no-verify are required
        main(["export", str(checkpoint), str(tmp_path / "x.onnx")])
