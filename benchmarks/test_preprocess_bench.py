"""Preprocessing time per image (decode + resize + crop + normalise), one thread:
torchvision (PIL + transforms) against the python and rust backends."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx import Classifier

SIZES = ("224x224", "1920x1280")


@pytest.fixture(scope="module")
def torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("size", list(SIZES))
def test_torchvision(benchmark, bench_images, bench_model, torch_threads, size):
    T = pytest.importorskip("torchvision.transforms")
    spec = bench_model[2].preprocess
    transform = T.Compose(
        [T.Resize(spec.resize_size), T.CenterCrop(spec.crop_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    )
    path = bench_images[size]

    def run():
        with Image.open(path) as img:
            return transform(img.convert("RGB"))

    benchmark.group = f"preprocess {size}"
    out = benchmark(run)
    assert out.shape == (3, 224, 224)


@pytest.mark.parametrize("size", list(SIZES))
def test_backend(benchmark, bench_images, bench_model, backend, size):
    clf = Classifier(bench_model[0], backend=backend, threads=1)
    path = bench_images[size]
    benchmark.group = f"preprocess {size}"
    out = benchmark(clf.preprocess, path)
    assert out.shape == (1, 3, 224, 224) and np.isfinite(out).all()


@pytest.mark.parametrize("method", ["pillow", "numpy"])
def test_python_resamplers(benchmark, bench_images, bench_model, method):
    """The python backend's two exact resamplers on the 1920x1280 photo, decoded once."""
    from butterfly_onnx.preprocess import preprocess_image

    with Image.open(bench_images["1920x1280"]) as img:
        rgb = img.convert("RGB")
    spec = bench_model[2].preprocess
    out = np.empty((3, 224, 224), np.float32)
    benchmark.group = "resize+crop+normalize 1920x1280 (decoded)"
    benchmark(preprocess_image, rgb, spec, out, method=method)
