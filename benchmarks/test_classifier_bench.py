"""End to end over a folder of JPEGs (files -> top-5), per architecture and size, at one
thread and at all cores: torch + torchvision (PIL decode, transforms, eager model, in batches
of 32), torchvision.io + transforms.v2 feeding the same eager model, and plain
``Classifier.predict(folder)`` on each backend (its own batching, decode overlapping
inference). ``extra_info["images"]`` is the folder's size: time / images = time per image."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from butterfly_onnx import Classifier

SIZES = ("224x224", "1920x1280")
THREADS = sorted({1, os.cpu_count() or 1})


def _torch_threads(threads):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return torch, before


def _files(folder):
    return sorted(str(p) for p in folder.glob("*.jpg"))


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("pipeline", ["torchvision", "torchvision.io+v2"])
def test_torch(benchmark, arch, arch_model, bench_folders, pipeline, size, threads):
    torch, before = _torch_threads(threads)
    T = pytest.importorskip("torchvision.transforms")
    v2 = pytest.importorskip("torchvision.transforms.v2")
    io = pytest.importorskip("torchvision.io")
    _, module, contract = arch_model
    spec = contract.preprocess
    files = _files(bench_folders[size])
    if pipeline == "torchvision":
        transform = T.Compose(
            [T.Resize(spec.resize_size), T.CenterCrop(spec.crop_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)]
        )

        def load(path):
            with Image.open(path) as img:
                return transform(img.convert("RGB"))
    else:
        transform = v2.Compose(
            [
                v2.Resize(spec.resize_size, antialias=True),
                v2.CenterCrop(spec.crop_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(spec.mean, spec.std),
            ]
        )

        def load(path):
            return transform(io.decode_image(io.read_file(path), mode=io.ImageReadMode.RGB))

    def run():
        tops = []
        for start in range(0, len(files), 32):
            batch = torch.stack([load(p) for p in files[start : start + 32]])
            with torch.inference_mode():
                tops.append(torch.topk(torch.softmax(module(batch).double(), dim=1), 5).indices)
        return torch.cat(tops)

    benchmark.group = f"predict folder {arch} {size} threads {threads}"
    benchmark.extra_info["images"] = len(files)
    try:
        top = benchmark(run)
    finally:
        torch.set_num_threads(before)
    assert top.shape == (len(files), 5)


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("size", SIZES)
def test_backend_predict(benchmark, arch, arch_model, bench_folders, backend, size, threads):
    clf = Classifier(arch_model[0], backend=backend, threads=threads)
    folder = bench_folders[size]
    benchmark.group = f"predict folder {arch} {size} threads {threads}"
    benchmark.extra_info["images"] = len(_files(folder))
    predictions = benchmark(clf.predict, folder)
    assert len(predictions) == len(_files(folder)) and all(len(p.top_k) == 5 for p in predictions)
