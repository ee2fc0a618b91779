"""The state of one fine-tuning run, shared by its steps (:mod:`.loop`): what was asked
(settings, device, precision, outputs), then what each step adds (the data, the model and its
optimizer, the cached features and the probe, the history)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contract import PreprocessSpec
from ..settings import FinetuneSettings
from .distributed import Dist
from .epochs import Schedule
from .features import cache_key
from .hardware import Precision

__all__ = ["BEST", "LAST", "Run", "RunData", "split_digest", "data_label"]

BEST, LAST = "best.pt", "last.pt"


@dataclass
class RunData:
    """The classes and the samples of each split (rank 0 reads them; every rank gets them)."""

    labels: list[str]
    train: list[tuple[Path, int]]
    val: list[tuple[Path, int]]
    test: list[tuple[Path, int]] | None
    health: dict[str, Any] | None
    health_text: str
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.labels)


@dataclass
class Run:
    """One run: its fixed context (the constructor's fields) and the state the steps fill in."""

    settings: FinetuneSettings
    device: torch.device
    dist: Dist
    out: Path
    resume: bool | None
    bars: bool  # tqdm bars on this rank
    precision: Precision
    channels_last: bool
    workers: int
    spec: PreprocessSpec

    # filled in by the steps, in this order
    data: RunData = field(init=False)
    train_config: dict[str, Any] = field(init=False)
    net: nn.Module = field(init=False)
    head: list[nn.Parameter] = field(init=False)
    head_layer: nn.Linear | None = field(init=False)
    optimizer: torch.optim.Optimizer = field(init=False)
    loader: Any = field(init=False)
    sampler: Any = field(init=False)
    generator: torch.Generator = field(init=False)
    criterion: nn.Module = field(init=False)
    scaler: Any = field(init=False)
    steps_per_epoch: int = field(init=False)
    features: dict[str, torch.Tensor] | None = None
    feature_info: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    passes: int = 0
    schedule: Schedule = field(init=False)
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    stopped_early: bool = False
    selected: str = "epoch"

    @property
    def best_path(self) -> Path:
        return self.out / BEST

    @property
    def last_path(self) -> Path:
        return self.out / LAST

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def max_steps(self) -> int | None:
        return self.settings.max_steps_per_epoch

    @property
    def freeze_norm_stats(self) -> bool:
        return self.settings.freeze_norm_stats

    @property
    def cached_head(self) -> bool:
        """The head phase trains on the cached features (not on images)."""
        return self.features is not None and self.settings.head_epochs > 0

    @property
    def best(self) -> dict[str, Any] | None:
        """The epoch row with the best val top-1 (the first of equals)."""
        return max(self.history, key=lambda row: row["val_acc1"], default=None)

    def base_config(self) -> dict[str, Any]:
        """What every checkpoint's config holds besides its metrics and epoch."""
        return {
            "arch": self.settings.model,
            "num_classes": self.data.num_classes,
            "labels": self.data.labels,
            "weights": self.train_config["weights"],
            "preprocess": self.spec.to_dict(),
            "train_config": self.train_config,
            "settings": self.settings.to_dict(),
            "split": split_digest(self.data.train, self.data.val),
        }


def split_digest(train_samples: list[tuple[Path, int]], val_samples: list[tuple[Path, int]]) -> str:
    """A key of the train/validation split (a resumed run must have the same)."""
    return cache_key(train=[[str(p), c] for p, c in train_samples], val=[[str(p), c] for p, c in val_samples])


def data_label(data: Any) -> str:
    """How the checkpoint records the data: its path, or the kind of object given."""
    return str(data) if isinstance(data, (str, os.PathLike)) else f"<{type(data).__name__}>"
