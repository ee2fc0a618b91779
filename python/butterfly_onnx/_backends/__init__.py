"""Inference backends: ``python`` (onnxruntime + Pillow + NumPy) and ``rust`` (the native
module).  Each is ``class Backend`` in ``_backends/<name>.py`` with the same protocol (see
``docs/inference.md``); this module picks one and holds the contract resolution rules both
follow."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Mapping, Sequence

from ..contract import METADATA_KEY, ModelContract, PreprocessSpec
from ..errors import BackendUnavailableError, ContractError, InvalidModelError

__all__ = ["BACKENDS", "load_backend", "resolve_contract"]

BACKENDS = ("python", "rust")


def load_backend(name: str) -> type:
    """The ``Backend`` class of backend ``name`` (its module is imported on first use)."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    try:
        module = importlib.import_module(f".{name}", __name__)
    except BackendUnavailableError:
        raise
    except ImportError as exc:
        raise BackendUnavailableError(f"the {name} backend cannot be loaded: {exc}") from exc
    return module.Backend


def resolve_contract(
    metadata: Mapping[str, str],
    *,
    labels: Sequence[str] | None,
    preprocess: PreprocessSpec | None,
    inputs: Sequence[tuple[str, Sequence[Any]]],
    outputs: Sequence[tuple[str, Sequence[Any]]],
    source: str,
) -> ModelContract:
    """The effective contract of a model (the same rules in both backends).

    ``inputs``/``outputs`` are the model's ``(name, shape)`` pairs, a shape entry being an int
    (static) or anything else (dynamic).  The model's own contract is read from ``metadata``;
    explicit ``labels`` / ``preprocess`` replace its fields.  With both given, a missing or
    unreadable contract is not needed (foreign ONNX models); otherwise it is a ContractError.
    Then the names, the NCHW input and the class count are checked against the graph.
    """
    explicit = labels is not None and preprocess is not None
    try:
        contract: ModelContract | None = ModelContract.from_metadata(metadata, source=source)
    except ContractError:
        if not explicit:
            raise
        contract = None

    try:
        if contract is None:
            if len(inputs) != 1 or len(outputs) != 1:
                raise InvalidModelError(
                    f"{source}: without a contract the model must have exactly one input and one "
                    f"output, it has inputs {[n for n, _ in inputs]} and outputs {[n for n, _ in outputs]}"
                )
            contract = ModelContract(
                labels=tuple(labels), preprocess=preprocess, input_name=inputs[0][0], output_name=outputs[0][0]
            )
        else:
            changes: dict[str, Any] = {}
            if labels is not None:
                changes["labels"] = tuple(labels)
            if preprocess is not None:
                changes["preprocess"] = preprocess
            if changes:
                contract = dataclasses.replace(contract, **changes)
    except ContractError as exc:
        raise ContractError(f"{source}: {exc}") from None

    input_shapes = dict(inputs)
    output_shapes = dict(outputs)
    if contract.input_name not in input_shapes:
        raise ContractError(
            f"{source}: the contract names input {contract.input_name!r}, the model has {list(input_shapes)}"
        )
    if contract.output_name not in output_shapes:
        raise ContractError(
            f"{source}: the contract names output {contract.output_name!r}, the model has {list(output_shapes)}"
        )
    shape = list(input_shapes[contract.input_name])
    crop = contract.preprocess.crop_size
    if len(shape) != 4:
        raise InvalidModelError(f"{source}: input {contract.input_name!r} must be NCHW (rank 4), got {shape}")
    for axis, want in ((1, 3), (2, crop), (3, crop)):
        if isinstance(shape[axis], int) and shape[axis] != want:
            raise ContractError(
                f"{source}: input {contract.input_name!r} has shape {shape}, but the preprocessing "
                f"produces (N, 3, {crop}, {crop})"
            )
    out_shape = list(output_shapes[contract.output_name])
    if len(out_shape) != 2:
        raise InvalidModelError(
            f"{source}: output {contract.output_name!r} must be (N, num_classes), got {out_shape}"
        )
    if isinstance(out_shape[1], int) and out_shape[1] != contract.num_classes:
        raise ContractError(
            f"{source}: {contract.num_classes} labels, but output {contract.output_name!r} has "
            f"{out_shape[1]} classes"
        )
    return contract


def metadata_has_contract(metadata: Mapping[str, str]) -> bool:
    return METADATA_KEY in metadata
