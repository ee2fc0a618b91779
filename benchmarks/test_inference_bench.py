"""Inference time per image on a ready batch (batch 1, 4 and 32), one thread: torch eager
against ONNX Runtime through each backend, per architecture. Both backends run the same ONNX
Runtime library, so they should be equal; the per-image cost at each batch size is what
``model_batch`` (the images per ONNX Runtime run) is chosen from."""

from __future__ import annotations

import numpy as np
import pytest

from butterfly_onnx import Classifier

BATCHES = (1, 4, 32)


def _batch(n: int) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.standard_normal((n, 3, 224, 224), dtype=np.float32)


@pytest.mark.parametrize("batch", BATCHES)
def test_torch_eager(benchmark, arch, arch_model, one_thread, batch):
    torch = pytest.importorskip("torch")
    module = arch_model[1]
    x = torch.from_numpy(_batch(batch))

    def run():
        with torch.inference_mode():
            return module(x)

    benchmark.group = f"inference {arch} batch {batch}"
    benchmark.extra_info["images"] = batch
    assert tuple(benchmark(run).shape) == (batch, 10)


@pytest.mark.parametrize("batch", BATCHES)
def test_backend_run(benchmark, arch, arch_model, backend, batch):
    clf = Classifier(arch_model[0], backend=backend, threads=1)
    x = _batch(batch)
    benchmark.group = f"inference {arch} batch {batch}"
    benchmark.extra_info["images"] = batch
    out = benchmark(clf._backend.run, x)
    assert out.shape == (batch, 10) and np.isfinite(out).all()
