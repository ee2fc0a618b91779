"""Real-photo sample data built at run time from what installed packages ship.

Debian's ``tuxpaint-stamps-default`` holds real photo cut-outs (RGBA PNGs) sorted by
category.  :func:`tuxpaint_photo_dataset` composites them onto a plain background and writes
a class-per-folder dataset (or the Kaggle CSV layout) that ``finetune`` reads.  The stamps are
GPL: they are read from the system at run time and never copied into this repository.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import DatasetError, InvalidArgumentError

__all__ = ["TUXPAINT_STAMPS", "TUXPAINT_CATEGORIES", "tuxpaint_available", "tuxpaint_photo_dataset"]

TUXPAINT_STAMPS = Path("/usr/share/tuxpaint/stamps")

#: class name -> stamp folders (searched recursively, ``cartoon`` folders skipped).
TUXPAINT_CATEGORIES: Mapping[str, Sequence[str]] = {
    "birds": ["animals/birds"],
    "fish": ["animals/fish"],
    "flowers": ["plants/flowers"],
    "fruit": ["food/fruit"],
    "insects": ["animals/insects"],
    "mammals": ["animals/mammals"],
    "vegetables": ["food/vegetables"],
}


def tuxpaint_available(root: str | Path = TUXPAINT_STAMPS) -> bool:
    return (Path(root) / "animals").is_dir()


def _stamp_files(root: Path, folders: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.png")):
            if "cartoon" in path.relative_to(root).parts:
                continue
            files.append(path)
    return files


def tuxpaint_photo_dataset(
    out_dir: str | Path,
    *,
    categories: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    root: str | Path = TUXPAINT_STAMPS,
    size: int = 256,
    per_class: int | None = None,
    layout: str = "folders",
    seed: int = 0,
) -> Path:
    """Write a real-photo classification dataset and return its root.

    Each stamp is alpha-composited onto a light background of a random tint, fitted into a
    ``size`` x ``size`` square and saved as JPEG (quality 95).  ``layout="folders"`` writes
    ``out_dir/<class>/<name>.jpg``; ``layout="kaggle"`` writes ``Training_set.csv``
    (``filename,label``) with the images in ``out_dir/train/``, as Kaggle's butterfly set does.
    """
    from PIL import Image

    root = Path(root)
    if not tuxpaint_available(root):
        raise DatasetError(
            f"{root}: tuxpaint stamps not found; install Debian's tuxpaint-stamps-default "
            "(apt-get install tuxpaint-stamps-default)"
        )
    if categories is None:
        categories = TUXPAINT_CATEGORIES
    elif not isinstance(categories, Mapping):
        unknown = [name for name in categories if name not in TUXPAINT_CATEGORIES]
        if unknown:
            raise InvalidArgumentError(f"unknown categories {unknown}; choose from {sorted(TUXPAINT_CATEGORIES)}")
        categories = {name: TUXPAINT_CATEGORIES[name] for name in categories}
    if layout not in ("folders", "kaggle"):
        raise InvalidArgumentError(f"layout must be 'folders' or 'kaggle', got {layout!r}")
    out = Path(out_dir)
    rng = random.Random(seed)
    rows = []
    for label, folders in categories.items():
        files = _stamp_files(root, folders)
        if not files:
            raise DatasetError(f"{root}: no photo stamps for class {label!r} in {list(folders)}")
        if per_class is not None:
            files = files[:per_class]
        target = out / ("train" if layout == "kaggle" else label)
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            with Image.open(path) as opened:
                stamp = opened.convert("RGBA")
            stamp.thumbnail((size - 16, size - 16), Image.Resampling.LANCZOS)
            tint = tuple(rng.randint(200, 255) for _ in range(3))
            canvas = Image.new("RGB", (size, size), tint)
            offset = ((size - stamp.width) // 2, (size - stamp.height) // 2)
            canvas.paste(stamp, offset, stamp)
            name = f"{label}_{path.stem}.jpg"
            canvas.save(target / name, quality=95)
            rows.append((name, label))
    if layout == "kaggle":
        with open(out / "Training_set.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            writer.writerows(rows)
    return out
