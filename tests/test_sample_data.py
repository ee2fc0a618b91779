"""The run-time real-photo dataset built from Debian's tuxpaint-stamps-default."""

import csv

import pytest
from PIL import Image

from butterfly_onnx.errors import DatasetError, InvalidArgumentError
from butterfly_onnx.sample_data import TUXPAINT_STAMPS, tuxpaint_available, tuxpaint_photo_dataset

needs_tuxpaint = pytest.mark.skipif(not tuxpaint_available(), reason="tuxpaint-stamps-default is not installed")


@needs_tuxpaint
def test_folder_layout_has_one_composited_photo_per_stamp(tmp_path):
    root = tuxpaint_photo_dataset(tmp_path / "photos", categories=["fish", "insects"], size=96)
    for label, folder in (("fish", "animals/fish"), ("insects", "animals/insects")):
        stamps = [p for p in (TUXPAINT_STAMPS / folder).rglob("*.png") if "cartoon" not in p.parts]
        written = sorted((root / label).glob("*.jpg"))
        assert len(written) == len(stamps) > 0
        with Image.open(written[0]) as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (96, 96))
            # a real photo, not a flat canvas: many distinct colours
            assert len(image.getcolors(96 * 96) or range(10_000)) > 200


@needs_tuxpaint
def test_kaggle_layout_csv_matches_the_images(tmp_path):
    root = tuxpaint_photo_dataset(tmp_path / "kaggle", categories=["fish", "fruit"], per_class=4, layout="kaggle")
    with open(root / "Training_set.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["label"] for r in rows] == ["fish"] * 4 + ["fruit"] * 4
    assert sorted(r["filename"] for r in rows) == sorted(p.name for p in (root / "train").iterdir())


def test_missing_stamps_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="tuxpaint-stamps-default"):
        tuxpaint_photo_dataset(tmp_path / "x", root=tmp_path / "nowhere")


@needs_tuxpaint
def test_unknown_layout_is_an_invalid_argument(tmp_path):
    with pytest.raises(InvalidArgumentError, match="layout must be 'folders' or 'kaggle', got 'zip'"):
        tuxpaint_photo_dataset(tmp_path / "x", layout="zip")
    with pytest.raises(InvalidArgumentError, match=r"unknown categories \['dragons'\]"):
        tuxpaint_photo_dataset(tmp_path / "x", categories=["fish", "dragons"])
    assert not (tmp_path / "x").exists()
