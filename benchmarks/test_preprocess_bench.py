"""Preprocessing time per image (decode + resize + crop + normalise), one thread, per size
(224x224 and 1920x1280 JPEGs): torchvision (PIL + transforms, the reference), torchvision.io +
transforms.v2 (a faster, not PIL-exact, alternative users pick), and the python and rust
backends (bit-exact with the reference; checked here too, so a fast wrong answer cannot win)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx import Classifier

SIZES = ("224x224", "1920x1280")


def _reference(spec, path):
    T = pytest.importorskip("torchvision.transforms")
    transform = T.Compose(
        [T.Resize(spec.resize_size), T.CenterCrop(spec.crop_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    )

    def run():
        with Image.open(path) as img:
            return transform(img.convert("RGB"))

    return run


@pytest.mark.parametrize("size", list(SIZES))
def test_torchvision(benchmark, bench_images, bench_model, one_thread, size):
    spec = bench_model[2].preprocess
    benchmark.group = f"preprocess {size}"
    out = benchmark(_reference(spec, bench_images[size]))
    assert out.shape == (3, 224, 224)


@pytest.mark.parametrize("size", list(SIZES))
def test_torchvision_io_v2(benchmark, bench_images, bench_model, one_thread, size):
    """torchvision.io.decode_jpeg + transforms.v2 on uint8 tensors (antialiased bilinear):
    what users pick for speed; close to, not equal to, the PIL reference (max error shown)."""
    torch = pytest.importorskip("torch")
    io = pytest.importorskip("torchvision.io")
    v2 = pytest.importorskip("torchvision.transforms.v2")
    spec = bench_model[2].preprocess
    transform = v2.Compose(
        [
            v2.Resize(spec.resize_size, antialias=True),
            v2.CenterCrop(spec.crop_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(spec.mean, spec.std),
        ]
    )
    path = str(bench_images[size])

    def run():
        return transform(io.decode_image(io.read_file(path), mode=io.ImageReadMode.RGB))

    benchmark.group = f"preprocess {size}"
    out = benchmark(run)
    assert out.shape == (3, 224, 224)
    benchmark.extra_info["max_abs_diff_vs_pil"] = float((out - _reference(spec, path)()).abs().max())


@pytest.mark.parametrize("size", list(SIZES))
def test_backend(benchmark, bench_images, bench_model, one_thread, backend, size):
    clf = Classifier(bench_model[0], backend=backend, threads=1)
    path = bench_images[size]
    benchmark.group = f"preprocess {size}"
    out = benchmark(clf.preprocess, path)
    want = _reference(bench_model[2].preprocess, path)().numpy()
    assert out.shape == (1, 3, 224, 224) and np.abs(out[0] - want).max() == 0.0


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
