"""What is being exported: a FinetuneResult, a checkpoint path or an nn.Module, resolved to one
model with its labels, preprocessing, provenance and known images."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..contract import PreprocessSpec
from ..errors import ContractError, ExportError
from .inputs import Sample, coerce_labels, normalise_samples, require_torch

__all__ = ["Source", "checkpoint_provenance", "resolve_source"]


@dataclass
class Source:
    """The model to export and what it carries."""

    model: Any  # torch.nn.Module on CPU
    labels: list[str]
    preprocess: PreprocessSpec
    provenance: dict[str, Any]
    val_samples: list[Sample] = field(default_factory=list)
    train_samples: list[Sample] = field(default_factory=list)
    was_training: bool = False  # the caller's module goes back to this mode afterwards


def _is_finetune_result(source: Any) -> bool:
    return all(hasattr(source, name) for name in ("checkpoint", "labels", "preprocess", "val_samples"))


def checkpoint_provenance(config: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance a checkpoint's config contributes: arch, weights, scalar metrics, epoch."""
    provenance: dict[str, Any] = {"arch": config.get("arch"), "weights": config.get("weights")}
    metrics = config.get("metrics")
    if isinstance(metrics, Mapping):
        # scalar validation metrics only; the history stays in the training output
        provenance["metrics"] = {
            k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    if "epoch" in config:
        provenance["epoch"] = config["epoch"]
    return provenance


def resolve_source(source: Any, labels: Any, preprocess: Any) -> Source:
    """``source`` with the explicit ``labels`` / ``preprocess`` overriding what it carries."""
    torch = require_torch()
    if _is_finetune_result(source):
        from ..train import load_checkpoint

        model, config = load_checkpoint(source.checkpoint)
        provenance = checkpoint_provenance(config)
        provenance["checkpoint"] = Path(source.checkpoint).name
        if getattr(source, "arch", None):
            provenance["arch"] = source.arch
        return Source(
            model=model,
            labels=coerce_labels(labels if labels is not None else source.labels),
            preprocess=PreprocessSpec.coerce(preprocess if preprocess is not None else source.preprocess),
            provenance=provenance,
            val_samples=normalise_samples(source.val_samples, "FinetuneResult.val_samples"),
            train_samples=normalise_samples(getattr(source, "train_samples", None) or [], "train_samples"),
        )
    if isinstance(source, (str, os.PathLike)):
        from ..train import load_checkpoint

        model, config = load_checkpoint(source)
        if labels is None:
            labels = config.get("labels")
        if preprocess is None:
            preprocess = config.get("preprocess")
        if labels is None or preprocess is None:
            raise ContractError(f"the checkpoint {source} carries no labels/preprocess: pass labels= and preprocess=")
        provenance = checkpoint_provenance(config)
        provenance["checkpoint"] = Path(source).name
        return Source(
            model=model,
            labels=coerce_labels(labels),
            preprocess=PreprocessSpec.coerce(preprocess, what=f"the preprocess of checkpoint {source}"),
            provenance=provenance,
        )
    if isinstance(source, torch.nn.Module):
        missing = [name for name, value in (("labels", labels), ("preprocess", preprocess)) if value is None]
        if missing:
            raise ContractError(
                f"exporting an nn.Module needs {' and '.join(m + '=' for m in missing)} (the class names in output "
                "order and the eval preprocessing, e.g. weights.transforms()); a FinetuneResult or a "
                "checkpoint path carries both"
            )
        model = source
        if any(p.device.type != "cpu" for p in model.parameters()):
            model = copy.deepcopy(model).cpu()
        return Source(
            model=model,
            labels=coerce_labels(labels),
            preprocess=PreprocessSpec.coerce(preprocess),
            provenance={"arch": type(source).__name__.lower(), "weights": None},
            was_training=model.training,
        )
    raise ExportError(
        f"cannot export {type(source).__name__}: pass a FinetuneResult, a checkpoint path or a torch.nn.Module"
    )
