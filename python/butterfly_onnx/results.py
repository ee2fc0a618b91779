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
- a submission: exactly ``filename,label`` (top-1), one row per good prediction, in order.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError

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
    "text_line",
    "kaggle_csv_input",
    "report_failures",
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


def _csv_row(prediction: Any, top_k: int) -> list[Any]:
    if not prediction.ok:
        return [prediction.source, "", "", ""] + [""] * (3 * top_k) + [str(prediction.error)]
    row: list[Any] = [prediction.source, prediction.label, prediction.index, repr(prediction.probability)]
    for k in range(top_k):
        if k < len(prediction.top_k):
            score = prediction.top_k[k]
            row += [score.label, score.index, repr(score.probability)]
        else:
            row += ["", "", ""]
    return row + [""]


def write_predictions(predictions: Iterable[Any], path: str | os.PathLike[str], top_k: int | None = None) -> Path:
    """Write ``predictions`` to ``path`` (.csv or .jsonl, by the extension) and return the
    path.  ``top_k``: how many classes per row (None: as many as the first good prediction
    has; a CSV needs one count for its header)."""
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
    with open(path, "w", newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            writer = csv.writer(handle)
            writer.writerow(csv_header(columns))
            for prediction in itertools.chain(head, stream):
                writer.writerow(_csv_row(prediction, columns))
        else:
            for prediction in itertools.chain(head, stream):
                record = prediction.to_dict()
                if top_k is not None:
                    record["top_k"] = record["top_k"][:top_k]
                handle.write(json.dumps(record) + "\n")
    return path


def write_submission(predictions: Iterable[Any], filenames: Sequence[str], path: str | os.PathLike[str]) -> list[Any]:
    """A Kaggle submission: ``filename,label`` with each good prediction's top-1 label, one
    row per ``filenames[i]`` (``predictions`` in the same order, e.g. from
    :func:`butterfly_onnx.datasets.read_image_list`).  Failed predictions are left out; they
    are returned, so the caller can report them."""
    path = Path(path)
    failed = []
    count = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label"])
        for filename, prediction in zip(filenames, predictions, strict=False):
            count += 1
            if prediction.ok:
                writer.writerow([filename, prediction.label])
            else:
                failed.append(prediction)
    if count != len(filenames):
        raise InvalidArgumentError(f"{len(filenames)} filenames but {count} predictions")
    return failed


# -- the command line's output (``butterfly-onnx predict``, plain and ``--ray``) -----------
PROG = "butterfly-onnx"
#: Exit status: all done / some inputs failed, the rest written / nothing done.
EXIT_OK, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2


def print_error(message: object) -> None:
    """One line on stderr: ``butterfly-onnx: error: <message>`` (newlines folded)."""
    text = " ".join(str(message).split("\n")).strip()
    print(f"{PROG}: error: {text}", file=sys.stderr, flush=True)


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
