"""Helpers shared by tests/ and benchmarks/: contract models built from torchvision at test
time, and the rule for when the rust backend is skipped."""

from __future__ import annotations

import importlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from butterfly_onnx.contract import ModelContract, PreprocessSpec

BACKENDS = ("python", "rust")
LABELS = tuple(f"species_{i:02d}" for i in range(10))


def native_available() -> tuple[bool, str]:
    try:
        importlib.import_module("butterfly_onnx._native")
    except ImportError as exc:
        return False, str(exc)
    return True, ""


def require_backend(name: str) -> None:
    """Skip (or fail, under BUTTERFLY_ONNX_REQUIRE_RUST) when backend ``name`` is missing."""
    if name != "rust":
        return
    ok, why = native_available()
    if not ok:
        if os.environ.get("BUTTERFLY_ONNX_REQUIRE_RUST"):
            pytest.fail(f"BUTTERFLY_ONNX_REQUIRE_RUST is set but butterfly_onnx._native is missing: {why}")
        pytest.skip(f"butterfly_onnx._native is not built: {why}")


@dataclass
class ContractModel:
    path: Path
    module: Any  # the torch.nn.Module the ONNX file was exported from (eval mode)
    contract: ModelContract


def build_torch_classifier(arch: str = "mobilenet_v3_small", seed: int = 0):
    """A torchvision architecture with a seeded random init and a 10-class head whose
    BatchNorm statistics are calibrated on random images (so activations stay in range and
    the logits are spread, not tied)."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=len(LABELS))
    for layer in model.modules():
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            layer.momentum = None  # cumulative average over the calibration batches
    model.train()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, 160, 160, generator=generator))
    model.eval()
    return model


def export_contract_model(
    module, path: Path, spec: PreprocessSpec, *, dynamic_hw: bool = True, dynamic_batch: bool = True
) -> ModelContract:
    import torch

    from butterfly_onnx.contract import write_contract

    crop = spec.crop_size
    axes = {0: "batch"} if dynamic_batch else {}
    if dynamic_hw:
        axes.update({2: "height", 3: "width"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, on purpose
        torch.onnx.export(
            module,
            (torch.zeros(1, 3, crop, crop),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": axes, "logits": {0: "batch"} if dynamic_batch else {}},
            opset_version=17,
            dynamo=False,
        )
    contract = ModelContract(labels=LABELS, preprocess=spec, provenance={"arch": "test"})
    write_contract(path, contract)
    return contract
