"""Scale-out inference on Ray Data: the same exact predictions as :class:`Classifier`, over
as many images as a Ray cluster can hold, with no torch on the workers.

>>> from butterfly_onnx.ray import predict_dataset, write_parquet     # doctest: +SKIP
>>> ds = predict_dataset("photos/", "butterflies.onnx", concurrency=2)  # doctest: +SKIP
>>> write_parquet(ds, "predictions.parquet")                            # doctest: +SKIP

:func:`predict_dataset` returns a lazy ``ray.data.Dataset`` with one row per image:
``path`` (the image's source path, as Ray's readers name it), ``label``, ``index`` and
``probability`` (the top-1 class), ``top_k`` (a list of ``{label, index, probability}``, best
first) and ``error`` (None, or the message naming the image).  One bad file never fails the
job: it becomes an ``error`` row (``on_error="skip"``, the default).

Each worker is a Ray actor (``map_batches`` with a callable class and
``compute=ActorPoolStrategy(...)``) that opens the :class:`Classifier` once and decodes with
the package's own decoders (never Ray's PIL-based ``read_images``).  The model travels to the
workers through Ray's object store as the file's bytes (``model_transfer="bytes"``, the
default: nothing needs to be installed or mounted on the workers but the package), or by
path (``model_transfer="path"``: every node opens the same path, e.g. on shared storage).

Ray is imported only inside the functions here: ``import butterfly_onnx`` never imports it
(``import ray`` below is absolute, so it is the real Ray, not this module).  See
``docs/scale.md``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._backends import resolve_threads
from ._backends.providers import provider_arguments, resolve_providers
from .errors import (
    BackendUnavailableError,
    ButterflyError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ModelNotFoundError,
)

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow
    import ray.data

__all__ = [
    "COLUMNS",
    "Predictor",
    "predict_dataset",
    "flatten_top_k",
    "write_parquet",
    "write_csv",
    "write_submission",
    "iter_predictions",
    "predict_cli",
    "serve_deployment",
]

#: The columns of :func:`predict_dataset`'s rows, in order.
COLUMNS = ("path", "label", "index", "probability", "top_k", "error")

#: Images per batch handed to one actor call (its Classifier decodes them in parallel on
#: ``threads`` threads, then runs one model batch).
DEFAULT_BATCH_SIZE = 32

MODEL_TRANSFERS = ("bytes", "path")
ON_ERROR = ("skip", "raise")
BACKENDS = ("python", "rust")

_DEFAULT: Any = "default"  # max_image_pixels: the Classifier's own default


def _import_ray() -> Any:
    try:
        import ray  # the real Ray (absolute import)
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(
            f"butterfly_onnx.ray needs Ray Data ({exc}); install it with: pip install 'butterfly-onnx[ray]'"
        ) from None
    return ray


def _ensure_ray(ray: Any, address: str | None) -> None:
    """Reuse the running Ray session; otherwise ``ray.init(address)`` (None: a cluster found
    through RAY_ADDRESS or the latest ``ray start`` on this machine, else a new local one)."""
    if ray.is_initialized():
        return
    ray.init(address=address, logging_level=logging.WARNING)


# -- the rows ------------------------------------------------------------------------
def _schema() -> pyarrow.Schema:
    import pyarrow as pa

    score = pa.struct([("label", pa.string()), ("index", pa.int64()), ("probability", pa.float32())])
    return pa.schema(
        [
            ("path", pa.string()),
            ("label", pa.string()),
            ("index", pa.int64()),
            ("probability", pa.float32()),
            ("top_k", pa.list_(score)),
            ("error", pa.string()),
        ]
    )


def _message(error: BaseException, source: str, path: str) -> str:
    """The error's message, naming the image by its row's ``path``."""
    text = str(error)
    if source and source != path and text.startswith(source):
        return path + text[len(source) :]
    return text if text.startswith(path) else f"{path}: {text}"


class Predictor:
    """The callable class each Ray actor runs: one :class:`Classifier` per actor, opened in
    ``__init__`` (again after a restart), applied to batches (``pyarrow.Table``) of either
    ``path`` + ``bytes`` (a Ray read) or ``path`` + ``file`` (paths this module listed; the
    actor reads the file).  Returns the rows described in :data:`COLUMNS`."""

    def __init__(
        self,
        model: tuple[str, Any],
        backend: str = "rust",
        threads: int = 1,
        top_k: int = 5,
        on_error: str = "skip",
        classifier_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        from .classifier import Classifier

        self.top_k = top_k
        self.on_error = on_error
        kind, value = model
        if kind == "bytes":
            import ray

            value = bytes(ray.get(value) if isinstance(value, ray.ObjectRef) else value)
        self.classifier = Classifier(value, backend=backend, threads=threads, **dict(classifier_kwargs or {}))

    def _items(self, batch: pyarrow.Table) -> tuple[list[str], list[Any]]:
        names = batch.column_names
        if "path" not in names or ("bytes" not in names and "file" not in names):
            raise InvalidArgumentError(
                f"predict_dataset: the source rows need a 'path' and a 'bytes' column "
                f"(ray.data.read_binary_files(..., include_paths=True)), got columns {names}"
            )
        paths = [str(p) for p in batch.column("path").to_pylist()]
        if "bytes" in names:
            items = [b if b is not None else b"" for b in batch.column("bytes").to_pylist()]
        else:
            items = [Path(f) for f in batch.column("file").to_pylist()]
        return paths, items

    def _predict(self, items: list[Any]) -> list[Any]:
        from .classifier import ImageSkippedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImageSkippedWarning)
            return self.classifier.predict(items, top_k=self.top_k, on_error=self.on_error)

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        paths, items = self._items(batch)
        rows: list[tuple[str, Any, str | None]]
        try:
            predictions = self._predict(items)
            if len(predictions) != len(items):
                raise RuntimeError("one prediction per item expected")
            rows = [(p, pred, None) for p, pred in zip(paths, predictions, strict=True)]
        except ButterflyError:
            if self.on_error == "raise":
                raise
            # Something about the batch as a whole failed (say a missing file whose name looks
            # like a glob pattern): predict the images one by one, so only the bad one fails.
            rows = []
            for p, item in zip(paths, items, strict=True):
                try:
                    pred = self._predict([item])
                    rows.append((p, pred[0] if len(pred) == 1 else None, None))
                except ButterflyError as exc:
                    rows.append((p, None, _message(exc, str(p), p)))
        columns: dict[str, list[Any]] = {name: [] for name in COLUMNS}
        for path, pred, failure in rows:
            if failure is None and pred is not None and pred.error is not None:
                failure = _message(pred.error, pred.source, path)
            ok = failure is None and pred is not None and bool(pred.top_k)
            if failure is None and not ok:
                failure = f"{path}: no prediction"
            top = list(pred.top_k) if ok else []
            columns["path"].append(path)
            columns["label"].append(top[0].label if ok else None)
            columns["index"].append(int(top[0].index) if ok else None)
            columns["probability"].append(float(top[0].probability) if ok else None)
            columns["top_k"].append(
                [{"label": s.label, "index": int(s.index), "probability": float(s.probability)} for s in top]
            )
            columns["error"].append(failure)
        return pa.table(columns, schema=_schema())


# -- the dataset ---------------------------------------------------------------------
def _source_dataset(ray: Any, source: Any) -> tuple[Any, bool]:
    """(dataset, reads_in_tasks): a Ray Dataset of ``path`` + ``bytes`` rows (given, or read
    by Ray from remote URIs) or of ``path`` + ``file`` rows (local paths, read by the actors)."""
    if isinstance(source, ray.data.Dataset):
        try:
            schema = source.schema(fetch_if_missing=False)
        except TypeError:  # pragma: no cover - older Ray
            schema = None
        names = list(schema.names) if schema is not None else None
        if names is not None and not ({"path", "bytes"} <= set(names)):
            raise InvalidArgumentError(
                "predict_dataset: a Ray Dataset source needs 'bytes' and 'path' columns, as "
                f"ray.data.read_binary_files(..., include_paths=True) gives; it has {names}"
            )
        return source, True
    if isinstance(source, (str, os.PathLike)):
        sources = [source]
    elif isinstance(source, (list, tuple)):
        sources = list(source)
        if not sources:
            raise InvalidArgumentError("predict_dataset: the source list is empty")
    else:
        raise InvalidArgumentTypeError(
            "predict_dataset: source must be a path, a directory, a glob pattern, a list of "
            f"them, or a ray.data.Dataset with 'bytes' and 'path' columns, got {type(source).__name__}"
        )
    for s in sources:
        if not isinstance(s, (str, os.PathLike)):
            raise InvalidArgumentTypeError(f"predict_dataset: source entries must be paths, got {type(s).__name__}")
    remote = ["://" in os.fspath(s) for s in sources]
    if any(remote):
        if not all(remote):
            raise InvalidArgumentError("predict_dataset: do not mix URIs (scheme://) with local paths in one source")
        return ray.data.read_binary_files([os.fspath(s) for s in sources], include_paths=True), True
    from .images import expand_images

    items = expand_images([os.fspath(s) for s in sources])  # dirs and globs: sorted, as Classifier
    rows = [{"path": name, "file": os.path.abspath(str(payload))} for name, payload in items]
    return ray.data.from_items(rows), False


def _pool(concurrency: Any, default: int) -> tuple[Any, int]:
    """(ActorPoolStrategy kwargs, the most actors it may run)."""
    if concurrency is None:
        return {"size": default}, default
    if isinstance(concurrency, bool):
        raise InvalidArgumentError(f"concurrency must be an int or a (min, max) pair, got {concurrency!r}")
    if isinstance(concurrency, int):
        if concurrency < 1:
            raise InvalidArgumentError(f"concurrency must be at least 1, got {concurrency}")
        return {"size": concurrency}, concurrency
    if (
        isinstance(concurrency, (tuple, list))
        and len(concurrency) == 2
        and all(isinstance(c, int) and not isinstance(c, bool) for c in concurrency)
        and 1 <= concurrency[0] <= concurrency[1]
    ):
        return {"min_size": concurrency[0], "max_size": concurrency[1]}, concurrency[1]
    raise InvalidArgumentError(
        f"concurrency must be an int or a (min, max) pair with 1 <= min <= max, got {concurrency!r}"
    )


def _cluster_cpus(ray: Any) -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def predict_dataset(
    source: Any,
    model: str | os.PathLike[str] | bytes,
    *,
    backend: str = "rust",
    top_k: int = 5,
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float | None = None,
    threads: int | None = None,
    on_error: str = "skip",
    model_transfer: str = "bytes",
    max_image_pixels: int | None = _DEFAULT,
    jpeg_draft: bool = False,
    providers: Sequence[Any] | None = None,
    device: str | None = None,
    address: str | None = None,
    ray_remote_args: Mapping[str, Any] | None = None,
    check_model: bool = True,
    _predictor: type | None = None,
) -> ray.data.Dataset:
    """Predict every image of ``source`` on Ray Data; a lazy Dataset of :data:`COLUMNS` rows.

    Args:
        source: an image path, a directory (its image files, sorted, not recursive), a glob
            pattern, a list of them (listed here, then read by the actors: the paths must be
            readable on every node), URIs ``scheme://...`` (read by Ray's
            ``read_binary_files``), or a ``ray.data.Dataset`` with ``bytes`` and ``path``
            columns (``ray.data.read_binary_files(..., include_paths=True)``).
        model: the ``.onnx`` file's path, or its bytes.
        backend: ``"rust"`` (default: decoding outside the GIL) or ``"python"``.
        top_k: classes per row.
        batch_size: images per actor call.
        concurrency: actors: ``n`` (a fixed pool) or ``(min, max)`` (autoscaling).  None:
            one per CPU of the cluster, less one CPU for Ray's read tasks when Ray reads.
        num_cpus: CPUs reserved per actor.  None: ``(cluster CPUs - reserve) / max actors``,
            at most 1 — fractional when actors are crowded, so read tasks always find a CPU
            (actors holding every CPU starve the reads and the job never ends).
        threads: the Classifier's threads per actor; None: ``num_cpus`` rounded (at least 1).
        on_error: ``"skip"`` (a bad image becomes an ``error`` row) or ``"raise"`` (it fails
            the job).
        model_transfer: ``"bytes"`` (the model goes through the object store; default) or
            ``"path"`` (each actor opens ``model`` itself: shared storage).
        max_image_pixels: the Classifier's pixel limit (default: the Classifier's default).
        jpeg_draft: decode JPEGs at a reduced DCT scale as Pillow's ``draft`` does (the
            Classifier's ``jpeg_draft``; faster, not torchvision-exact: docs/inference.md).
        providers, device: the execution providers each actor's Classifier runs on (as
            ``Classifier`` takes them; docs/inference.md, "Execution providers"); an actor whose
            ONNX Runtime lacks one fails with BackendUnavailableError, never falls back.  Give
            GPU actors their GPU with ``ray_remote_args={"num_gpus": 1}``.
        address: ``ray.init(address)`` when no Ray session is running (None: an existing
            cluster if one is found, else a local one).
        ray_remote_args: more ``map_batches`` arguments for the actors, by Ray's names
            (``num_gpus``, ``memory``, ``resources``, ``label_selector``, ``runtime_env``, ...;
            Ray 2.60 deprecates the free-form ones).  Ray Data restarts dead actors and retries
            their batches by default (``max_restarts=-1``, ``max_task_retries=-1``).
        check_model: open the model once here first, so a missing or invalid model (or
            backend) is one clear error before any actor starts.
    """
    # Long on purpose: every argument is checked here on the driver, before any Ray work starts, so
    # a mistake is one clear error instead of one per actor; the Ray part at the end is short.
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, value in (("top_k", top_k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive int, got {value!r}")
    if threads is not None:
        resolve_threads(threads)  # the Classifier's one check, before any actor starts
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, (int, float)) or num_cpus < 0):
        raise InvalidArgumentError(f"num_cpus must be a non-negative number or None, got {num_cpus!r}")
    if on_error not in ON_ERROR:
        raise InvalidArgumentError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    _pool(concurrency, 1)  # checked before any Ray work
    if model_transfer not in MODEL_TRANSFERS:
        raise InvalidArgumentError(f"model_transfer must be one of {MODEL_TRANSFERS}, got {model_transfer!r}")
    # What the actors open: the file's bytes (through the object store) or its absolute path.
    target: bytes | str
    if isinstance(model, (bytes, bytearray, memoryview)):
        if model_transfer == "path":
            raise InvalidArgumentError('model_transfer="path" needs the model as a path, not bytes')
        target = bytes(model)
    else:
        model_path = Path(model)
        if not model_path.is_file():
            raise ModelNotFoundError(f"{model_path}: no such model file")
        target = model_path.read_bytes() if model_transfer == "bytes" else str(model_path.resolve())
    classifier_kwargs: dict[str, Any] = {}
    if max_image_pixels is not _DEFAULT:
        classifier_kwargs["max_image_pixels"] = max_image_pixels
    if not isinstance(jpeg_draft, bool):
        raise InvalidArgumentError(f"jpeg_draft must be True or False, got {jpeg_draft!r}")
    if jpeg_draft:
        classifier_kwargs["jpeg_draft"] = True
    # Checked here, once (an unknown name or device); each actor's Classifier registers them and
    # refuses what its node's ONNX Runtime lacks.
    classifier_kwargs["providers"] = list(resolve_providers(providers, device))

    if check_model:  # a bad model or a missing backend: one clear error here, not in every actor
        from .classifier import Classifier

        # On the CPU provider: the driver need not have the actors' accelerator.
        Classifier(target, backend=backend, threads=1, **{**classifier_kwargs, "providers": None})

    ray = _import_ray()
    _ensure_ray(ray, address)
    dataset, reads_in_tasks = _source_dataset(ray, source)

    cpus = _cluster_cpus(ray)
    reserve = 1.0 if reads_in_tasks else 0.0  # one read task must always be able to run
    pool, max_actors = _pool(concurrency, max(1, int(cpus - reserve)))
    if num_cpus is None:
        num_cpus = min(1.0, max(0.0, cpus - reserve) / max_actors)
        num_cpus = math.floor(num_cpus * 100) / 100
    if threads is None:
        threads = max(1, int(round(num_cpus)))

    shipped = ("bytes", ray.put(target)) if isinstance(target, bytes) else ("path", target)
    remote_args = dict(ray_remote_args or {})
    return dataset.map_batches(
        _predictor or Predictor,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(**pool),
        num_cpus=num_cpus,
        udf_modifying_row_count=False,
        fn_constructor_kwargs={
            "model": shipped,
            "backend": backend,
            "threads": threads,
            "top_k": top_k,
            "on_error": on_error,
            "classifier_kwargs": classifier_kwargs,
        },
        **remote_args,
    )


# -- writers -------------------------------------------------------------------------
def flatten_top_k(ds: ray.data.Dataset, top_k: int) -> ray.data.Dataset:
    """The rows with ``top_k`` spread over ``label_i, index_i, probability_i`` columns
    (i = 1..top_k; empty where a row has fewer), for writers without nested types (CSV)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise InvalidArgumentError(f"top_k must be a positive int, got {top_k!r}")

    def flatten(batch: pyarrow.Table) -> pyarrow.Table:
        import pyarrow as pa

        scores = batch.column("top_k").to_pylist()
        out: dict[str, Any] = {name: batch.column(name) for name in ("path", "label", "index", "probability")}
        for i in range(top_k):
            out[f"label_{i + 1}"] = pa.array([s[i]["label"] if len(s) > i else None for s in scores], pa.string())
            out[f"index_{i + 1}"] = pa.array([s[i]["index"] if len(s) > i else None for s in scores], pa.int64())
            out[f"probability_{i + 1}"] = pa.array(
                [s[i]["probability"] if len(s) > i else None for s in scores], pa.float32()
            )
        out["error"] = batch.column("error")
        return pa.table(out)

    return ds.map_batches(flatten, batch_format="pyarrow", udf_modifying_row_count=False)


def write_parquet(ds: ray.data.Dataset, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Ray's Parquet writer: a directory of ``.parquet`` files, nested ``top_k`` kept."""
    ds.write_parquet(os.fspath(path), **kwargs)


def write_csv(ds: ray.data.Dataset, path: str | os.PathLike[str], *, top_k: int, **kwargs: Any) -> None:
    """Ray's CSV writer (a directory of ``.csv`` files), ``top_k`` flattened as in
    :func:`flatten_top_k` (pass the ``top_k`` given to :func:`predict_dataset`)."""
    flatten_top_k(ds, top_k).write_csv(os.fspath(path), **kwargs)


def iter_predictions(ds: ray.data.Dataset | Iterable[Mapping[str, Any]]) -> Iterator[Any]:
    """The rows as :class:`~butterfly_onnx.classifier.Prediction` objects (streamed, in the
    dataset's order), for :mod:`butterfly_onnx.results`' writers; a failed row's ``error`` is
    an :class:`~butterfly_onnx.errors.ImageError` carrying the row's message."""
    from .classifier import ClassScore, Prediction
    from .errors import ImageError

    for row in ds.iter_rows() if hasattr(ds, "iter_rows") else ds:
        path = str(row["path"])
        if row["error"] is not None:
            yield Prediction(path, (), ImageError(str(row["error"]), source=path))
        else:
            scores = tuple(ClassScore(s["label"], int(s["index"]), float(s["probability"])) for s in row["top_k"])
            yield Prediction(path, scores)


def write_submission(
    ds: ray.data.Dataset | Iterable[Mapping[str, Any]],
    path: str | os.PathLike[str],
    filenames: Sequence[str] | None = None,
) -> list[str]:
    """A Kaggle submission: ONE CSV file ``filename,label`` (top-1, as
    :func:`butterfly_onnx.results.write_submission` writes it), on the driver.

    ``filename`` is the base name of each row's path (Kaggle's test folder is flat).  With
    ``filenames`` (the test CSV's column), rows follow that order; without it, they are sorted
    by filename.  Rows are gathered by name first (a few dozen bytes each), since a Ray
    Dataset's order is not the CSV's.  Returns the error messages of the filenames left out
    (failed images, and names no row has)."""
    from .classifier import Prediction
    from .errors import ImageNotFoundError
    from .results import write_submission as write_kaggle

    by_name: dict[str, Any] = {}
    for prediction in iter_predictions(ds):
        name = os.path.basename(prediction.source)
        if prediction.ok or name not in by_name:
            by_name[name] = prediction
    order = list(filenames) if filenames is not None else sorted(by_name)
    rows = [
        by_name.get(name)
        or Prediction(name, (), ImageNotFoundError(f"{name}: no such image among the predictions", source=name))
        for name in order
    ]
    return [str(p.error) for p in write_kaggle(rows, order, path)]


# -- the CLI (``butterfly-onnx predict --ray [ADDRESS]``) ------------------------------
def _predict_cli(args: Any) -> int:
    from .datasets import read_image_list
    from .results import kaggle_csv_input, output_format

    inputs = [os.fspath(i) for i in args.inputs]
    output: str | None = None if getattr(args, "output", None) is None else os.fspath(args.output)
    parquet = output is not None and Path(output).suffix.lower() == ".parquet"
    fmt = output_format(output) if output is not None and not parquet else None  # before any work
    top_k = getattr(args, "top_k", None) or 5
    csv_input = kaggle_csv_input(inputs)
    filenames: list[str] | None = None
    if csv_input is not None:
        listed = read_image_list(csv_input)
        inputs, filenames = [str(item.path) for item in listed], [item.filename for item in listed]

    ray = _import_ray()
    address = getattr(args, "ray", None)
    if address in ("", "auto", True):
        address = None
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except Exception as exc:  # ConnectionError, ValueError, ...: one line, exit 2
            raise InvalidArgumentError(f"cannot connect to Ray at {address or 'auto'}: {exc}") from None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
    context = ray.data.DataContext.get_current()
    saved = (context.enable_progress_bars, context.execution_options.preserve_order)
    progress = getattr(args, "progress", None)
    context.enable_progress_bars = sys.stderr.isatty() if progress is None else bool(progress)
    context.execution_options.preserve_order = True  # rows in input order, as the plain CLI
    try:
        return _cli_run(args, inputs, filenames, output, fmt, top_k)
    finally:  # predict_cli may run inside a longer-lived process (tests, notebooks)
        context.enable_progress_bars, context.execution_options.preserve_order = saved


def _cli_run(
    args: Any, inputs: list[str], filenames: list[str] | None, output: str | None, fmt: str | None, top_k: int
) -> int:
    from .results import EXIT_OK, EXIT_PARTIAL, report_failures, text_line, write_predictions
    from .results import write_submission as write_kaggle

    parquet = fmt is None and output is not None
    options: dict[str, Any] = {}
    for name in ("batch_size", "threads", "backend", "jpeg_draft"):  # absent: predict_dataset's defaults
        if getattr(args, name, None):
            options[name] = getattr(args, name)
    if getattr(args, "max_image_pixels", None) is not None:
        # 0 = no limit of ours; the workers' Pillow keeps its ceiling (Classifier's rule there).
        options["max_image_pixels"] = args.max_image_pixels or None
    options.update(provider_arguments(args))
    ds = predict_dataset(inputs, args.model, top_k=top_k, **options)

    counts = {"ok": 0, "failed": 0}

    def report(predictions: Iterable[Any]) -> Iterator[Any]:
        return report_failures(predictions, counts)

    if parquet and output is not None:
        ds = ds.materialize()
        write_parquet(ds, output)
        with warnings.catch_warnings():
            # Ray 2.60 advises expressions over a Python filter for speed; this one reads only
            # the failed rows of a materialized dataset, to name them
            warnings.filterwarnings("ignore", "Use 'expr' instead of 'fn'", UserWarning)
            failed = ds.filter(lambda row: row["error"] is not None)
        for _ in report(iter_predictions(failed)):
            pass
    elif output is not None and filenames is not None and fmt == "csv":
        write_kaggle(report(iter_predictions(ds)), filenames, output)
    elif output is not None:
        write_predictions(report(iter_predictions(ds)), output, top_k=top_k)
    else:
        for prediction in report(iter_predictions(ds)):
            if getattr(args, "json", False):
                print(json.dumps(prediction.to_dict()))
            elif prediction.ok:
                print(text_line(prediction))
        sys.stdout.flush()
    return EXIT_PARTIAL if counts["failed"] else EXIT_OK


def predict_cli(args: Any) -> int:
    """``butterfly-onnx predict MODEL INPUTS... --ray [ADDRESS]``: the predict command on Ray
    Data.  Reads ``args.model, inputs, top_k, batch_size, threads, output, backend, json,
    progress, jpeg_draft`` and ``args.ray`` (an address, or None / ``"auto"``: the running Ray cluster if
    one is found, else a new local one).  Writes what the plain command writes (text lines,
    ``--json``, ``-o`` ``.csv`` / ``.jsonl``, a Kaggle CSV input with ``-o x.csv`` ->
    ``filename,label``), in input order, plus ``-o DIR.parquet`` (Ray's Parquet writer, a
    directory).  Returns the exit code: 0 all done, 1 some images failed (one stderr line
    each), 2 nothing done (one stderr line)."""
    from .results import EXIT_FAILED, print_error

    try:
        return _predict_cli(args)
    except (ButterflyError, OSError) as exc:
        print_error(exc)
        return EXIT_FAILED


# -- Ray Serve ------------------------------------------------------------------------
#: Ray Serve's batching knobs for :func:`serve_deployment` (``@serve.batch``): the same two
#: as ``butterfly-onnx serve`` (docs/serving.md), in Ray's units.
SERVE_MAX_BATCH_SIZE = 16
SERVE_BATCH_WAIT_TIMEOUT_S = 0.005


def serve_deployment(
    model: str | os.PathLike[str],
    *,
    num_replicas: int = 2,
    backend: str = "rust",
    threads: int | None = None,
    top_k: int = 5,
    max_batch_size: int = SERVE_MAX_BATCH_SIZE,
    batch_wait_timeout_s: float = SERVE_BATCH_WAIT_TIMEOUT_S,
    num_cpus: float = 1.0,
    name: str = "butterfly_onnx",
) -> Any:
    """A Ray Serve application (``serve.run(app)``) classifying images: ``num_replicas``
    replicas, each holding one :class:`Classifier` (the model travels to them as the file's
    bytes), each batching the requests it gets with ``@serve.batch`` and running one
    ``Classifier.predict`` per batch.

    Over HTTP (Serve's proxy): POST the encoded image as the body, ``?top_k=N`` optional; the
    answer is the object of ``predict --json`` (with ``error_class`` and status 400 for a bad
    image).  Through the handle ``serve.run`` returns:
    ``handle.classify.remote(image_bytes, top_k)`` gives the same dict.  Answers equal
    ``Classifier.predict`` on the same file exactly (docs/scale.md).
    """
    _import_ray()
    try:
        from ray import serve
    except ImportError as exc:
        raise BackendUnavailableError(
            f"serve_deployment needs Ray Serve ({exc}); install it with: pip install 'butterfly-onnx[ray]'"
        ) from None
    path = Path(model)
    if not path.is_file():
        raise ModelNotFoundError(f"{path}: model file not found")
    for key, value in (("num_replicas", num_replicas), ("top_k", top_k), ("max_batch_size", max_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{key} must be a positive int, got {value!r}")
    if backend not in BACKENDS:
        raise InvalidArgumentError(f"backend must be one of {BACKENDS}, got {backend!r}")
    model_bytes = path.read_bytes()
    default_top_k = top_k

    class ClassifierDeployment:
        def __init__(self, model_bytes: bytes) -> None:
            from butterfly_onnx.classifier import Classifier

            self.classifier = Classifier(model_bytes, backend=backend, threads=threads)

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)
        async def _batch(self, requests: list[tuple[bytes, int]]) -> list[dict[str, Any]]:
            import asyncio

            # One predict per top_k in the batch (usually one); off the event loop, so the
            # replica keeps taking requests for the next batch meanwhile.
            answers: list[dict[str, Any]] = [{} for _ in requests]
            for k in sorted({k for _, k in requests}):
                where = [i for i, (_, kk) in enumerate(requests) if kk == k]
                images = [requests[i][0] for i in where]
                predictions = await asyncio.to_thread(self.classifier.predict, images, k, on_error="skip")
                for i, prediction in zip(where, predictions, strict=True):
                    answer = prediction.to_dict()
                    if prediction.error is not None:
                        answer["error_class"] = type(prediction.error).__name__
                    answers[i] = answer
            return answers

        async def classify(self, image: bytes, top_k: int = default_top_k) -> dict[str, Any]:
            return await self._batch((bytes(image), int(top_k)))

        async def __call__(self, request: Any) -> Any:
            from starlette.responses import JSONResponse

            try:
                top_k = int(request.query_params.get("top_k", default_top_k))
            except ValueError:
                top_k = 0
            if top_k < 1:
                message = "top_k must be a positive integer"
                return JSONResponse({"error": message, "error_class": "InvalidArgumentError"}, status_code=400)
            answer = await self.classify(await request.body(), top_k)
            return JSONResponse(answer, status_code=400 if answer.get("error") else 200)

    deployment: Any = serve.deployment(name=name, num_replicas=num_replicas, ray_actor_options={"num_cpus": num_cpus})(
        ClassifierDeployment
    )
    return deployment.bind(model_bytes)
