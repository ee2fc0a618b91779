"""Writing predictions: CSV or JSON Lines (by the file's extension), and Kaggle submissions.

>>> from butterfly_onnx import Classifier, write_predictions, write_submission
>>> clf = Classifier("butterflies.onnx")                                    # doctest: +SKIP
>>> write_predictions(clf.iter_predict("photos/"), "predictions.csv")       # doctest: +SKIP

Both writers take any iterable of :class:`~butterfly_onnx.classifier.Prediction` (a generator
from ``iter_predict`` is written as it comes, nothing is held), and write the formats
``butterfly-onnx predict -o FILE`` writes (docs/inference.md, 'Command line'):

- ``.csv``: ``source,label,index,probability,label_1,index_1,probability_1,...,label_K,
  index_K,probability_K,error``: one row per input, a failed one with empty prediction fields
  and its error message;
- ``.jsonl``: one :meth:`Prediction.to_dict` object per line;
- a submission: exactly ``filename,label`` (top-1), one row per listed image, in order; an
  incomplete one is ``X.partial.csv`` (see :func:`write_submission`).

Text cells of the CSV that a spreadsheet would run as a formula get a leading ``'``
(:func:`csv_cell`); JSON never holds a bare NaN/Infinity (:func:`dumps`); every file is
written atomically (:mod:`butterfly_onnx.atomic`).
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import ImageError, InvalidArgumentError

__all__ = [
    "FORMATS",
    "output_format",
    "write_predictions",
    "write_submission",
    "csv_header",
    "PROG",
    "EXIT_OK",
    "EXIT_PARTIAL",
    "EXIT_FAILED",
    "print_error",
    "write_line",
    "console_logging",
    "writable_path",
    "LOG",
    "text_line",
    "kaggle_csv_input",
    "report_failures",
    "csv_cell",
    "dumps",
    "json_safe",
    "to_jsonable",
    "predictions_table",
    "partial_path",
]

#: File extension -> format written by :func:`write_predictions`.
FORMATS = {".csv": "csv", ".jsonl": "jsonl"}


def output_format(path: str | os.PathLike[str]) -> str:
    """``"csv"`` or ``"jsonl"`` from the extension; InvalidArgumentError for any other."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InvalidArgumentError(f"{path}: unknown output format {suffix or '(no extension)'!r}; use .csv or .jsonl")
    return FORMATS[suffix]


def csv_header(top_k: int) -> list[str]:
    columns = ["source", "label", "index", "probability"]
    for k in range(1, top_k + 1):
        columns += [f"label_{k}", f"index_{k}", f"probability_{k}"]
    return columns + ["error"]


#: A cell a spreadsheet would run as a formula (OWASP, "CSV Injection"): = + - @, tab, CR.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A text cell of a predictions CSV: prefixed with ``'`` when a spreadsheet would read it
    as a formula (OWASP's rule; the Rust CLI writes the same).  Submissions are not escaped:
    Kaggle reads them as data and compares the label text exactly."""
    return "'" + text if text.startswith(FORMULA_START) else text


def json_number(value: float | None) -> float | None:
    """``value``, or None when it is not finite: no output holds a bare NaN/Infinity (invalid JSON)."""
    return value if value is None or math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (dicts, lists, tuples walked)."""
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def to_jsonable(value: Any) -> Any:
    """``json.dumps(predictions, default=to_jsonable)``: a Prediction or ClassScore as its
    ``to_dict()`` (non-finite numbers as null), a path as text, numpy scalars as numbers."""
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return json_safe(to_dict())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return json_number(item()) if isinstance(item(), float) else item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` as every JSON output of the project writes it: valid JSON, never a bare
    NaN/Infinity (they become null), predictions as their ``to_dict()``."""
    return json.dumps(json_safe(value), allow_nan=False, default=to_jsonable, **kwargs)


def predictions_table(predictions: Iterable[Any], top_k: int | None = None) -> list[dict[str, Any]]:
    """One flat dict per prediction, the columns of the ``.csv`` output (``source, label,
    index, probability, label_1, index_1, probability_1, ..., error``; values unescaped,
    None when empty): ``pandas.DataFrame(predictions_table(preds))`` is a tidy table."""
    rows = []
    predictions = list(predictions)
    k_max = top_k if top_k is not None else max((len(p.top_k) for p in predictions), default=0)
    for prediction in predictions:
        row: dict[str, Any] = {
            "source": prediction.source,
            "label": prediction.label,
            "index": prediction.index,
            "probability": prediction.probability,
        }
        for k in range(k_max):
            score = prediction.top_k[k] if k < len(prediction.top_k) else None
            row[f"label_{k + 1}"] = score.label if score else None
            row[f"index_{k + 1}"] = score.index if score else None
            row[f"probability_{k + 1}"] = score.probability if score else None
        row["error"] = None if prediction.error is None else str(prediction.error)
        rows.append(row)
    return rows


def _number(value: float) -> str:
    return repr(value) if math.isfinite(value) else ""


def _csv_row(prediction: Any, top_k: int) -> list[Any]:
    source = csv_cell(prediction.source)
    if not prediction.ok:
        return [source, "", "", ""] + [""] * (3 * top_k) + [csv_cell(str(prediction.error))]
    row: list[Any] = [source, csv_cell(prediction.label), prediction.index, _number(prediction.probability)]
    for k in range(top_k):
        if k < len(prediction.top_k):
            score = prediction.top_k[k]
            row += [csv_cell(score.label), score.index, _number(score.probability)]
        else:
            row += ["", "", ""]
    return row + [""]


def write_predictions(
    predictions: Iterable[Any], path: str | os.PathLike[str], top_k: int | None = None, *, keep_empty: bool = True
) -> Path:
    """Write ``predictions`` to ``path`` (.csv or .jsonl, by the extension) and return the
    path.  ``top_k``: how many classes per row (None: as many as the first good prediction
    has; a CSV needs one count for its header).

    The file is written atomically (:func:`butterfly_onnx.atomic.atomic_write`): an error or
    interrupt leaves a previous ``path`` as it was.  ``keep_empty=False``: when no prediction
    succeeded nothing is written (the command line's "nothing done", exit status 2) and
    ImageError is raised.  Names that are not UTF-8 (``surrogateescape`` strings, as
    ``os.listdir`` gives them) are written as their original bytes."""
    from .atomic import atomic_write

    path = Path(path)
    fmt = output_format(path)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise InvalidArgumentError(f"top_k must be a positive int or None, got {top_k!r}")
    stream = iter(predictions)
    head: list[Any] = []
    if top_k is None and fmt == "csv":  # read up to the first good prediction for the header
        for prediction in stream:
            head.append(prediction)
            if prediction.ok:
                break
        top_k = max((len(p.top_k) for p in head), default=1) or 1
    columns = top_k if top_k is not None else 1
    good = 0
    with atomic_write(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        if fmt == "csv":
            writer = csv.writer(handle)
            writer.writerow(csv_header(columns))
            for prediction in itertools.chain(head, stream):
                good += prediction.ok
                writer.writerow(_csv_row(prediction, columns))
        else:
            for prediction in itertools.chain(head, stream):
                good += prediction.ok
                record = prediction.to_dict()
                if top_k is not None:
                    record["top_k"] = record["top_k"][:top_k]
                handle.write(dumps(record) + "\n")
        if not good and not keep_empty:
            raise ImageError(f"{path}: not written: no input could be predicted")
    return path


def partial_path(path: str | os.PathLike[str]) -> Path:
    """Where an incomplete submission goes: ``X.partial.csv`` beside ``X.csv``."""
    path = Path(path)
    return path.with_name(path.stem + ".partial" + (path.suffix or ".csv"))


def write_submission(
    predictions: Iterable[Any], filenames: Sequence[str], path: str | os.PathLike[str], *, fill: str | None = None
) -> list[Any]:
    """A Kaggle submission: ``filename,label`` with each prediction's top-1 label, one row per
    ``filenames[i]`` (``predictions`` in the same order, e.g. from
    :func:`butterfly_onnx.datasets.read_image_list`), written verbatim (Kaggle reads it as
    data: no formula escaping) and atomically.  Returns the failed predictions.

    A submission always has every row (Kaggle rejects one with rows missing): when some
    images failed, the rows that were predicted go to :func:`partial_path` (``X.partial.csv``)
    and ``path`` is not written -- unless ``fill`` names a label to give the failed rows.  When
    every image failed nothing is written."""
    from .atomic import AtomicFile, name_the_file

    path = Path(path)
    failed = []
    count = 0
    atomic = AtomicFile(path)
    try:
        with os.fdopen(os.dup(atomic.fd), "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"])
            for filename, prediction in zip(filenames, predictions, strict=False):
                count += 1
                if prediction.ok:
                    writer.writerow([filename, prediction.label])
                else:
                    failed.append(prediction)
                    if fill is not None:
                        writer.writerow([filename, fill])
            handle.flush()
        if count != len(filenames):
            raise InvalidArgumentError(f"{len(filenames)} filenames but {count} predictions")
        if len(failed) == count:
            atomic.discard()
        elif failed and fill is None:
            atomic.commit(partial_path(path))
        else:
            atomic.commit()
    except BaseException as exc:
        atomic.discard()
        name_the_file(exc, path)
        raise
    finally:
        os.close(atomic.fd)
    return failed


# -- the command line's output (``butterfly-onnx predict``, plain and ``--ray``) -----------
PROG = "butterfly-onnx"
#: Exit status: all done / some inputs failed, the rest written / nothing done.
EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


#: The package's logger: the command line's messages go through it (a library user can
#: silence or route them); :func:`console_logging` prints them as ``butterfly-onnx: LEVEL: ...``.
LOG = logging.getLogger("butterfly_onnx")


def write_line(text: str, file: Any = None) -> None:
    """Print one line to ``file`` (default stdout) so that it never interleaves with a live
    tqdm bar on the same terminal (``tqdm.write`` clears the bar, prints, redraws it)."""
    file = sys.stdout if file is None else file
    tqdm = sys.modules.get("tqdm")
    # stderr holds the bars (a forced one too); a redirected stdout cannot be garbled by them.
    if tqdm is not None and (file is sys.stderr or getattr(file, "isatty", lambda: False)()):
        tqdm.tqdm.write(text, file=file)
    else:
        file.write(text + "\n")


class ConsoleHandler(logging.Handler):
    """Log records as one line each on the current ``sys.stderr``:
    ``butterfly-onnx: error: <message>`` (newlines folded), clear of any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = " ".join(self.format(record).split("\n")).strip()
            write_line(f"{PROG}: {record.levelname.lower()}: {text}", sys.stderr)
            sys.stderr.flush()
        except Exception:  # pragma: no cover - logging's own convention
            self.handleError(record)


@contextmanager
def console_logging(debug: bool = False) -> Iterator[None]:
    """Within the block, the package's log records go to stderr as the command line's lines
    (INFO and up; DEBUG with ``debug``), not to the root logger."""
    handler = ConsoleHandler()
    saved = LOG.level, LOG.propagate
    LOG.addHandler(handler)
    LOG.setLevel(logging.DEBUG if debug else logging.INFO)
    LOG.propagate = False
    try:
        yield
    finally:
        LOG.removeHandler(handler)
        LOG.setLevel(saved[0])
        LOG.propagate = saved[1]


def print_error(message: object) -> None:
    """One error line: ``butterfly-onnx: error: <message>`` (through :data:`LOG`; the command
    line shows it on stderr, newlines folded)."""
    if LOG.hasHandlers() and LOG.isEnabledFor(logging.ERROR):
        LOG.error("%s", message)
    else:  # no logging set up (a bare call): still one line on stderr
        text = " ".join(str(message).split("\n")).strip()
        write_line(f"{PROG}: error: {text}", sys.stderr)


def writable_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if a file can be written there: its folder exists (folders are not created).
    Checked before any long work (-o, --plot, --export), so a typo costs nothing."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InvalidArgumentError(f"{path}: cannot write the {what}: the folder {parent} does not exist")
    if path.is_dir():
        raise InvalidArgumentError(f"{path}: cannot write the {what}: it is a folder")
    return path


def text_line(prediction: Any) -> str:
    """The text output's line of one good prediction: ``source\tlabel (p)`` per top-k class."""
    return prediction.source + "".join(f"\t{s.label} ({s.probability:.4f})" for s in prediction.top_k)


def kaggle_csv_input(inputs: Sequence[str]) -> str | None:
    """The one CSV input (a Kaggle-style image list) among ``inputs``, or None; a CSV among
    other inputs is an InvalidArgumentError."""
    csvs = [i for i in inputs if i.lower().endswith(".csv")]
    if not csvs:
        return None
    if len(inputs) != 1:
        raise InvalidArgumentError(f"{csvs[0]}: a CSV input (a list of images) must be the only input")
    return csvs[0]


def report_failures(predictions: Iterable[Any], counts: dict[str, int]) -> Iterator[Any]:
    """Pass predictions through, printing each failure as one :func:`print_error` line and
    counting ``counts["ok"]`` / ``counts["failed"]``."""
    for prediction in predictions:
        if prediction.ok:
            counts["ok"] = counts.get("ok", 0) + 1
        else:
            counts["failed"] = counts.get("failed", 0) + 1
            print_error(prediction.error)
        yield prediction
