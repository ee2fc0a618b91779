"""``Classifier``: run an exported butterfly_onnx model on images, with either backend.

>>> clf = Classifier("butterflies.onnx")                 # python backend
>>> clf.predict("photos/")[0].label                        # doctest: +SKIP
>>> Classifier("butterflies.onnx", backend="rust").logits(["a.jpg", "b.png"])  # doctest: +SKIP
>>> for p in clf.iter_predict("huge_folder/"): ...          # doctest: +SKIP

The model's contract (labels + preprocessing, see ``docs/contract.md``) is read once; both
backends preprocess exactly like torchvision and run the same ONNX Runtime.

Prediction streams: images are decoded ``batch_size`` at a time (the next chunk while the
model runs on the current one) and fed to the model :attr:`Classifier.model_batch` rows at a
time (one rule for both backends, ``butterfly_onnx._backends.model_batch_for``), so memory
stays flat however many images there are.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ._backends import check_fallback_arguments, load_backend, near_ties, resolve_threads
from ._backends.providers import describe, resolve_providers
from .contract import ModelContract, PreprocessSpec
from .errors import (
    ContractError,
    ImageError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidModelError,
    ModelNotFoundError,
    NonFiniteOutputError,
)
from .images import effective_pixel_limit, expand_images, pixel_limit_default

if TYPE_CHECKING:
    from ._backends import Backend

__all__ = [
    "Classifier",
    "near_ties",
    "Prediction",
    "ClassScore",
    "ImageSkippedWarning",
    "DEFAULT",
    "DECODE_BATCH",
]

#: Images decoded and held at once by predict/iter_predict/logits when no ``batch_size`` is
#: given: enough to keep every preprocessing thread busy, small enough that two chunks in
#: flight (the one the model runs on, the one decoding ahead) take ~40 MB at 224x224.
DECODE_BATCH = 32


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: ``max_image_pixels=DEFAULT``: twice ``PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's own
#: decompression-bomb error threshold, 178,956,970 pixels by default).
DEFAULT: Any = _Default()

ON_ERROR = ("raise", "skip")


class ImageSkippedWarning(UserWarning):
    """Issued once per image that ``on_error="skip"`` left out; the message names it."""


class ClassScore(NamedTuple):
    """One class of a prediction: its label, its index in the model's output, its probability."""

    label: str
    index: int  # type: ignore[assignment]  # (shadows tuple.index, as the field name must)
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "probability": self.probability}


@dataclass(frozen=True)
class Prediction:
    """The result for one input image: its ``top_k`` classes, best first, or its ``error``
    (only with ``on_error="skip"``, then ``top_k`` is empty)."""

    source: str
    top_k: tuple[ClassScore, ...]
    error: ImageError | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON Lines object of ``predict --json``: source, top-1 label/index/probability
        (None when failed), the ``top_k`` list and ``error`` (None or the message)."""
        return {
            "source": self.source,
            "label": self.label,
            "index": self.index,
            "probability": self.probability,
            "top_k": [score.to_dict() for score in self.top_k],
            "error": None if self.error is None else str(self.error),
        }

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str | None:
        return self.top_k[0].label if self.top_k else None

    @property
    def index(self) -> int | None:
        return self.top_k[0].index if self.top_k else None

    @property
    def probability(self) -> float | None:
        return self.top_k[0].probability if self.top_k else None


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(np.float32)


def _check_batch_size(batch_size: Any) -> int:
    if batch_size is None:
        return DECODE_BATCH
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int or None, got {batch_size!r}")
    return batch_size


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: Any, total: int, desc: str) -> Any:
    """A tqdm bar on stderr: ``progress=None`` shows it when stderr is a terminal."""
    if progress is None:
        progress = total > 1 and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    if not progress:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency; a broken install just loses the bar
        return _NoProgress()
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)


def _split_non_finite(
    out: np.ndarray, errors: dict[int, ImageError], start: int, stop: int, items: list
) -> tuple[np.ndarray, dict[int, ImageError]]:
    """A row of ``out`` (one per item of ``items[start:stop]`` not in ``errors``) holding NaN or
    infinity becomes that item's NonFiniteOutputError: never a prediction.  The rust backend's
    core does the same (``classifier::split_non_finite``), so this finds nothing there."""
    bad = ~np.isfinite(out).all(axis=1)
    if not bad.any():
        return out, errors
    decoded = [i for i in range(start, stop) if i not in errors]
    errors = dict(errors)
    for row in np.flatnonzero(bad):
        source = items[decoded[row]][0]
        errors[decoded[row]] = NonFiniteOutputError(
            f"{source}: the model's output is not finite (NaN or infinity), no prediction", source=source
        )
    return out[~bad], dict(sorted(errors.items()))


def _model_source(model: Any, what: str = "model") -> tuple[Path | None, str]:
    """(path or None for bytes, the name errors use) of a model argument, checked."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        if not model:
            raise InvalidModelError(f"<{what} bytes>: empty (0 bytes)")
        return None, f"<{what} bytes>"
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelNotFoundError(f"{path}: no such model file")
        return path, str(path)
    raise InvalidArgumentTypeError(f"{what} must be a path or the model file's bytes, got {type(model).__name__}")


class Classifier:
    """An exported classifier on one backend.

    Args:
        model: path of the ``.onnx`` file, or the file's bytes.
        backend: ``"python"`` (onnxruntime + Pillow + NumPy) or ``"rust"`` (native module).
        threads: bound on preprocessing workers and ONNX Runtime intra-op threads
            (None: all cores).
        labels, preprocess: override the contract's fields (both are required for a model
            without a contract).  ``preprocess`` is a PreprocessSpec, its dict form, or a
            torchvision ``weights.transforms()`` preset / ``Compose``.
        max_image_pixels: width * height above which an image is refused before decoding
            (ImageTooLargeError).  Default: ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (Pillow's
            decompression-bomb ceiling, 178,956,970 pixels unless changed).  None: no limit of
            ours; Pillow's ceiling still applies, on both backends alike (set
            ``PIL.Image.MAX_IMAGE_PIXELS = None`` to lift it: then there is no limit).  A value
            above Pillow's ceiling is cut to it, for the same reason (``images.effective_pixel_limit``).
        on_error: ``"raise"`` (the first bad image's error is raised) or ``"skip"`` (bad images
            are reported in place with an :class:`ImageSkippedWarning` each); the per-call
            ``on_error`` arguments override it.
        jpeg_draft: JPEG draft mode, opt-in and **not torchvision-exact**: JPEG files and bytes
            are decoded at a reduced DCT scale (1/2, 1/4 or 1/8) exactly as Pillow's
            ``im.draft("RGB", size)`` does, ``size`` being what the contract's resize makes of
            the full image, then preprocessed as usual -- both backends give the same tensor,
            bit for bit.  Much faster on large photos.  Other formats, PIL images and arrays
            are unaffected (docs/preprocessing.md, "JPEG draft mode").
        providers: the ONNX Runtime execution providers to run the model on, in priority
            order, as onnxruntime takes them: names or ``(name, options)`` pairs, e.g.
            ``["CUDAExecutionProvider"]`` or ``[("OpenVINOExecutionProvider", {"device_type":
            "GPU"})]`` (None: the CPU provider).  Preprocessing stays on the CPU, exact.
        device: shorthand for ``providers``: ``"cpu"``, ``"cuda"``/``"cuda:1"``,
            ``"tensorrt[:N]"``, ``"openvino[:CPU|GPU|NPU]"``, ``"coreml"``, ``"directml[:N]"``
            (data/providers.json).  Nothing falls back: a provider the loaded ONNX Runtime
            lacks, or that fails to initialise, is a BackendUnavailableError naming it and
            what to install (docs/inference.md, "Execution providers").
        fallback_model: a second model (path or bytes) that answers the same question, usually
            the fp32 file an int8 variant was made from: every image whose two best scores are
            less than ``fallback_margin`` apart is run again on it, on the same backend from the
            same preprocessed rows, and takes its output (:func:`near_ties`).  A variant's error
            cannot swap two classes further apart than its error spread, so this keeps the
            answers the cheaper model would change, at the cost of running the near-ties twice
            (docs/inference.md, "Near-tie fallback").  Its labels, preprocessing and output kind must equal this
            model's (else ContractError).
        fallback_margin: the margin (None: the ``fallback_margin`` the model's contract records:
            an int8 variant's largest error spread on its calibration images, written by
            ``export_onnx``).  Needs ``fallback_model``.

    Safe to call from several threads at once.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        backend: str = "python",
        threads: int | None = None,
        labels: Sequence[str] | None = None,
        preprocess: Any = None,
        max_image_pixels: int | None = DEFAULT,
        on_error: str = "raise",
        jpeg_draft: bool = False,
        providers: Sequence[Any] | None = None,
        device: str | None = None,
        fallback_model: str | os.PathLike[str] | bytes | None = None,
        fallback_margin: float | None = None,
    ) -> None:
        if isinstance(labels, str):
            raise InvalidArgumentTypeError("labels must be a sequence of strings, not one string")
        resolve_threads(threads)  # the one check, before anything loads (the backend resolves it)
        requested = resolve_providers(providers, device)
        self._on_error = self._check_on_error(on_error)
        if not isinstance(jpeg_draft, bool):
            raise InvalidArgumentTypeError(f"jpeg_draft must be True or False, got {jpeg_draft!r}")
        if max_image_pixels is DEFAULT:
            max_image_pixels = pixel_limit_default()
        elif max_image_pixels is not None and (not isinstance(max_image_pixels, int) or max_image_pixels < 1):
            raise InvalidArgumentError(f"max_image_pixels must be a positive int or None, got {max_image_pixels!r}")
        self.max_image_pixels = max_image_pixels
        path, source = _model_source(model)
        fallback = None if fallback_model is None else _model_source(fallback_model, "fallback_model")
        fallback_margin = check_fallback_arguments(fallback_model, fallback_margin, source)
        try:
            spec = None if preprocess is None else PreprocessSpec.coerce(preprocess)
        except ContractError as exc:
            raise ContractError(f"{source}: preprocess: {exc}") from None
        backend_class = load_backend(backend)

        def load(file: Path | None, given: Any, **fallback: Any) -> Backend:
            """The backend on ``file``, or on the bytes ``given`` when there is no file."""
            return backend_class(
                file if file is not None else bytes(given),
                threads=threads,
                labels=list(labels) if labels is not None else None,
                preprocess=spec,
                max_image_pixels=effective_pixel_limit(max_image_pixels),
                jpeg_draft=jpeg_draft,
                providers=requested,
                **fallback,
            )

        if fallback is None:
            self._backend = load(path, model)
        else:  # the backend answers the near-ties from its own preprocessed rows
            answering = load(fallback[0], fallback_model)
            self._backend = load(path, model, fallback=answering, fallback_margin=fallback_margin)
        #: The model file (None when the model was given as bytes).
        self.model_path = path
        self._source = source

    # -- properties ----------------------------------------------------------------------
    @property
    def contract(self) -> ModelContract:
        """The effective contract (the model's, with explicit overrides applied)."""
        return self._backend.contract

    @property
    def labels(self) -> tuple[str, ...]:
        return self.contract.labels

    @property
    def num_classes(self) -> int:
        return self.contract.num_classes

    @property
    def input_size(self) -> tuple[int, int, int]:
        crop = self.contract.preprocess.crop_size
        return (3, crop, crop)

    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def model_batch(self) -> int:
        """Images per ONNX Runtime run when streaming: the model's fixed batch size, else the
        smallest power of two ``b`` with ``b * t1 >= 4 ms`` (``t1``: one image's run time,
        measured once, on first use), at most 32 -- the same rule on both backends."""
        return self._backend.model_batch

    @property
    def threads(self) -> int:
        """The threads the backend uses: ``threads``, or the CPUs this process may use (its
        affinity and cgroup quota, not ``os.cpu_count()``)."""
        return self._backend.threads

    @property
    def providers(self) -> tuple[str, ...]:
        """The execution providers the model runs on, in priority order; ONNX Runtime's CPU
        provider comes last (it takes the nodes no other provider does)."""
        return self._backend.providers

    @property
    def jpeg_draft(self) -> bool:
        """Whether JPEGs are decoded in draft mode (``Classifier(..., jpeg_draft=True)``)."""
        return self._backend.jpeg_draft

    @property
    def fallback_margin(self) -> float | None:
        """The margin below which ``fallback_model`` answers an image (None: no fallback)."""
        return self._backend.fallback_margin

    @property
    def fallbacks(self) -> int:
        """Images ``fallback_model`` has answered so far: near-ties whose fallback output was
        finite (0 without one)."""
        return self._backend.fallbacks

    def __repr__(self) -> str:
        _, h, w = self.input_size
        name = self.model_path.name if self.model_path is not None else self._source
        return (
            f"Classifier(backend={self.backend!r}, model={name!r}, "
            f"classes={self.num_classes}, input=3x{h}x{w}, threads={self.threads}, "
            f"providers={describe(self.providers)}{', jpeg_draft=True' if self.jpeg_draft else ''}"
            + (f", fallback_margin={self.fallback_margin:g}" if self.fallback_margin is not None else "")
            + ")"
        )

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _check_on_error(on_error: str) -> str:
        if on_error not in ON_ERROR:
            raise InvalidArgumentError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        return on_error

    def _mode(self, on_error: str | None) -> str:
        return self._check_on_error(on_error) if on_error is not None else self._on_error

    def _handle(self, errors: dict[int, ImageError], mode: str) -> None:
        if not errors:
            return
        if mode == "raise":
            raise errors[min(errors)]
        for index in sorted(errors):
            warnings.warn(f"skipped {errors[index]}", ImageSkippedWarning, stacklevel=4)

    def _chunks(
        self, items: list, batch_size: int, mode: str
    ) -> Iterator[tuple[int, int, np.ndarray, dict[int, ImageError]]]:
        """(start, stop, logits of the good items in ``items[start:stop]``, {index: error}) per
        chunk, in order.  With ``mode="raise"`` a chunk with a bad item yields the items before
        the first bad one, then raises its error, so what comes out before the error does not
        depend on ``batch_size``."""
        start = 0
        for out, errors in self._backend.iter_logits(items, batch_size):
            stop = min(start + batch_size, len(items))
            out, errors = _split_non_finite(out, errors, start, stop, items)
            if errors and mode == "raise":
                first = min(errors)
                if first > start:
                    yield start, first, out[: first - start], {}
                raise errors[first]
            self._handle(errors, mode)
            yield start, stop, out, errors
            start = stop

    # -- the API -------------------------------------------------------------------------
    def preprocess(self, images: Any, on_error: str | None = None) -> np.ndarray:
        """The float32 (N, 3, crop, crop) batch the model sees, bit-exact with torchvision.
        With ``on_error="skip"`` the rows of failed images are left out (N = good images).
        This holds every image at once; :meth:`logits` and :meth:`predict` stream."""
        mode = self._mode(on_error)
        batch, errors = self._backend.preprocess(expand_images(images))
        self._handle(errors, mode)
        return batch

    def logits(
        self,
        images: Any,
        *,
        batch_size: int | None = None,
        on_error: str | None = None,
        progress: bool | None = False,
    ) -> np.ndarray:
        """The raw model output, float32 (N, num_classes); failed images are left out when
        skipped, as in :meth:`preprocess`.  Streams like :meth:`predict`: only the result
        array grows with the number of images."""
        mode = self._mode(on_error)
        size = _check_batch_size(batch_size)
        items = expand_images(images)
        bar = _progress_bar(progress, len(items), "logits")
        parts = []
        try:
            for start, stop, out, _ in self._chunks(items, size, mode):
                parts.append(out)
                bar.update(stop - start)
        finally:
            bar.close()
        if not parts:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def iter_predict(
        self,
        images: Any,
        top_k: int = 5,
        *,
        batch_size: int | None = None,
        progress: bool | None = None,
        on_error: str | None = None,
    ) -> Iterator[Prediction]:
        """:meth:`predict` as a generator: one :class:`Prediction` per input image, in input
        order, produced as the chunks finish (``batch_size`` images decoded at a time).  With
        ``on_error="raise"`` every prediction before the first bad image is produced, then
        that image's error is raised (whatever ``batch_size`` is)."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}")
        mode = self._mode(on_error)
        size = _check_batch_size(batch_size)
        items = expand_images(images)
        return self._iter_predict(items, top_k, size, progress, mode)

    def _iter_predict(
        self, items: list, top_k: int, size: int, progress: bool | None, mode: str
    ) -> Iterator[Prediction]:
        probabilities_out = self.contract.output_kind == "probabilities"
        k = min(top_k, self.num_classes)
        labels = self.labels
        bar = _progress_bar(progress, len(items), "predict")
        try:
            for start, stop, out, errors in self._chunks(items, size, mode):
                probabilities = out.astype(np.float32) if probabilities_out else _softmax(out)
                order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
                row = 0
                for index in range(start, stop):
                    source = items[index][0]
                    if index in errors:
                        yield Prediction(source, (), errors[index])
                        continue
                    best = tuple(ClassScore(labels[c], int(c), float(probabilities[row, c])) for c in order[row])
                    yield Prediction(source, best)
                    row += 1
                bar.update(stop - start)
        finally:
            bar.close()

    def predict(
        self,
        images: Any,
        top_k: int = 5,
        *,
        batch_size: int | None = None,
        progress: bool | None = None,
        on_error: str | None = None,
    ) -> list[Prediction]:
        """One :class:`Prediction` per input image, in input order: the ``top_k`` classes with
        their softmax probabilities (float64 softmax, reported as float32), best first.  A
        skipped image keeps its place, with ``error`` set and no classes.

        ``images``: a path, directory, glob pattern, bytes, PIL image or HxWx3 uint8 array, or
        a list of them.  ``batch_size``: images decoded and held at once (None:
        :data:`DECODE_BATCH`); memory stays flat in the number of images.  ``progress``: a
        tqdm bar on stderr (None: when stderr is a terminal)."""
        return list(self.iter_predict(images, top_k, batch_size=batch_size, progress=progress, on_error=on_error))
