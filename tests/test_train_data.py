"""Dataset layouts, the stratified split, the health report and bad-input errors (train/data.py)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")
from PIL import Image  # noqa: E402

from butterfly_onnx.errors import DatasetError  # noqa: E402
from butterfly_onnx.train.data import load_dataset, load_rgb, load_unlabelled, split_dataset  # noqa: E402

pytestmark = pytest.mark.train


def _photo(seed: int, size=(40, 30), mode="RGB") -> Image.Image:
    """A small noisy image; distinct seeds give distinct bytes."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    return image.convert(mode) if mode != "RGB" else image


def _folder_tree(root: Path, counts: dict[str, int]) -> Path:
    seed = 0
    for label, n in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            _photo(seed).save(root / label / f"{label}_{i}.png")
            seed += 1
    return root


def _kaggle_tree(root: Path, counts: dict[str, int], *, header=("filename", "label")) -> Path:
    (root / "train").mkdir(parents=True)
    rows, seed = [], 100
    for label, n in counts.items():
        for _ in range(n):
            name = f"Image_{seed}.jpg"
            _photo(seed).save(root / "train" / name, quality=90)
            rows.append((name, label))
            seed += 1
    with open(root / "Training_set.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return root


def test_class_per_folder_layout(tmp_path):
    root = _folder_tree(tmp_path / "data", {"monarch": 3, "admiral": 2, "peacock": 4})
    (root / "peacock" / "notes.txt").write_text("not an image")  # ignored: not an image extension
    dataset = load_dataset(root)
    assert dataset.classes == ["admiral", "monarch", "peacock"]  # sorted, as ImageFolder
    assert dataset.class_counts() == {"admiral": 2, "monarch": 3, "peacock": 4}
    assert all(path.parent.name == dataset.classes[label] for path, label in dataset.samples)


def test_kaggle_folder_csv_path_and_custom_columns(tmp_path):
    root = _kaggle_tree(tmp_path / "kaggle", {"ADONIS": 3, "MONARCH": 2})
    by_folder = load_dataset(root)
    by_csv = load_dataset(root / "Training_set.csv")
    assert by_folder.classes == by_csv.classes == ["ADONIS", "MONARCH"]
    assert by_folder.samples == by_csv.samples
    assert all(path.parent == root / "train" for path, _ in by_folder.samples)
    # Renamed columns, CSV elsewhere with the image folder given explicitly.
    other = tmp_path / "labels.csv"
    with open(other, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "species"])
        writer.writerows((p.name, by_folder.classes[c]) for p, c in by_folder.samples)
    custom = load_dataset(other, filename_column="image", label_column="species", image_dir=root / "train")
    assert custom.samples == by_folder.samples
    with pytest.raises(
        DatasetError, match=r"missing column\(s\) \['filename', 'label'\]; the header is \['image', 'species'\]"
    ):
        load_dataset(other)


def test_explicit_pairs(tmp_path):
    root = _folder_tree(tmp_path / "d", {"a": 2, "b": 2})
    pairs = [(p, p.parent.name) for p in sorted(root.rglob("*.png"))]
    dataset = load_dataset(pairs)
    assert dataset.classes == ["a", "b"]
    assert [(p, dataset.classes[c]) for p, c in dataset.samples] == pairs
    with pytest.raises(DatasetError, match="item 0: image file not found"):
        load_dataset([(tmp_path / "nope.png", "a"), *pairs])


def test_unlabelled_testing_set(tmp_path):
    root = tmp_path / "kaggle"
    (root / "test").mkdir(parents=True)
    for i in range(3):
        _photo(i).save(root / "test" / f"Image_{i}.jpg")
    (root / "Testing_set.csv").write_text("filename\n" + "".join(f"Image_{i}.jpg\n" for i in range(3)))
    paths = load_unlabelled(root)
    assert paths == [root / "test" / f"Image_{i}.jpg" for i in range(3)]
    (root / "test" / "Image_1.jpg").unlink()
    with pytest.raises(DatasetError, match="1 listed images are missing"):
        load_unlabelled(root / "Testing_set.csv")


def test_split_is_stratified_deterministic_and_copies_nothing(tmp_path):
    root = _folder_tree(tmp_path / "d", {"a": 10, "b": 20, "c": 5})
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    samples = load_dataset(root, check=False).samples
    train, val = split_dataset(samples, 0.2, seed=3)
    assert sorted(train + val, key=str) == sorted(samples, key=str)
    assert not set(train) & set(val)
    val_counts = {c: sum(1 for _, label in val if label == c) for c in range(3)}
    assert val_counts == {0: 2, 1: 4, 2: 1}  # round(n * 0.2) per class
    assert split_dataset(samples, 0.2, seed=3) == (train, val)
    assert split_dataset(samples, 0.2, seed=4)[1] != val
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    with pytest.raises(DatasetError, match="val_fraction"):
        split_dataset(samples, 1.0)


def test_health_report_excludes_corrupt_and_finds_duplicates(tmp_path):
    root = _folder_tree(tmp_path / "d", {"a": 4, "b": 3})
    shutil.copy(root / "a" / "a_0.png", root / "b" / "copy_of_a0.png")  # same bytes, other label
    _photo(50, mode="L").save(root / "a" / "gray.png")
    _photo(51, size=(90, 20), mode="RGBA").save(root / "b" / "alpha.png")
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "b" / "text.png").write_text("this is not a PNG")
    good = root / "a" / "a_1.png"
    (root / "a" / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    dataset = load_dataset(root)
    report = dataset.health
    bad = {Path(p).name for p, _ in report.corrupt}
    assert bad == {"empty.jpg", "text.png", "truncated.png"}
    assert all(Path(p).name not in bad for p, _ in [(str(p), c) for p, c in dataset.samples])
    assert len(dataset) == report.num_images == 10
    assert report.class_counts == {"a": 5, "b": 5}
    assert [sorted(Path(p).name for p in group) for group in report.duplicates] == [["a_0.png", "copy_of_a0.png"]]
    assert len(report.conflicting_duplicates) == 1
    assert report.modes == {"RGB": 8, "L": 1, "RGBA": 1} and report.non_rgb == {"L": 1, "RGBA": 1}
    assert report.sizes["width_max"] == 90 and report.sizes["height_min"] == 20
    text = str(report)
    assert "truncated.png" in text and "unreadable/corrupt (excluded): 3" in text
    data = json.loads(report.to_json())
    assert data["num_classes"] == 2 and len(data["corrupt"]) == 3 and data["imbalance"] == 1.0


def test_loader_matches_torchvision_pil_loader(tmp_path):
    from torchvision.datasets.folder import pil_loader

    path = tmp_path / "p.png"
    _photo(7, mode="P").save(path)
    assert np.array_equal(np.asarray(load_rgb(path)), np.asarray(pil_loader(str(path))))


# --- bad input ---------------------------------------------------------------------------------
def test_empty_dataset(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match="the dataset is empty"):
        load_dataset(tmp_path / "d")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "Training_set.csv").write_text("filename,label\n")
    with pytest.raises(DatasetError, match="Training_set.csv: the dataset is empty"):
        load_dataset(tmp_path / "k")
    with pytest.raises(DatasetError, match="dataset not found"):
        load_dataset(tmp_path / "missing")


def test_one_class_dataset(tmp_path):
    root = _folder_tree(tmp_path / "d", {"only": 3})
    with pytest.raises(DatasetError, match=r"at least 2 classes; found only \['only'\]"):
        load_dataset(root)


def test_one_class_left_after_excluding_corrupt(tmp_path):
    root = _folder_tree(tmp_path / "d", {"a": 2})
    (root / "b").mkdir()
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DatasetError, match="after excluding unreadable images"):
        load_dataset(root)


def test_csv_labels_without_files(tmp_path):
    root = _kaggle_tree(tmp_path / "k", {"A": 2, "B": 2})
    with open(root / "Training_set.csv", "a", newline="") as handle:
        handle.write("Image_999.jpg,C\n")
    with pytest.raises(DatasetError, match=r"1 of 5 labelled rows have no image file.*line 6: Image_999.jpg \(C\)"):
        load_dataset(root)


@pytest.mark.parametrize("bad", ["../outside.jpg", "train/../../outside.jpg", "/etc/passwd", "C:\\x.jpg"])
def test_csv_rows_outside_the_root_are_rejected(tmp_path, bad):
    root = _kaggle_tree(tmp_path / "k", {"A": 2, "B": 2})
    _photo(1).save(tmp_path / "outside.jpg")
    with open(root / "Training_set.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([bad, "A"])
    with pytest.raises(DatasetError, match=r"line 6: .*(outside the dataset root|absolute path)"):
        load_dataset(root)


def test_symlink_escaping_the_root_is_rejected(tmp_path):
    root = _kaggle_tree(tmp_path / "k", {"A": 2, "B": 2})
    _photo(1).save(tmp_path / "outside.jpg")
    (root / "train" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    with open(root / "Training_set.csv", "a", newline="") as handle:
        handle.write("link.jpg,A\n")
    with pytest.raises(DatasetError, match="link.jpg resolves outside the dataset root"):
        load_dataset(root)
