"""butterfly_onnx.results: predictions written to CSV / JSON Lines and Kaggle submissions,
read back and compared with Classifier.predict."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx.classifier import ClassScore, ImageSkippedWarning, Prediction
from butterfly_onnx.errors import ImageDecodeError, InvalidArgumentError
from butterfly_onnx.results import (
    csv_cell,
    csv_header,
    dumps,
    output_format,
    partial_path,
    predictions_table,
    to_jsonable,
    write_predictions,
    write_submission,
)
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


def test_submission_has_every_row_or_goes_to_partial(predictions, tmp_path):
    """Kaggle rejects a submission with rows missing: with a failed image the rows made go to
    X.partial.csv and X.csv is left as it was; ``fill`` completes it instead."""
    names = [f"Image_{i}.jpg" for i in range(len(predictions))]
    target = tmp_path / "submission.csv"
    target.write_text("previous\n")
    failed = write_submission(predictions, names, target)
    assert failed == [p for p in predictions if not p.ok] and len(failed) == 1
    assert target.read_text() == "previous\n"
    with open(partial_path(target), newline="") as handle:
        rows = list(csv.reader(handle))
    assert partial_path(target).name == "submission.partial.csv"
    assert rows[0] == ["filename", "label"]
    assert rows[1:] == [[n, p.label] for n, p in zip(names, predictions, strict=False) if p.ok]
    write_submission(predictions, names, target, fill="MONARCH")
    with open(target, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1:] == [[n, p.label if p.ok else "MONARCH"] for n, p in zip(names, predictions, strict=False)]
    good = [p for p in predictions if p.ok]
    assert write_submission(good, names[: len(good)], tmp_path / "full.csv") == []
    assert not partial_path(tmp_path / "full.csv").exists()
    only_failed = [p for p in predictions if not p.ok]
    write_submission(only_failed, ["x.jpg"], tmp_path / "none.csv")  # every image failed: nothing
    assert not (tmp_path / "none.csv").exists() and not partial_path(tmp_path / "none.csv").exists()
    with pytest.raises(InvalidArgumentError, match="filenames"):
        write_submission(predictions, names[:-1] + names, tmp_path / "x.csv")


def _fake(source, label, probability=0.5, error=None):
    if error is not None:
        return Prediction(source, (), ImageDecodeError(error))
    return Prediction(source, (ClassScore(label, 3, probability), ClassScore("=other", 1, 0.25)))


def test_formula_cells_are_escaped_but_not_in_submissions(tmp_path):
    """OWASP's CSV-injection rule: a text cell starting with = + - @ tab or CR gets a leading
    quote in the predictions CSV; a submission keeps the labels verbatim (Kaggle reads data)."""
    predictions = [
        _fake("=cmd|' /C calc'!A0.jpg", "+SUM(A1)"),
        _fake("-1.jpg", "@label"),
        _fake("\tTab.jpg", "plain"),
        _fake("ok.jpg", "x", error="=bad image"),
    ]
    path = write_predictions(predictions, tmp_path / "p.csv", top_k=2)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert [r[0] for r in rows[1:]] == ["'=cmd|' /C calc'!A0.jpg", "'-1.jpg", "'\tTab.jpg", "ok.jpg"]
    assert [r[1] for r in rows[1:]] == ["'+SUM(A1)", "'@label", "plain", ""]
    assert rows[1][7] == "'=other" and rows[4][-1] == "'=bad image"
    assert csv_cell("a=b") == "a=b" and csv_cell("\rx") == "'\rx"
    write_submission(predictions[:3], ["=a.jpg", "b.jpg", "c.jpg"], tmp_path / "s.csv")
    with open(tmp_path / "s.csv", newline="") as handle:
        assert list(csv.reader(handle))[1:] == [["=a.jpg", "+SUM(A1)"], ["b.jpg", "@label"], ["c.jpg", "plain"]]


def test_json_outputs_never_hold_nan(tmp_path):
    predictions = [_fake("a.jpg", "x", float("nan")), _fake("b.jpg", "y", float("inf"))]
    path = write_predictions(predictions, tmp_path / "p.jsonl")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    records = [json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c}")) for line in text.splitlines()]
    assert records[0]["probability"] is None and records[0]["top_k"][0]["probability"] is None
    assert dumps({"a": float("nan"), "b": [float("-inf"), 1.5]}) == '{"a": null, "b": [null, 1.5]}'
    rows = list(csv.reader(write_predictions(predictions, tmp_path / "p.csv").read_text().splitlines()))
    assert rows[1][3] == "" and "nan" not in rows[1]


def test_predictions_are_json_and_dataframe_friendly(predictions):
    """``json.dumps(predictions, default=to_jsonable)`` and a flat table for pandas."""
    text = json.dumps(predictions, default=to_jsonable)
    assert json.loads(text) == [p.to_dict() for p in predictions]
    table = predictions_table(predictions)
    assert [row["source"] for row in table] == [p.source for p in predictions]
    for row, prediction in zip(table, predictions, strict=True):
        assert all(not isinstance(v, (tuple, list, dict)) for v in row.values())
        assert row["label"] == prediction.label and row["error"] == (None if prediction.ok else str(prediction.error))
        for k, score in enumerate(prediction.top_k, 1):
            assert (row[f"label_{k}"], row[f"index_{k}"], row[f"probability_{k}"]) == tuple(score)
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(table)
    assert list(frame.columns) == csv_header(3)
    assert frame["probability_1"].dtype.kind == "f"


def test_unknown_extension(tmp_path):
    assert output_format("a.CSV") == "csv" and output_format("b.jsonl") == "jsonl"
    for bad in ("a.xlsx", "noext"):
        with pytest.raises(InvalidArgumentError, match="unknown output format"):
            write_predictions([], tmp_path / bad)
