"""``finetune()``: from a labelled image dataset to a checkpoint with metrics and plots.

The same entry point runs on one device or under ``torchrun --nproc_per_node=N`` (DDP:
DistributedSampler for training, validation sharded and gathered, rank 0 writes files).
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..contract import PreprocessSpec
from ..errors import DatasetError, TrainingError
from .checkpoint import read_checkpoint, save_checkpoint
from .data import Dataset, ImageSamples, load_dataset, split_dataset
from .features import FeatureCache, cache_key, cacheable_head, extract_features, fit_probe, probe_head_state
from .metrics import classification_metrics, plot_confusion, plot_curves, topk_accuracy, write_history
from .models import LITE0, build_model, classifier_head, weights_label, weights_preprocess
from .settings import APPLIED_ON_RESUME, FinetuneSettings

__all__ = ["FinetuneResult", "FinetuneSettings", "finetune", "eval_transforms", "train_transforms", "resolve_device"]

BEST, LAST = "best.pt", "last.pt"


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


# --- transforms -------------------------------------------------------------------------
def _interpolation(spec: PreprocessSpec) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR


def eval_transforms(spec: PreprocessSpec) -> Any:
    """The weights' eval pipeline (torchvision's ImageClassification preset, on PIL images)."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.Resize(spec.resize_size, interpolation=_interpolation(spec), max_size=spec.max_size),
            T.CenterCrop(spec.crop_size),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )


def train_transforms(spec: PreprocessSpec) -> Any:
    """Training-only augmentation: RandomResizedCrop to the crop size and a horizontal flip."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(spec.crop_size, interpolation=_interpolation(spec)),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )


# --- device and distribution --------------------------------------------------------------
def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise TrainingError(f"invalid device {device!r}: {exc}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class _Dist:
    world: int = 1
    rank: int = 0
    local_rank: int = 0
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out


def _init_distributed(device: torch.device, timeout_s: float) -> _Dist:
    """DDP when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    started = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        started = True
    return _Dist(world=dist.get_world_size(), rank=dist.get_rank(), local_rank=local_rank, started_here=started)


# --- model parts ---------------------------------------------------------------------------
def _head_parameters(model: nn.Module) -> list[nn.Parameter]:
    _, _, layer = classifier_head(model)
    return list(layer.parameters())


def _set_trainable(model: nn.Module, head: list[nn.Parameter], phase: str, unfreeze: Any) -> None:
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


def _frozen_norms_to_eval(model: nn.Module, all_norms: bool = False) -> None:
    """BatchNorm layers whose parameters are frozen keep their pretrained running statistics
    (``all_norms``: every BatchNorm layer does, its affine parameters still train)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if all_norms or (params and not any(p.requires_grad for p in params)):
                module.eval()


def phase_factor(step: int, length: int, warmup: float) -> float:
    """Multiplier of a phase's base learning rate at ``step`` (0-based) of ``length`` steps:
    linear warm-up over ``round(warmup * length)`` steps (at least one when ``warmup > 0``),
    then a cosine towards 0 that ends one step short of 0 (the last step still learns)."""
    warm = max(1, int(round(warmup * length))) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm + 1) / max(1, length - warm + 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _set_lrs(optimizer: torch.optim.Optimizer, head_lr: float, backbone_lr: float) -> None:
    optimizer.param_groups[0]["lr"] = head_lr
    optimizer.param_groups[1]["lr"] = backbone_lr


# --- one epoch ----------------------------------------------------------------------------
def _run_train_epoch(
    model, loader, criterion, optimizer, set_lr, scaler, device, amp, max_steps, bar, freeze_norm_stats=False
) -> dict:
    model.train()
    _frozen_norms_to_eval(model.module if hasattr(model, "module") else model, freeze_norm_stats)
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for step, (images, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
        set_lr()
        images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(images)
            loss = criterion(logits, targets)
        if not torch.isfinite(loss):
            raise TrainingError(f"the training loss became {loss.item()} (try a lower lr)")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        steps += 1
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    return {"loss_sum": total_loss, "correct": correct, "seen": seen, "steps": steps}


def _run_cached_head_epoch(
    head, features, targets, criterion, optimizer, set_lr, batch_size, passes, generator
) -> dict:
    """``passes`` passes over the cached features in seeded random order, one optimizer step
    per batch: the same AdamW, loss (label smoothing, class weights) and weight decay as an
    uncached epoch, without running the frozen backbone."""
    head.train()
    stats = {"loss_sum": 0.0, "correct": 0, "seen": 0, "steps": 0}
    with _threads(1 if features.device.type == "cpu" else None):
        _cached_passes(head, features, targets, criterion, optimizer, set_lr, batch_size, passes, generator, stats)
    return stats


@contextmanager
def _threads(count: int | None):
    """Tiny matrix products (a linear head on cached features) run ~10x faster on one thread
    than on several competing ones; the caller's setting is restored."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cached_passes(head, features, targets, criterion, optimizer, set_lr, batch_size, passes, generator, stats):
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    n = len(targets)
    for _ in range(passes):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            set_lr()
            x, y = features[index], targets[index]
            logits = head(x)
            loss = criterion(logits, y)
            if not torch.isfinite(loss):
                raise TrainingError(f"the training loss became {loss.item()} (try a lower lr)")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            total_loss += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
    stats.update(loss_sum=total_loss, correct=correct, seen=seen, steps=steps)


@torch.no_grad()
def _predict(model: nn.Module, samples, spec, batch_size, device, amp, workers, bar_desc=None, progress=False):
    """Logits (float32 numpy) and targets for samples, in eval mode with the eval transforms."""
    model.eval()
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        ImageSamples(samples, eval_transforms(spec)), batch_size=batch_size, shuffle=False, num_workers=workers
    )
    bar = _bar(progress, len(loader), bar_desc, leave=False)
    outputs, targets = [], []
    for images, target in loader:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(images.to(device))
        outputs.append(logits.float().cpu())
        targets.append(target)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if not outputs:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.int64)
    return torch.cat(outputs).numpy(), torch.cat(targets).numpy()


def _bar(enabled: bool, total: int, desc: str | None, leave: bool = True):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=leave, dynamic_ncols=True)


def _evaluate(model, samples, spec, batch_size, device, amp, workers, dist: _Dist, progress, num_classes):
    """Validation sharded over ranks (each rank a strided slice), gathered everywhere, so every
    rank takes the same early-stopping decision."""
    shard = samples[dist.rank :: dist.world]
    logits, targets = _predict(model, shard, spec, batch_size, device, amp, workers, "validate", progress)
    if logits.size == 0:
        logits = np.zeros((0, num_classes), np.float32)
    parts = dist.gather((logits, targets))
    logits = np.concatenate([p[0] for p in parts])
    targets = np.concatenate([p[1] for p in parts])
    loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item())
    return logits, targets, loss


# --- the entry point ------------------------------------------------------------------------
def finetune(
    data: Any,
    *,
    model: str = LITE0,
    weights: Any = "DEFAULT",
    epochs: int = 10,
    head_epochs: int = 1,
    unfreeze: str | float = "all",
    batch_size: int = 32,
    lr: float = 1e-3,
    finetune_lr: float | None = None,
    weight_decay: float = 0.01,
    warmup: float = 0.1,
    label_smoothing: float = 0.1,
    val_fraction: float = 0.2,
    val_data: Any = None,
    test_data: Any = None,
    seed: int = 0,
    num_workers: int | None = None,
    device: str = "auto",
    amp: bool | None = None,
    patience: int | None = 5,
    out_dir: str | os.PathLike = "runs/finetune",
    resume: bool | None = None,
    progress: bool = True,
    preprocess: PreprocessSpec | None = None,
    max_steps_per_epoch: int | None = None,
    filename_column: str = "filename",
    label_column: str = "label",
    callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    dist_timeout_s: float = 600.0,
    cache_features: bool = True,
    head_steps: int = 300,
    head_views: int = 0,
    class_balance: str = "none",
    probe_fallback: bool = True,
    freeze_norm_stats: bool = True,
) -> FinetuneResult:
    """Fine-tune ``model`` (any name of :func:`list_architectures`) on ``data``.

    ``data``: a Kaggle folder/CSV, a class-per-folder root or (path, label) pairs (see
    :func:`load_dataset`); split into train/val by ``val_fraction`` (stratified, seeded) unless
    ``val_data`` is given.

    - **Head phase** (the first ``head_epochs`` epochs; clamped to ``epochs`` with a note):
      the backbone is frozen, so with ``cache_features`` (default) its features are computed
      once (``head_views`` extra augmented views of each training image) and cached in
      ``out_dir/features.pt``; the head is trained on the cache with AdamW at ``lr``, at least
      ``head_steps`` steps in all (each head epoch is whole passes over the cache).
    - **Fine-tuning phase** (the remaining epochs): the backbone is unfrozen (``unfreeze``:
      "all", "none" or a fraction of its parameter tensors from the output end) at
      ``finetune_lr`` (default ``lr / 10``); with ``freeze_norm_stats`` (default) every BatchNorm
      keeps its pretrained running statistics (its affine parameters still train).
    - Each phase: linear warm-up over ``warmup`` x its steps, then cosine decay; the learning
      rates used are logged per epoch.  Cross-entropy with ``label_smoothing``;
      ``class_balance="loss"`` weights it by ``n / (classes * n_class)``.
    - **Linear probe**: scikit-learn's logistic regression on the cached frozen features,
      reported as ``metrics["probe_acc1"]``; with ``probe_fallback`` (default), when no epoch
      beats it on validation, best.pt is the pretrained backbone with the probe's head
      (``metrics["selected"] == "probe"``).
    - Validation each epoch in eval mode with the weights' eval transforms; early stopping
      after ``patience`` epochs without a better val top-1.  ``out_dir`` receives best.pt,
      last.pt, features.pt, metrics.csv, metrics.json, health.json and PNG plots.
    - ``resume``: None starts fresh when ``out_dir`` has no last.pt and otherwise refuses
      (pass True to continue it, False to start over); True continues after the last finished
      epoch, applying changed epochs/learning rates/patience and refusing other changes.

    ``preprocess`` overrides the weights' eval preprocessing (e.g. a smaller crop for quick
    runs); it travels into the checkpoint.  ``callbacks`` are called on every rank after each
    finished epoch as ``cb(epoch, row)``.  The settings are validated into a
    :class:`FinetuneSettings` (``result.settings``), saved in every checkpoint.
    """
    settings = FinetuneSettings(
        model=model,
        weights=weights,
        epochs=epochs,
        head_epochs=head_epochs,
        unfreeze=unfreeze,
        batch_size=batch_size,
        lr=lr,
        finetune_lr=finetune_lr,
        weight_decay=weight_decay,
        warmup=warmup,
        label_smoothing=label_smoothing,
        val_fraction=val_fraction,
        seed=seed,
        num_workers=num_workers,
        device=device,
        amp=amp,
        patience=patience,
        preprocess=preprocess,
        max_steps_per_epoch=max_steps_per_epoch,
        filename_column=filename_column,
        label_column=label_column,
        dist_timeout_s=dist_timeout_s,
        cache_features=cache_features,
        head_steps=head_steps,
        head_views=head_views,
        class_balance=class_balance,
        probe_fallback=probe_fallback,
        freeze_norm_stats=freeze_norm_stats,
    )
    if resume is not None and not isinstance(resume, bool):
        raise TrainingError(f"resume must be None, True or False, got {resume!r}")
    device_ = resolve_device(settings.device)
    dist = _init_distributed(device_, settings.dist_timeout_s)
    if dist.active and device_.type == "cuda":
        device_ = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device_)
    try:
        return _finetune(
            settings,
            data=data,
            val_data=val_data,
            test_data=test_data,
            out=Path(out_dir),
            resume=resume,
            progress=progress,
            callbacks=tuple(callbacks),
            device_=device_,
            dist=dist,
        )
    finally:
        if dist.started_here:
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


def _note(message: str, dist: _Dist) -> None:
    if dist.main:
        print(f"finetune: note: {message}", file=sys.stderr)


def _class_weights(samples: Sequence[tuple[Path, int]], num_classes: int) -> torch.Tensor:
    counts = np.bincount([label for _, label in samples], minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(samples) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def _sharded_features(net, samples, transform, settings, device_, amp, workers, dist, progress, desc):
    """Features of ``samples``: each rank computes a strided slice; gathered in sample order."""
    shard = samples[dist.rank :: dist.world]
    bar = _bar(progress, math.ceil(len(shard) / settings.batch_size), desc, leave=False)
    x, y = extract_features(
        net,
        shard,
        transform,
        batch_size=settings.batch_size,
        device=device_,
        amp=amp,
        workers=workers,
        progress_bar=bar,
    )
    if bar is not None:
        bar.close()
    if not dist.active:
        return x, y
    parts = dist.gather((x, y))
    xs = torch.zeros((len(samples), x.shape[1]))
    ys = torch.zeros((len(samples),), dtype=torch.int64)
    for rank, (px, py) in enumerate(parts):
        xs[rank :: dist.world], ys[rank :: dist.world] = px, py
    return xs, ys


def _features(net, train_samples, val_samples, spec, settings, device_, amp, workers, dist, out, progress):
    """The frozen pretrained backbone's features: train (eval view, then ``head_views``
    augmented views), val (eval view).  Loaded from ``out/features.pt`` when its key matches."""
    key = cache_key(
        arch=settings.model,
        weights=weights_label(settings.model, settings.weights),
        weights_arg=settings.weights,
        preprocess=spec.to_dict(),
        views=settings.head_views,
        seed=settings.seed,
        batch_size=settings.batch_size,
        amp=amp,
        device=device_.type,
        torch=torch.__version__,
        world=dist.world,
        train=[[p, c] for p, c in train_samples],
        val=[[p, c] for p, c in val_samples],
    )
    cache = FeatureCache(out)
    tensors = dist.broadcast(cache.load(key) if dist.main else None)
    info = {"file": str(cache.path), "loaded": tensors is not None}
    started = time.perf_counter()
    if tensors is None:
        train_x, train_y = _sharded_features(
            net,
            train_samples,
            eval_transforms(spec),
            settings,
            device_,
            amp,
            workers,
            dist,
            progress,
            "features (train)",
        )
        views_x, views_y = [train_x], [train_y]
        for view in range(settings.head_views):
            torch.manual_seed(settings.seed * 100_003 + 7_919 * (view + 1))
            vx, vy = _sharded_features(
                net,
                train_samples,
                train_transforms(spec),
                settings,
                device_,
                amp,
                workers,
                dist,
                progress,
                f"features (view {view + 1})",
            )
            views_x.append(vx)
            views_y.append(vy)
        val_x, val_y = _sharded_features(
            net, val_samples, eval_transforms(spec), settings, device_, amp, workers, dist, progress, "features (val)"
        )
        tensors = {"train": torch.cat(views_x), "train_targets": torch.cat(views_y), "val": val_x, "val_targets": val_y}
        if dist.main:
            out.mkdir(parents=True, exist_ok=True)
            cache.save(key, tensors)
    seconds = time.perf_counter() - started
    images = len(train_samples) * (1 + settings.head_views) + len(val_samples)
    info.update(
        seconds=seconds,
        images=images,
        images_per_s=images / seconds if seconds > 0 else None,
        dim=int(tensors["train"].shape[1]),
    )
    return tensors, info


def _resume_state(
    last_path: Path, settings: FinetuneSettings, labels, spec, train_samples, val_samples, dist: _Dist
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """The saved state of a run to resume, after checking it is the same run."""
    state = read_checkpoint(last_path)
    config = state["config"]
    arch = settings.model
    if config["arch"] != arch or config["labels"] != labels:
        raise TrainingError(
            f"{last_path}: cannot resume: it was trained as {config['arch']} on {config['num_classes']} "
            f"classes, this run is {arch} on {len(labels)}; pass resume=False (--fresh) or another out_dir"
        )
    if config["preprocess"] != spec.to_dict():
        raise TrainingError(
            f"{last_path}: cannot resume: it was trained with preprocessing {config['preprocess']}, this run "
            f"uses {spec.to_dict()}; pass resume=False (--fresh) or another out_dir"
        )
    saved = config.get("settings")
    if not isinstance(saved, dict) or "steps" not in state:
        raise TrainingError(
            f"{last_path}: cannot resume: the checkpoint was written by an older butterfly_onnx "
            "(no saved settings); pass resume=False (--fresh) to start over"
        )
    applied, refused = settings.resume_changes(saved)
    split = config.get("split")
    if split is not None and split != _split_digest(train_samples, val_samples):
        refused["data"] = ("the saved train/validation split", "a different one")
    if refused:
        changes = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise TrainingError(
            f"{last_path}: cannot resume with changed settings ({changes}): they would make the finished epochs "
            f"a different run; resuming can change only {sorted(APPLIED_ON_RESUME)}; pass resume=False (--fresh) "
            "or another out_dir"
        )
    return state, applied


def _split_digest(train_samples, val_samples) -> str:
    return cache_key(train=[[str(p), c] for p, c in train_samples], val=[[str(p), c] for p, c in val_samples])


def _finetune(
    settings: FinetuneSettings,
    *,
    data,
    val_data,
    test_data,
    out: Path,
    resume: bool | None,
    progress: bool,
    callbacks,
    device_: torch.device,
    dist: _Dist,
) -> FinetuneResult:
    arch, seed, batch_size = settings.model, settings.seed, settings.batch_size
    progress = progress and dist.main
    amp = (device_.type == "cuda") if settings.amp is None else bool(settings.amp and device_.type == "cuda")
    workers = (
        settings.num_workers
        if settings.num_workers is not None
        else (min(8, os.cpu_count() or 1) if device_.type == "cuda" else 0)
    )
    spec = settings.preprocess if settings.preprocess is not None else weights_preprocess(arch, settings.weights)
    columns: dict[str, Any] = {"filename_column": settings.filename_column, "label_column": settings.label_column}
    best_path, last_path = out / BEST, out / LAST
    if resume is None and last_path.is_file():
        raise TrainingError(
            f"{out} already holds a run ({last_path}): pass resume=True (--resume) to continue it or "
            "resume=False (--fresh) to start over"
        )
    for note in settings.notes:
        _note(note, dist)

    # Data: rank 0 loads and checks (decoding every image once), the others receive the result.
    payload = None
    if dist.main:
        dataset = load_dataset(data, **columns)
        if val_data is not None:
            val_set = load_dataset(val_data, **columns)
            _same_classes(dataset, val_set, "val_data")
            train_samples, val_samples = dataset.samples, val_set.samples
        else:
            train_samples, val_samples = split_dataset(dataset.samples, settings.val_fraction, seed=seed)
        test_samples = None
        if test_data is not None:
            test_set = load_dataset(test_data, **columns)
            _same_classes(dataset, test_set, "test_data")
            test_samples = test_set.samples
        payload = (
            dataset.classes,
            train_samples,
            val_samples,
            test_samples,
            dataset.health.to_dict() if dataset.health else None,
            str(dataset.health or ""),
        )
    labels, train_samples, val_samples, test_samples, health, health_text = dist.broadcast(payload)
    num_classes = len(labels)
    if progress and health_text:
        print(health_text)

    train_config = {
        **settings.to_dict(),
        "finetune_lr": settings.backbone_lr,
        "weights": weights_label(arch, settings.weights),
        "val_fraction": settings.val_fraction if val_data is None else None,
        "amp": amp,
        "world_size": dist.world,
        "device": device_.type,
        "num_train": len(train_samples),
        "num_val": len(val_samples),
        "data": str(data) if isinstance(data, (str, os.PathLike)) else f"<{type(data).__name__}>",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }

    torch.manual_seed(seed)
    random.seed(seed)
    net = build_model(arch, weights=settings.weights, num_classes=num_classes).to(device_)
    head = _head_parameters(net)
    head_layer = cacheable_head(net)
    head_ids = {id(p) for p in head}
    optimizer = torch.optim.AdamW(
        [
            {"params": head, "name": "head"},
            {"params": [p for p in net.parameters() if id(p) not in head_ids], "name": "backbone"},
        ],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    train_ds = ImageSamples(train_samples, train_transforms(spec))
    sampler: torch.utils.data.DistributedSampler[Any] | None = (
        torch.utils.data.DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
        if dist.active
        else None
    )
    generator = torch.Generator()
    per_rank = math.ceil(len(train_ds) / dist.world)
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        pin_memory=device_.type == "cuda",
        # Only a last batch of ONE image is dropped (BatchNorm cannot train on it); any other
        # remainder is used, which matters on small datasets.
        drop_last=per_rank % batch_size == 1 and per_rank > 1,
    )
    steps_per_epoch = (
        len(loader) if settings.max_steps_per_epoch is None else min(len(loader), settings.max_steps_per_epoch)
    )
    if steps_per_epoch == 0:
        raise DatasetError(f"the training split has {len(train_samples)} images: too few for one batch")
    class_weight = _class_weights(train_samples, num_classes).to(device_) if settings.class_balance == "loss" else None
    criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=settings.label_smoothing)
    scaler = torch.amp.GradScaler(device_.type, enabled=amp)

    # The frozen backbone's features (before any resumed state is loaded: they are the
    # pretrained backbone's), the linear probe on them, and the head phase's length.
    features, feature_info, probe = None, None, None
    if settings.cache_features and head_layer is not None:
        features, feature_info = _features(
            net, train_samples, val_samples, spec, settings, device_, amp, workers, dist, out, progress
        )
        n_eval = len(train_samples)
        probe = dist.broadcast(
            fit_probe(
                features["train"][:n_eval],
                features["train_targets"][:n_eval],
                features["val"],
                features["val_targets"],
                num_classes,
            )
            if dist.main
            else None
        )
        if progress:
            print(f"linear probe (logistic regression on the frozen features): val top-1 {probe['acc1']:.4f}")
        features = {k: v.to(device_) for k, v in features.items()}
    cached_head = features is not None and settings.head_epochs > 0
    if cached_head:
        assert features is not None
        steps_per_pass = math.ceil(len(features["train_targets"]) / batch_size)
        passes = max(1, math.ceil(settings.head_steps / (settings.head_epochs * steps_per_pass)))
        head_total = passes * steps_per_pass * settings.head_epochs
    else:
        passes, head_total = 0, settings.head_epochs * steps_per_epoch
    steps = {"head": 0, "full": 0}

    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and last_path.is_file():
        state, applied = _resume_state(last_path, settings, labels, spec, train_samples, val_samples, dist)
        net.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        optimizer.param_groups[0]["weight_decay"] = optimizer.param_groups[1]["weight_decay"] = settings.weight_decay
        if "scaler_state" in state and amp:
            scaler.load_state_dict(state["scaler_state"])
        history = list(state.get("history", []))
        steps = {k: int(v) for k, v in state["steps"].items()}
        start_epoch = int(state["config"]["epoch"])
        if dist.main:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in applied.items()) or "no changed settings"
            left = max(0, settings.epochs - start_epoch)
            print(
                f"finetune: resuming {last_path} after epoch {start_epoch} of {settings.epochs} "
                f"({left} to run; {what})",
                file=sys.stderr,
            )
    elif resume and dist.main:
        print(f"finetune: nothing to resume in {out}; starting fresh", file=sys.stderr)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)

    full_total = settings.full_epochs * steps_per_epoch

    def set_head_lr() -> None:
        _set_lrs(optimizer, settings.lr * phase_factor(steps["head"], head_total, settings.warmup), 0.0)
        steps["head"] += 1

    def set_full_lr() -> None:
        rate = settings.backbone_lr * phase_factor(steps["full"], full_total, settings.warmup)
        _set_lrs(optimizer, rate, rate)
        steps["full"] += 1

    best = max(history, key=lambda row: row["val_acc1"], default=None)
    base_config = {
        "arch": arch,
        "num_classes": num_classes,
        "labels": labels,
        "weights": train_config["weights"],
        "preprocess": spec.to_dict(),
        "train_config": train_config,
        "settings": settings.to_dict(),
        "split": _split_digest(train_samples, val_samples),
    }
    stopped_early = _patience_exhausted(history, settings.patience)
    epoch_bar = _bar(progress, settings.epochs, "epochs")
    if epoch_bar is not None:
        epoch_bar.update(min(start_epoch, settings.epochs))
    wrapped, wrapped_phase = net, None
    for epoch in range(start_epoch, settings.epochs):
        if stopped_early:
            break
        phase = "head" if epoch < settings.head_epochs else "finetune"
        if phase != wrapped_phase:  # DDP must be (re)built when the set of trainable params changes
            _set_trainable(net, head, phase, settings.unfreeze)
            if dist.active and not (phase == "head" and cached_head):
                wrapped = nn.parallel.DistributedDataParallel(
                    net, device_ids=[device_.index] if device_.type == "cuda" else None
                )
            wrapped_phase = phase
        # Every epoch reseeds from (seed, epoch): a resumed run repeats exactly what it would have done.
        torch.manual_seed(seed * 100_003 + epoch)
        generator.manual_seed(seed * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        started = time.perf_counter()
        lrs: list[list[float]] = []

        def logged(setter: Callable[[], None], log: list[list[float]]) -> Callable[[], None]:
            def step() -> None:
                setter()
                log.append([group["lr"] for group in optimizer.param_groups])

            return step

        if phase == "head" and cached_head:
            assert head_layer is not None and features is not None
            stats = _run_cached_head_epoch(
                head_layer,
                features["train"],
                features["train_targets"],
                criterion,
                optimizer,
                logged(set_head_lr, lrs),
                batch_size,
                passes,
                generator,
            )
            totals = [stats]  # every rank fits the same head on the same (gathered) cache
            head_layer.eval()
            with torch.no_grad():
                logits = head_layer(features["val"]).float().cpu().numpy()
            targets = features["val_targets"].cpu().numpy()
            val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item())
        else:
            bar = _bar(progress, steps_per_epoch, f"epoch {epoch + 1}/{settings.epochs} ({phase})", leave=False)
            setter = set_head_lr if phase == "head" else set_full_lr
            stats = _run_train_epoch(
                wrapped,
                loader,
                criterion,
                optimizer,
                logged(setter, lrs),
                scaler,
                device_,
                amp,
                settings.max_steps_per_epoch,
                bar,
                settings.freeze_norm_stats,
            )
            if bar is not None:
                bar.close()
            totals = dist.gather(stats)
            logits, targets, val_loss = _evaluate(
                net, val_samples, spec, batch_size, device_, amp, workers, dist, progress, num_classes
            )
        seconds = time.perf_counter() - started
        seen = sum(t["seen"] for t in totals) if not (phase == "head" and cached_head) else stats["seen"]
        row = {
            "epoch": epoch + 1,
            "phase": phase,
            "train_loss": sum(t["loss_sum"] for t in totals) / max(1, sum(t["seen"] for t in totals)),
            "train_acc": sum(t["correct"] for t in totals) / max(1, sum(t["seen"] for t in totals)),
            "train_images": seen,
            "val_loss": val_loss,
            "val_acc1": topk_accuracy(logits, targets, 1),
            "val_acc5": topk_accuracy(logits, targets, 5),
            "lr_head": lrs[0][0] if lrs else 0.0,
            "lr_backbone": lrs[0][1] if lrs else 0.0,
            "lr_head_end": lrs[-1][0] if lrs else 0.0,
            "lr_backbone_end": lrs[-1][1] if lrs else 0.0,
            "steps": stats["steps"],
            "cached": phase == "head" and cached_head,
            "seconds": seconds,
            "images_per_s": seen / seconds if seconds > 0 else None,
        }
        history.append(row)
        improved = best is None or row["val_acc1"] > best["val_acc1"]
        if improved:
            best = row
        assert best is not None
        if dist.main:
            metrics = {
                "val_acc1": best["val_acc1"],
                "val_acc5": best["val_acc5"],
                "val_loss": best["val_loss"],
                "best_epoch": best["epoch"],
            }
            if improved:
                save_checkpoint(best_path, net, {**base_config, "metrics": metrics, "epoch": epoch + 1})
            save_checkpoint(
                last_path,
                net,
                {**base_config, "metrics": metrics, "epoch": epoch + 1},
                optimizer_state=optimizer.state_dict(),
                steps=dict(steps),
                scaler_state=scaler.state_dict(),
                rng_state=torch.get_rng_state(),
                history=history,
            )
            write_history(history, out / "metrics.csv", out / "metrics.json", {"labels": labels, "best": metrics})
        dist.barrier()
        if epoch_bar is not None:
            epoch_bar.update(1)
            epoch_bar.set_postfix(
                val_acc=f"{row['val_acc1']:.3f}", best=f"{best['val_acc1']:.3f}", lr=f"{row['lr_head']:.2g}"
            )
        for callback in callbacks:
            callback(epoch + 1, row)
        stopped_early = _patience_exhausted(history, settings.patience)
    if epoch_bar is not None:
        epoch_bar.close()
    if not history:
        raise TrainingError(f"{out}: no epoch was run")
    assert best is not None

    # Never worse than the probe: when no epoch beat it on validation, best.pt becomes the
    # pretrained backbone with the probe's head.
    selected = "epoch"
    if settings.probe_fallback and probe is not None and probe["acc1"] > best["val_acc1"]:
        selected = "probe"
        torch.manual_seed(seed)
        fallback = build_model(arch, weights=settings.weights, num_classes=num_classes).to(device_)
        fallback_head = cacheable_head(fallback)
        assert fallback_head is not None  # the probe exists only for a model with a Linear head
        probe_head_state(fallback_head, probe)
        if dist.main:
            metrics = {"val_acc1": probe["acc1"], "val_acc5": probe["acc5"], "val_loss": None, "best_epoch": 0}
            save_checkpoint(best_path, fallback, {**base_config, "metrics": metrics, "epoch": 0, "selected": "probe"})
            print(
                f"finetune: no epoch beat the linear probe on validation (best epoch {best['epoch']}: "
                f"{best['val_acc1']:.4f}, probe: {probe['acc1']:.4f}); {best_path} is the pretrained backbone "
                "with the probe's head",
                file=sys.stderr,
            )
        del fallback

    # Final report from the best checkpoint: per-class metrics, confusion matrix, plots, test set.
    dist.barrier()
    best_state = read_checkpoint(best_path)
    net.load_state_dict(best_state["model_state"])
    logits, targets, val_loss = _evaluate(
        net, val_samples, spec, batch_size, device_, amp, workers, dist, progress, num_classes
    )
    report = classification_metrics(logits, targets, labels)
    metrics = {
        "val_acc1": report["acc1"],
        "val_acc5": report["acc5"],
        "val_loss": val_loss,
        "best_epoch": best_state["config"]["epoch"],
        "selected": selected,
        "macro_f1": report["macro_f1"],
        "per_class": report["per_class"],
        "confusion_matrix": report["confusion_matrix"],
        "probe_acc1": probe["acc1"] if probe else None,
        "probe_acc5": probe["acc5"] if probe else None,
        "probe_seconds": probe["seconds"] if probe else None,
        "features": feature_info,
        "num_val": len(val_samples),
        "num_train": len(train_samples),
        "notes": list(settings.notes),
        "history": history,
    }
    if test_samples is not None:
        t_logits, t_targets, t_loss = _evaluate(
            net, test_samples, spec, batch_size, device_, amp, workers, dist, progress, num_classes
        )
        test_report = classification_metrics(t_logits, t_targets, labels)
        metrics["test"] = {
            "acc1": test_report["acc1"],
            "acc5": test_report["acc5"],
            "loss": t_loss,
            "macro_f1": test_report["macro_f1"],
            "per_class": test_report["per_class"],
            "confusion_matrix": test_report["confusion_matrix"],
        }
    plots: dict[str, Path] = {}
    if dist.main:
        final = {k: v for k, v in metrics.items() if k != "history"}
        write_history(history, out / "metrics.csv", out / "metrics.json", {"labels": labels, "best": final})
        if health is not None:
            (out / "health.json").write_text(json.dumps(health, indent=2))
        plots["curves"] = plot_curves(history, out / "curves.png")
        title = (
            "Validation confusion (linear probe head)"
            if selected == "probe"
            else f"Validation confusion (epoch {metrics['best_epoch']})"
        )
        plots["confusion"] = plot_confusion(report["confusion_matrix"], labels, out / "confusion_val.png", title)
        if "test" in metrics:
            plots["confusion_test"] = plot_confusion(
                metrics["test"]["confusion_matrix"], labels, out / "confusion_test.png", "Test confusion"
            )
        if progress:
            which = "the linear probe's head" if selected == "probe" else f"best epoch {metrics['best_epoch']}"
            probe_text = "" if probe is None else f"; linear probe {probe['acc1']:.4f}"
            print(
                f"{which}: val top-1 {metrics['val_acc1']:.4f}, top-5 {metrics['val_acc5']:.4f} "
                f"({len(val_samples)} images{probe_text}) -> {best_path}"
            )
    dist.barrier()
    return FinetuneResult(
        out_dir=out,
        checkpoint=best_path,
        last_checkpoint=last_path,
        arch=arch,
        labels=list(labels),
        preprocess=spec,
        metrics=metrics,
        val_samples=list(val_samples),
        train_samples=list(train_samples),
        metrics_csv=out / "metrics.csv",
        metrics_json=out / "metrics.json",
        plots=plots,
        health=health,
        epochs_run=len(history),
        stopped_early=stopped_early,
        settings=settings,
    )


def _same_classes(train: Dataset, other: Dataset, name: str) -> None:
    unknown = sorted(set(other.classes) - set(train.classes))
    if unknown:
        raise DatasetError(f"{name} ({other.source}) has classes the training data lacks: {unknown[:10]}")
    index = {label: i for i, label in enumerate(train.classes)}
    other.samples = [(p, index[other.classes[c]]) for p, c in other.samples]
    other.classes = list(train.classes)


def _patience_exhausted(history: list[dict[str, Any]], patience: int | None) -> bool:
    if patience is None or not history:
        return False
    best_index = max(range(len(history)), key=lambda i: (history[i]["val_acc1"], -i))
    return len(history) - 1 - best_index >= patience
