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

import dataclasses
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ContractError, InvalidModelError

__all__ = [
    "SCHEMA_VERSION",
    "METADATA_KEY",
    "INTERPOLATIONS",
    "RESAMPLE_ORDERS",
    "MAX_SIZE",
    "MEAN_RANGE",
    "STD_RANGE",
    "MAX_DEPTH",
    "MAX_DOCUMENT_BYTES",
    "PreprocessSpec",
    "ModelContract",
    "check_output",
    "current_resample_order",
    "resolve_contract",
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
#: Which Pillow version has which rule is data: ``data/resample_orders.json``.
RESAMPLE_ORDERS = ("pillow_12_1", "pillow_12_2", "pillow_13")

# -- limits (the Rust reader has the same constants; the shared fixtures pin them) ----------
#: ``resize_size``, ``crop_size`` and ``max_size`` are integers in ``1..=MAX_SIZE``: a crop of
#: 8192 is already 805 MB of float32 per image.
MAX_SIZE = 8192
#: Each ``mean`` entry lies in this closed range and each ``std`` entry in ``STD_RANGE``, so
#: ``(pixel - mean) / std`` stays within +-1e6 for pixels in [0, 1]: finite in float32, never
#: inf or NaN in the model input.
MEAN_RANGE = (-1000.0, 1000.0)
STD_RANGE = (1e-3, 1000.0)
#: The contract JSON nests at most this many arrays/objects (the top-level object counts as 1).
MAX_DEPTH = 64
#: The contract JSON is at most this many bytes of UTF-8.
MAX_DOCUMENT_BYTES = 1 << 20

#: ImageNet statistics, for callers building a spec by hand.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE_TABLE = Path(__file__).with_name("data") / "resample_orders.json"


def _leading_int(piece: str) -> int:
    digits = ""
    for ch in piece:
        if not ch.isascii() or not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else 0


def _resample_table() -> list[tuple[tuple[int, int], str]]:
    data = json.loads(_RESAMPLE_TABLE.read_text(encoding="utf-8"))
    return [((int(e["from"][0]), int(e["from"][1])), str(e["order"])) for e in data["orders"]]


def current_resample_order(pillow_version: str | None = None) -> str:
    """The :data:`RESAMPLE_ORDERS` rule of the installed (or the given) Pillow version, from
    ``data/resample_orders.json`` (the table the Rust tests read too)."""
    if pillow_version is None:
        import PIL

        pillow_version = PIL.__version__
    pieces = pillow_version.split(".")
    version = (_leading_int(pieces[0]), _leading_int(pieces[1]) if len(pieces) > 1 else 0)
    for since, order in _resample_table():
        if version >= since:
            return order
    raise ContractError(f"no resample order known for Pillow {pillow_version}")  # pragma: no cover


def _show(value: Any) -> str:
    """``repr`` for messages, safe and short for any value (a huge int has no cheap repr)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _size(value: Any, name: str, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SIZE:
        raise ContractError(f"preprocess.{name} must be a positive integer <= {MAX_SIZE}, got {_show(value)}")
    return value


def _triple(value: Any, name: str, bounds: tuple[float, float]) -> tuple[float, float, float]:
    # Numbers only: JSON strings or booleans are rejected, as the Rust reader does.
    low, high = bounds
    problem = f"preprocess.{name} must be 3 finite numbers in [{low:g}, {high:g}], got {_show(value)}"
    if isinstance(value, (str, bytes, Mapping)):
        raise ContractError(problem)
    try:
        items = list(value)
    except TypeError:
        raise ContractError(problem) from None
    if len(items) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in items):
        raise ContractError(problem)
    try:
        values = tuple(float(v) for v in items)
    except OverflowError:  # an int beyond float's range
        raise ContractError(problem) from None
    if not all(math.isfinite(v) and low <= v <= high for v in values):
        raise ContractError(problem)
    return values  # type: ignore[return-value]


# -- the JSON text ---------------------------------------------------------------------------
class _BadNumber(ValueError):
    pass


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber(f"number out of range: {text[:40]}")
    return value


def _parse_int(text: str) -> int | float:
    # As serde_json reads numbers: an integer in the 64-bit range stays an integer, a longer
    # one becomes a double (and one beyond the double range is an error).
    if text == "-0":
        return -0.0  # serde_json reads -0 as the double -0.0
    if len(text) <= 21:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return _parse_float(text)


def _parse_constant(text: str) -> Any:
    raise _BadNumber(f"{text} is not a JSON number")


_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def _nesting_depth_ok(text: str) -> bool:
    """True when no point of ``text`` is inside more than MAX_DEPTH arrays/objects (brackets
    inside strings do not count).  A scan, not a parse: no recursion, linear time; the Rust
    reader runs the same scan before serde_json (whose recursion limit is 128)."""
    depth = 0
    in_string = False
    skip = -1
    for match in _STRUCTURE.finditer(text):
        at = match.start()
        if at == skip:
            continue
        ch = text[at]
        if in_string:
            if ch == "\\":
                skip = at + 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return False
        elif ch in "]}":
            depth = max(depth - 1, 0)
    return True


def _value_depth_ok(value: Any) -> bool:
    """The same limit on an already-built Python value (iterative: no RecursionError)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        if depth > MAX_DEPTH:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True


def _lone_surrogate(value: Any) -> bool:
    """Whether a string in ``value`` (keys included) holds a lone surrogate, which JSON's
    ``\\ud800`` escapes can produce in Python but not in Rust (serde_json rejects them)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _loads(raw: Any, source: str, what: str = "the butterfly_onnx contract") -> Any:
    """Parse contract JSON text the way the Rust reader does, within the documented limits;
    every failure is a ContractError naming ``source``."""
    if not isinstance(raw, str):
        raise ContractError(f"{source}: {what} must be JSON text, got {type(raw).__name__}")
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_DOCUMENT_BYTES:
        raise ContractError(f"{source}: {what} is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES}")
    if not _nesting_depth_ok(raw):
        raise ContractError(f"{source}: {what} nests deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(raw, parse_float=_parse_float, parse_int=_parse_int, parse_constant=_parse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, _BadNumber
        raise ContractError(f"{source}: {what} is not valid JSON: {exc}") from None
    if _lone_surrogate(data):
        raise ContractError(f"{source}: {what} is not valid JSON: a string holds a lone surrogate escape")
    return data


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
        # The checks, in this order, are the Rust reader's (contract.rs `spec_from_value`).
        _size(self.resize_size, "resize_size")
        _size(self.crop_size, "crop_size")
        _size(self.max_size, "max_size", optional=True)
        if self.max_size is not None and self.max_size <= self.resize_size:
            raise ContractError(
                f"preprocess.max_size ({self.max_size}) must be greater than resize_size "
                f"({self.resize_size}), as torchvision requires"
            )
        object.__setattr__(self, "mean", _triple(self.mean, "mean", MEAN_RANGE))
        object.__setattr__(self, "std", _triple(self.std, "std", STD_RANGE))
        if not isinstance(self.interpolation, str) or self.interpolation not in INTERPOLATIONS:
            raise ContractError(
                f"preprocess.interpolation must be one of {INTERPOLATIONS}, got {_show(self.interpolation)}"
            )
        if not isinstance(self.resample_order, str) or self.resample_order not in RESAMPLE_ORDERS:
            raise ContractError(
                f"preprocess.resample_order must be one of {RESAMPLE_ORDERS}, got {_show(self.resample_order)}"
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
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """The ``preprocess`` object of a contract document: every field but ``max_size`` is
        required, unknown fields are errors (see :meth:`coerce` for the lenient form)."""
        if not isinstance(data, Mapping):
            raise ContractError(f"preprocess must be an object, got {type(data).__name__}")
        missing = set(_SPEC_REQUIRED) - set(data)
        if missing:
            raise ContractError(f"preprocess is missing {sorted(missing)}")
        unknown = set(data) - set(_SPEC_FIELDS)
        if unknown:
            raise ContractError(f"preprocess has unknown fields {sorted(map(str, unknown))}")
        return cls(**{k: data[k] for k in _SPEC_FIELDS if k in data})

    @classmethod
    def coerce(cls, value: Any, *, what: str = "preprocess") -> PreprocessSpec:
        """The one converter of user-given preprocessing (``Classifier(preprocess=)``,
        ``export_onnx(preprocess=)``): a PreprocessSpec (returned as is); a dict with
        ``resize_size``, ``crop_size``, ``mean``, ``std`` and optionally ``interpolation``
        (default ``"bilinear"``, torchvision's ``Resize`` default), ``max_size`` (default None)
        and ``resample_order`` (default: the installed Pillow's rule), other keys rejected; or a
        torchvision ``ImageClassification`` preset / ``Compose`` (:meth:`from_transforms`).
        ``what`` names the value in error messages."""
        if isinstance(value, PreprocessSpec):
            return value
        if value is None:
            raise ContractError(f"{what} is None: pass a PreprocessSpec, a dict or torchvision transforms")
        if isinstance(value, Mapping):
            data = dict(value)
            missing = {"resize_size", "crop_size", "mean", "std"} - set(data)
            if missing:
                raise ContractError(f"{what} is missing {sorted(missing)}")
            data.setdefault("interpolation", "bilinear")
            data.setdefault("max_size", None)
            data.setdefault("resample_order", current_resample_order())
            return cls.from_dict(data)
        return cls.from_transforms(value)

    @classmethod
    def from_transforms(cls, transforms: Any, *, resample_order: str | None = None) -> PreprocessSpec:
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


_SPEC_FIELDS = ("resize_size", "crop_size", "interpolation", "max_size", "mean", "std", "resample_order")
_SPEC_REQUIRED = ("resize_size", "crop_size", "interpolation", "mean", "std", "resample_order")


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


def _check_labels(value: Any) -> tuple[str, ...]:
    if isinstance(value, (str, bytes, Mapping)):
        raise ContractError("labels must be a list of strings")
    try:
        labels = tuple(value)
    except TypeError:
        raise ContractError("labels must be a list of strings") from None
    if not labels:
        raise ContractError("labels must not be empty")
    if not all(isinstance(label, str) and label for label in labels):
        raise ContractError("labels must be non-empty strings")
    if _lone_surrogate(list(labels)):
        raise ContractError("labels must be valid Unicode text (a label holds a lone surrogate)")
    # A newline or escape code in a label would break every text output (one line per image)
    # and could drive a terminal: Unicode's Cc (Rust's char::is_control) and the line/paragraph
    # separators, as contract.rs checks.
    for label in labels:
        if any(unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" for ch in label):
            raise ContractError(f"labels must not contain control characters (newline, tab, escape...); got {label!r}")
    if len(set(labels)) != len(labels):
        counts: dict[str, int] = {}
        for label in labels:
            counts[label] = counts.get(label, 0) + 1
        dupes = sorted(label for label, n in counts.items() if n > 1)
        raise ContractError(f"labels must be unique; repeated: {dupes}")
    return labels


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
        labels = _check_labels(self.labels)
        object.__setattr__(self, "labels", labels)
        if not isinstance(self.preprocess, PreprocessSpec):
            raise ContractError("preprocess must be a PreprocessSpec")
        for name in ("input_name", "output_name"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ContractError(f"{name} must be a non-empty string")
        if self.output_kind not in ("logits", "probabilities"):
            raise ContractError(f"output.kind must be 'logits' or 'probabilities', got {_show(self.output_kind)}")
        if self.schema_version != SCHEMA_VERSION:
            raise ContractError(
                f"unsupported contract schema_version {_show(self.schema_version)}; this butterfly_onnx "
                f"reads version {SCHEMA_VERSION}"
            )
        if not isinstance(self.provenance, Mapping):
            raise ContractError("provenance must be an object")
        # provenance sits at depth 2 of the document (the top-level object is depth 1)
        if not _value_depth_ok([dict(self.provenance)]):
            raise ContractError(f"provenance nests deeper than the contract's limit of {MAX_DEPTH} levels")
        try:
            # allow_nan=False: NaN/Infinity are not JSON, and the Rust reader would refuse them
            json.dumps(dict(self.provenance), allow_nan=False)
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
        text = json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, allow_nan=False)
        size = len(text.encode("utf-8"))
        if size > MAX_DOCUMENT_BYTES:
            raise ContractError(f"the contract is {size} bytes, more than the limit of {MAX_DOCUMENT_BYTES}")
        return text

    def to_metadata(self) -> dict[str, str]:
        """The ``metadata_props`` entries that carry this contract."""
        return {METADATA_KEY: self.to_json()}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<contract>") -> ModelContract:
        try:
            if not isinstance(data, Mapping):
                raise ContractError("the contract must be a JSON object")
            if not _value_depth_ok(data):
                raise ContractError(f"the contract nests deeper than {MAX_DEPTH} levels")
            version = data.get("schema_version")
            # exactly the integer 1: not 1.0, not true (as the Rust reader)
            if type(version) is not int or version != SCHEMA_VERSION:
                raise ContractError(
                    f"unsupported contract schema_version {_show(version)} (this butterfly_onnx reads "
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
            labels = _check_labels(labels)
            provenance = data.get("provenance", {})
            if not isinstance(provenance, Mapping):
                raise ContractError("provenance must be an object")
            preprocess = PreprocessSpec.from_dict(data["preprocess"])
            return cls(
                labels=labels,
                preprocess=preprocess,
                input_name=inp.get("name"),  # type: ignore[arg-type]  # checked in __post_init__
                output_name=out.get("name"),  # type: ignore[arg-type]
                output_kind=out.get("kind", "logits"),
                provenance=dict(provenance),
                schema_version=version,
            )
        except ContractError as exc:
            raise ContractError(f"{source}: invalid butterfly_onnx contract: {exc}") from None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, str], *, source: str = "<model>") -> ModelContract:
        """Read the contract from a model's ``metadata_props`` mapping."""
        raw = metadata.get(METADATA_KEY)
        if raw is None:
            raise ContractError(
                f"{source}: the model carries no butterfly_onnx contract (metadata key "
                f"{METADATA_KEY!r}); export it with butterfly_onnx.export_onnx, add one with "
                "'butterfly-onnx annotate MODEL --labels LABELS.txt [--resize ... --crop ...]', "
                "or (Python) pass labels= and preprocess= explicitly"
            )
        return cls.from_dict(_loads(raw, source), source=source)


_FLOAT32_TYPES = ("tensor(float)", "float32")


def _is_static(dim: Any) -> bool:
    return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


#: One graph input or output as ``resolve_contract`` takes it: ``(name, shape)`` or
#: ``(name, shape, element_type)``; see :func:`resolve_contract`.
Port = tuple[str, Sequence[Any] | None] | tuple[str, Sequence[Any] | None, str | None]


def _port(entry: Port) -> tuple[str, list[Any] | None, str | None]:
    name, shape = entry[0], entry[1]
    elem_type = entry[2] if len(entry) > 2 else None
    return name, list(shape) if shape is not None else None, elem_type


def resolve_contract(
    metadata: Mapping[str, str],
    *,
    labels: Sequence[str] | None,
    preprocess: PreprocessSpec | None,
    inputs: Sequence[Port],
    outputs: Sequence[Port],
    source: str,
) -> ModelContract:
    """The effective contract of a model: the one rule both backends follow (the Rust one is
    ``contract::resolve`` in contract.rs; ``tests/fixtures/resolve/cases.json`` holds the
    cases both are tested against).

    1. Explicit ``labels`` are checked (``preprocess`` is already a PreprocessSpec, checked
       when it was built; :meth:`PreprocessSpec.coerce` converts other forms).
    2. The model's contract is read from ``metadata[METADATA_KEY]``; explicit ``labels`` /
       ``preprocess`` replace its fields.  A missing or unreadable contract (absent, invalid,
       unknown ``schema_version``) is a ContractError -- unless both ``labels`` and
       ``preprocess`` are given (a foreign model): then the names are the model's single
       input and output (else InvalidModelError) and the output kind is ``logits``.
    3. The result is checked against the graph.  ``inputs`` / ``outputs`` are the model's
       ``(name, shape)`` or ``(name, shape, element_type)`` entries; a shape entry is an int
       (static) or anything else (None, a name: dynamic); an element type is onnxruntime's
       (``"tensor(float)"``) or ``"float32"``, and is checked when given.  The named input and
       output exist (ContractError); the input is float32 and rank 4 (InvalidModelError) with
       ``3, crop_size, crop_size`` where static (ContractError); the output is float32 and
       rank 2 (InvalidModelError) with ``len(labels)`` classes where static (ContractError).

    Nothing is ever filled in from defaults.  Every error names ``source``.
    """
    # Long on purpose: the precedence rule (explicit, then the model's, then an error) reads top to
    # bottom, field by field, as docs/contract.md states it and Rust's contract::resolve mirrors it.
    if labels is not None:
        try:
            labels = _check_labels(labels)
        except ContractError as exc:
            raise ContractError(f"{source}: labels: {exc}") from None
    if preprocess is not None and not isinstance(preprocess, PreprocessSpec):
        raise ContractError(
            f"{source}: preprocess must be a PreprocessSpec (PreprocessSpec.coerce converts dicts and "
            f"torchvision transforms), got {type(preprocess).__name__}"
        )
    in_ports = [_port(entry) for entry in inputs]
    out_ports = [_port(entry) for entry in outputs]

    try:
        contract: ModelContract | None = ModelContract.from_metadata(metadata, source=source)
    except ContractError:
        if labels is None or preprocess is None:
            raise
        contract = None
    if contract is None:
        assert labels is not None and preprocess is not None
        if len(in_ports) != 1 or len(out_ports) != 1:
            raise InvalidModelError(
                f"{source}: without a usable contract the model must have exactly one input and one output, "
                f"it has inputs {[p[0] for p in in_ports]} and outputs {[p[0] for p in out_ports]}"
            )
        contract = ModelContract(
            labels=labels, preprocess=preprocess, input_name=in_ports[0][0], output_name=out_ports[0][0]
        )
    else:
        changes: dict[str, Any] = {}
        if labels is not None:
            changes["labels"] = labels
        if preprocess is not None:
            changes["preprocess"] = preprocess
        if changes:
            contract = dataclasses.replace(contract, **changes)

    by_name_in = {name: (shape, elem) for name, shape, elem in in_ports}
    by_name_out = {name: (shape, elem) for name, shape, elem in out_ports}
    if contract.input_name not in by_name_in:
        raise ContractError(
            f"{source}: the contract names input '{contract.input_name}', the model has {list(by_name_in)}"
        )
    if contract.output_name not in by_name_out:
        raise ContractError(
            f"{source}: the contract names output '{contract.output_name}', the model has {list(by_name_out)}"
        )
    shape, elem = by_name_in[contract.input_name]
    if elem is not None and elem not in _FLOAT32_TYPES:
        raise InvalidModelError(f"{source}: input '{contract.input_name}' must be a float32 tensor, it is {elem}")
    crop = contract.preprocess.crop_size
    if shape is None or len(shape) != 4:
        raise InvalidModelError(
            f"{source}: input '{contract.input_name}' must be NCHW (rank 4), its shape is {_dims(shape)}"
        )
    for axis, want in ((1, 3), (2, crop), (3, crop)):
        if _is_static(shape[axis]) and shape[axis] != want:
            raise ContractError(
                f"{source}: input '{contract.input_name}' has shape {_dims(shape)}, but the preprocessing "
                f"produces (N, 3, {crop}, {crop})"
            )
    out_shape, out_elem = by_name_out[contract.output_name]
    if out_elem is not None and out_elem not in _FLOAT32_TYPES:
        raise InvalidModelError(f"{source}: output '{contract.output_name}' must be a float32 tensor, it is {out_elem}")
    if out_shape is None or len(out_shape) != 2:
        raise InvalidModelError(
            f"{source}: output '{contract.output_name}' must be (batch, classes), its shape is {_dims(out_shape)}"
        )
    if _is_static(out_shape[1]) and out_shape[1] != contract.num_classes:
        raise ContractError(
            f"{source}: {contract.num_classes} labels, but the model output '{contract.output_name}' has "
            f"{out_shape[1]} classes"
        )
    return contract


def check_output(contract: ModelContract, shape: Sequence[int], source: str, *, rows: int | None = None) -> None:
    """The run-time half of the labels-vs-output check, for a model whose class axis is
    dynamic (the static half is in :func:`resolve_contract`): an output of ``shape`` must be
    ``(rows, len(labels))`` (any number of rows when ``rows`` is None).  ContractError, with
    the message of the Rust core's check."""
    dims = [int(d) for d in shape]
    if len(dims) != 2 or dims[1] != contract.num_classes or (rows is not None and dims[0] != rows):
        raise ContractError(
            f"{source}: the model output has shape {dims}, but the contract has {contract.num_classes} labels"
        )


def _dims(shape: Any) -> str:
    """A shape as the Rust resolver writes it: dynamic axes as -1."""
    if shape is None:
        return "unknown"
    return "[" + ", ".join(str(d) if _is_static(d) else "-1" for d in shape) + "]"


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
