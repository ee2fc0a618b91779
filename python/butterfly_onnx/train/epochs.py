"""One epoch at a time: which parameters train, the learning-rate schedule, a training epoch
over images or over the cached features, and validation (sharded over DDP ranks)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..contract import PreprocessSpec
from ..errors import TrainingError
from .data import ImageSamples
from .distributed import Dist
from .hardware import Precision, to_layout, torch_threads
from .models import classifier_head
from .progress import bar
from .transforms import eval_transforms

__all__ = [
    "head_parameters",
    "set_trainable",
    "frozen_norms_to_eval",
    "phase_factor",
    "Schedule",
    "train_epoch",
    "cached_head_epoch",
    "predict",
    "evaluate",
]


# --- which parameters train -------------------------------------------------------------------
def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    _, _, layer = classifier_head(model)
    return list(layer.parameters())


def set_trainable(model: nn.Module, head: list[nn.Parameter], phase: str, unfreeze: Any) -> None:
    """head phase: only the head trains.  finetune phase: 'all', 'none' (head only), or a
    float fraction of the backbone's parameter tensors, counted from the output end."""
    head_ids = {id(p) for p in head}
    backbone = [p for p in model.parameters() if id(p) not in head_ids]
    for p in head:
        p.requires_grad_(True)
    if phase == "head" or unfreeze == "none":
        trainable = 0
    elif unfreeze == "all":
        trainable = len(backbone)
    else:
        trainable = math.ceil(float(unfreeze) * len(backbone))
    for i, p in enumerate(backbone):
        p.requires_grad_(i >= len(backbone) - trainable)


def frozen_norms_to_eval(model: nn.Module, all_norms: bool = False) -> None:
    """BatchNorm layers whose parameters are frozen keep their pretrained running statistics
    (``all_norms``: every BatchNorm layer does, its affine parameters still train)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if all_norms or (params and not any(p.requires_grad for p in params)):
                module.eval()


# --- the learning-rate schedule ---------------------------------------------------------------
def phase_factor(step: int, length: int, warmup: float) -> float:
    """Multiplier of a phase's base learning rate at ``step`` (0-based) of ``length`` steps:
    linear warm-up over ``round(warmup * length)`` steps (at least one when ``warmup > 0``),
    then a cosine towards 0 that ends one step short of 0 (the last step still learns)."""
    warm = max(1, int(round(warmup * length))) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm + 1) / max(1, length - warm + 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


@dataclass
class Schedule:
    """Each phase's warm-up + cosine schedule over its own steps (``steps`` counts them and is
    saved for resume).  Head phase: the head at ``head_lr``, the backbone at 0; full phase: both
    at ``backbone_lr``.  ``log`` holds the rates of every step of the current epoch."""

    optimizer: torch.optim.Optimizer
    head_lr: float
    backbone_lr: float
    warmup: float
    head_total: int
    full_total: int
    steps: dict[str, int] = field(default_factory=lambda: {"head": 0, "full": 0})
    log: list[list[float]] = field(default_factory=list)

    def step(self, phase: str) -> None:
        """Set the rates for the next optimizer step of ``phase`` ("head" or "finetune")."""
        if phase == "head":
            rates = (self.head_lr * phase_factor(self.steps["head"], self.head_total, self.warmup), 0.0)
            self.steps["head"] += 1
        else:
            rate = self.backbone_lr * phase_factor(self.steps["full"], self.full_total, self.warmup)
            rates = (rate, rate)
            self.steps["full"] += 1
        for group, rate in zip(self.optimizer.param_groups, rates, strict=True):
            group["lr"] = rate
        self.log.append([group["lr"] for group in self.optimizer.param_groups])


# --- epochs -----------------------------------------------------------------------------------
def _check_loss(loss: torch.Tensor) -> None:
    if not torch.isfinite(loss):
        raise TrainingError(f"the training loss became {loss.item()} (try a lower lr)")


def train_epoch(model, loader, criterion, optimizer, schedule: Schedule, phase: str, run: Any, bar_: Any) -> dict:
    """One pass over ``loader`` (at most ``run.max_steps`` steps) in ``run.precision``, a
    GradScaler step for fp16; ``run`` carries the device, precision, layout and scaler."""
    model.train()
    frozen_norms_to_eval(model.module if hasattr(model, "module") else model, run.freeze_norm_stats)
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for step, (images, targets) in enumerate(loader):
        if run.max_steps is not None and step >= run.max_steps:
            break
        schedule.step(phase)
        images = to_layout(images, run.device, run.channels_last)
        targets = targets.to(run.device, non_blocking=True)
        with run.precision.autocast():
            logits = model(images)
            loss = criterion(logits, targets)
        _check_loss(loss)
        optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        run.scaler.step(optimizer)
        run.scaler.update()
        steps += 1
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        if bar_ is not None:
            bar_.update(1)
            bar_.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    return {"loss_sum": total_loss, "correct": correct, "seen": seen, "steps": steps}


def cached_head_epoch(head, features, targets, criterion, optimizer, schedule: Schedule, batch_size, passes, generator):
    """``passes`` passes over the cached features in seeded random order, one optimizer step
    per batch: the same AdamW, loss (label smoothing, class weights) and weight decay as an
    uncached epoch, without running the frozen backbone.  fp32: a linear layer on cached
    features costs little, and one thread runs it ~10x faster than several competing ones."""
    head.train()
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    n = len(targets)
    with torch_threads(1 if features.device.type == "cpu" else None):
        for _ in range(passes):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                index = order[start : start + batch_size]
                schedule.step("head")
                x, y = features[index], targets[index]
                logits = head(x)
                loss = criterion(logits, y)
                _check_loss(loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                total_loss += loss.item() * len(y)
                correct += (logits.argmax(1) == y).sum().item()
                seen += len(y)
    return {"loss_sum": total_loss, "correct": correct, "seen": seen, "steps": steps}


# --- validation -------------------------------------------------------------------------------
@torch.no_grad()
def predict(
    model: nn.Module,
    samples: Sequence[tuple[Path, int]],
    spec: PreprocessSpec,
    run: Any,
    precision: Precision,
    desc: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (float32 numpy) and targets for samples, in eval mode with the eval transforms."""
    model.eval()
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        ImageSamples(samples, eval_transforms(spec)), batch_size=run.batch_size, shuffle=False, num_workers=run.workers
    )
    progress_bar = bar(run.bars, len(loader), desc, leave=False)
    outputs, targets = [], []
    try:
        for images, target in loader:
            with precision.autocast():
                logits = model(to_layout(images, run.device, run.channels_last))
            outputs.append(logits.float().cpu())
            targets.append(target)
            if progress_bar is not None:
                progress_bar.update(1)
    finally:
        if progress_bar is not None:
            progress_bar.close()
    if not outputs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def evaluate(model, samples, spec, run: Any, dist: Dist, num_classes: int, precision: Precision | None = None):
    """Validation sharded over ranks (each rank a strided slice), gathered everywhere, so every
    rank takes the same early-stopping decision.  ``precision`` defaults to the run's."""
    shard = samples[dist.rank :: dist.world]
    logits, targets = predict(model, shard, spec, run, precision or run.precision, "validate")
    if logits.size == 0:
        logits = np.zeros((0, num_classes), np.float32)
    parts = dist.gather((logits, targets))
    logits = np.concatenate([p[0] for p in parts])
    targets = np.concatenate([p[1] for p in parts])
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item())
    return logits, targets, loss
