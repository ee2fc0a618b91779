"""The end of a run: the best checkpoint (an epoch, or the linear probe's head when no epoch beat
it), its fp32 evaluation on validation (and the test set), metrics.json, the plots, and the
:class:`FinetuneResult`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write
from ..contract import PreprocessSpec
from ..settings import FinetuneSettings
from .checkpoint import read_checkpoint, save_checkpoint
from .epochs import evaluate
from .features import cacheable_head, probe_head_state
from .hardware import Precision
from .metrics import classification_metrics, plot_confusion, plot_curves, write_history
from .models import build_model
from .progress import LOGGER
from .state import Run

__all__ = ["FinetuneResult", "select_best", "final_report"]


@dataclass
class FinetuneResult:
    """What :func:`finetune` produced.  ``metrics`` holds the best epoch's validation metrics
    (``val_acc1``, ``val_acc5``, ``val_loss``, ``best_epoch``, ``per_class``,
    ``confusion_matrix``), ``history`` (one dict per epoch) and ``test`` when a test set was given."""

    out_dir: Path
    checkpoint: Path
    last_checkpoint: Path
    arch: str
    labels: list[str]
    preprocess: PreprocessSpec
    metrics: dict[str, Any]
    val_samples: list[tuple[Path, int]]
    train_samples: list[tuple[Path, int]]
    metrics_csv: Path | None = None
    metrics_json: Path | None = None
    plots: dict[str, Path] = field(default_factory=dict)
    health: dict[str, Any] | None = None
    epochs_run: int = 0
    stopped_early: bool = False
    settings: FinetuneSettings | None = None


def select_best(run: Run) -> None:
    """Never worse than the probe: when no epoch beat it on validation, best.pt becomes the
    pretrained backbone with the probe's head (``run.selected == "probe"``)."""
    settings, probe, best = run.settings, run.probe, run.best
    assert best is not None
    if not (settings.probe_fallback and probe is not None and probe["acc1"] > best["val_acc1"]):
        return
    run.selected = "probe"
    torch.manual_seed(settings.seed)
    fallback = build_model(settings.model, weights=settings.weights, num_classes=run.data.num_classes).to(run.device)
    fallback_head = cacheable_head(fallback)
    assert fallback_head is not None  # the probe exists only for a model with a Linear head
    probe_head_state(fallback_head, probe)
    if run.dist.main:
        metrics = {"val_acc1": probe["acc1"], "val_acc5": probe["acc5"], "val_loss": None, "best_epoch": 0}
        config = {**run.base_config(), "metrics": metrics, "epoch": 0, "selected": "probe"}
        save_checkpoint(run.best_path, fallback, config)
        print(
            f"finetune: no epoch beat the linear probe on validation (best epoch {best['epoch']}: "
            f"{best['val_acc1']:.4f}, probe: {probe['acc1']:.4f}); {run.best_path} is the pretrained backbone "
            "with the probe's head",
            file=sys.stderr,
        )


def _metrics(run: Run) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best checkpoint evaluated in fp32 (what is exported) on validation and the test set:
    (metrics, the validation report)."""
    dist, data, probe = run.dist, run.data, run.probe
    dist.barrier()
    best_state = read_checkpoint(run.best_path)
    run.net.load_state_dict(best_state["model_state"])
    fp32 = Precision("fp32", run.device.type)
    logits, targets, val_loss = evaluate(run.net, data.val, run.spec, run, dist, data.num_classes, fp32)
    report = classification_metrics(logits, targets, data.labels)
    metrics = {
        "val_acc1": report["acc1"],
        "val_acc5": report["acc5"],
        "val_loss": val_loss,
        "best_epoch": best_state["config"]["epoch"],
        "selected": run.selected,
        "macro_f1": report["macro_f1"],
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "probe_acc1": probe["acc1"] if probe else None,
        "probe_acc5": probe["acc5"] if probe else None,
        "probe_seconds": probe["seconds"] if probe else None,
        "features": run.feature_info,
        "num_val": len(data.val),
        "num_train": len(data.train),
        "notes": list(run.settings.notes),
        "history": run.history,
    }
    if data.test is not None:
        t_logits, t_targets, t_loss = evaluate(run.net, data.test, run.spec, run, dist, data.num_classes, fp32)
        test_report = classification_metrics(t_logits, t_targets, data.labels)
        metrics["test"] = {
            "acc1": test_report["acc1"],
            "acc5": test_report["acc5"],
            "loss": t_loss,
            "macro_f1": test_report["macro_f1"],
            "per_class": test_report["per_class"],
            "confusion_matrix": test_report["confusion_matrix"],
        }
    return metrics, report


def _write_outputs(run: Run, metrics: dict[str, Any], report: dict[str, Any]) -> dict[str, Path]:
    """metrics.csv/json, health.json and the plots (rank 0)."""
    out, labels = run.out, run.data.labels
    final = {k: v for k, v in metrics.items() if k != "history"}
    write_history(run.history, out / "metrics.csv", out / "metrics.json", {"labels": labels, "best": final})
    if run.data.health is not None:
        with atomic_write(out / "health.json", encoding="utf-8") as handle:
            handle.write(json.dumps(run.data.health, indent=2))
    plots = {"curves": plot_curves(run.history, out / "curves.png", best_epoch=metrics["best_epoch"])}
    title = (
        "Validation confusion (linear probe head)"
        if run.selected == "probe"
        else f"Validation confusion (epoch {metrics['best_epoch']})"
    )
    plots["confusion"] = plot_confusion(report["confusion_matrix"], labels, out / "confusion_val.png", title)
    if "test" in metrics:
        plots["confusion_test"] = plot_confusion(
            metrics["test"]["confusion_matrix"], labels, out / "confusion_test.png", "Test confusion"
        )
    return plots


def final_report(run: Run) -> FinetuneResult:
    """Evaluate the best checkpoint, write the outputs, log the summary line."""
    metrics, report = _metrics(run)
    plots: dict[str, Path] = {}
    if run.dist.main:
        plots = _write_outputs(run, metrics, report)
        probe = run.probe
        which = "the linear probe's head" if run.selected == "probe" else f"best epoch {metrics['best_epoch']}"
        probe_text = "" if probe is None else f"; linear probe {probe['acc1']:.4f}"
        LOGGER.info(
            "%s: val top-1 %.4f, top-5 %.4f (%d images%s) -> %s",
            which,
            metrics["val_acc1"],
            metrics["val_acc5"],
            len(run.data.val),
            probe_text,
            run.best_path,
        )
    run.dist.barrier()
    return FinetuneResult(
        out_dir=run.out,
        checkpoint=run.best_path,
        last_checkpoint=run.last_path,
        arch=run.settings.model,
        labels=list(run.data.labels),
        preprocess=run.spec,
        metrics=metrics,
        val_samples=list(run.data.val),
        train_samples=list(run.data.train),
        metrics_csv=run.out / "metrics.csv",
        metrics_json=run.out / "metrics.json",
        plots=plots,
        health=run.data.health,
        epochs_run=len(run.history),
        stopped_early=run.stopped_early,
        settings=run.settings,
    )
