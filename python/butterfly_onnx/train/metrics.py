"""Evaluation metrics, the metrics log and the plots (matplotlib's Agg canvas, no pyplot state)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write

__all__ = ["topk_accuracy", "classification_metrics", "write_history", "plot_curves", "plot_confusion"]


def topk_accuracy(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of rows whose target is among the k largest logits (k capped at the classes)."""
    if len(targets) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == targets[:, None], axis=1)))


def classification_metrics(logits: np.ndarray, targets: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Top-1/top-5, per-class precision/recall/F1/support and the confusion matrix
    (rows = true class, columns = predicted), via sklearn.metrics."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    predictions = logits.argmax(axis=1)
    indices = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predictions, labels=indices, zero_division=0
    )
    per_class = {
        label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
    }
    return {
        "acc1": topk_accuracy(logits, targets, 1),
        "acc5": topk_accuracy(logits, targets, 5),
        "macro_f1": float(np.mean(f1)) if len(f1) else float("nan"),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(targets, predictions, labels=indices).tolist(),
        "num_samples": int(len(targets)),
    }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def write_history(history: list[dict[str, Any]], csv_path: Path, json_path: Path, extra: dict[str, Any]) -> None:
    """The per-epoch log as CSV and everything (history + best + per-class) as JSON."""
    if history:
        columns = list(history[0])
        for row in history[1:]:
            columns += [c for c in row if c not in columns]
        with atomic_write(csv_path, newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(history)
    with atomic_write(json_path, encoding="utf-8") as handle:
        handle.write(json.dumps(_json_safe({**extra, "history": history}), indent=2))


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_curves(history: list[dict[str, Any]], path: Path, best_epoch: int | None = None) -> Path:
    """Loss and accuracy per epoch (train and validation) as one PNG: whole-epoch ticks, the
    head phase shaded, the best epoch marked (``best_epoch``; 0 = the linear probe's head)."""
    from matplotlib.ticker import MaxNLocator

    figure = _figure(10, 4)
    loss_ax, acc_ax = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    loss_ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_ax.plot(epochs, [row["val_loss"] for row in history], "o-", label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc_ax.plot(epochs, [row["train_acc"] for row in history], "o-", label="train top-1")
    acc_ax.plot(epochs, [row["val_acc1"] for row in history], "o-", label="val top-1")
    acc_ax.plot(epochs, [row["val_acc5"] for row in history], "o--", label="val top-5")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0, 1.02))
    head = [row["epoch"] for row in history if row.get("phase") == "head"]
    for ax in (loss_ax, acc_ax):
        if head:
            ax.axvspan(min(head) - 0.5, max(head) + 0.5, color="tab:gray", alpha=0.12, label="head phase")
        if best_epoch:
            ax.axvline(best_epoch, color="tab:green", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    figure.tight_layout()
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    return path


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, title: str) -> Path:
    """The confusion matrix (rows true, columns predicted) as a PNG heat map: the one drawing of
    :func:`butterfly_onnx.evaluate.plot_confusion`."""
    from ..evaluate import plot_confusion as draw

    return draw(matrix, labels, path, title)
