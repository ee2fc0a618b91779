"""Accuracy of an exported model on labelled images, torch-free: ``butterfly-onnx val``.

>>> from butterfly_onnx.evaluate import evaluate
>>> report = evaluate("butterflies.onnx", "butterfly-dataset/")        # doctest: +SKIP
>>> report.top1, report.top5, report.count                            # doctest: +SKIP

The data is any labelled layout of :mod:`butterfly_onnx.datasets` (a Kaggle folder or CSV
with ``filename,label``, a class-per-folder tree, ``(path, label)`` pairs).  Its labels are
mapped onto the model's by name: a subset of the model's classes is fine, a label the model
does not have is a DatasetError.  Images that fail to decode are reported and not scored.

Metrics: top-1 and top-5 accuracy (fractions), per-class precision / recall / F1 / support
and the confusion matrix (rows true, columns predicted) over the classes that occur as truth
or prediction (scikit-learn's convention, ``zero_division=0``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BackendUnavailableError, DatasetError, InvalidArgumentError

__all__ = ["EvalReport", "evaluate", "classification_report", "plot_confusion"]


@dataclass
class EvalReport:
    """What :func:`evaluate` measured.  ``labels``: the classes of ``per_class`` and of the
    rows/columns of ``confusion_matrix``; ``failed``: the error message of each image not
    scored."""

    model: str
    data: str
    count: int
    top1: float
    top5: float
    labels: list[str]
    per_class: dict[str, dict[str, float]]
    confusion_matrix: list[list[int]]
    failed: list[str] = field(default_factory=list)
    predicted: list[int] = field(default_factory=list)  # top-1 class index per scored image
    targets: list[int] = field(default_factory=list)  # true class index (the model's) per scored image
    sources: list[str] = field(default_factory=list)  # the file of each scored image
    probabilities: list[float] = field(default_factory=list)  # the top-1 probability per scored image
    class_names: list[str] = field(default_factory=list)  # the model's labels (index -> name)

    @property
    def misclassified(self) -> list[dict[str, Any]]:
        """Each scored image whose top-1 class is wrong: ``source``, ``true``, ``predicted``
        (labels) and ``probability`` (of the predicted class), in the data's order."""
        names = self.class_names
        return [
            {"source": source, "true": names[t], "predicted": names[p], "probability": probability}
            for source, t, p, probability in zip(
                self.sources, self.targets, self.predicted, self.probabilities, strict=False
            )
            if t != p
        ]

    def errors_table(self) -> str:
        """``val --errors``: one line per misclassified image, ``source  true -> predicted (p)``."""
        rows = self.misclassified
        lines = [f"misclassified: {len(rows)} of {self.count}"]
        lines += [f"{r['source']}\t{r['true']} -> {r['predicted']} ({r['probability']:.4f})" for r in rows]
        return "\n".join(lines)

    @property
    def macro_f1(self) -> float:
        values = [c["f1"] for c in self.per_class.values()]
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types (an undefined metric, with no image scored, is None)."""

        def number(value: float) -> float | None:
            return None if math.isnan(value) else value

        return {
            "model": self.model,
            "data": self.data,
            "count": self.count,
            "failed": len(self.failed),
            "top1": number(self.top1),
            "top5": number(self.top5),
            "macro_f1": number(self.macro_f1),
            "per_class": self.per_class,
            "confusion_matrix": {"labels": self.labels, "matrix": self.confusion_matrix},
            "misclassified": self.misclassified,
        }

    def summary(self) -> str:
        lines = [
            f"{self.data}: {self.count} images scored" + (f", {len(self.failed)} failed" if self.failed else ""),
            f"top-1 {self.top1:.4f}  top-5 {self.top5:.4f}  macro F1 {self.macro_f1:.4f}",
            f"{'class':<30} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}",
        ]
        for label, c in self.per_class.items():
            lines.append(
                f"{label[:30]:<30} {c['precision']:>9.4f} {c['recall']:>9.4f} {c['f1']:>9.4f} {c['support']:>8d}"
            )
        return "\n".join(lines)

    def plot_confusion(self, path: str | os.PathLike[str]) -> Path:
        return plot_confusion(self.confusion_matrix, self.labels, path, title=f"{Path(self.model).name} on {self.data}")


def classification_report(
    predicted: Sequence[int], targets: Sequence[int], names: Sequence[str]
) -> tuple[list[int], dict[str, dict[str, float]], list[list[int]]]:
    """(class indices used, per-class precision/recall/F1/support, confusion matrix) for
    top-1 ``predicted`` vs ``targets`` (indices into ``names``), over the classes that occur
    in either."""
    y_pred = np.asarray(predicted, dtype=np.int64)
    y_true = np.asarray(targets, dtype=np.int64)
    used = sorted(set(y_true.tolist()) | set(y_pred.tolist()))
    position = {c: i for i, c in enumerate(used)}
    matrix = np.zeros((len(used), len(used)), dtype=np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist(), strict=False):
        matrix[position[t], position[p]] += 1
    per_class: dict[str, dict[str, float]] = {}
    for c in used:
        i = position[c]
        tp = int(matrix[i, i])
        predicted_c = int(matrix[:, i].sum())
        support = int(matrix[i, :].sum())
        precision = tp / predicted_c if predicted_c else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[names[c]] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return used, per_class, matrix.tolist()


def plot_confusion(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | os.PathLike[str], title: str = ""
) -> Path:
    """The confusion matrix (rows true, columns predicted) as a PNG heat map (matplotlib's Agg
    canvas, no pyplot state).  BackendUnavailableError when matplotlib is not installed."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"{path}: cannot write the plot: the folder {path.parent} does not exist")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the confusion-matrix plot needs matplotlib ({exc}): pip install matplotlib"
        ) from None
    values = np.asarray(matrix)
    n = len(labels)
    size = min(4 + 0.3 * n, 30)
    figure = Figure(figsize=(size, size), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    image = ax.imshow(values, cmap="Blues")
    figure.colorbar(image, ax=ax, fraction=0.046)
    fontsize = max(4, 10 - n // 10)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if values[i, j]:
                    ax.text(
                        j,
                        i,
                        str(int(values[i, j])),
                        ha="center",
                        va="center",
                        fontsize=fontsize,
                        color="white" if values[i, j] > values.max() / 2 else "black",
                    )
    figure.tight_layout()
    from .atomic import atomic_write

    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return path


def _labelled_samples(
    data: Any, filename_column: str = "filename", label_column: str = "label"
) -> tuple[list[tuple[Path, str]], str]:
    from .datasets import read_labelled

    dataset = read_labelled(data, filename_column=filename_column, label_column=label_column)
    return [(p, dataset.classes[c]) for p, c in dataset.samples], dataset.source


def evaluate(
    model: Any,
    data: Any,
    *,
    backend: str = "python",
    threads: int | None = None,
    batch_size: int | None = None,
    progress: bool | None = None,
    filename_column: str = "filename",
    label_column: str = "label",
) -> EvalReport:
    """Score ``model`` (a path, the model's bytes, or a :class:`Classifier`) on labelled
    ``data`` (see the module docstring; a CSV's columns are ``filename_column`` and
    ``label_column``).  ``progress``: a bar on stderr (None: when stderr is a terminal)."""
    import warnings

    from .classifier import Classifier, ImageSkippedWarning

    classifier = model if isinstance(model, Classifier) else Classifier(model, backend=backend, threads=threads)
    samples, source = _labelled_samples(data, filename_column, label_column)
    if not samples:
        raise DatasetError(f"{source}: no labelled images")
    names = list(classifier.labels)
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted({label for _, label in samples if label not in index})
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (
            f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        )
        raise DatasetError(
            f"{source}: {len(unknown)} label(s) the model does not have: {shown} "
            f"(the model's {len(names)} labels: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
        )
    k = min(5, len(names))
    predicted: list[int] = []
    targets: list[int] = []
    hits5 = 0
    failed: list[str] = []
    sources: list[str] = []
    probabilities: list[float] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageSkippedWarning)
        stream = classifier.iter_predict(
            [p for p, _ in samples], top_k=k, batch_size=batch_size, progress=progress, on_error="skip"
        )
        for prediction, (_, label) in zip(stream, samples, strict=False):
            if not prediction.ok:
                failed.append(str(prediction.error))
                continue
            target = index[label]
            predicted.append(int(prediction.top_k[0].index))
            targets.append(target)
            sources.append(prediction.source)
            probabilities.append(float(prediction.top_k[0].probability))
            hits5 += any(score.index == target for score in prediction.top_k)
    count = len(targets)
    used, per_class, matrix = classification_report(predicted, targets, names) if count else ([], {}, [])
    top1 = float(np.mean(np.asarray(predicted) == np.asarray(targets))) if count else float("nan")
    model_name = str(classifier.model_path) if classifier.model_path is not None else "<model bytes>"
    return EvalReport(
        model=model_name,
        data=source,
        count=count,
        top1=top1,
        top5=hits5 / count if count else float("nan"),
        labels=[names[c] for c in used],
        per_class=per_class,
        confusion_matrix=matrix,
        failed=failed,
        predicted=predicted,
        targets=targets,
        sources=sources,
        probabilities=probabilities,
        class_names=names,
    )
