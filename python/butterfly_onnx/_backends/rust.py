"""The rust backend: an adapter over ``butterfly_onnx._native`` (the PyO3 binding of the
``butterfly-onnx`` crate).  Decoding, preprocessing and inference run in Rust with the GIL
released; the ONNX Runtime library is the one the installed onnxruntime wheel ships, found
without importing onnxruntime.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..contract import ModelContract, PreprocessSpec
from ..errors import BackendUnavailableError, ImageError, decode_error
from . import resolve_threads
from .providers import CPU, Provider

__all__ = ["Backend", "find_onnxruntime_library"]

#: The core's "no pixel limit" (``classifier::NO_PIXEL_LIMIT``, u64::MAX).
NO_PIXEL_LIMIT = 2**64 - 1

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


def _library_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not to be loaded unasked: the Rust core's rule
    (``runtime::untrusted_reason``), asked through the native module.  Without it there is no
    rule to ask, and nothing that could load the library either (only the native module
    does): None (callers such as test fixtures only want the path)."""
    try:
        native = importlib.import_module("butterfly_onnx._native")
    except ImportError:
        return None
    return native.ort_library_problem(path)


def find_onnxruntime_library() -> Path:
    """The libonnxruntime shared library for Rust: ``$BUTTERFLY_ONNX_ORT_LIB``,
    ``$ORT_DYLIB_PATH`` (loaded with a warning if others could have written it), else the
    onnxruntime wheel's ``capi/libonnxruntime.so.*`` in this interpreter's environment: its
    ``sys.path`` without the working directory (the active venv, the user's and the system's
    site-packages), located with ``importlib`` without importing onnxruntime.  A found library
    that is group/world-writable or owned by neither the user nor root (the file or its
    folder) is refused (``runtime::untrusted_reason``, the Rust CLI's rule)."""
    for name in ORT_LIBRARY_ENV:
        value = os.environ.get(name)
        if value:
            problem = _library_problem(value)
            if problem:
                warnings.warn(f"${name}: {problem}", UserWarning, stacklevel=2)
            return Path(value)
    # Never the working directory: '' and '.' on sys.path (python -m, python -c) would let a
    # planted ./onnxruntime/ run its code at dlopen.
    cwd = os.getcwd()
    search = [p for p in sys.path if p and os.path.isabs(p) and os.path.realpath(p) != os.path.realpath(cwd)]
    spec = importlib.machinery.PathFinder.find_spec("onnxruntime", search)
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
                problem = _library_problem(found[-1])
                if problem:
                    raise BackendUnavailableError(
                        f"refusing to load {found[-1]}: {problem}; fix its permissions, or name it "
                        f"in ${ORT_LIBRARY_ENV[0]} to load it anyway"
                    )
                return found[-1]
    raise BackendUnavailableError(
        f"no libonnxruntime shared library in the onnxruntime wheel at "
        f"{list(spec.submodule_search_locations or [])}; set {ORT_LIBRARY_ENV[0]} to one"
    )


def _pil_rgb(source: str, image: Any) -> np.ndarray:
    """A PIL image's RGB pixels as a C-contiguous array; a lazily opened image that fails to
    decode (a truncated file, say) is that item's ImageDecodeError, as in ``decode_rgb``."""
    try:
        return np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError...
        raise decode_error(source, str(exc)) from exc


def _payload(item: tuple[str, Any]) -> tuple[str, Any]:
    """Paths become str, PIL images become RGB arrays (Rust decodes paths and bytes itself)."""
    source, payload = item
    if isinstance(payload, (bytes, np.ndarray)):
        return source, payload
    if isinstance(payload, os.PathLike):
        return source, os.fspath(payload)
    if hasattr(payload, "convert") and hasattr(payload, "mode"):  # PIL.Image.Image
        return source, _pil_rgb(source, payload)
    return source, payload  # the native layer reports anything else as an ImageDecodeError


def _payloads(
    items: Sequence[tuple[str, Any]], failed: dict[int, ImageError]
) -> tuple[list[tuple[str, Any]], dict[int, ImageError]]:
    """The native payloads of a whole list (``preprocess``/``logits`` hold it all anyway) and
    the items that failed before reaching Rust."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(_payload(item))
        except ImageError as exc:
            failed[index] = exc
            out.append((item[0], None))  # refused by the native layer, replaced by ``exc``
    return out, failed


def _lazy_payloads(items: Sequence[tuple[str, Any]], failed: dict[int, ImageError]) -> Iterator[tuple[str, Any]]:
    """The native payloads one at a time (the binding reads one chunk ahead, so only the
    chunks in flight are converted at once); failures are recorded in ``failed`` by index and
    handed to Rust as a payload it refuses, whose error is then replaced by the real one."""
    for index, item in enumerate(items):
        try:
            yield _payload(item)
        except ImageError as exc:
            failed[index] = exc
            yield item[0], None


def _shown(source: str) -> str:
    """How Rust names ``source`` in its messages (``error::path_name``): each byte of a file
    name that is not UTF-8 (a str with surrogateescape'd bytes) as the text ``\\udcXX``."""
    return source.encode("utf-8", "backslashreplace").decode("utf-8")


def _with_failures(
    result: tuple[np.ndarray, dict[int, ImageError]],
    failed: dict[int, ImageError],
    items: Sequence[tuple[str, Any]],
) -> tuple[np.ndarray, dict[int, ImageError]]:
    """The native result with the errors raised in Python put back in place, and the
    caller's exact source (a non-UTF-8 file name included) in every error's message and
    ``source`` (error indices are indices into ``items``)."""
    logits, errors = result
    for index in [i for i in errors if i in failed]:
        errors[index] = failed.pop(index)
    for index, error in errors.items():
        source = items[index][0]
        if error.source != source:
            shown = _shown(source)
            message = str(error).replace(shown, source, 1) if shown != source else str(error)
            errors[index] = type(error)(message, source)
    return logits, errors


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
        jpeg_draft: bool = False,
        providers: Sequence[Provider] = ((CPU, {}),),
        fallback: Backend | None = None,
        fallback_margin: float | None = None,
    ) -> None:
        native = _native()
        options = dict(
            threads=resolve_threads(threads),
            providers=[(name, dict(provider_options)) for name, provider_options in providers],
            labels=list(labels) if labels is not None else None,
            preprocess_json=json.dumps(preprocess.to_dict()) if preprocess is not None else None,
            # None is no limit at all here (Classifier resolved Pillow's ceiling already); the
            # core's None would mean Pillow's default ceiling, so "none" is the largest u64.
            max_image_pixels=NO_PIXEL_LIMIT if max_image_pixels is None else max_image_pixels,
            ort_library=os.fspath(find_onnxruntime_library()),
            jpeg_draft=jpeg_draft,
            # the core answers near-ties from its own preprocessed rows (Classifier::with_fallback)
            fallback=None if fallback is None else fallback._native,
            fallback_margin=fallback_margin,
        )
        if isinstance(model, bytes):
            self.model_path = None
            self._source = "<model bytes>"
            self._native: Any = native.Classifier(None, model_bytes=model, **options)
        else:
            self.model_path = Path(model)
            self._source = str(self.model_path)
            self._native = native.Classifier(os.fspath(self.model_path), **options)
        self.threads: int = self._native.threads
        #: The providers the sessions use, the CPU provider last (as onnxruntime's
        #: ``get_providers()`` lists them for the python backend).
        self.providers: tuple[str, ...] = tuple(self._native.providers)
        self.contract = self._effective_contract()

    def serve(self, **settings: Any) -> None:
        """Hand this model to the Rust core's HTTP server (``butterfly_onnx.serve``); returns
        after a graceful stop: when ``settings["stop"]()`` is true, or raising what a Python
        signal handler (Ctrl-C) or a callback raised."""
        _native().serve(self._native, **settings)

    def _effective_contract(self) -> ModelContract:
        """The effective contract Rust resolved (``contract::resolve``, the same rules as
        :func:`butterfly_onnx.contract.resolve_contract`), overrides applied."""
        return ModelContract.from_dict(json.loads(self._native.contract_json), source=self._source)

    def preprocess(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]:
        payloads, failed = _payloads(items, {})
        return _with_failures(self._native.preprocess(payloads), failed, items)

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self._native.run(np.ascontiguousarray(batch, dtype=np.float32))

    def logits(self, items: list[tuple[str, Any]]) -> tuple[np.ndarray, dict[int, ImageError]]:
        payloads, failed = _payloads(items, {})
        return _with_failures(self._native.logits(payloads), failed, items)

    @property
    def jpeg_draft(self) -> bool:
        return bool(self._native.jpeg_draft)

    @property
    def fallback_margin(self) -> float | None:
        margin = self._native.fallback_margin
        return None if margin is None else float(margin)

    @property
    def fallbacks(self) -> int:
        return int(self._native.fallbacks)

    @property
    def model_batch(self) -> int:
        """Rows per ONNX Runtime run in :meth:`iter_logits` (the binding's, the same rule as
        the python backend's: ``butterfly_onnx._backends.model_batch_for``)."""
        return int(self._native.model_batch)

    def iter_logits(
        self, items: Sequence[tuple[str, Any]], batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[int, ImageError]]]:
        """Per chunk of ``batch_size`` items: (logits of the good ones, {index: error}), from
        the binding's own pipeline (the next chunk decodes in Rust while the model runs, fed
        :attr:`model_batch` rows per run).  ``items`` are converted lazily, so memory does not
        grow with the number of in-memory images."""
        failed: dict[int, ImageError] = {}
        for result in self._native.iter_logits(_lazy_payloads(items, failed), batch_size):
            yield _with_failures(result, failed, items)


if TYPE_CHECKING:  # mypy: this class satisfies the one Backend protocol
    from . import Backend as _Protocol

    _checked: type[_Protocol] = Backend
