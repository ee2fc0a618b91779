"""benchmarks/kaggle_scale.py in CI: a tiny seeded run of the real script (dataset -> finetune ->
export -> predict submission.csv); the full-size run is opt-in (docs/benchmarks.md)."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

SCRIPT = Path(__file__).resolve().parent / "kaggle_scale.py"


def _script():
    spec = importlib.util.spec_from_file_location("kaggle_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kaggle_scale_smoke(tmp_path):
    script = _script()
    if not script.STAMPS.is_dir():
        pytest.skip("tuxpaint-stamps-default is not installed")
    result = script.main(
        [
            "--work",
            str(tmp_path),
            "--train",
            "24",
            "--test",
            "6",
            "--classes",
            "3",
            "--epochs",
            "1",
            "--",
            "--batch-size",
            "8",
            "--head-steps",
            "5",
            "--preprocess",  # a smaller crop keeps the CI run short
            '{"resize_size": 128, "crop_size": 112, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}',
        ]
    )
    data = tmp_path / "data"
    with open(data / "Training_set.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["filename", "label"] and len(rows) == 25
    assert len({r[1] for r in rows[1:]}) == 3 and all((data / "train" / r[0]).is_file() for r in rows[1:])
    from PIL import Image

    with Image.open(data / "train" / rows[1][0]) as image:
        assert image.size == (224, 224) and image.format == "JPEG"
    assert set(result["steps"]) == {"finetune", "export", "predict"}
    assert all(step["seconds"] > 0 and step["peak_rss_mib"] > 0 for step in result["steps"].values())
    with open(tmp_path / "submission.csv", newline="") as handle:
        submission = list(csv.reader(handle))
    assert len(submission) == 7 and {r[1] for r in submission[1:]} <= {r[1] for r in rows[1:]}
    assert result["epochs_run"] == 1
