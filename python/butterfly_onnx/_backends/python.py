"""The python backend: onnxruntime for the model, Pillow for decoding, and
:mod:`butterfly_onnx.preprocess` for torchvision-exact preprocessing.  Imports neither torch
nor torchvision.

Images are decoded and preprocessed on a pool of ``threads`` worker threads (Pillow releases
the GIL while decoding and resampling), each writing its own row of one preallocated batch.
The model runs ``thread_split(threads, model size)`` times at once (``butterfly_onnx._backends``:
the same rule as the Rust core; onnxruntime releases the GIL while it runs), on one shared
session when each run has one intra-op thread.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from .. import preprocess as _pre
from ..contract import ModelContract, PreprocessSpec, check_output, resolve_contract
from ..errors import (
    BackendUnavailableError,
    ButterflyError,
    ImageError,
    InvalidArgumentError,
    InvalidModelError,
    ModelNotFoundError,
)
from ..images import ImageItem, decode_rgb
from . import (
    check_same_question,
    fallback_margin_for,
    model_batch_for,
    near_ties,
    piece_rows,
    pipelined_logits,
    resolve_threads,
    thread_split,
)
from .providers import CPU, Provider, check_available, check_in_use, init_failed_message

if TYPE_CHECKING:
    from . import Backend as _Protocol

__all__ = ["Backend"]


def _static(dim: object) -> int | None:
    """A fixed dimension of an ONNX Runtime shape, None for a symbolic one."""
    return dim if isinstance(dim, int) and dim > 0 else None


class Backend:
    name = "python"

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
        fallback: _Protocol | None = None,
        fallback_margin: float | None = None,
    ) -> None:
        if isinstance(model, bytes):
            model_path = None
            source = "<model bytes>"
        else:
            model_path = Path(model)
            source = str(model_path)
            if not model_path.exists():
                raise ModelNotFoundError(f"{source}: no such model file")
            if not model_path.is_file():
                raise InvalidModelError(f"{source}: not a file")
        self.threads = resolve_threads(threads)
        self.model_path = model_path
        self._source = source
        self.max_image_pixels = max_image_pixels
        self.jpeg_draft = jpeg_draft

        model_bytes = len(model) if isinstance(model, bytes) else Path(model).stat().st_size
        self._runs, intra = thread_split(self.threads, model_bytes)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no warnings on stderr for ordinary models
        # Idle intra-op threads sleep instead of spinning: the next chunk decodes on the same
        # cores while the model runs (measured, 2-core VM, Lite0, threads=2, interleaved
        # rounds: 43-90 images/s without spinning against 29-48 with it).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        check_available(providers, ort.get_available_providers())
        # Runs of one intra-op thread compute on their caller's thread: one session serves
        # them all (onnxruntime's Run is thread-safe), one copy of the model.  Runs of
        # several threads get a session each (one would share one intra-op pool).
        copies = 1 if intra == 1 else self._runs
        loadable: str | bytes = source if model_path is not None else bytes(model)  # bytes when no path
        sessions = [self._session_for(loadable, options, providers) for _ in range(copies)]
        #: The providers the session uses, ONNX Runtime's CPU provider last (it takes the
        #: nodes no other provider does): the same list the rust backend reports.
        self.providers: tuple[str, ...] = tuple(sessions[0].get_providers())
        self._session = sessions[0]
        # The free run slots (``runs`` of them, each a session): a run takes one and gives it
        # back, so at most ``runs`` run at once, however many callers share the classifier.
        self._free: queue.SimpleQueue[ort.InferenceSession] = queue.SimpleQueue()
        for slot in range(self._runs):
            self._free.put(sessions[slot % copies])

        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        self.contract: ModelContract = resolve_contract(
            self._session.get_modelmeta().custom_metadata_map,
            labels=labels,
            preprocess=preprocess,
            inputs=[(i.name, [_static(d) for d in i.shape], i.type) for i in inputs],
            outputs=[(o.name, [_static(d) for d in o.shape], o.type) for o in outputs],
            source=source,
        )
        model_input = next(i for i in inputs if i.name == self.contract.input_name)
        # A model exported with a fixed batch size is fed in chunks of that size.
        self._batch_limit = _static(model_input.shape[0])
        self._pool: ThreadPoolExecutor | None = None
        self._run_pool: ThreadPoolExecutor | None = None
        self._pool_lock = Lock()
        self._model_batch: int | None = self._batch_limit
        self._model_batch_lock = Lock()
        # The near-tie fallback: its rows come from this model's preprocessed batch.
        self._fallback = fallback
        self._fallback_margin: float | None = None
        self._fallbacks = 0
        self._fallbacks_lock = Lock()
        if fallback is not None:
            self._fallback_margin = fallback_margin_for(self.contract, fallback_margin, source)
            fallback_source = str(fallback.model_path) if fallback.model_path is not None else "<fallback_model bytes>"
            check_same_question(self.contract, fallback.contract, source, fallback_source)

    def _session_for(
        self, model: str | bytes, options: ort.SessionOptions, providers: Sequence[Provider]
    ) -> ort.InferenceSession:
        """One session on ``providers``, or the error: an unloadable model is InvalidModelError;
        a provider that fails to initialise (the model loads on the CPU provider alone), or
        that the session dropped (onnxruntime's own fallback), BackendUnavailableError."""
        try:
            # enable_fallback=0: onnxruntime would otherwise retry on the CPU provider after
            # a provider error (and again on a failed run), printing to stdout.
            session = ort.InferenceSession(model, sess_options=options, providers=list(providers), enable_fallback=0)
        except Exception as exc:  # InvalidProtobuf, InvalidGraph, Fail, NoSuchFile, EP errors...
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            accelerated = [name for name, _ in providers if name != CPU]
            if accelerated and self._loads_on_cpu(model, options):
                raise BackendUnavailableError(init_failed_message(accelerated[0], message)) from None
            raise InvalidModelError(f"{self._source}: not a loadable ONNX model: {message}") from None
        session.disable_fallback()
        check_in_use(providers, session.get_providers())
        return session

    @staticmethod
    def _loads_on_cpu(model: str | bytes, options: ort.SessionOptions) -> bool:
        try:
            ort.InferenceSession(model, sess_options=options, providers=[CPU])
        except Exception:
            return False
        return True

    # -- preprocessing -------------------------------------------------------------------
    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="butterfly-pre")
            return self._pool

    def _runner(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._run_pool is None:
                self._run_pool = ThreadPoolExecutor(self._runs, thread_name_prefix="butterfly-run")
            return self._run_pool

    def _preprocess_one(self, item: ImageItem, row: np.ndarray) -> ImageError | None:
        try:
            spec = self.contract.preprocess
            rgb = decode_rgb(item, self.max_image_pixels, jpeg_draft=spec if self.jpeg_draft else None)
            _pre.preprocess_image(rgb, spec, row)
        except ImageError as exc:
            return exc
        return None

    def preprocess(self, items: list[ImageItem]) -> tuple[np.ndarray, dict[int, ImageError]]:
        crop = self.contract.preprocess.crop_size
        try:
            batch = np.empty((len(items), 3, crop, crop), dtype=np.float32)
        except MemoryError:
            raise InvalidArgumentError(
                f"{self._source}: a batch of {len(items)} images at {crop}x{crop} needs "
                f"{len(items) * 3 * crop * crop * 4 / 2**30:.1f} GiB, more than is available; "
                "use a smaller batch_size"
            ) from None
        if self.threads == 1 or len(items) <= 1:
            results = [self._preprocess_one(item, batch[i]) for i, item in enumerate(items)]
        else:
            results = list(self._executor().map(self._preprocess_one, items, batch))
        errors = {i: err for i, err in enumerate(results) if err is not None}
        if errors:
            keep = [i for i in range(len(items)) if i not in errors]
            batch = np.ascontiguousarray(batch[keep])
        return batch, errors

    # -- inference -----------------------------------------------------------------------
    def run(self, batch: np.ndarray, size: int | None = None) -> np.ndarray:
        """The model's output for ``batch``, fed ``size`` rows per run (None: all), at most
        ``ceil(N / runs)`` so the batch is spread over the concurrent runs, or the model's fixed
        batch (the last piece zero-padded); up to ``runs`` pieces run at once."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if len(batch) == 0:
            return np.zeros((0, self.contract.num_classes), dtype=np.float32)
        step = self._batch_limit or piece_rows(len(batch), size or len(batch), self._runs)
        starts = range(0, len(batch), step)
        pieces = [batch[start : start + step] for start in starts]
        if len(pieces) == 1 or self._runs == 1:
            parts = [self._run_piece(piece, step) for piece in pieces]
        else:
            parts = list(self._runner().map(self._run_piece, pieces, [step] * len(pieces)))
        out = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.ascontiguousarray(out, dtype=np.float32)

    def _run_piece(self, chunk: np.ndarray, step: int) -> np.ndarray:
        """One ONNX Runtime run on a free session."""
        rows = len(chunk)
        if self._batch_limit and rows < step:  # a fixed-batch model: zero-pad, as the Rust core does
            chunk = np.concatenate([chunk, np.zeros((step - rows, *chunk.shape[1:]), np.float32)])
        session = self._free.get()
        try:
            out = session.run([self.contract.output_name], {self.contract.input_name: chunk})[0]
        except MemoryError:
            raise
        except Exception as exc:  # onnxruntime's Fail, InvalidArgument, RuntimeException...
            # The rust backend's class and wording for the same failure (Error::Inference).
            raise ButterflyError(f"{self._source}: inference failed: {exc}") from exc
        finally:
            self._free.put(session)
        check_output(self.contract, out.shape, self._source, rows=len(chunk))
        return out[:rows]

    def _answered(self, batch: np.ndarray, size: int | None = None) -> np.ndarray:
        """:meth:`run`, with the rows :func:`near_ties` picks replaced by the fallback model's
        output on the same rows of ``batch`` where that is finite (as the Rust core's
        ``Classifier::answer_near_ties``)."""
        out = self.run(batch, size)
        if self._fallback is None or self._fallback_margin is None:
            return out
        rows = near_ties(out, self._fallback_margin)
        if len(rows):
            again = self._fallback.run(batch[rows])
            finite = np.isfinite(again).all(axis=1)
            out[rows[finite]] = again[finite]
            with self._fallbacks_lock:
                self._fallbacks += int(finite.sum())
        return out

    @property
    def fallback_margin(self) -> float | None:
        return self._fallback_margin

    @property
    def fallbacks(self) -> int:
        return self._fallbacks

    def logits(self, items: list[ImageItem]) -> tuple[np.ndarray, dict[int, ImageError]]:
        batch, errors = self.preprocess(items)
        return self._answered(batch), errors

    @property
    def model_batch(self) -> int:
        """Rows per ONNX Runtime run in :meth:`iter_logits`: the model's fixed batch, else the
        rule of :func:`butterfly_onnx._backends.model_batch_for`, measured once on first use."""
        with self._model_batch_lock:
            if self._model_batch is None:
                self._model_batch = self._measure_model_batch()
            return self._model_batch

    def _measure_model_batch(self) -> int:
        crop = self.contract.preprocess.crop_size
        one = np.zeros((1, 3, crop, crop), dtype=np.float32)
        feed = {self.contract.input_name: one}
        names = [self.contract.output_name]
        try:
            self._session.run(names, feed)  # warm-up
            times = []
            for _ in range(3):
                started = time.perf_counter()
                self._session.run(names, feed)
                times.append(time.perf_counter() - started)
        except Exception:  # the real run reports the error
            return 1
        return model_batch_for(min(times))

    def iter_logits(
        self, items: Sequence[ImageItem], batch_size: int
    ) -> Iterator[tuple[np.ndarray, dict[int, ImageError]]]:
        """Per chunk of ``batch_size`` items: (logits of the good ones, {index: error});
        the next chunk decodes while the model runs (see ``pipelined_logits``), which is fed
        :attr:`model_batch` rows per run, the runs spread over the concurrent sessions."""
        return pipelined_logits(self.preprocess, self._answered, items, batch_size, self.model_batch)

    def close(self) -> None:
        with self._pool_lock:
            for pool in (self._pool, self._run_pool):
                if pool is not None:
                    pool.shutdown(wait=False)
            self._pool = self._run_pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


if TYPE_CHECKING:  # mypy: this class satisfies the one Backend protocol
    _checked: type[_Protocol] = Backend
