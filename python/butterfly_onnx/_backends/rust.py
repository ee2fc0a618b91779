"""The rust backend: an adapter over ``butterfly_onnx._native`` (the PyO3 binding of the
``butterfly-onnx`` crate).  Decoding, preprocessing and inference run in Rust with the GIL
released; the ONNX Runtime library is the one the installed onnxruntime wheel ships, found
without importing onnxruntime.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..contract import METADATA_KEY, ModelContract, PreprocessSpec
from ..errors import BackendUnavailableError, ContractError, ImageError

__all__ = ["Backend", "find_onnxruntime_library"]

#: Environment variables naming the libonnxruntime file (the Rust crate reads the same ones).
ORT_LIBRARY_ENV = ("BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH")


def _native() -> Any:
    try:
        return importlib.import_module("butterfly_onnx._native")
    except ImportError as exc:
        raise BackendUnavailableError(
            "the rust backend needs the compiled extension butterfly_onnx._native, which is not "
            f"installed ({exc}); install the package with pip (it builds with maturin) or use "
            "backend='python'"
        ) from exc


def find_onnxruntime_library() -> Path:
    """The libonnxruntime shared library for Rust: ``$BUTTERFLY_ONNX_ORT_LIB``,
    ``$ORT_DYLIB_PATH``, else the onnxruntime wheel's ``capi/libonnxruntime.so.*``, located
    with ``importlib.util.find_spec`` (which does not import onnxruntime)."""
    for name in ORT_LIBRARY_ENV:
        value = os.environ.get(name)
        if value:
            return Path(value)
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None:
        raise BackendUnavailableError(
            "the rust backend needs the onnxruntime wheel (its libonnxruntime), which is not "
            f"installed; pip install onnxruntime, or set {ORT_LIBRARY_ENV[0]}"
        )
    patterns = ("libonnxruntime.so*", "libonnxruntime*.dylib", "onnxruntime.dll")
    for location in spec.submodule_search_locations or []:
        capi = Path(location) / "capi"
        for pattern in patterns:
            found = sorted(capi.glob(pattern))
            if found:
                return found[-1]
    raise BackendUnavailableError(
        f"no libonnxruntime shared library in the onnxruntime wheel at "
        f"{list(spec.submodule_search_locations or [])}; set {ORT_LIBRARY_ENV[0]} to one"
    )


def _payload(item: tuple[str, Any]) -> tuple[str, Any]:
    """Paths become str, PIL images become RGB arrays (Rust decodes paths and bytes itself)."""
    source, payload = item
    if isinstance(payload, (bytes, np.ndarray)):
        return source, payload
    if isinstance(payload, os.PathLike):
        return source, os.fspath(payload)
    if hasattr(payload, "convert") and hasattr(payload, "mode"):  # PIL.Image.Image
        return source, np.ascontiguousarray(np.asarray(payload.convert("RGB")))
    return source, payload  # the native layer reports anything else as an ImageDecodeError


class Backend:
    name = "rust"

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int | None,
        labels: Sequence[str] | None,
        preprocess: PreprocessSpec | None,
        max_image_pixels: int | None,
    ) -> None:
        native = _native()
        model_path = Path(model_path)
        self.model_path = model_path
        self._native = native.Classifier(
            os.fspath(model_path),
            threads=threads,
            labels=list(labels) if labels is not None else None,
            preprocess_json=json.dumps(preprocess.to_dict()) if preprocess is not None else None,
            max_image_pixels=max_image_pixels,
            ort_library=os.fspath(find_onnxruntime_library()),
        )
        self.threads = self._native.threads
        self.contract = self._effective_contract(labels, preprocess)

    def _effective_contract(self, labels: Sequence[str] | None, preprocess: PreprocessSpec | None) -> ModelContract:
        """The same ModelContract the python backend builds: the model's document read by
        the Python reader, with the explicit overrides applied (Rust has already validated
        all of it against the model)."""
        source = str(self.model_path)
        base = None
        raw = self._native.model_contract_json
        if raw is not None:
            try:
                base = ModelContract.from_metadata({METADATA_KEY: raw}, source=source)
            except ContractError:
                base = None  # unusable, and replaced by explicit labels and preprocess
        if base is None:
            base = ModelContract.from_dict(json.loads(self._native.contract_json), source=source)
        changes: dict[str, Any] = {}
        if labels is not None:
            changes["labels"] = tuple(labels)
        if preprocess is not None:
            changes["preprocess"] = preprocess
        return dataclasses.replace(base, **changes) if changes else base

    def preprocess(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]:
        return self._native.preprocess([_payload(item) for item in items])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._native.run(np.ascontiguousarray(batch, dtype=np.float32))

    def logits(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]:
        return self._native.logits([_payload(item) for item in items])
