"""The rust backend: an adapter over ``butterfly_onnx._native`` (the PyO3 binding of the
``butterfly-onnx`` crate).  Decoding, preprocessing and inference run in Rust with the GIL
released; the ONNX Runtime library is the one the installed onnxruntime wheel ships, found
without importing onnxruntime.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..contract import ModelContract, PreprocessSpec
from ..errors import BackendUnavailableError, ButterflyError, ImageError
from . import pipelined_logits

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
        model: Path | bytes,
        *,
        threads: int | None,
        labels: Sequence[str] | None,
        preprocess: PreprocessSpec | None,
        max_image_pixels: int | None,
    ) -> None:
        native = _native()
        options = dict(
            threads=threads,
            labels=list(labels) if labels is not None else None,
            preprocess_json=json.dumps(preprocess.to_dict()) if preprocess is not None else None,
            max_image_pixels=max_image_pixels,
            ort_library=os.fspath(find_onnxruntime_library()),
        )
        if isinstance(model, bytes):
            self.model_path = None
            self._source = "<model bytes>"
            self._native = self._from_bytes(native, model, options)
        else:
            self.model_path = Path(model)
            self._source = str(self.model_path)
            self._native = native.Classifier(os.fspath(self.model_path), **options)
        self.threads = self._native.threads
        self.contract = self._effective_contract()

    @staticmethod
    def _from_bytes(native: Any, model: bytes, options: dict[str, Any]) -> Any:
        """The native classifier from a model's bytes: ``model_bytes=`` where the binding
        takes it, else through a private temporary file, removed once ONNX Runtime has read it."""
        try:
            return native.Classifier(None, model_bytes=model, **options)
        except TypeError:
            pass
        handle, name = tempfile.mkstemp(suffix=".onnx", prefix="butterfly-model-")
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(model)
            try:
                return native.Classifier(name, **options)
            except ButterflyError as exc:  # name the model as the caller gave it, not the temp file
                raise type(exc)(str(exc).replace(name, "<model bytes>")) from None
        finally:
            try:
                os.unlink(name)
            except OSError:
                pass

    def _effective_contract(self) -> ModelContract:
        """The effective contract Rust resolved (``contract::resolve``, the same rules as
        :func:`butterfly_onnx.contract.resolve_contract`), overrides applied."""
        return ModelContract.from_dict(json.loads(self._native.contract_json), source=self._source)

    def preprocess(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]:
        return self._native.preprocess([_payload(item) for item in items])

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._native.run(np.ascontiguousarray(batch, dtype=np.float32))

    def logits(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]:
        return self._native.logits([_payload(item) for item in items])

    def iter_logits(
        self, items: Sequence[tuple[str, Any]], batch_size: int, model_batch: int
    ) -> Iterator[tuple[np.ndarray, dict[int, ImageError]]]:
        """Per chunk of ``batch_size`` items: (logits of the good ones, {index: error}).
        The binding's own pipeline (``iter_logits``) where it has one, else the shared
        decode-ahead pipeline over its ``preprocess`` and ``run``."""
        payloads = [_payload(item) for item in items]
        native_iter = getattr(self._native, "iter_logits", None)
        if native_iter is not None:
            return iter(native_iter(payloads, batch_size))
        static = self._native.static_batch
        return pipelined_logits(
            self._native.preprocess,
            self.run,
            payloads,
            batch_size,
            static or model_batch,
            self.contract.num_classes,
        )
