"""The torch-free dataset readers (butterfly_onnx.datasets): every layout stays inside its root
through symlinks, symlink loops add nothing, every bad CSV row is a DatasetError naming the
file and the line, and the unlabelled-list rule the CLI's Kaggle submission uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx.datasets import (
    IMAGE_EXTENSIONS,
    load_dataset,
    load_unlabelled,
    read_image_list,
)
from butterfly_onnx.errors import DatasetError
from butterfly_onnx.images import IMAGE_EXTENSIONS as INFERENCE_EXTENSIONS


def _photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


def _folders(root: Path) -> Path:
    for i, name in enumerate(["a/1.png", "a/2.png", "b/1.png", "b/2.png"]):
        _photo(root / name, i)
    return root


def test_one_extension_list_for_training_and_inference():
    assert set(IMAGE_EXTENSIONS) == set(INFERENCE_EXTENSIONS)
    listed = (Path(__file__).parents[1] / "python/butterfly_onnx/data/image_extensions.txt").read_text().split()
    assert set(IMAGE_EXTENSIONS) == {"." + e for e in listed}


def test_extension_list_skips_comments_and_blank_lines_as_rust_does():
    """The same rule as the Rust CLI's reader (bin/butterfly-onnx.rs image_extensions: trim,
    skip empty lines and lines starting with '#')."""
    from butterfly_onnx.images import parse_extensions

    assert parse_extensions("# image files\n\njpg\n  PNG \n#webp\n   \n# tif\n") == {".jpg", ".png"}
    text = (Path(__file__).parents[1] / "python/butterfly_onnx/data/image_extensions.txt").read_text()
    assert parse_extensions(text) == set(IMAGE_EXTENSIONS)


def test_files_without_an_image_extension_are_reported_not_silently_dropped(tmp_path):
    """ppm/pgm (torchvision's folder list has them) are not in the one list: the Rust decoder
    does not read them, so both backends could not be exact.  The folder reader lists such
    files in the dataset and its health report instead of ignoring them."""
    root = _folders(tmp_path / "data")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / "3.ppm")
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / ".hidden").write_text("hidden files are neither read nor listed")
    dataset = load_dataset(root, check=False)
    assert len(dataset) == 4
    assert dataset.skipped == [str(root / "a" / "3.ppm"), str(root / "b" / "notes.txt")]
    checked = load_dataset(root)
    assert checked.health is not None and checked.health.skipped == dataset.skipped
    assert checked.health.to_dict()["skipped"] == dataset.skipped
    assert "skipped: 2" in str(checked.health) and "3.ppm" in str(checked.health)


def test_folder_symlinks_out_of_the_root_are_left_out(tmp_path):
    root = _folders(tmp_path / "data")
    outside = tmp_path / "outside"
    _photo(outside / "x.png", 10)
    _photo(outside / "c" / "y.png", 11)
    (root / "a" / "escape.png").symlink_to(outside / "x.png")  # a file link leaving the root
    (root / "b" / "away").symlink_to(outside)  # a folder link leaving the root
    (root / "c").symlink_to(outside / "c")  # a class folder that is a link outside
    (root / "a" / "inside.png").symlink_to(root / "b" / "1.png")  # inside the root: kept
    dataset = load_dataset(root, check=False)
    paths = sorted(str(p.relative_to(root)) for p, _ in dataset.samples)
    assert paths == ["a/1.png", "a/2.png", "a/inside.png", "b/1.png", "b/2.png"]
    assert dataset.classes == ["a", "b"]
    for path, _ in dataset.samples:
        assert path.resolve().is_relative_to(root.resolve())


def test_symlink_loops_add_nothing(tmp_path):
    root = _folders(tmp_path / "data")
    (root / "a" / "loop").symlink_to(root / "a")  # a -> a -> a ...
    (root / "b" / "up").symlink_to(root)  # b -> root -> a, b ...
    (root / "a" / "self.png").symlink_to(root / "a" / "self.png")  # a link to itself
    dataset = load_dataset(root, check=False)
    assert len(dataset) == 4
    assert sorted(str(p.relative_to(root)) for p, _ in dataset.samples) == ["a/1.png", "a/2.png", "b/1.png", "b/2.png"]


def _kaggle(root: Path, rows: str, header: str = "filename,label") -> Path:
    for i in range(4):
        _photo(root / "train" / f"Image_{i}.jpg", i)
    (root / "Training_set.csv").write_bytes((header + "\n").encode() + rows.encode("utf-8", "surrogateescape"))
    return root


GOOD_ROWS = "Image_0.jpg,A\nImage_1.jpg,A\nImage_2.jpg,B\nImage_3.jpg,B\n"


@pytest.mark.parametrize(
    "extra, match",
    [
        ("Image_\x005.jpg,A\n", r"line 6: .*(NUL|control character)"),
        ("Image_5.jpg\x01,A\n", r"line 6: .*control character"),
        ("Image_0.jpg,A,extra\n", r"line 6: 3 fields, the header has 2"),
        ("Image_0.jpg,\n", r"line 6: empty label"),
        (",A\n", r"line 6: empty filename"),
        ('"Image_0.jpg,A\n', r"line 6"),
        ("../x.jpg,A\n", r"line 6: .*outside the dataset root"),
        ("/etc/passwd,A\n", r"line 6: absolute path"),
    ],
)
def test_every_bad_row_names_the_file_and_the_line(tmp_path, extra, match):
    root = _kaggle(tmp_path / "k", GOOD_ROWS + extra)
    with pytest.raises(DatasetError, match=r"Training_set\.csv, " + match):
        load_dataset(root, check=False)


def test_bad_bytes_and_headers_name_the_line(tmp_path):
    root = _kaggle(tmp_path / "k", GOOD_ROWS)
    csv_path = root / "Training_set.csv"
    csv_path.write_bytes(b"filename,label\nImage_0.jpg,A\nImage_1.jpg,\xff\xfe\n")
    with pytest.raises(DatasetError, match=r"Training_set\.csv, line 3: not valid UTF-8"):
        load_dataset(root, check=False)
    csv_path.write_text("file,label\nImage_0.jpg,A\n")
    with pytest.raises(DatasetError, match=r"Training_set\.csv, line 1: missing column"):
        load_dataset(root, check=False)


def test_csv_symlink_out_of_the_root_and_loops(tmp_path):
    _photo(tmp_path / "outside.jpg", 9)
    root = _kaggle(tmp_path / "k", GOOD_ROWS + "link.jpg,A\n")
    (root / "train" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    with pytest.raises(DatasetError, match=r"line 6: link.jpg resolves outside"):
        load_dataset(root, check=False)
    (root / "train" / "link.jpg").unlink()
    (root / "train" / "link.jpg").symlink_to(root / "train" / "link.jpg")  # a loop
    with pytest.raises(DatasetError, match=r"line 6: link.jpg"):
        load_dataset(root, check=False)


def test_unlabelled_list_rule_and_safety(tmp_path):
    # images in test/ when that folder exists ...
    kaggle = tmp_path / "kaggle"
    for name in ("Image_1.jpg", "Image_2.jpg"):
        _photo(kaggle / "test" / name, 1)
    (kaggle / "Testing_set.csv").write_text("filename\nImage_2.jpg\nImage_1.jpg\nImage_9.jpg\n")
    listed = read_image_list(kaggle / "Testing_set.csv")
    assert [(i.line, i.filename, i.path) for i in listed] == [
        (2, "Image_2.jpg", kaggle / "test" / "Image_2.jpg"),
        (3, "Image_1.jpg", kaggle / "test" / "Image_1.jpg"),
        (4, "Image_9.jpg", kaggle / "test" / "Image_9.jpg"),
    ]
    with pytest.raises(DatasetError, match=r"1 listed images are missing: line 4: Image_9.jpg"):
        load_unlabelled(kaggle)
    # ... else next to the CSV
    flat = tmp_path / "flat"
    _photo(flat / "x.jpg", 2)
    (flat / "list.csv").write_text("filename\nx.jpg\n")
    assert load_unlabelled(flat / "list.csv") == [flat / "x.jpg"]
    # no escape through a symlink, no NUL byte
    (kaggle / "test" / "out.jpg").symlink_to(flat / "x.jpg")
    (kaggle / "Testing_set.csv").write_text("filename\nImage_1.jpg\nout.jpg\n")
    with pytest.raises(DatasetError, match=r"Testing_set\.csv, line 3: out.jpg resolves outside"):
        read_image_list(kaggle / "Testing_set.csv")
    (kaggle / "Testing_set.csv").write_bytes(b"filename\nImage_1.jpg\nImage\x00.jpg\n")
    with pytest.raises(DatasetError, match=r"Testing_set\.csv, line 3"):
        read_image_list(kaggle / "Testing_set.csv")
    (kaggle / "Testing_set.csv").write_text("filename\n")
    with pytest.raises(DatasetError, match="no rows"):
        read_image_list(kaggle / "Testing_set.csv")


def test_readers_import_no_torch():
    code = "import sys, butterfly_onnx.datasets\nassert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')]"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_health_report_names_a_fake_image_by_its_file(tmp_path):
    """Pillow names the in-memory buffer it was given; the report names the file instead."""
    from PIL import Image

    from butterfly_onnx.datasets import health_report, read_labelled

    for label in ("a", "b"):
        (tmp_path / label).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), (i * 90, 20, 200)).save(tmp_path / label / f"{i}.png")
    (tmp_path / "b" / "fake.jpg").write_bytes(b"not a jpeg at all")
    report, cleaned = health_report(read_labelled(tmp_path))
    text = str(report.summary() if hasattr(report, "summary") else report)
    assert f"{tmp_path / 'b' / 'fake.jpg'}: UnidentifiedImageError: cannot identify image file" in text
    assert "BytesIO" not in text
    assert len(cleaned.samples) == 4


# -- a file listed twice -----------------------------------------------------------------
def _listing(root: Path, rows: list[str]) -> Path:
    for i in range(8):
        _photo(root / "train" / f"img_{i}.png", i)
    (root / "train" / "alias.png").symlink_to("img_0.png")
    csv = root / "Training_set.csv"
    csv.write_text("filename,label\n" + "".join(f"{row}\n" for row in rows))
    return csv


@pytest.mark.parametrize(
    ("rows", "lines"),
    [
        # the same row twice, the same file under two labels, ./name and a symlink to it
        (["img_0.png,a", "img_1.png,b", "img_0.png,a", "img_2.png,b"], "lines 2, 4"),
        (["img_0.png,a", "img_1.png,b", "img_2.png,a", "img_1.png,a"], "lines 3, 5"),
        (["img_0.png,a", "img_1.png,b", "./img_0.png,a", "alias.png,a"], "lines 2, 4, 5"),
    ],
)
def test_a_labelled_csv_listing_a_file_twice_is_refused_naming_the_lines(tmp_path, rows, lines):
    """Refused, not deduplicated: a repeated row is counted twice in training and can land on
    both sides of the split (validation accuracy inflated silently); the error names the file
    and every line that lists it."""
    csv = _listing(tmp_path, rows)
    with pytest.raises(
        DatasetError, match=rf"Training_set.csv: 1 file\(s\) listed more than once: .*img_\d.png \({lines}\)"
    ):
        load_dataset(csv, check=False)
    with pytest.raises(DatasetError, match="listed more than once"):
        load_dataset(tmp_path)  # the folder holding Training_set.csv


def test_explicit_pairs_listing_a_file_twice_are_refused(tmp_path):
    a, b = _photo(tmp_path / "a.png", 0), _photo(tmp_path / "b.png", 1)
    with pytest.raises(
        DatasetError, match=r"explicit dataset: 1 file\(s\) listed more than once: .*a.png \(items 0, 2\)"
    ):
        load_dataset([(a, "x"), (b, "y"), (a, "y")], check=False)


def test_the_split_never_puts_one_file_on_both_sides(tmp_path):
    """Samples that list a file several times (under one label or two, as written or through
    './'): whatever the seed and fraction, each file's listings all go to one side."""
    from butterfly_onnx.datasets import split_dataset

    files = [_photo(tmp_path / f"{i}.png", i) for i in range(12)]
    repeated = [(f, i % 2) for i, f in enumerate(files)] + [
        (files[0], 0),
        (files[0], 1),
        (tmp_path / "." / "3.png", 1),
        (files[5], 1),
    ] * 2
    for seed in range(20):
        for fraction in (0.2, 0.5, 0.8):
            train, val = split_dataset(repeated, fraction, seed=seed)
            assert sorted(map(str, train + val)) == sorted(map(str, repeated))
            sides = {}
            for side, part in (("train", train), ("val", val)):
                for path, _ in part:
                    sides.setdefault(path.resolve(), set()).add(side)
            assert all(len(s) == 1 for s in sides.values()), seed
