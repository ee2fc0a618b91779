"""``finetune()``: from a labelled image dataset to a checkpoint with metrics and plots, as named
steps over a :class:`~.state.Run`: start, load the data, build the model, features and probe,
resume, run the epochs, select the best, report.

The same entry point runs on one device or under ``torchrun --nproc_per_node=N`` (DDP:
DistributedSampler for training, validation sharded and gathered, rank 0 writes files).
"""

from __future__ import annotations

import math
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import DatasetError, TrainingError
from ..settings import APPLIED_ON_RESUME, FinetuneSettings, settings_with, signature_with
from .checkpoint import read_checkpoint, save_checkpoint
from .data import Dataset, ImageSamples, load_dataset, split_dataset
from .distributed import Dist, init_distributed, resolve_device
from .epochs import Schedule, cached_head_epoch, evaluate, head_parameters, set_trainable, train_epoch
from .features import FeatureCache, cache_key, cacheable_head, extract_features, fit_probe
from .hardware import resolve_precision, torch_threads, usable_cores, use_channels_last
from .metrics import topk_accuracy, write_history
from .models import build_model, weights_label, weights_preprocess
from .progress import LOGGER, bar, bars_enabled, epoch_line, run_logging
from .report import FinetuneResult, final_report, select_best
from .state import Run, RunData, data_label, split_digest
from .transforms import eval_transforms, train_transforms

__all__ = ["FinetuneResult", "FinetuneSettings", "finetune"]


def finetune(
    data: Any,
    settings: FinetuneSettings | None = None,
    *,
    val_data: Any = None,
    test_data: Any = None,
    out_dir: str | os.PathLike[str] = "runs/finetune",
    resume: bool | None = None,
    progress: bool | None = None,
    callbacks: Sequence[Callable[[int, dict[str, Any]], None]] = (),
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune a model (any name of :func:`list_architectures`) on ``data``.

    ``settings`` (a :class:`FinetuneSettings`, default its defaults) with any of its fields
    given as keyword ``overrides`` (``finetune(data, epochs=5)``): the one definition of every
    knob and its default (``inspect.signature(finetune)`` lists them).

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
    - **Hardware**: ``precision`` ("auto": bf16 autocast on a CPU with native bf16 or a bf16
      GPU, fp16 + GradScaler on other GPUs, else fp32) for feature caching, training and
      validation; ``channels_last`` where it is faster; ``threads`` from the usable cores.
      The final report and the checkpoints are fp32.
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
    - ``progress``: tqdm bars (None: when stderr is a terminal); one log line per epoch goes
      to the ``butterfly_onnx.train`` logger (printed to stderr when logging is not configured
      and ``progress`` is not False).

    ``preprocess`` overrides the weights' eval preprocessing (e.g. a smaller crop for quick
    runs); it travels into the checkpoint.  ``callbacks`` are called on every rank after each
    finished epoch as ``cb(epoch, row)``.  ``result.settings`` is the settings used, saved in
    every checkpoint.
    """
    settings = settings_with(FinetuneSettings, settings, overrides, TrainingError)
    if resume is not None and not isinstance(resume, bool):
        raise TrainingError(f"resume must be None, True or False, got {resume!r}")
    device = resolve_device(settings.device)
    dist, device = init_distributed(device, settings.dist_timeout_s)
    try:
        # threads: this process's share of the usable cores (DDP ranks on one machine split them)
        threads = settings.threads or max(1, usable_cores() // dist.local_world)
        with torch_threads(threads if device.type == "cpu" else None):
            run = start(settings, device, dist, Path(out_dir), resume, progress)
            with run_logging(progress if dist.main else False, run.bars):
                load_data(run, data, val_data, test_data)
                build(run)
                features_and_probe(run)
                resume_or_start(run)
                run_epochs(run, tuple(callbacks))
                select_best(run)
                return final_report(run)
    finally:
        dist.close()


finetune.__signature__ = signature_with(finetune, FinetuneSettings)  # type: ignore[attr-defined]


def note(message: str, dist: Dist) -> None:
    if dist.main:
        print(f"finetune: note: {message}", file=sys.stderr)


# --- the steps ------------------------------------------------------------------------------
def start(
    settings: FinetuneSettings, device: torch.device, dist: Dist, out: Path, resume: bool | None, progress: bool | None
) -> Run:
    """The run's context: precision, memory format, workers, preprocessing; refuses to replace an
    existing run unless told (``resume``)."""
    workers = settings.num_workers
    if workers is None:
        workers = min(8, usable_cores()) if device.type == "cuda" else 0
    run = Run(
        settings=settings,
        device=device,
        dist=dist,
        out=out,
        resume=resume,
        bars=bars_enabled(progress) and dist.main,
        precision=resolve_precision(settings.precision, device, arch=settings.model),
        channels_last=use_channels_last(settings.channels_last, settings.model, device),
        workers=workers,
        spec=settings.preprocess or weights_preprocess(settings.model, settings.weights),
    )
    if resume is None and run.last_path.is_file():
        raise TrainingError(
            f"{out} already holds a run ({run.last_path}): pass resume=True (--resume) to continue it or "
            "resume=False (--fresh) to start over"
        )
    for message in settings.notes:
        note(message, dist)
    return run


def load_data(run: Run, data: Any, val_data: Any, test_data: Any) -> None:
    """Rank 0 loads and checks the data (decoding every image once); the others receive it."""
    settings = run.settings
    columns: dict[str, Any] = {"filename_column": settings.filename_column, "label_column": settings.label_column}
    payload = None
    if run.dist.main:
        dataset = load_dataset(data, **columns)
        if val_data is not None:
            val_set = load_dataset(val_data, **columns)
            _same_classes(dataset, val_set, "val_data")
            train_samples, val_samples = dataset.samples, val_set.samples
        else:
            train_samples, val_samples = split_dataset(dataset.samples, settings.val_fraction, seed=settings.seed)
        test_samples = None
        if test_data is not None:
            test_set = load_dataset(test_data, **columns)
            _same_classes(dataset, test_set, "test_data")
            test_samples = test_set.samples
        health = dataset.health
        payload = RunData(
            labels=dataset.classes,
            train=train_samples,
            val=val_samples,
            test=test_samples,
            health=health.to_dict() if health else None,
            health_text=str(health or ""),
            source=data_label(data),
        )
    run.data = run.dist.broadcast(payload)
    if run.data.health_text:
        LOGGER.info("%s", run.data.health_text)
    run.train_config = {
        **settings.to_dict(),
        "finetune_lr": settings.backbone_lr,
        "weights": weights_label(settings.model, settings.weights),
        "val_fraction": settings.val_fraction if val_data is None else None,
        "precision": run.precision.name,
        "channels_last": run.channels_last,
        "world_size": run.dist.world,
        "device": run.device.type,
        "num_train": len(run.data.train),
        "num_val": len(run.data.val),
        "data": run.data.source,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def build(run: Run) -> None:
    """The model (seeded), its optimizer (head and backbone groups), the training loader, the
    loss and the gradient scaler."""
    settings, dist, data = run.settings, run.dist, run.data
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    net = build_model(settings.model, weights=settings.weights, num_classes=data.num_classes).to(run.device)
    if run.channels_last:
        net = net.to(memory_format=torch.channels_last)
    run.net, run.head, run.head_layer = net, head_parameters(net), cacheable_head(net)
    head_ids = {id(p) for p in run.head}
    run.optimizer = torch.optim.AdamW(
        [
            {"params": run.head, "name": "head"},
            {"params": [p for p in net.parameters() if id(p) not in head_ids], "name": "backbone"},
        ],
        lr=settings.lr,
        weight_decay=settings.weight_decay,
    )
    train_ds = ImageSamples(data.train, train_transforms(run.spec))
    run.sampler = (
        torch.utils.data.DistributedSampler(
            train_ds, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=settings.seed
        )
        if dist.active
        else None
    )
    run.generator = torch.Generator()
    per_rank = math.ceil(len(train_ds) / dist.world)
    run.loader = torch.utils.data.DataLoader(
        train_ds,
        batch_size=run.batch_size,
        shuffle=run.sampler is None,
        sampler=run.sampler,
        num_workers=run.workers,
        generator=run.generator,
        pin_memory=run.device.type == "cuda",
        # Only a last batch of ONE image is dropped (BatchNorm cannot train on it); any other
        # remainder is used, which matters on small datasets.
        drop_last=per_rank % run.batch_size == 1 and per_rank > 1,
    )
    run.steps_per_epoch = len(run.loader) if run.max_steps is None else min(len(run.loader), run.max_steps)
    if run.steps_per_epoch == 0:
        raise DatasetError(f"the training split has {len(data.train)} images: too few for one batch")
    class_weight = None
    if settings.class_balance == "loss":
        class_weight = _class_weights(data.train, data.num_classes).to(run.device)
    run.criterion = nn.CrossEntropyLoss(weight=class_weight, label_smoothing=settings.label_smoothing)
    run.scaler = torch.amp.GradScaler(run.device.type, enabled=run.precision.scaled)


def features_and_probe(run: Run) -> None:
    """The frozen backbone's features (before any resumed state is loaded: they are the
    pretrained backbone's), the linear probe on them, and the length of the head phase."""
    settings, dist = run.settings, run.dist
    if settings.cache_features and run.head_layer is not None:
        features, run.feature_info = _cached_features(run)
        n_eval = len(run.data.train)
        probe = None
        if dist.main:
            probe = fit_probe(
                features["train"][:n_eval],
                features["train_targets"][:n_eval],
                features["val"],
                features["val_targets"],
                run.data.num_classes,
            )
        run.probe = dist.broadcast(probe)
        assert run.probe is not None
        LOGGER.info("linear probe (logistic regression on the frozen features): val top-1 %.4f", run.probe["acc1"])
        run.features = {k: v.to(run.device) for k, v in features.items()}
    if run.cached_head:
        assert run.features is not None
        steps_per_pass = math.ceil(len(run.features["train_targets"]) / run.batch_size)
        run.passes = max(1, math.ceil(settings.head_steps / (settings.head_epochs * steps_per_pass)))
        head_total = run.passes * steps_per_pass * settings.head_epochs
    else:
        head_total = settings.head_epochs * run.steps_per_epoch
    run.schedule = Schedule(
        run.optimizer,
        head_lr=settings.lr,
        backbone_lr=settings.backbone_lr,
        warmup=settings.warmup,
        head_total=head_total,
        full_total=settings.full_epochs * run.steps_per_epoch,
    )


def resume_or_start(run: Run) -> None:
    """With ``resume`` and a last.pt: its weights, optimizer, scaler, history and step counts
    (after checking it is the same run); otherwise a fresh start."""
    settings, dist = run.settings, run.dist
    if run.resume and run.last_path.is_file():
        state, applied = _resume_state(run)
        run.net.load_state_dict(state["model_state"])
        run.optimizer.load_state_dict(state["optimizer_state"])
        for group in run.optimizer.param_groups:
            group["weight_decay"] = settings.weight_decay
        if "scaler_state" in state and run.precision.scaled:
            run.scaler.load_state_dict(state["scaler_state"])
        run.history = list(state.get("history", []))
        run.schedule.steps = {k: int(v) for k, v in state["steps"].items()}
        run.start_epoch = int(state["config"]["epoch"])
        if dist.main:
            what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in applied.items()) or "no changed settings"
            left = max(0, settings.epochs - run.start_epoch)
            print(
                f"finetune: resuming {run.last_path} after epoch {run.start_epoch} of {settings.epochs} "
                f"({left} to run; {what})",
                file=sys.stderr,
            )
    elif run.resume and dist.main:
        print(f"finetune: nothing to resume in {run.out}; starting fresh", file=sys.stderr)
    if dist.main:
        run.out.mkdir(parents=True, exist_ok=True)
    run.stopped_early = _patience_exhausted(run.history, settings.patience)


def run_epochs(run: Run, callbacks: tuple[Callable[[int, dict[str, Any]], None], ...]) -> None:
    """The epochs still to run, each checkpointed and logged, until ``epochs`` or early stopping."""
    settings = run.settings
    epoch_bar = bar(run.bars, settings.epochs, "epochs")
    try:
        if epoch_bar is not None:
            epoch_bar.update(min(run.start_epoch, settings.epochs))
        wrapped, wrapped_phase = run.net, None
        for epoch in range(run.start_epoch, settings.epochs):
            if run.stopped_early:
                break
            phase = "head" if epoch < settings.head_epochs else "finetune"
            if phase != wrapped_phase:  # DDP must be (re)built when the set of trainable params changes
                set_trainable(run.net, run.head, phase, settings.unfreeze)
                if run.dist.active and not (phase == "head" and run.cached_head):
                    device_ids = [run.device.index] if run.device.type == "cuda" else None
                    wrapped = nn.parallel.DistributedDataParallel(run.net, device_ids=device_ids)
                wrapped_phase = phase
            row = _one_epoch(run, wrapped, epoch, phase)
            run.history.append(row)
            _checkpoint(run, row)
            best = run.best
            assert best is not None
            if run.dist.main:
                LOGGER.info("%s", epoch_line(row, settings.epochs, best["epoch"]))
            if epoch_bar is not None:
                epoch_bar.update(1)
                epoch_bar.set_postfix(val_acc=f"{row['val_acc1']:.3f}", best=f"{best['val_acc1']:.3f}")
            for callback in callbacks:
                callback(epoch + 1, row)
            run.stopped_early = _patience_exhausted(run.history, settings.patience)
    finally:
        if epoch_bar is not None:
            epoch_bar.close()  # before anything else is printed (an interruption included)
    if not run.history:
        raise TrainingError(f"{run.out}: no epoch was run")


# --- inside the steps -------------------------------------------------------------------------
def _one_epoch(run: Run, wrapped: nn.Module, epoch: int, phase: str) -> dict[str, Any]:
    """Train one epoch and validate: the history row."""
    settings, dist = run.settings, run.dist
    # Every epoch reseeds from (seed, epoch): a resumed run repeats exactly what it would have done.
    torch.manual_seed(settings.seed * 100_003 + epoch)
    run.generator.manual_seed(settings.seed * 100_003 + epoch)
    if run.sampler is not None:
        run.sampler.set_epoch(epoch)
    started = time.perf_counter()
    run.schedule.log = []
    cached = phase == "head" and run.cached_head
    if cached:
        assert run.head_layer is not None and run.features is not None
        features = run.features
        stats = cached_head_epoch(
            run.head_layer,
            features["train"],
            features["train_targets"],
            run.criterion,
            run.optimizer,
            run.schedule,
            run.batch_size,
            run.passes,
            run.generator,
        )
        totals = [stats]  # every rank fits the same head on the same (gathered) cache
        run.head_layer.eval()
        with torch.no_grad():
            logits = run.head_layer(features["val"]).float().cpu().numpy()
        targets = features["val_targets"].cpu().numpy()
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item())
    else:
        epoch_bar = bar(run.bars, run.steps_per_epoch, f"epoch {epoch + 1}/{settings.epochs} ({phase})", leave=False)
        try:
            stats = train_epoch(wrapped, run.loader, run.criterion, run.optimizer, run.schedule, phase, run, epoch_bar)
        finally:
            if epoch_bar is not None:
                epoch_bar.close()
        totals = dist.gather(stats)
        logits, targets, val_loss = evaluate(run.net, run.data.val, run.spec, run, dist, run.data.num_classes)
    seconds = time.perf_counter() - started
    seen = stats["seen"] if cached else sum(t["seen"] for t in totals)
    lrs = run.schedule.log
    all_seen = max(1, sum(t["seen"] for t in totals))
    return {
        "epoch": epoch + 1,
        "phase": phase,
        "train_loss": sum(t["loss_sum"] for t in totals) / all_seen,
        "train_acc": sum(t["correct"] for t in totals) / all_seen,
        "train_images": seen,
        "val_loss": val_loss,
        "val_acc1": topk_accuracy(logits, targets, 1),
        "val_acc5": topk_accuracy(logits, targets, 5),
        "lr_head": lrs[0][0] if lrs else 0.0,
        "lr_backbone": lrs[0][1] if lrs else 0.0,
        "lr_head_end": lrs[-1][0] if lrs else 0.0,
        "lr_backbone_end": lrs[-1][1] if lrs else 0.0,
        "steps": stats["steps"],
        "cached": cached,
        "seconds": seconds,
        "images_per_s": seen / seconds if seconds > 0 else None,
    }


def _checkpoint(run: Run, row: dict[str, Any]) -> None:
    """best.pt when the epoch improved, last.pt (with everything a resume needs) always."""
    best = run.best
    assert best is not None
    if run.dist.main:
        metrics = {
            "val_acc1": best["val_acc1"],
            "val_acc5": best["val_acc5"],
            "val_loss": best["val_loss"],
            "best_epoch": best["epoch"],
        }
        config = {**run.base_config(), "metrics": metrics, "epoch": row["epoch"]}
        if best is row:
            save_checkpoint(run.best_path, run.net, config)
        save_checkpoint(
            run.last_path,
            run.net,
            config,
            optimizer_state=run.optimizer.state_dict(),
            steps=dict(run.schedule.steps),
            scaler_state=run.scaler.state_dict(),
            rng_state=torch.get_rng_state(),
            history=run.history,
        )
        write_history(
            run.history, run.out / "metrics.csv", run.out / "metrics.json", {"labels": run.data.labels, "best": metrics}
        )
    run.dist.barrier()


def _cached_features(run: Run) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The frozen pretrained backbone's features: train (eval view, then ``head_views``
    augmented views), val (eval view).  Loaded from ``out/features.pt`` when its key matches."""
    settings, dist, data = run.settings, run.dist, run.data
    key = cache_key(
        arch=settings.model,
        weights=weights_label(settings.model, settings.weights),
        weights_arg=settings.weights,
        preprocess=run.spec.to_dict(),
        views=settings.head_views,
        seed=settings.seed,
        batch_size=settings.batch_size,
        precision=run.precision.name,
        channels_last=run.channels_last,
        device=run.device.type,
        torch=torch.__version__,
        world=dist.world,
        train=[[p, c] for p, c in data.train],
        val=[[p, c] for p, c in data.val],
    )
    cache = FeatureCache(run.out)
    tensors = dist.broadcast(cache.load(key) if dist.main else None)
    info: dict[str, Any] = {"file": str(cache.path), "loaded": tensors is not None}
    started = time.perf_counter()
    if tensors is None:
        views = [_sharded_features(run, data.train, eval_transforms(run.spec), "features (train)")]
        for view in range(settings.head_views):
            torch.manual_seed(settings.seed * 100_003 + 7_919 * (view + 1))
            views.append(_sharded_features(run, data.train, train_transforms(run.spec), f"features (view {view + 1})"))
        val_x, val_y = _sharded_features(run, data.val, eval_transforms(run.spec), "features (val)")
        tensors = {
            "train": torch.cat([x for x, _ in views]),
            "train_targets": torch.cat([y for _, y in views]),
            "val": val_x,
            "val_targets": val_y,
        }
        if dist.main:
            run.out.mkdir(parents=True, exist_ok=True)
            cache.save(key, tensors)
    seconds = time.perf_counter() - started
    images = len(data.train) * (1 + settings.head_views) + len(data.val)
    info.update(
        seconds=seconds,
        images=images,
        images_per_s=images / seconds if seconds > 0 else None,
        dim=int(tensors["train"].shape[1]),
        precision=run.precision.name,
    )
    return tensors, info


def _sharded_features(run: Run, samples, transform, desc: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features of ``samples``: each rank computes a strided slice; gathered in sample order."""
    dist = run.dist
    shard = samples[dist.rank :: dist.world]
    progress_bar = bar(run.bars, math.ceil(len(shard) / run.batch_size), desc, leave=False)
    try:
        x, y = extract_features(
            run.net,
            shard,
            transform,
            batch_size=run.batch_size,
            device=run.device,
            precision=run.precision,
            workers=run.workers,
            channels_last=run.channels_last,
            progress_bar=progress_bar,
        )
    finally:
        if progress_bar is not None:
            progress_bar.close()
    if not dist.active:
        return x, y
    parts = dist.gather((x, y))
    xs = torch.zeros((len(samples), x.shape[1]))
    ys = torch.zeros((len(samples),), dtype=torch.int64)
    for rank, (px, py) in enumerate(parts):
        xs[rank :: dist.world], ys[rank :: dist.world] = px, py
    return xs, ys


def _resume_state(run: Run) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """The saved state of a run to resume, after checking it is the same run."""
    last_path, settings, data = run.last_path, run.settings, run.data
    state = read_checkpoint(last_path)
    config = state["config"]
    arch = settings.model
    if config["arch"] != arch or config["labels"] != data.labels:
        raise TrainingError(
            f"{last_path}: cannot resume: it was trained as {config['arch']} on {config['num_classes']} "
            f"classes, this run is {arch} on {data.num_classes}; pass resume=False (--fresh) or another out_dir"
        )
    if config["preprocess"] != run.spec.to_dict():
        raise TrainingError(
            f"{last_path}: cannot resume: it was trained with preprocessing {config['preprocess']}, this run "
            f"uses {run.spec.to_dict()}; pass resume=False (--fresh) or another out_dir"
        )
    saved = config.get("settings")
    if not isinstance(saved, dict) or "steps" not in state:
        raise TrainingError(
            f"{last_path}: cannot resume: the checkpoint was written by an older butterfly_onnx "
            "(no saved settings); pass resume=False (--fresh) to start over"
        )
    applied, refused = settings.resume_changes(saved)
    split = config.get("split")
    if split is not None and split != split_digest(data.train, data.val):
        refused["data"] = ("the saved train/validation split", "a different one")
    if refused:
        changes = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise TrainingError(
            f"{last_path}: cannot resume with changed settings ({changes}): they would make the finished epochs "
            f"a different run; resuming can change only {sorted(APPLIED_ON_RESUME)}; pass resume=False (--fresh) "
            "or another out_dir"
        )
    return state, applied


def _class_weights(samples: Sequence[tuple[Path, int]], num_classes: int) -> torch.Tensor:
    counts = np.bincount([label for _, label in samples], minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(samples) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


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
