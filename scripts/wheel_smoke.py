"""The installed-package smoke test (scripts/wheel_smoke.sh runs it): does a wheel or sdist
install, torch-free, predict exactly as the development install does?

    python scripts/wheel_smoke.py reference DIR   # development venv (torch): model, photos, logits
    python scripts/wheel_smoke.py check DIR       # fresh venv with only the package installed

``reference`` exports EfficientNet-Lite0 (real ImageNet backbone, the tests' seeded 10-class
head: tests/contract_models.py) to DIR/model.onnx, writes real photos to DIR/images/ (JPEG and
PNG as shipped, plus WebP and TIFF re-encodings so every C library in the module decodes
something), and stores both backends' logits from the development install in DIR/reference.npz
and the versions to pin in DIR/pins.txt. ``check`` predicts the same files on both backends
with the installed package and fails unless the logits are identical bit for bit.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np

BACKENDS = ("python", "rust")
# Pinned in the fresh venv so the python backend's decoding and the shared ONNX Runtime match.
PINNED = ("numpy", "pillow", "onnxruntime")
THREADS = 2
# Photos (tests/reference_images.real_photos keys) and the re-encodings made from them.
PHOTOS = (
    "skimage_rocket.jpg",
    "skimage_chelsea.png",
    "skimage_coffee.png",
    "sklearn_china.jpg",
    "matplotlib_grace_hopper.jpg",
)
REENCODED = {  # name: (source photo, Pillow save arguments)
    "chelsea.webp": ("skimage_chelsea.png", {"quality": 90}),
    "coffee_deflate.tiff": ("skimage_coffee.png", {"compression": "tiff_adobe_deflate"}),
    "rocket_jpeg.tiff": ("skimage_rocket.jpg", {"compression": "jpeg"}),
    "china_lzw.tiff": ("sklearn_china.jpg", {"compression": "tiff_lzw"}),
    "grace_progressive.jpg": ("matplotlib_grace_hopper.jpg", {"quality": 85, "progressive": True}),
}


def images(folder: Path) -> list[Path]:
    return sorted((folder / "images").iterdir())


def all_logits(model: Path, files: list[Path]) -> dict[str, np.ndarray]:
    from butterfly_onnx import Classifier

    return {b: Classifier(model, backend=b, threads=THREADS).logits(files) for b in BACKENDS}


def reference(folder: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root / "tests"))
    from importlib.metadata import version

    from PIL import Image

    from contract_models import MODEL_SPEC, build_torch_classifier, export_contract_model
    from reference_images import real_photos

    if folder.exists():
        shutil.rmtree(folder)
    (folder / "images").mkdir(parents=True)
    photos = real_photos()
    missing = [name for name in PHOTOS if name not in photos]
    if missing:
        sys.exit(f"wheel_smoke: photos not found (scikit-image, scikit-learn, matplotlib installed?): {missing}")
    for name in PHOTOS:
        shutil.copyfile(photos[name], folder / "images" / name)
    for name, (source, kwargs) in REENCODED.items():
        with Image.open(photos[source]) as im:
            im.convert("RGB").save(folder / "images" / name, **kwargs)
    export_contract_model(build_torch_classifier(), folder / "model.onnx", MODEL_SPEC)
    logits = all_logits(folder / "model.onnx", images(folder))
    np.savez(folder / "reference.npz", **logits)
    (folder / "pins.txt").write_text("".join(f"{name}=={version(name)}\n" for name in PINNED))
    print(f"wheel_smoke: reference logits of {len(images(folder))} images written to {folder}")


def check(folder: Path) -> None:
    import butterfly_onnx

    where = Path(butterfly_onnx.__file__).resolve()
    if not where.is_relative_to(Path(sys.prefix).resolve()):
        sys.exit(f"wheel_smoke: butterfly_onnx imported from {where}, not from this venv ({sys.prefix})")
    if importlib.util.find_spec("torch") is not None:
        sys.exit("wheel_smoke: torch is installed here; the smoke test must run torch-free")
    files = images(folder)
    expected = np.load(folder / "reference.npz")
    got = all_logits(folder / "model.onnx", files)
    failed = []
    for backend in BACKENDS:
        ref, out = expected[backend], got[backend]
        if out.dtype != ref.dtype or out.shape != ref.shape or not np.array_equal(out, ref):
            diff = np.abs(out.astype(np.float64) - ref).max() if out.shape == ref.shape else "shape"
            failed.append(f"{backend}: logits differ from the development install's (max abs diff {diff})")
    if "torch" in sys.modules:
        failed.append("torch was imported")
    if failed:
        sys.exit("wheel_smoke: FAILED\n  " + "\n  ".join(failed))
    print(
        f"wheel_smoke: ok: butterfly_onnx {butterfly_onnx.__version__} from {where.parent}, Python "
        f"{sys.version.split()[0]}: {len(files)} images, logits {got['rust'].shape} identical to the "
        f"development install's on both backends"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("reference", "check"))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    (reference if args.mode == "reference" else check)(args.folder)


if __name__ == "__main__":
    main()
