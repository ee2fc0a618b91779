"""The model contract: what an exported ONNX file says about itself.

One JSON document, stored in the ONNX ``metadata_props`` under the key
:data:`METADATA_KEY`, is the only contract between training/export and the two inference
backends.  This module is its single Python definition: the writer (:func:`write_contract`,
used by ``export_onnx`` and by tests) and the reader (:meth:`ModelContract.from_metadata`).
The Rust reader is ``rust/butterfly-onnx/src/contract.rs``; both accept exactly the schema
documented in ``docs/contract.md``.

This module imports neither torch nor onnxruntime (``onnx`` only inside the writer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ContractError

__all__ = [
    "SCHEMA_VERSION",
    "METADATA_KEY",
    "INTERPOLATIONS",
    "RESAMPLE_ORDERS",
    "PreprocessSpec",
    "ModelContract",
    "current_resample_order",
    "write_contract",
]

SCHEMA_VERSION = 1
METADATA_KEY = "butterfly_onnx"

#: Pillow filters reproduced exactly by both backends (torchvision ``InterpolationMode`` names).
INTERPOLATIONS = ("bilinear", "bicubic")

#: Pillow's order of the two resampling passes changed between versions, and the order
#: changes results by 1 on many pixels.  The contract records the rule the model was
#: validated with; both backends implement all of them.
#:  - ``pillow_12_1``: Pillow <= 12.1, horizontal pass first, always.
#:  - ``pillow_12_2``: Pillow 12.2-12.3, horizontal first, except when ``H > 100 * W`` and the
#:    height shrinks: then vertical first.
#:  - ``pillow_13``:   Pillow >= 13.0, vertical first when ``(H - h) > 0`` and
#:    ``(H - h) > 2 * (W - w)``, else horizontal first.
RESAMPLE_ORDERS = ("pillow_12_1", "pillow_12_2", "pillow_13")

#: ImageNet statistics, for callers building a spec by hand.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def current_resample_order(pillow_version: str | None = None) -> str:
    """The :data:`RESAMPLE_ORDERS` rule of the installed (or the given) Pillow version."""
    if pillow_version is None:
        import PIL

        pillow_version = PIL.__version__
    parts = []
    for piece in pillow_version.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    major, minor = (parts + [0, 0])[:2]
    if major >= 13:
        return "pillow_13"
    if major == 12 and minor >= 2:
        return "pillow_12_2"
    return "pillow_12_1"


def _positive_int(value: Any, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ContractError(f"preprocess.{name} must be a positive integer, got {value!r}")
    return value


def _triple(value: Any, name: str, *, positive: bool) -> tuple[float, float, float]:
    # Numbers only: JSON strings or booleans are rejected, as the Rust reader does.
    if isinstance(value, (str, bytes)) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in _iterable(value)
    ):
        raise ContractError(f"preprocess.{name} must be 3 numbers, got {value!r}")
    values = tuple(float(v) for v in value)
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise ContractError(f"preprocess.{name} must be 3 finite numbers, got {value!r}")
    if positive and not all(v > 0 for v in values):
        raise ContractError(f"preprocess.{name} must be > 0, got {value!r}")
    return values  # type: ignore[return-value]


def _iterable(value: Any) -> Any:
    try:
        return iter(value)
    except TypeError:
        raise ContractError(f"expected a list of 3 numbers, got {value!r}") from None


@dataclass(frozen=True)
class PreprocessSpec:
    """torchvision's eval preprocessing, named as in ``transforms._presets.ImageClassification``:
    ``Resize(resize_size, interpolation, max_size)`` on the shorter side, ``CenterCrop(crop_size)``,
    ``ToTensor()``, ``Normalize(mean, std)``; resampled the way Pillow's ``resample_order`` does."""

    resize_size: int
    crop_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"
    max_size: int | None = None
    resample_order: str = field(default_factory=current_resample_order)

    def __post_init__(self) -> None:
        _positive_int(self.resize_size, "resize_size")
        _positive_int(self.crop_size, "crop_size")
        _positive_int(self.max_size, "max_size", optional=True)
        if self.max_size is not None and self.max_size <= self.resize_size:
            raise ContractError(
                f"preprocess.max_size ({self.max_size}) must be greater than resize_size "
                f"({self.resize_size}), as torchvision requires"
            )
        object.__setattr__(self, "mean", _triple(self.mean, "mean", positive=False))
        object.__setattr__(self, "std", _triple(self.std, "std", positive=True))
        if self.interpolation not in INTERPOLATIONS:
            raise ContractError(
                f"preprocess.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}"
            )
        if self.resample_order not in RESAMPLE_ORDERS:
            raise ContractError(
                f"preprocess.resample_order must be one of {RESAMPLE_ORDERS}, got {self.resample_order!r}"
            )

    # -- conversions -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "resize_size": self.resize_size,
            "crop_size": self.crop_size,
            "interpolation": self.interpolation,
            "max_size": self.max_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "resample_order": self.resample_order,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessSpec":
        if not isinstance(data, Mapping):
            raise ContractError(f"preprocess must be an object, got {type(data).__name__}")
        known = {"resize_size", "crop_size", "interpolation", "max_size", "mean", "std", "resample_order"}
        missing = {"resize_size", "crop_size", "mean", "std", "interpolation", "resample_order"} - set(data)
        if missing:
            raise ContractError(f"preprocess is missing {sorted(missing)}")
        unknown = set(data) - known
        if unknown:
            raise ContractError(f"preprocess has unknown fields {sorted(unknown)}")
        return cls(**{k: data[k] for k in known if k in data})

    @classmethod
    def from_transforms(cls, transforms: Any, *, resample_order: str | None = None) -> "PreprocessSpec":
        """A spec from a torchvision preset (``weights.transforms()``) or a ``Compose`` of
        ``Resize`` (int size), ``CenterCrop``, ``ToTensor``/``PILToTensor``+``ConvertImageDtype``
        and ``Normalize``.  Duck-typed: torchvision is not imported here."""
        order = resample_order or current_resample_order()
        if hasattr(transforms, "crop_size") and hasattr(transforms, "resize_size"):
            return cls(
                resize_size=_single(transforms.resize_size, "resize_size"),
                crop_size=_single(transforms.crop_size, "crop_size"),
                mean=tuple(transforms.mean),
                std=tuple(transforms.std),
                interpolation=_interpolation_name(transforms.interpolation),
                max_size=None,
                resample_order=order,
            )
        steps = getattr(transforms, "transforms", None)
        if steps is None:
            raise ContractError(
                f"cannot read a preprocessing spec from {type(transforms).__name__}: pass a "
                "torchvision ImageClassification preset, a Compose, or a PreprocessSpec"
            )
        found: dict[str, Any] = {}
        for step in steps:
            kind = type(step).__name__
            if kind == "Resize":
                found["resize_size"] = _single(step.size, "Resize.size")
                found["interpolation"] = _interpolation_name(step.interpolation)
                found["max_size"] = step.max_size
            elif kind == "CenterCrop":
                size = step.size
                if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] != size[1]:
                    raise ContractError(f"CenterCrop must be square, got {size}")
                found["crop_size"] = _single(size, "CenterCrop.size")
            elif kind == "Normalize":
                found["mean"], found["std"] = tuple(step.mean), tuple(step.std)
            elif kind in ("ToTensor", "PILToTensor", "ConvertImageDtype", "ToImage", "ToDtype"):
                continue
            else:
                raise ContractError(f"unsupported transform in the eval pipeline: {kind}")
        missing = {"resize_size", "crop_size", "mean", "std"} - set(found)
        if missing:
            raise ContractError(f"the transforms lack {sorted(missing)}")
        return cls(resample_order=order, **found)

    def describe(self) -> str:
        return (
            f"Resize({self.resize_size}, {self.interpolation}"
            + (f", max_size={self.max_size}" if self.max_size else "")
            + f", {self.resample_order}) -> CenterCrop({self.crop_size}) -> ToTensor -> "
            f"Normalize(mean={list(self.mean)}, std={list(self.std)})"
        )


def _single(size: Any, name: str) -> int:
    if isinstance(size, (list, tuple)):
        if len(size) != 1 and not (len(size) == 2 and size[0] == size[1] and name.startswith("CenterCrop")):
            if len(size) == 2:
                raise ContractError(f"{name} must be a single int (shorter side), got {list(size)}")
            raise ContractError(f"{name} must be a single int, got {list(size)}")
        size = size[0]
    if isinstance(size, bool) or not isinstance(size, int):
        raise ContractError(f"{name} must be an int, got {size!r}")
    return size


def _interpolation_name(mode: Any) -> str:
    name = str(getattr(mode, "value", mode)).lower()
    if name.startswith("interpolationmode."):
        name = name.split(".", 1)[1]
    if name not in INTERPOLATIONS:
        raise ContractError(f"interpolation {mode!r} is not supported (supported: {INTERPOLATIONS})")
    return name


@dataclass(frozen=True)
class ModelContract:
    """Everything a backend needs to run an exported classifier (schema version 1)."""

    labels: tuple[str, ...]
    preprocess: PreprocessSpec
    input_name: str = "input"
    output_name: str = "logits"
    output_kind: str = "logits"  # "logits" or "probabilities"
    provenance: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise ContractError("labels must not be empty")
        if not all(isinstance(label, str) and label for label in labels):
            raise ContractError("labels must be non-empty strings")
        if len(set(labels)) != len(labels):
            dupes = sorted({label for label in labels if labels.count(label) > 1})
            raise ContractError(f"labels must be unique; repeated: {dupes}")
        object.__setattr__(self, "labels", labels)
        if not isinstance(self.preprocess, PreprocessSpec):
            raise ContractError("preprocess must be a PreprocessSpec")
        for name in ("input_name", "output_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ContractError(f"{name} must be a non-empty string")
        if self.output_kind not in ("logits", "probabilities"):
            raise ContractError(f"output.kind must be 'logits' or 'probabilities', got {self.output_kind!r}")
        if self.schema_version != SCHEMA_VERSION:
            raise ContractError(
                f"unsupported contract schema_version {self.schema_version!r}; this butterfly_onnx "
                f"reads version {SCHEMA_VERSION}"
            )
        try:
            json.dumps(dict(self.provenance))
        except (TypeError, ValueError) as exc:
            raise ContractError(f"provenance must be JSON-serialisable: {exc}") from None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "labels": list(self.labels),
            "preprocess": self.preprocess.to_dict(),
            "input": {"name": self.input_name, "layout": "NCHW", "dtype": "float32"},
            "output": {"name": self.output_name, "kind": self.output_kind},
            "provenance": dict(self.provenance),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True)

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries that carry this contract."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<contract>") -> "ModelContract":
        try:
            if not isinstance(data, Mapping):
                raise ContractError("the contract must be a JSON object")
            version = data.get("schema_version")
            # exactly the integer 1: not 1.0, not true (as the Rust reader)
            if type(version) is not int or version != SCHEMA_VERSION:
                raise ContractError(
                    f"unsupported contract schema_version {version!r} (this butterfly_onnx reads "
                    f"version {SCHEMA_VERSION}); upgrade butterfly_onnx or re-export the model"
                )
            for key in ("labels", "preprocess", "input", "output"):
                if key not in data:
                    raise ContractError(f"the contract is missing {key!r}")
            inp, out = data["input"], data["output"]
            if not isinstance(inp, Mapping) or not isinstance(out, Mapping):
                raise ContractError("input and output must be objects")
            if inp.get("layout", "NCHW") != "NCHW" or inp.get("dtype", "float32") != "float32":
                raise ContractError("input must be NCHW float32")
            labels = data["labels"]
            if not isinstance(labels, list):
                raise ContractError("labels must be a list of strings")
            provenance = data.get("provenance", {})
            if not isinstance(provenance, Mapping):
                raise ContractError("provenance must be an object")
            return cls(
                labels=tuple(labels),
                preprocess=PreprocessSpec.from_dict(data["preprocess"]),
                input_name=inp.get("name"),
                output_name=out.get("name"),
                output_kind=out.get("kind", "logits"),
                provenance=dict(provenance),
                schema_version=version,
            )
        except ContractError as exc:
            raise ContractError(f"{source}: invalid butterfly_onnx contract: {exc}") from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], *, source: str = "<model>") -> "ModelContract":
        """Read the contract from a model's ``metadata_props`` mapping."""
        raw = metadata.get(METADATA_KEY)
        if raw is None:
            raise ContractError(
                f"{source}: the model carries no butterfly_onnx contract (metadata key "
                f"{METADATA_KEY!r}); export it with butterfly_onnx.export_onnx, or pass labels= "
                "and preprocess= explicitly"
            )
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ContractError(f"{source}: the butterfly_onnx contract is not valid JSON: {exc}") from None
        return cls.from_dict(data, source=source)


def write_contract(model: Any, contract: ModelContract, path: str | Path | None = None) -> Any:
    """Store ``contract`` in an ONNX model's ``metadata_props`` (replacing an older one).

    ``model`` is an ``onnx.ModelProto`` or a path to a ``.onnx`` file.  The model's input
    and output names are checked against the contract.  The model is saved to ``path``
    (default: the path it was read from, if any) and the ``ModelProto`` is returned.
    """
    import onnx

    source_path = None
    if isinstance(model, (str, Path)):
        source_path = Path(model)
        model = onnx.load(str(source_path))
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    outputs = [o.name for o in model.graph.output]
    if contract.input_name not in inputs:
        raise ContractError(f"the model has no input {contract.input_name!r} (inputs: {inputs})")
    if contract.output_name not in outputs:
        raise ContractError(f"the model has no output {contract.output_name!r} (outputs: {outputs})")
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in contract.to_metadata().items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    target = Path(path) if path is not None else source_path
    if target is not None:
        onnx.save(model, str(target))
    return model
