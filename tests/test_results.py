"""butterfly_onnx.results: predictions written to CSV / JSON Lines and Kaggle submissions,
read back and compared with Classifier.predict."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx.classifier import ImageSkippedWarning
from butterfly_onnx.errors import InvalidArgumentError
from butterfly_onnx.results import csv_header, output_format, write_predictions, write_submission
from corpus import natural_rgb


@pytest.fixture(scope="module")
def predictions(classifiers, tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    for i in range(3):
        Image.fromarray(natural_rgb(40 + i, 50, seed=i)).save(root / f"img{i}.jpg")
    (root / "img1b.jpg").write_text("not an image")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageSkippedWarning)
        return classifiers("python").predict(root, top_k=3, on_error="skip")


def test_csv_rows_hold_every_prediction(predictions, tmp_path):
    path = write_predictions(iter(predictions), tmp_path / "p.csv")  # a generator: header from the first good one
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == csv_header(3)
    assert rows[0][:4] == ["source", "label", "index", "probability"] and rows[0][-1] == "error"
    assert len(rows) == 1 + len(predictions)
    for row, prediction in zip(rows[1:], predictions, strict=False):
        assert row[0] == prediction.source
        if not prediction.ok:
            assert row[1:-1] == [""] * 12 and "img1b.jpg" in row[-1]
            continue
        assert row[1] == prediction.label and int(row[2]) == prediction.index
        assert np.float32(row[3]) == np.float32(prediction.probability)  # the float32 value, exactly
        for k, score in enumerate(prediction.top_k):
            assert row[4 + 3 * k] == score.label and int(row[5 + 3 * k]) == score.index
            assert float(row[6 + 3 * k]) == score.probability
        assert row[-1] == ""


def test_jsonl_is_to_dict_per_line(predictions, tmp_path):
    path = write_predictions(predictions, tmp_path / "p.jsonl", top_k=2)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == len(predictions)
    for line, prediction in zip(lines, predictions, strict=False):
        expected = prediction.to_dict()
        expected["top_k"] = expected["top_k"][:2]
        assert line == expected
        assert set(line) == {"source", "label", "index", "probability", "top_k", "error"}


def test_submission_leaves_failed_rows_out(predictions, tmp_path):
    names = [f"Image_{i}.jpg" for i in range(len(predictions))]
    failed = write_submission(predictions, names, tmp_path / "submission.csv")
    with open(tmp_path / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["filename", "label"]
    assert rows[1:] == [[n, p.label] for n, p in zip(names, predictions, strict=False) if p.ok]
    assert failed == [p for p in predictions if not p.ok] and len(failed) == 1
    with pytest.raises(InvalidArgumentError, match="filenames"):
        write_submission(predictions, names[:-1] + names, tmp_path / "x.csv")


def test_unknown_extension(tmp_path):
    assert output_format("a.CSV") == "csv" and output_format("b.jsonl") == "jsonl"
    for bad in ("a.xlsx", "noext"):
        with pytest.raises(InvalidArgumentError, match="unknown output format"):
            write_predictions([], tmp_path / bad)
