"""Image datasets on disk, torch-free: the readers training, ``val`` and ``predict`` share.

Layouts:
- the Kaggle CSV layout: a CSV with a filename and a label column (names configurable) and the
  images in a folder beside it; the unzipped Kaggle folder itself (``Training_set.csv`` and
  ``train/`` inside) or the CSV path (:func:`load_dataset`);
- a class-per-folder root (``root/<class>/<image>``, as torchvision's ``ImageFolder``);
- an explicit list of ``(path, label)`` pairs;
- an unlabelled list of images, Kaggle's ``Testing_set.csv`` (:func:`read_image_list`,
  :func:`load_unlabelled`): the images are in the CSV's folder's ``test/`` when that folder
  exists, else next to the CSV.

Safety: no sample leaves the dataset root, through ``..``, an absolute path or a symlink, in
any layout; symlinked folders are followed once (a symlink loop adds nothing); every bad CSV
row is a DatasetError naming the CSV and the line.  Image files are those with an extension
from ``data/image_extensions.txt`` (the one list, shared with inference and the Rust CLI).
Images are read exactly as torchvision's loaders do: ``PIL.Image.open(path).convert("RGB")``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from .errors import DatasetError
from .images import IMAGE_EXTENSIONS as _EXTENSIONS

__all__ = [
    "IMAGE_EXTENSIONS",
    "Dataset",
    "HealthReport",
    "load_dataset",
    "read_labelled",
    "load_unlabelled",
    "health_report",
    "split_dataset",
    "load_rgb",
    "ListedImage",
    "read_image_list",
    "unlabelled_image_dir",
    "KAGGLE_TRAIN_CSV",
    "KAGGLE_TEST_CSV",
]

#: Image file extensions (with the dot), from ``data/image_extensions.txt``.
IMAGE_EXTENSIONS = tuple(sorted(_EXTENSIONS))
KAGGLE_TRAIN_CSV = "Training_set.csv"
KAGGLE_TEST_CSV = "Testing_set.csv"


def load_rgb(path: str | os.PathLike) -> Any:
    """torchvision's ``pil_loader``: ``Image.open(path).convert("RGB")`` (no EXIF rotation)."""
    from PIL import Image

    with open(path, "rb") as handle:
        image = Image.open(handle)
        return image.convert("RGB")


@dataclass
class Dataset:
    """Labelled samples: ``samples[i] = (image path, class index into classes)``."""

    samples: list[tuple[Path, int]]
    classes: list[str]
    source: str
    root: Path | None = None
    health: HealthReport | None = None
    #: Files in a class-per-folder tree left out because their extension is not an image
    #: extension (``data/image_extensions.txt``); hidden files are not listed.
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> dict[str, int]:
        counts = Counter(index for _, index in self.samples)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classes)}


# --- the health report ------------------------------------------------------------------
@dataclass
class HealthReport:
    """What a dataset looks like before training; ``str()`` prints it, ``to_dict()`` gives JSON."""

    source: str
    num_images: int
    class_counts: dict[str, int]
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): excluded
    duplicates: list[list[str]] = field(default_factory=list)  # groups of identical files
    conflicting_duplicates: list[list[str]] = field(default_factory=list)  # same bytes, different labels
    modes: dict[str, int] = field(default_factory=dict)  # Pillow mode -> count (before .convert("RGB"))
    formats: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, Any] = field(default_factory=dict)  # width/height min, median, max; distinct
    dropped_classes: list[str] = field(default_factory=list)  # classes left with no readable image
    skipped: list[str] = field(default_factory=list)  # files with no image extension: not read

    @property
    def imbalance(self) -> float:
        """Largest class count over the smallest (1.0 = balanced)."""
        counts = [c for c in self.class_counts.values() if c > 0]
        return max(counts) / min(counts) if counts else float("nan")

    @property
    def non_rgb(self) -> dict[str, int]:
        return {mode: n for mode, n in self.modes.items() if mode != "RGB"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "num_images": self.num_images,
            "num_classes": len(self.class_counts),
            "class_counts": dict(self.class_counts),
            "imbalance": self.imbalance,
            "corrupt": [{"path": p, "reason": r} for p, r in self.corrupt],
            "duplicates": self.duplicates,
            "conflicting_duplicates": self.conflicting_duplicates,
            "modes": dict(self.modes),
            "non_rgb": self.non_rgb,
            "formats": dict(self.formats),
            "sizes": dict(self.sizes),
            "dropped_classes": list(self.dropped_classes),
            "skipped": list(self.skipped),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    def __str__(self) -> str:
        counts = self.class_counts
        lines = [
            f"Dataset health: {self.source}",
            f"  images: {self.num_images} usable in {len(counts)} classes "
            f"(min {min(counts.values(), default=0)}, max {max(counts.values(), default=0)}, "
            f"imbalance x{self.imbalance:.2f})",
        ]
        small = sorted(counts.items(), key=lambda kv: kv[1])[:5]
        lines.append("  smallest classes: " + ", ".join(f"{k}={v}" for k, v in small))
        if self.sizes:
            s = self.sizes
            lines.append(
                f"  sizes: width {s['width_min']}..{s['width_max']} (median {s['width_median']}), "
                f"height {s['height_min']}..{s['height_max']} (median {s['height_median']}), "
                f"{s['distinct']} distinct"
            )
        lines.append("  modes: " + ", ".join(f"{m}={n}" for m, n in sorted(self.modes.items())))
        if self.non_rgb:
            lines.append(f"  non-RGB images (converted with .convert('RGB')): {sum(self.non_rgb.values())}")
        if self.corrupt:
            lines.append(f"  unreadable/corrupt (excluded): {len(self.corrupt)}")
            lines += [f"    {p}: {r}" for p, r in self.corrupt[:20]]
            if len(self.corrupt) > 20:
                lines.append(f"    ... and {len(self.corrupt) - 20} more")
        if self.duplicates:
            lines.append(f"  duplicate groups (identical bytes): {len(self.duplicates)}")
            lines += [f"    {' == '.join(group)}" for group in self.duplicates[:10]]
        if self.conflicting_duplicates:
            lines.append(f"  identical files with DIFFERENT labels: {len(self.conflicting_duplicates)}")
        if self.dropped_classes:
            lines.append(f"  classes dropped (no readable image): {self.dropped_classes}")
        if self.skipped:
            lines.append(
                f"  not image files (extension not in {', '.join(IMAGE_EXTENSIONS)}), skipped: {len(self.skipped)}"
            )
            lines += [f"    {p}" for p in self.skipped[:10]]
            if len(self.skipped) > 10:
                lines.append(f"    ... and {len(self.skipped) - 10} more")
        return "\n".join(lines)


def _inspect(path: Path) -> dict[str, Any]:
    from PIL import Image

    try:
        data = path.read_bytes()
    except OSError as exc:
        return {"error": f"unreadable: {exc.strerror or exc}"}
    if not data:
        return {"error": "empty file"}
    try:
        import io

        buffer = io.BytesIO(data)
        with Image.open(buffer) as image:
            mode, size, fmt = image.mode, image.size, image.format
            image.convert("RGB")  # decodes every pixel: truncated files fail here, as in training
    except Exception as exc:  # Pillow raises many types for bad data
        # Pillow names the buffer ("cannot identify image file <_io.BytesIO ...>"): name the file.
        return {"error": f"{type(exc).__name__}: {str(exc).replace(repr(buffer), str(path))}"}
    return {"mode": mode, "size": size, "format": fmt, "sha1": hashlib.sha1(data).hexdigest()}


def health_report(dataset: Dataset, *, workers: int | None = None) -> tuple[HealthReport, Dataset]:
    """Inspect every image (decoding it fully) and return the report and the dataset with
    unreadable/corrupt files excluded.  Raises DatasetError if fewer than 2 classes remain."""
    workers = workers or min(8, os.cpu_count() or 1)
    paths = [path for path, _ in dataset.samples]
    with ThreadPoolExecutor(max_workers=workers) as pool:  # Pillow decodes without the GIL
        infos = list(pool.map(_inspect, paths))
    kept: list[tuple[Path, int]] = []
    corrupt: list[tuple[str, str]] = []
    by_hash: dict[str, list[tuple[str, int]]] = defaultdict(list)
    modes: Counter[str] = Counter()
    formats: Counter[str] = Counter()
    widths, heights, distinct = [], [], set()
    for (path, label), info in zip(dataset.samples, infos, strict=False):
        if "error" in info:
            corrupt.append((str(path), info["error"]))
            continue
        kept.append((path, label))
        modes[info["mode"]] += 1
        formats[str(info["format"])] += 1
        widths.append(info["size"][0])
        heights.append(info["size"][1])
        distinct.add(info["size"])
        by_hash[info["sha1"]].append((str(path), label))
    duplicates = [[p for p, _ in group] for group in by_hash.values() if len(group) > 1]
    conflicting = [[p for p, _ in group] for group in by_hash.values() if len({lab for _, lab in group}) > 1]
    present = {label for _, label in kept}
    dropped = [name for i, name in enumerate(dataset.classes) if i not in present]
    # Re-index after dropping classes that lost every image.
    new_classes = [name for i, name in enumerate(dataset.classes) if i in present]
    remap = {dataset.classes.index(name): j for j, name in enumerate(new_classes)}
    cleaned = Dataset(
        [(p, remap[lab]) for p, lab in kept], new_classes, dataset.source, dataset.root, skipped=list(dataset.skipped)
    )
    sizes: dict[str, Any] = {}
    if widths:
        sizes = {
            "width_min": min(widths),
            "width_median": statistics.median(widths),
            "width_max": max(widths),
            "height_min": min(heights),
            "height_median": statistics.median(heights),
            "height_max": max(heights),
            "distinct": len(distinct),
        }
    report = HealthReport(
        source=dataset.source,
        num_images=len(kept),
        class_counts=cleaned.class_counts(),
        corrupt=corrupt,
        duplicates=duplicates,
        conflicting_duplicates=conflicting,
        modes=dict(modes),
        formats=dict(formats),
        sizes=sizes,
        dropped_classes=dropped,
        skipped=list(dataset.skipped),
    )
    cleaned.health = report
    _check_classes(cleaned, after="after excluding unreadable images")
    return report, cleaned


# --- layouts ----------------------------------------------------------------------------
def _check_classes(dataset: Dataset, *, after: str = "") -> None:
    where = f" {after}" if after else ""
    if not dataset.samples:
        raise DatasetError(f"{dataset.source}: the dataset is empty{where} (no usable images)")
    counts = dataset.class_counts()
    nonempty = [name for name, n in counts.items() if n > 0]
    if len(nonempty) < 2:
        raise DatasetError(
            f"{dataset.source}: a classifier needs at least 2 classes{where}; found only "
            f"{nonempty!r} ({len(dataset.samples)} images)"
        )


def _sorted_labels(labels: Iterable[Any]) -> list[str]:
    unique = set(labels)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in unique):
        return [str(v) for v in sorted(unique)]
    return sorted(str(v) for v in unique)


def _from_pairs(pairs: Sequence[tuple[Any, Any]], source: str, root: Path | None) -> Dataset:
    classes = _sorted_labels(label for _, label in pairs)
    index = {name: i for i, name in enumerate(classes)}
    samples = [(Path(path), index[str(label)]) for path, label in pairs]
    return Dataset(samples, classes, source, root)


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, symlinks resolved, is ``root`` (already resolved) or below it."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError, ValueError):  # a symlink loop, an unreadable link
        return False


def _folder_dataset(root: Path) -> Dataset:
    """``root/<class>/**/<image>``.  Symlinked folders and files are followed only while they
    stay inside the root; a folder reached twice (a symlink loop, two links to one folder) is
    walked once."""
    real_root = root.resolve()
    try:
        entries = sorted(root.iterdir())
    except OSError as exc:
        raise DatasetError(f"{root}: cannot list the folder: {exc.strerror or exc}") from None
    classes = [d.name for d in entries if not d.name.startswith(".") and d.is_dir() and _inside(d, real_root)]
    pairs: list[tuple[Path, str]] = []
    skipped: list[str] = []
    seen_dirs: set[Path] = set()
    for name in classes:
        for dirpath, dirnames, filenames in os.walk(root / name, followlinks=True):
            real = Path(dirpath).resolve()
            if real in seen_dirs:
                dirnames[:] = []
                continue
            seen_dirs.add(real)
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not d.startswith(".")
                and _inside(Path(dirpath) / d, real_root)
                and (Path(dirpath) / d).resolve() not in seen_dirs
            )
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                if filename.startswith(".") or not _inside(path, real_root) or not path.is_file():
                    continue
                if filename.lower().endswith(IMAGE_EXTENSIONS):
                    pairs.append((path, name))
                else:
                    skipped.append(str(path))
    if not pairs:
        raise DatasetError(
            f"{root}: the dataset is empty: no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders "
            f"(expected {root}/<class>/<image>, or a Kaggle folder with {KAGGLE_TRAIN_CSV})"
        )
    dataset = _from_pairs(pairs, str(root), root)
    dataset.skipped = skipped
    return dataset


def _safe_relative(value: str, csv_path: Path, line: int) -> Path:
    """A CSV filename must stay inside the dataset root: no absolute paths, no '..', no NUL
    or other control characters."""
    text = value.strip()
    posix = text.replace("\\", "/")
    if not text:
        raise DatasetError(f"{csv_path}, line {line}: empty filename")
    if any(ord(ch) < 32 for ch in text):
        raise DatasetError(f"{csv_path}, line {line}: filename {value!r} contains a control character")
    if os.path.isabs(text) or posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise DatasetError(
            f"{csv_path}, line {line}: absolute path {value!r} is not allowed (paths are relative to the dataset root)"
        )
    if ".." in posix.split("/"):
        raise DatasetError(f"{csv_path}, line {line}: path {value!r} points outside the dataset root ('..')")
    return Path(posix)


def _read_csv(csv_path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """The rows of a UTF-8 CSV as ``(line number, row)``; DatasetError naming the CSV (and the
    line, where the fault is in one) for anything unreadable."""
    try:
        data = csv_path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot read the CSV: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{csv_path}, line {line}: not valid UTF-8 ({exc.reason})") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise DatasetError(f"{csv_path}, line {line}: a NUL byte (not a text CSV)")
    reader = csv.DictReader(text.splitlines(keepends=True))
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetError(f"{csv_path}, line 1: missing column(s) {missing}; the header is {header}")
        for row in reader:
            if None in row:  # more fields than the header
                raise DatasetError(
                    f"{csv_path}, line {reader.line_num}: {len(header) + len(row[None])} fields, the header has {len(header)}"
                )
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}, line {reader.line_num}: not a valid CSV: {exc}") from None
    return rows


def _image_dir_for(csv_path: Path, names: list[Path], image_dir: str | os.PathLike | None) -> Path:
    """The folder the CSV's filenames are relative to: explicit, or the candidate beside the
    CSV in which most of the first rows exist (Kaggle: Training_set.csv -> train/)."""
    if image_dir is not None:
        folder = Path(image_dir)
        if not folder.is_absolute():
            folder = csv_path.parent / folder
        if not folder.is_dir():
            raise DatasetError(f"{csv_path}: image folder {folder} does not exist")
        return folder
    parent = csv_path.parent
    stem = csv_path.stem.lower()
    candidates = []
    if stem.startswith("train"):
        candidates.append(parent / "train")
    if stem.startswith("test"):
        candidates.append(parent / "test")
    candidates += [parent / csv_path.stem, parent / "images", parent]
    probe = names[:50]
    best, best_hits = parent, -1
    for folder in candidates:
        if not folder.is_dir():
            continue
        hits = sum((folder / name).is_file() for name in probe)
        if hits > best_hits:
            best, best_hits = folder, hits
    return best


def _csv_dataset(
    csv_path: Path, filename_column: str, label_column: str, image_dir: str | os.PathLike | None
) -> Dataset:
    rows = _read_csv(csv_path, [filename_column, label_column])
    if not rows:
        raise DatasetError(f"{csv_path}: the dataset is empty (no rows after the header)")
    names = [_safe_relative(row[filename_column] or "", csv_path, line) for line, row in rows]
    folder = _image_dir_for(csv_path, names, image_dir)
    root = folder.resolve()
    pairs, missing = [], []
    lines_of: dict[str, list[int]] = defaultdict(list)
    for (line, row), name in zip(rows, names, strict=False):
        label = (row[label_column] or "").strip()
        if not label:
            raise DatasetError(f"{csv_path}, line {line}: empty label for {name}")
        path = folder / name
        # A symlink may still lead outside the root: check the resolved path too.
        if not _inside(path, root):
            raise DatasetError(f"{csv_path}, line {line}: {name} resolves outside the dataset root {root}")
        if not path.is_file():
            missing.append((line, str(name), label))
            continue
        pairs.append((path, label))
        lines_of[_file_key(path)].append(line)
    if missing:
        shown = "; ".join(f"line {ln}: {n} ({lab})" for ln, n, lab in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DatasetError(
            f"{csv_path}: {len(missing)} of {len(rows)} labelled rows have no image file in {folder}: {shown}{more}"
        )
    _refuse_duplicates(lines_of, f"{csv_path}: ", "lines")
    return _from_pairs(pairs, str(csv_path), folder)


def _file_key(path: Path) -> str:
    """What makes two listed paths one file: the resolved path (``a.jpg``, ``./a.jpg`` and a
    symlink to it are the same image)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # a symlink loop: its own name then
        return str(path.absolute())


def _refuse_duplicates(lines_of: dict[str, list[int]], where: str, unit: str) -> None:
    """DatasetError naming every file listed more than once and where (lines of a CSV, items
    of a list): a file twice would be counted twice, and could land on both sides of the
    train/validation split."""
    repeated = [(key, found) for key, found in lines_of.items() if len(found) > 1]
    if repeated:
        shown = "; ".join(f"{key} ({unit} {', '.join(map(str, found))})" for key, found in repeated[:10])
        more = f" and {len(repeated) - 10} more" if len(repeated) > 10 else ""
        raise DatasetError(f"{where}{len(repeated)} file(s) listed more than once: {shown}{more}; list each image once")


def read_labelled(
    data: Any,
    *,
    filename_column: str = "filename",
    label_column: str = "label",
    image_dir: str | os.PathLike | None = None,
) -> Dataset:
    """The labelled samples of ``data`` in any supported layout (see the module docstring),
    without decoding any image and without :func:`load_dataset`'s training checks (one class
    is fine: ``val`` scores subsets).  DatasetError for a missing dataset, a bad CSV row, files
    missing or outside the root."""
    if isinstance(data, Dataset):
        dataset = data
    elif isinstance(data, (list, tuple)):
        pairs = []
        items_of: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(data):
            if not (isinstance(item, (list, tuple)) and len(item) == 2):
                raise DatasetError(f"explicit dataset item {i} must be a (path, label) pair, got {item!r}")
            path, label = item
            if not Path(path).is_file():
                raise DatasetError(f"explicit dataset item {i}: image file not found: {path} (label {label!r})")
            pairs.append((Path(path), label))
            items_of[_file_key(Path(path))].append(i)
        if not pairs:
            raise DatasetError("explicit dataset: the list of (path, label) pairs is empty")
        _refuse_duplicates(items_of, "explicit dataset: ", "items")
        dataset = _from_pairs(pairs, f"<{len(pairs)} (path, label) pairs>", None)
    elif isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise DatasetError(f"dataset not found: {path}")
        if path.is_file():
            if path.suffix.lower() != ".csv":
                raise DatasetError(f"{path}: expected a CSV file or a folder")
            dataset = _csv_dataset(path, filename_column, label_column, image_dir)
        elif (path / KAGGLE_TRAIN_CSV).is_file():
            dataset = _csv_dataset(path / KAGGLE_TRAIN_CSV, filename_column, label_column, image_dir)
        else:
            dataset = _folder_dataset(path)
    else:
        raise DatasetError(
            f"unsupported dataset {type(data).__name__}: pass a folder, a CSV path or (path, label) pairs"
        )
    return dataset


def load_dataset(
    data: Any,
    *,
    filename_column: str = "filename",
    label_column: str = "label",
    image_dir: str | os.PathLike | None = None,
    check: bool = True,
    verbose: bool = False,
) -> Dataset:
    """Load a labelled dataset from any supported layout (see the module docstring).

    With ``check=True`` (default) every image is decoded once: the health report is attached
    as ``dataset.health`` and unreadable/corrupt files are excluded (listed in the report, not
    fatal).  Raises DatasetError for an empty dataset, a single class, CSV rows whose files
    are missing or that point outside the root."""
    dataset = read_labelled(data, filename_column=filename_column, label_column=label_column, image_dir=image_dir)
    _check_classes(dataset)
    if check:
        report, dataset = health_report(dataset)
        if verbose:
            print(report)
    return dataset


class ListedImage(NamedTuple):
    """One row of an unlabelled image list: its CSV ``line``, the ``filename`` as written, and
    the ``path`` it names (which may not exist: the caller decides what a missing file means)."""

    line: int
    filename: str
    path: Path


def unlabelled_image_dir(csv_path: Path) -> Path:
    """Where an unlabelled CSV's images are: ``<csv folder>/test/`` when that folder exists,
    else the CSV's own folder (Kaggle's ``Testing_set.csv`` + ``test/``; the Rust CLI follows
    the same rule)."""
    test = csv_path.parent / "test"
    return test if test.is_dir() else csv_path.parent


def read_image_list(
    csv_path: str | os.PathLike, *, filename_column: str = "filename", image_dir: str | os.PathLike | None = None
) -> list[ListedImage]:
    """The rows of an unlabelled CSV (Kaggle's ``Testing_set.csv``), in order: DatasetError
    for an unreadable CSV, a missing ``filename`` column, no rows, or a row whose filename is
    empty, absolute, uses '..', holds a control character or resolves (symlinks followed)
    outside the image folder.  Missing files are listed, not refused."""
    path = Path(csv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such CSV file")
    rows = _read_csv(path, [filename_column])
    if not rows:
        raise DatasetError(f"{path}: no rows after the header")
    if image_dir is None:
        folder = unlabelled_image_dir(path)
    else:
        folder = Path(image_dir) if Path(image_dir).is_absolute() else path.parent / image_dir
        if not folder.is_dir():
            raise DatasetError(f"{path}: image folder {folder} does not exist")
    root = folder.resolve()
    listed = []
    for line, row in rows:
        value = row[filename_column] or ""
        name = _safe_relative(value, path, line)
        image = folder / name
        if not _inside(image, root):
            raise DatasetError(f"{path}, line {line}: {name} resolves outside the image folder {root}")
        listed.append(ListedImage(line, value.strip(), image))
    return listed


def load_unlabelled(
    data: str | os.PathLike, *, filename_column: str = "filename", image_dir: str | os.PathLike | None = None
) -> list[Path]:
    """Image paths listed by an unlabelled CSV (Kaggle's ``Testing_set.csv`` -> ``test/``), or
    the folder holding ``Testing_set.csv`` (see :func:`read_image_list`).  Missing files raise
    DatasetError naming their lines."""
    path = Path(data)
    if path.is_dir():
        path = path / KAGGLE_TEST_CSV
    if not path.is_file():
        raise DatasetError(f"unlabelled CSV not found: {path}")
    listed = read_image_list(path, filename_column=filename_column, image_dir=image_dir)
    missing = [item for item in listed if not item.path.is_file()]
    if missing:
        shown = "; ".join(f"line {item.line}: {item.filename}" for item in missing[:10])
        raise DatasetError(f"{path}: {len(missing)} listed images are missing: {shown}")
    return [item.path for item in listed]


# --- the split --------------------------------------------------------------------------
def split_dataset(
    samples: Sequence[tuple[Path, int]], val_fraction: float, *, seed: int = 0
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """Stratified, seeded train/val split of the samples (no files are copied).

    Each class puts ``round(n * val_fraction)`` images in validation, at least 1 when it has
    2 or more images and at most ``n - 1``.  Same seed and samples -> same split.  A file
    listed more than once (its resolved path; under any labels) is one unit that goes wholly
    to one side, so no image is ever in both train and validation (it counts in the class of
    its first listing)."""
    if not 0.0 < val_fraction < 1.0:
        raise DatasetError(f"val_fraction must be between 0 and 1, got {val_fraction!r}")
    groups: dict[str, list[tuple[Path, int]]] = {}
    for sample in samples:
        groups.setdefault(_file_key(Path(sample[0])), []).append(sample)
    by_class: dict[int, list[list[tuple[Path, int]]]] = defaultdict(list)
    for group in groups.values():
        by_class[group[0][1]].append(group)
    rng = random.Random(seed)
    train: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    for label in sorted(by_class):
        units = sorted(by_class[label], key=lambda g: str(g[0][0]))
        rng.shuffle(units)
        n = len(units)
        n_val = min(max(round(n * val_fraction), 1 if n >= 2 else 0), n - 1)
        val += [sample for unit in units[:n_val] for sample in unit]
        train += [sample for unit in units[n_val:] for sample in unit]
    if not val:
        raise DatasetError("the validation split is empty: every class has a single image")
    train.sort(key=lambda s: (s[1], str(s[0])))
    val.sort(key=lambda s: (s[1], str(s[0])))
    return train, val
