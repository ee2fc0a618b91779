"""Model selection: torchvision's ImageNet classification weights as a table and plots.

The numbers are the ones torchvision publishes in each weights enum's ``meta`` (ImageNet-1K
Acc@1/Acc@5, parameter count, GFLOPS, file size) and its eval transforms; nothing is
downloaded.  Needs the ``train`` extra (torchvision; matplotlib for the plots).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import BackendUnavailableError, InvalidArgumentError

__all__ = ["CatalogEntry", "model_catalog", "pareto_front", "catalog_table", "plot_catalog"]


@dataclass(frozen=True)
class CatalogEntry:
    arch: str
    weights: str  # e.g. "ResNet50_Weights.IMAGENET1K_V2"
    is_default: bool
    acc1: float
    acc5: float
    params_m: float  # millions of parameters
    gflops: float
    file_size_mb: float
    resize_size: int
    crop_size: int
    interpolation: str


def _torchvision() -> tuple[Any, Any, Any]:
    try:
        import torchvision
        from torchvision.models import get_model_weights, list_models
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise BackendUnavailableError(
            "the model catalog needs torchvision: pip install 'butterfly-onnx[train]'"
        ) from exc
    return torchvision, get_model_weights, list_models


def model_catalog(
    *,
    min_acc1: float | None = None,
    max_gflops: float | None = None,
    max_params_m: float | None = None,
    default_only: bool = False,
    sort_by: str = "acc1",
) -> list[CatalogEntry]:
    """Every ImageNet-1K weights of every torchvision classification model, filtered and
    sorted (``sort_by`` is a :class:`CatalogEntry` field; numbers sort best-first: accuracy
    descending, cost ascending)."""
    torchvision, get_model_weights, list_models = _torchvision()
    names = {f.name for f in fields(CatalogEntry)}
    if sort_by not in names:
        raise InvalidArgumentError(f"sort_by must be one of {sorted(names)}, got {sort_by!r}")
    entries = []
    for arch in list_models(module=torchvision.models):
        enum = get_model_weights(arch)
        default = getattr(enum, "DEFAULT", None)
        for weights in enum:
            meta = weights.meta
            metrics = meta.get("_metrics", {}).get("ImageNet-1K")
            # Feature-extractor weights (VGG16 IMAGENET1K_FEATURES) publish NaN accuracy.
            if not metrics or not all(math.isfinite(metrics[k]) for k in ("acc@1", "acc@5")):
                continue
            transforms = weights.transforms()
            entry = CatalogEntry(
                arch=arch,
                weights=f"{type(weights).__name__}.{weights.name}",
                is_default=weights is default,
                acc1=float(metrics["acc@1"]),
                acc5=float(metrics["acc@5"]),
                params_m=meta["num_params"] / 1e6,
                gflops=float(meta.get("_ops", float("nan"))),
                file_size_mb=float(meta.get("_file_size", float("nan"))),
                resize_size=int(transforms.resize_size[0]),
                crop_size=int(transforms.crop_size[0]),
                interpolation=transforms.interpolation.value,
            )
            if default_only and not entry.is_default:
                continue
            if min_acc1 is not None and entry.acc1 < min_acc1:
                continue
            if max_gflops is not None and entry.gflops > max_gflops:
                continue
            if max_params_m is not None and entry.params_m > max_params_m:
                continue
            entries.append(entry)
    descending = sort_by in ("acc1", "acc5", "is_default")
    entries.sort(key=lambda e: (getattr(e, sort_by), e.arch, e.weights), reverse=descending)
    return entries


def pareto_front(entries: Iterable[CatalogEntry], cost: str = "gflops") -> list[CatalogEntry]:
    """The entries no other entry beats on both Acc@1 (higher) and ``cost`` (lower)."""
    front, best = [], float("-inf")
    for entry in sorted(entries, key=lambda e: (getattr(e, cost), -e.acc1)):
        if entry.acc1 > best:
            front.append(entry)
            best = entry.acc1
    return front


def catalog_table(entries: Sequence[CatalogEntry], fmt: str = "markdown") -> str:
    """The entries as a Markdown or CSV table."""
    columns = [f.name for f in fields(CatalogEntry)]
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for entry in entries:
            writer.writerow(asdict(entry))
        return buffer.getvalue()
    if fmt != "markdown":
        raise InvalidArgumentError(f"fmt must be 'markdown' or 'csv', got {fmt!r}")
    header = ["arch", "weights", "Acc@1", "Acc@5", "params (M)", "GFLOPS", "MB", "resize/crop", "interp."]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in entries:
        weights = e.weights.split(".", 1)[1] + (" (default)" if e.is_default else "")
        lines.append(
            f"| {e.arch} | {weights} | {e.acc1:.2f} | {e.acc5:.2f} | {e.params_m:.1f} | "
            f"{e.gflops:.2f} | {e.file_size_mb:.1f} | {e.resize_size}/{e.crop_size} | {e.interpolation} |"
        )
    return "\n".join(lines) + "\n"


def plot_catalog(entries: Sequence[CatalogEntry], path: str | Path, *, annotate_front: bool = True) -> Path:
    """Acc@1 against GFLOPS and against parameters (log scales), the Pareto front marked; PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise BackendUnavailableError("plots need matplotlib: pip install 'butterfly-onnx[train]'") from exc
    if not entries:
        raise InvalidArgumentError("no catalog entries to plot")
    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(14, 6), constrained_layout=True)
    for ax, cost, label in ((axes[0], "gflops", "GFLOPS (log)"), (axes[1], "params_m", "parameters, millions (log)")):
        xs = [getattr(e, cost) for e in entries]
        ax.scatter(xs, [e.acc1 for e in entries], s=18, alpha=0.5, label="weights")
        front = pareto_front(entries, cost)
        ax.plot(
            [getattr(e, cost) for e in front], [e.acc1 for e in front], "-o", color="C3", ms=4, label="Pareto front"
        )
        if annotate_front:
            for e in front:
                ax.annotate(e.arch, (getattr(e, cost), e.acc1), fontsize=7, xytext=(3, -8), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("ImageNet-1K Acc@1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("torchvision classification weights")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
