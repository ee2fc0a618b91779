"""End-to-end prediction time per image (decode, preprocess, model, softmax, top-5), one
thread: torch eager against the python and rust backends."""

from __future__ import annotations

import pytest
from PIL import Image

from butterfly_onnx import Classifier

SIZES = ("224x224", "1920x1280")


@pytest.mark.parametrize("size", list(SIZES))
def test_torch_eager(benchmark, bench_images, bench_model, size):
    torch = pytest.importorskip("torch")
    T = pytest.importorskip("torchvision.transforms")
    path, module, contract = bench_model
    spec = contract.preprocess
    transform = T.Compose(
        [T.Resize(spec.resize_size), T.CenterCrop(spec.crop_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)

    def run():
        with Image.open(bench_images[size]) as img:
            batch = transform(img.convert("RGB"))[None]
        with torch.inference_mode():
            probabilities = torch.softmax(module(batch).double(), dim=1)
        return torch.topk(probabilities, 5)

    benchmark.group = f"predict {size}"
    try:
        top = benchmark(run)
    finally:
        torch.set_num_threads(before)
    assert top.indices.shape == (1, 5)


@pytest.mark.parametrize("size", list(SIZES))
def test_backend_predict(benchmark, bench_images, bench_model, backend, size):
    clf = Classifier(bench_model[0], backend=backend, threads=1)
    benchmark.group = f"predict {size}"
    predictions = benchmark(clf.predict, bench_images[size])
    assert len(predictions) == 1 and len(predictions[0].top_k) == 5
