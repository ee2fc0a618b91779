"""Typed surface of ``butterfly_onnx._native`` (rust/butterfly-onnx-python/src/lib.rs).

Private: use ``butterfly_onnx.Classifier(..., backend="rust")``. Every method releases the
GIL while it decodes, preprocesses or runs the model; one instance may be shared by threads.
Errors are the classes of ``butterfly_onnx.errors``.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .errors import ImageError

__version__: str

# payload: a path (str / os.PathLike), encoded file bytes, or an HxWx3 uint8 array.
_Item = tuple[str, str | PathLike[str] | bytes | npt.NDArray[np.uint8]]

class Classifier:
    def __init__(
        self,
        model_path: str | PathLike[str] | None = None,
        *,
        model_bytes: bytes | None = None,
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        preprocess_json: str | None = None,
        max_image_pixels: int | None = None,
        ort_library: str | PathLike[str] | None = None,
        jpeg_draft: bool = False,
        providers: Sequence[tuple[str, dict[str, str]]] | None = None,
        fallback: Classifier | None = None,
        fallback_margin: float | None = None,
    ) -> None:
        """Open a model: ``model_path``, or the .onnx file's bytes as ``model_bytes``
        (exactly one; InvalidArgumentError otherwise). ``preprocess_json``: ``json.dumps(PreprocessSpec.to_dict())``;
        ``ort_library``: the libonnxruntime file (else $BUTTERFLY_ONNX_ORT_LIB /
        $ORT_DYLIB_PATH); ``jpeg_draft``: decode JPEGs at a reduced DCT scale as Pillow's
        ``draft("RGB", request)`` does (not torchvision-exact); ``providers``: (name, options)
        pairs in priority order (None: the CPU provider); ``fallback``: a classifier that answers this
        one's near-ties (``fallback_margin`` None: the margin the contract records). Raises
        ModelNotFoundError, InvalidModelError, ContractError,
        BackendUnavailableError, ValueError (threads < 1)."""
    @property
    def contract_json(self) -> str:
        """The effective contract as ``ModelContract.to_dict()`` JSON."""
    @property
    def model_contract_json(self) -> str | None:
        """The contract JSON stored in the model, verbatim (None when absent)."""
    @property
    def threads(self) -> int: ...
    @property
    def providers(self) -> list[str]:
        """The execution providers the sessions use, the CPU provider last."""
    @property
    def thread_split(self) -> tuple[int, int]:
        """How ``threads`` is shared out: (concurrent ONNX Runtime runs, intra-op threads per
        run), the rule of docs/rust.md."""
    @property
    def jpeg_draft(self) -> bool:
        """Whether JPEGs are decoded in draft mode."""
    @property
    def fallback_margin(self) -> float | None:
        """The margin below which ``fallback`` answers an image (None: no fallback)."""
    @property
    def fallbacks(self) -> int:
        """Images ``fallback`` has answered so far."""
    @property
    def static_batch(self) -> int | None:
        """The model's fixed batch size, or None for a dynamic batch axis."""
    @property
    def model_path(self) -> Path:
        """The model file (``<model bytes>`` for a model given as bytes)."""
    @property
    def model_batch(self) -> int:
        """Images per ONNX Runtime run in ``iter_logits``: the model's fixed batch, else chosen
        once on first use: the smallest power of two whose run takes >= 4 ms (from one image's
        run time), at most 32 (docs/rust.md)."""
    def preprocess(self, items: Sequence[_Item]) -> tuple[npt.NDArray[np.float32], dict[int, ImageError]]:
        """float32 (n_ok, 3, crop, crop) for the items that decoded, in order, and
        {item index: ImageError} for the others."""
    def run(self, batch: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The raw model output (N, classes) for a float32 (N, 3, crop, crop) batch."""
    def logits(self, items: Sequence[_Item]) -> tuple[npt.NDArray[np.float32], dict[int, ImageError]]:
        """preprocess + run in one call. InvalidArgumentError when the batch tensor cannot be
        allocated (too many items for the crop size: pass fewer)."""
    def iter_logits(self, items: Iterable[_Item], batch_size: int) -> LogitsIter:
        """Stream ``items`` ``batch_size`` at a time: per consecutive chunk, in order,
        ``(logits float32 (n_ok, classes), {index in items: ImageError})``. The next chunk
        decodes while the model runs the current one; items are read one chunk ahead; the
        GIL is released while Rust works or waits. InvalidArgumentError for batch_size < 1;
        an item that is not a (source, payload) tuple: InvalidArgumentTypeError (a tuple of
        another length: InvalidArgumentError). An error raised by ``items`` while the next
        chunk is read comes after the current chunk's results, on the following call."""

class LogitsIter(Iterator[tuple[npt.NDArray[np.float32], dict[int, ImageError]]]):
    def __iter__(self) -> LogitsIter: ...
    def __next__(self) -> tuple[npt.NDArray[np.float32], dict[int, ImageError]]: ...

def loaded_ort_library() -> Path | None:
    """The libonnxruntime file this process loaded, or None before the first Classifier."""

def serve(
    classifier: Classifier,
    *,
    host: str | None = None,
    port: int | None = None,
    name: str | None = None,
    max_batch: int | None = None,
    max_wait_ms: int | None = None,
    max_queue: int | None = None,
    max_body_bytes: int | None = None,
    stop: Callable[[], object] | None = None,
    listening: Callable[[str, int], object] | None = None,
) -> None:
    """Serve ``classifier`` over HTTP until a Python signal handler raises (Ctrl-C's
    KeyboardInterrupt) or ``stop()`` is true, then stop gracefully (and raise what was raised);
    the GIL released, taken every 0.1 s to check for signals and call ``stop``.  None options
    take the server's defaults.  Prints ``butterfly-onnx serve: listening on
    http://HOST:PORT (model NAME)`` on stdout once it answers, then calls ``listening(host, port)``
    (host as an IP address; requests are answered meanwhile); what it raises stops the server
    and is raised."""

def ort_library_problem(path: str | PathLike[str]) -> str | None:
    """Why this libonnxruntime is not to be loaded unasked (group/world-writable, or owned by
    neither the user nor root; the file or its folder), or None when it is safe."""
