"""``FinetuneSettings``: the validated, frozen settings of one :func:`finetune` run.

Built from the same keyword arguments as ``finetune`` (``FinetuneSettings(**kwargs)``), saved
in every checkpoint (``to_dict()``), and compared on resume (:meth:`FinetuneSettings.resume_changes`):
settings that only shape what is still to come (epochs, learning rates, ...) are applied to the
resumed run, settings that would make the finished epochs a different run are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..contract import PreprocessSpec
from ..errors import TrainingError

__all__ = ["FinetuneSettings", "APPLIED_ON_RESUME", "CLASS_BALANCE"]

#: Settings a resumed run may change: they are applied from the next optimizer step on.
APPLIED_ON_RESUME = frozenset(
    {
        "epochs",
        "lr",
        "finetune_lr",
        "weight_decay",
        "warmup",
        "patience",
        # where and how it runs, not what it computes
        "num_workers",
        "device",
        "amp",
        "dist_timeout_s",
    }
)

#: ``class_balance`` choices: "none", or "loss" (cross-entropy weighted by n / (C * n_class)).
CLASS_BALANCE = ("none", "loss")


def _number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
    open_min: bool = False,
) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and not math.isfinite(value)):
        raise TrainingError(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if minimum is not None and (value <= minimum if open_min else value < minimum):
        raise TrainingError(f"{name} must be {'>' if open_min else '>='} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise TrainingError(f"{name} must be <= {maximum}, got {value!r}")


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides what :func:`finetune` computes (not where the data or outputs
    are).  The defaults are finetune's defaults, chosen by the measurements in docs/training.md.

    ``head_epochs`` larger than ``epochs`` is clamped to ``epochs`` (``notes`` says so)."""

    model: str = "efficientnet_lite0"
    weights: Any = "DEFAULT"
    epochs: int = 10
    head_epochs: int = 1
    unfreeze: str | float = "all"
    batch_size: int = 32
    lr: float = 1e-3
    finetune_lr: float | None = None
    weight_decay: float = 0.01
    warmup: float = 0.1
    label_smoothing: float = 0.1
    val_fraction: float = 0.2
    seed: int = 0
    num_workers: int | None = None
    device: str = "auto"
    amp: bool | None = None
    patience: int | None = 5
    preprocess: PreprocessSpec | None = None
    max_steps_per_epoch: int | None = None
    filename_column: str = "filename"
    label_column: str = "label"
    dist_timeout_s: float = 600.0
    cache_features: bool = True
    head_steps: int = 300
    head_views: int = 0
    class_balance: str = "none"
    probe_fallback: bool = True
    freeze_norm_stats: bool = True
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise TrainingError(f"model must be an architecture name, got {self.model!r}")
        _number("epochs", self.epochs, minimum=1, integer=True)
        _number("head_epochs", self.head_epochs, minimum=0, integer=True)
        notes = list(self.notes)
        if self.head_epochs > self.epochs:
            notes.append(f"head_epochs={self.head_epochs} clamped to epochs={self.epochs}")
            object.__setattr__(self, "head_epochs", self.epochs)
        if not (
            self.unfreeze in ("all", "none")
            or (
                isinstance(self.unfreeze, (int, float))
                and not isinstance(self.unfreeze, bool)
                and 0 < float(self.unfreeze) <= 1
            )
        ):
            raise TrainingError(f"unfreeze must be 'all', 'none' or a fraction in (0, 1], got {self.unfreeze!r}")
        _number("batch_size", self.batch_size, minimum=1, integer=True)
        _number("lr", self.lr, minimum=0)
        if self.finetune_lr is not None:
            _number("finetune_lr", self.finetune_lr, minimum=0)
        _number("weight_decay", self.weight_decay, minimum=0)
        _number("warmup", self.warmup, minimum=0, maximum=1)
        _number("label_smoothing", self.label_smoothing, minimum=0, maximum=1)
        _number("val_fraction", self.val_fraction, minimum=0, maximum=1, open_min=True)
        _number("seed", self.seed, minimum=0, integer=True)
        if self.num_workers is not None:
            _number("num_workers", self.num_workers, minimum=0, integer=True)
        if self.patience is not None:
            _number("patience", self.patience, minimum=1, integer=True)
        if self.max_steps_per_epoch is not None:
            _number("max_steps_per_epoch", self.max_steps_per_epoch, minimum=1, integer=True)
        if self.preprocess is not None and not isinstance(self.preprocess, PreprocessSpec):
            try:
                coerce = getattr(PreprocessSpec, "coerce", None)  # the contract helper's one converter
                value = coerce(self.preprocess) if coerce else PreprocessSpec.from_dict(dict(self.preprocess))
                object.__setattr__(self, "preprocess", value)
            except Exception as exc:  # noqa: BLE001 - any failure is a bad argument
                raise TrainingError(f"preprocess must be a PreprocessSpec, got {self.preprocess!r}: {exc}") from None
        _number("dist_timeout_s", self.dist_timeout_s, minimum=0, open_min=True)
        _number("head_steps", self.head_steps, minimum=0, integer=True)
        _number("head_views", self.head_views, minimum=0, integer=True)
        if self.class_balance not in CLASS_BALANCE:
            raise TrainingError(f"class_balance must be one of {CLASS_BALANCE}, got {self.class_balance!r}")
        for name in ("cache_features", "probe_fallback", "freeze_norm_stats"):
            if not isinstance(getattr(self, name), bool):
                raise TrainingError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.amp is not None and not isinstance(self.amp, bool):
            raise TrainingError(f"amp must be None, True or False, got {self.amp!r}")
        if self.lr == 0 and self.head_epochs > 0:
            notes.append("lr=0: the head phase does not change the head")
        if self.backbone_lr == 0 and self.full_epochs > 0:
            notes.append("finetune_lr=0: the fine-tuning epochs do not change the model")
        object.__setattr__(self, "notes", tuple(notes))

    # --- derived values -------------------------------------------------------------------
    @property
    def backbone_lr(self) -> float:
        """The full phase's learning rate: ``finetune_lr``, default ``lr / 10``."""
        return self.lr / 10 if self.finetune_lr is None else self.finetune_lr

    @property
    def full_epochs(self) -> int:
        return self.epochs - self.head_epochs

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: what the checkpoint stores (``preprocess`` as its dict, ``weights``
        as a string when it is a path)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "notes":
                continue
            value = getattr(self, f.name)
            if isinstance(value, PreprocessSpec):
                value = value.to_dict()
            elif f.name == "weights" and value is not None and not isinstance(value, str):
                value = str(value)
            out[f.name] = value
        return out

    def replace(self, **changes: Any) -> FinetuneSettings:
        return dataclasses.replace(self, **changes)

    def resume_changes(self, saved: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
        """Compare with the settings a checkpoint was written with: ``(applied, refused)``,
        each ``{name: (saved value, this value)}``.  Keys the checkpoint lacks count as equal
        when this value is the default (settings added after it was written)."""
        current = json.loads(json.dumps(self.to_dict()))  # as the checkpoint stores it (tuples -> lists)
        defaults = json.loads(json.dumps(FinetuneSettings().to_dict()))
        applied: dict[str, tuple[Any, Any]] = {}
        refused: dict[str, tuple[Any, Any]] = {}
        for name, value in current.items():
            old = saved.get(name, defaults[name])
            if old == value:
                continue
            (applied if name in APPLIED_ON_RESUME else refused)[name] = (old, value)
        return applied, refused
