"""``finetune()``: from a labelled image dataset to a checkpoint with metrics and plots.

The same entry point runs on one device or under ``torchrun --nproc_per_node=N`` (DDP:
DistributedSampler for training, validation sharded and gathered, rank 0 writes files).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..contract import PreprocessSpec
from ..errors import DatasetError, TrainingError
from .checkpoint import read_checkpoint, save_checkpoint
from .data import Dataset, ImageSamples, load_dataset, split_dataset
from .metrics import classification_metrics, plot_confusion, plot_curves, topk_accuracy, write_history
from .models import LITE0, build_model, classifier_head, weights_label, weights_preprocess

__all__ = ["FinetuneResult", "finetune", "eval_transforms", "train_transforms", "resolve_device"]

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


# --- transforms -------------------------------------------------------------------------
def _interpolation(spec: PreprocessSpec) -> Any:
    from torchvision.transforms import InterpolationMode

    return InterpolationMode.BICUBIC if spec.interpolation == "bicubic" else InterpolationMode.BILINEAR


def eval_transforms(spec: PreprocessSpec) -> Any:
    """The weights' eval pipeline (torchvision's ImageClassification preset, on PIL images)."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(spec.resize_size, interpolation=_interpolation(spec), max_size=spec.max_size),
        T.CenterCrop(spec.crop_size),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


def train_transforms(spec: PreprocessSpec) -> Any:
    """Training-only augmentation: RandomResizedCrop to the crop size and a horizontal flip."""
    from torchvision import transforms as T

    return T.Compose([
        T.RandomResizedCrop(spec.crop_size, interpolation=_interpolation(spec)),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(spec.mean, spec.std),
    ])


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

    rank = int(os.environ.get("RANK", "0"))
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


def _frozen_norms_to_eval(model: nn.Module) -> None:
    """BatchNorm layers whose parameters are frozen keep their pretrained running statistics."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                module.eval()


def _lr_lambda(head_steps: int, total_steps: int, warmup: float, ratio: float, group: str) -> Callable[[int], float]:
    """Multiplier of the base lr at a step: each phase warms up linearly then follows a cosine.
    ``ratio`` = finetune_lr / lr.  The backbone group is 0 during the head phase."""

    def phase_factor(step: int, length: int) -> float:
        warm = max(1, int(round(warmup * length))) if warmup > 0 else 0
        if step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, length - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def factor(step: int) -> float:
        if step < head_steps:
            return phase_factor(step, head_steps) if group == "head" else 0.0
        return ratio * phase_factor(step - head_steps, max(1, total_steps - head_steps))

    return factor


# --- one epoch ----------------------------------------------------------------------------
def _run_train_epoch(model, loader, criterion, optimizer, scheduler, scaler, device, amp, max_steps, bar) -> dict:
    model.train()
    _frozen_norms_to_eval(model.module if hasattr(model, "module") else model)
    total_loss, correct, seen = 0.0, 0, 0
    for step, (images, targets) in enumerate(loader):
        if max_steps is not None and step >= max_steps:
            break
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
        scheduler.step()
        total_loss += loss.item() * len(targets)
        correct += (logits.argmax(1) == targets).sum().item()
        seen += len(targets)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.3f}")
    return {"loss_sum": total_loss, "correct": correct, "seen": seen}


@torch.no_grad()
def _predict(model: nn.Module, samples, spec, batch_size, device, amp, workers, bar_desc=None, progress=False):
    """Logits (float32 numpy) and targets for samples, in eval mode with the eval transforms."""
    model.eval()
    loader = torch.utils.data.DataLoader(ImageSamples(samples, eval_transforms(spec)), batch_size=batch_size,
                                         shuffle=False, num_workers=workers)
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
    shard = samples[dist.rank::dist.world]
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
    head_epochs: int = 2,
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
    resume: bool = True,
    progress: bool = True,
    preprocess: PreprocessSpec | None = None,
    max_steps_per_epoch: int | None = None,
    filename_column: str = "filename",
    label_column: str = "label",
    callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    dist_timeout_s: float = 600.0,
) -> FinetuneResult:
    """Fine-tune ``model`` (any name of :func:`list_architectures`) on ``data``.

    ``data``: a Kaggle folder/CSV, a class-per-folder root or (path, label) pairs (see
    :func:`load_dataset`); split into train/val by ``val_fraction`` (stratified, seeded) unless
    ``val_data`` is given.  ``head_epochs`` epochs train the head alone at ``lr`` (backbone
    frozen); the remaining ``epochs - head_epochs`` unfreeze the backbone (``unfreeze``: "all",
    "none" or a fraction of its parameter tensors from the output end) at ``finetune_lr``
    (default ``lr / 10``).  AdamW, per-phase linear warm-up (``warmup`` fraction of the phase's
    steps) then cosine decay, cross-entropy with ``label_smoothing``.  Validation runs in eval
    mode with the weights' eval transforms each epoch; early stopping after ``patience``
    epochs without a better val top-1.  ``out_dir`` receives best.pt, last.pt, metrics.csv,
    metrics.json, health.json and PNG plots.  With ``resume=True`` a run whose last.pt exists
    continues after its last finished epoch.  ``preprocess`` overrides the weights' eval
    preprocessing (e.g. a smaller crop for quick runs); it travels into the checkpoint.
    ``callbacks`` are called on every rank after each finished epoch as ``cb(epoch, row)``.
    """
    if epochs < 1 or head_epochs < 0 or head_epochs > epochs:
        raise TrainingError(f"need epochs >= 1 and 0 <= head_epochs <= epochs, got epochs={epochs}, head_epochs={head_epochs}")
    if lr < 0 or (finetune_lr is not None and finetune_lr < 0):
        raise TrainingError(f"learning rates must be >= 0, got lr={lr}, finetune_lr={finetune_lr}")
    if batch_size < 1:
        raise TrainingError(f"batch_size must be >= 1, got {batch_size}")
    if not (unfreeze in ("all", "none") or (isinstance(unfreeze, (int, float)) and 0 < float(unfreeze) <= 1)):
        raise TrainingError(f"unfreeze must be 'all', 'none' or a fraction in (0, 1], got {unfreeze!r}")
    finetune_lr = lr / 10 if finetune_lr is None else finetune_lr
    device_ = resolve_device(device)
    dist = _init_distributed(device_, dist_timeout_s)
    if dist.active and device_.type == "cuda":
        device_ = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device_)
    try:
        return _finetune(**locals())
    finally:
        if dist.started_here:
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


def _finetune(*, data, model, weights, epochs, head_epochs, unfreeze, batch_size, lr, finetune_lr, weight_decay,
              warmup, label_smoothing, val_fraction, val_data, test_data, seed, num_workers, device, amp, patience,
              out_dir, resume, progress, preprocess, max_steps_per_epoch, filename_column, label_column, callbacks,
              dist_timeout_s, device_, dist) -> FinetuneResult:
    arch = model
    out = Path(out_dir)
    progress = progress and dist.main
    amp = (device_.type == "cuda") if amp is None else bool(amp and device_.type == "cuda")
    workers = num_workers if num_workers is not None else (min(8, os.cpu_count() or 1) if device_.type == "cuda" else 0)
    spec = preprocess if preprocess is not None else weights_preprocess(arch, weights)
    columns = {"filename_column": filename_column, "label_column": label_column}

    # Data: rank 0 loads and checks (decoding every image once), the others receive the result.
    payload = None
    if dist.main:
        dataset = load_dataset(data, **columns)
        if val_data is not None:
            val_set = load_dataset(val_data, **columns)
            _same_classes(dataset, val_set, "val_data")
            train_samples, val_samples = dataset.samples, val_set.samples
        else:
            train_samples, val_samples = split_dataset(dataset.samples, val_fraction, seed=seed)
        test_samples = None
        if test_data is not None:
            test_set = load_dataset(test_data, **columns)
            _same_classes(dataset, test_set, "test_data")
            test_samples = test_set.samples
        payload = (dataset.classes, train_samples, val_samples, test_samples,
                   dataset.health.to_dict() if dataset.health else None, str(dataset.health or ""))
    labels, train_samples, val_samples, test_samples, health, health_text = dist.broadcast(payload)
    num_classes = len(labels)
    if progress and health_text:
        print(health_text)

    train_config = {
        "model": arch, "weights": weights_label(arch, weights), "epochs": epochs, "head_epochs": head_epochs,
        "unfreeze": unfreeze, "batch_size": batch_size, "lr": lr, "finetune_lr": finetune_lr,
        "weight_decay": weight_decay, "warmup": warmup, "label_smoothing": label_smoothing,
        "val_fraction": val_fraction if val_data is None else None, "seed": seed, "amp": amp,
        "patience": patience, "world_size": dist.world, "device": device_.type,
        "max_steps_per_epoch": max_steps_per_epoch, "num_train": len(train_samples), "num_val": len(val_samples),
        "data": str(data) if isinstance(data, (str, os.PathLike)) else f"<{type(data).__name__}>",
        "torch": torch.__version__,
    }

    torch.manual_seed(seed)
    random.seed(seed)
    net = build_model(arch, weights=weights, num_classes=num_classes).to(device_)
    head = _head_parameters(net)
    head_ids = {id(p) for p in head}
    optimizer = torch.optim.AdamW(
        [{"params": head, "name": "head"},
         {"params": [p for p in net.parameters() if id(p) not in head_ids], "name": "backbone"}],
        lr=lr, weight_decay=weight_decay,
    )
    train_ds = ImageSamples(train_samples, train_transforms(spec))
    sampler = (torch.utils.data.DistributedSampler(train_ds, num_replicas=dist.world, rank=dist.rank,
                                                   shuffle=True, seed=seed) if dist.active else None)
    generator = torch.Generator()
    per_rank = math.ceil(len(train_ds) / dist.world)
    loader = torch.utils.data.DataLoader(
        train_ds, batch_size=batch_size, shuffle=sampler is None, sampler=sampler, num_workers=workers,
        generator=generator, pin_memory=device_.type == "cuda",
        # Only a last batch of ONE image is dropped (BatchNorm cannot train on it); any other
        # remainder is used, which matters on small datasets.
        drop_last=per_rank % batch_size == 1 and per_rank > 1,
    )
    steps_per_epoch = len(loader) if max_steps_per_epoch is None else min(len(loader), max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise DatasetError(f"the training split has {len(train_samples)} images: too few for one batch")
    head_steps, total_steps = head_epochs * steps_per_epoch, epochs * steps_per_epoch
    ratio = finetune_lr / lr if lr > 0 else 0.0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [
        _lr_lambda(head_steps, total_steps, warmup, ratio, "head"),
        _lr_lambda(head_steps, total_steps, warmup, ratio, "backbone"),
    ])
    scaler = torch.amp.GradScaler(device_.type, enabled=amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)

    best_path, last_path = out / BEST, out / LAST
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if resume and last_path.is_file():
        state = read_checkpoint(last_path)
        config = state["config"]
        if config["arch"] != arch or config["labels"] != labels:
            raise TrainingError(
                f"{last_path}: cannot resume: it was trained as {config['arch']} on {config['num_classes']} "
                f"classes, this run is {arch} on {num_classes}; pass resume=False or another out_dir"
            )
        if config["preprocess"] != spec.to_dict():
            raise TrainingError(
                f"{last_path}: cannot resume: it was trained with preprocessing {config['preprocess']}, this run "
                f"uses {spec.to_dict()}; pass resume=False or another out_dir"
            )
        net.load_state_dict(state["model_state"])
        optimizer.load_state_dict(state["optimizer_state"])
        scheduler.load_state_dict(state["scheduler_state"])
        if "scaler_state" in state and amp:
            scaler.load_state_dict(state["scaler_state"])
        history = list(state.get("history", []))
        start_epoch = int(config["epoch"])
        if progress:
            print(f"Resuming from {last_path} after epoch {start_epoch}")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)

    best = max(history, key=lambda row: row["val_acc1"], default=None)
    base_config = {"arch": arch, "num_classes": num_classes, "labels": labels,
                   "weights": train_config["weights"], "preprocess": spec.to_dict(), "train_config": train_config}
    stopped_early = _patience_exhausted(history, patience)
    epoch_bar = _bar(progress, epochs, "epochs")
    if epoch_bar is not None:
        epoch_bar.update(start_epoch)
    wrapped, wrapped_phase = net, None
    epoch = start_epoch
    for epoch in range(start_epoch, epochs):
        if stopped_early:
            break
        phase = "head" if epoch < head_epochs else "finetune"
        if phase != wrapped_phase:  # DDP must be (re)built when the set of trainable params changes
            _set_trainable(net, head, phase, unfreeze)
            if dist.active:
                wrapped = nn.parallel.DistributedDataParallel(
                    net, device_ids=[device_.index] if device_.type == "cuda" else None)
            wrapped_phase = phase
        # Every epoch reseeds from (seed, epoch): a resumed run repeats exactly what it would have done.
        torch.manual_seed(seed * 100_003 + epoch)
        generator.manual_seed(seed * 100_003 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
        started = time.perf_counter()
        lrs = [group["lr"] for group in optimizer.param_groups]  # the rates of this epoch's first step
        bar = _bar(progress, steps_per_epoch, f"epoch {epoch + 1}/{epochs} ({phase})", leave=False)
        stats = _run_train_epoch(wrapped, loader, criterion, optimizer, scheduler, scaler, device_, amp,
                                 max_steps_per_epoch, bar)
        if bar is not None:
            bar.close()
        totals = dist.gather(stats)
        seen = sum(t["seen"] for t in totals)
        logits, targets, val_loss = _evaluate(net, val_samples, spec, batch_size, device_, amp, workers, dist,
                                              progress, num_classes)
        row = {
            "epoch": epoch + 1, "phase": phase,
            "train_loss": sum(t["loss_sum"] for t in totals) / max(1, seen),
            "train_acc": sum(t["correct"] for t in totals) / max(1, seen),
            "train_images": seen,
            "val_loss": val_loss,
            "val_acc1": topk_accuracy(logits, targets, 1),
            "val_acc5": topk_accuracy(logits, targets, 5),
            "lr_head": lrs[0], "lr_backbone": lrs[1],
            "seconds": time.perf_counter() - started,
        }
        history.append(row)
        improved = best is None or row["val_acc1"] > best["val_acc1"]
        if improved:
            best = row
        if dist.main:
            metrics = {"val_acc1": best["val_acc1"], "val_acc5": best["val_acc5"], "val_loss": best["val_loss"],
                       "best_epoch": best["epoch"]}
            if improved:
                save_checkpoint(best_path, net, {**base_config, "metrics": metrics, "epoch": epoch + 1})
            save_checkpoint(last_path, net, {**base_config, "metrics": metrics, "epoch": epoch + 1},
                            optimizer_state=optimizer.state_dict(), scheduler_state=scheduler.state_dict(),
                            scaler_state=scaler.state_dict(), rng_state=torch.get_rng_state(), history=history)
            write_history(history, out / "metrics.csv", out / "metrics.json", {"labels": labels, "best": metrics})
        dist.barrier()
        if epoch_bar is not None:
            epoch_bar.update(1)
            epoch_bar.set_postfix(val_acc=f"{row['val_acc1']:.3f}", best=f"{best['val_acc1']:.3f}")
        for callback in callbacks:
            callback(epoch + 1, row)
        stopped_early = _patience_exhausted(history, patience)
    if epoch_bar is not None:
        epoch_bar.close()
    if not history:
        raise TrainingError(f"{out}: no epoch was run")

    # Final report from the best checkpoint: per-class metrics, confusion matrix, plots, test set.
    dist.barrier()
    best_state = read_checkpoint(best_path)
    net.load_state_dict(best_state["model_state"])
    logits, targets, val_loss = _evaluate(net, val_samples, spec, batch_size, device_, amp, workers, dist,
                                          progress, num_classes)
    report = classification_metrics(logits, targets, labels)
    metrics: dict[str, Any] = {
        "val_acc1": report["acc1"], "val_acc5": report["acc5"], "val_loss": val_loss,
        "best_epoch": best_state["config"]["epoch"], "macro_f1": report["macro_f1"],
        "per_class": report["per_class"], "confusion_matrix": report["confusion_matrix"],
        "num_val": len(val_samples), "num_train": len(train_samples), "history": history,
    }
    if test_samples is not None:
        t_logits, t_targets, t_loss = _evaluate(net, test_samples, spec, batch_size, device_, amp, workers, dist,
                                                progress, num_classes)
        test_report = classification_metrics(t_logits, t_targets, labels)
        metrics["test"] = {"acc1": test_report["acc1"], "acc5": test_report["acc5"], "loss": t_loss,
                           "macro_f1": test_report["macro_f1"], "per_class": test_report["per_class"],
                           "confusion_matrix": test_report["confusion_matrix"]}
    plots: dict[str, Path] = {}
    if dist.main:
        final = {k: v for k, v in metrics.items() if k != "history"}
        write_history(history, out / "metrics.csv", out / "metrics.json", {"labels": labels, "best": final})
        if health is not None:
            (out / "health.json").write_text(json.dumps(health, indent=2))
        plots["curves"] = plot_curves(history, out / "curves.png")
        plots["confusion"] = plot_confusion(report["confusion_matrix"], labels, out / "confusion_val.png",
                                            f"Validation confusion (epoch {metrics['best_epoch']})")
        if "test" in metrics:
            plots["confusion_test"] = plot_confusion(metrics["test"]["confusion_matrix"], labels,
                                                     out / "confusion_test.png", "Test confusion")
        if progress:
            print(f"best epoch {metrics['best_epoch']}: val top-1 {metrics['val_acc1']:.4f}, "
                  f"top-5 {metrics['val_acc5']:.4f} ({len(val_samples)} images) -> {best_path}")
    dist.barrier()
    return FinetuneResult(
        out_dir=out, checkpoint=best_path, last_checkpoint=last_path, arch=arch, labels=list(labels),
        preprocess=spec, metrics=metrics, val_samples=list(val_samples), train_samples=list(train_samples),
        metrics_csv=out / "metrics.csv", metrics_json=out / "metrics.json", plots=plots, health=health,
        epochs_run=len(history), stopped_early=stopped_early,
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
