"""The main job, end to end, on real photos: fine-tune, export, predict with both backends.

``butterfly-onnx demo`` (or ``python -m butterfly_onnx demo``):

1. data: ``--data`` (e.g. Kaggle's unzipped butterfly folder), else a real-photo dataset built
   at run time from Debian's tuxpaint-stamps-default (7 classes);
2. fine-tune the offline-pretrained EfficientNet-Lite0 (``finetune``);
3. export one self-describing ONNX file, verified against PyTorch (``export_onnx``);
4. classify the validation split with torch eager, the python backend and the rust backend, and
   compare accuracy, agreement with PyTorch and time per image (decode + preprocess + model).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write

__all__ = ["run_demo"]


def _torch_reference(checkpoint: Path, paths: list[Path], threads: int | None) -> tuple[np.ndarray, float]:
    """PyTorch's logits on ``paths`` the way torchvision evaluates: PIL decode + transforms + eager."""
    import torch
    from PIL import Image

    from .contract import PreprocessSpec
    from .train import load_checkpoint
    from .train.transforms import eval_transforms

    model, config = load_checkpoint(checkpoint)
    transform = eval_transforms(PreprocessSpec.from_dict(config["preprocess"]))
    if threads:
        torch.set_num_threads(threads)
    seconds = float("inf")
    for _ in range(3):  # best of 3, as for the backends
        rows = []
        started = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(paths), 32):
                batch = torch.stack([transform(Image.open(p).convert("RGB")) for p in paths[start : start + 32]])
                rows.append(model(batch).numpy())
        seconds = min(seconds, time.perf_counter() - started)
    return np.concatenate(rows), seconds


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    data: Any = None,
    epochs: int = 4,
    threads: int | None = None,
    model: str = "efficientnet_lite0",
    progress: bool | None = None,
) -> dict[str, Any]:
    # Long on purpose: the demo is the user's workflow as a script (data, fine-tune, export, both
    # backends, summary); its steps read in the order a user runs them.
    from .classifier import Classifier
    from .export import ExportReport, export_onnx
    from .sample_data import tuxpaint_photo_dataset
    from .train import finetune

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = out / "data"
        if not data.is_dir():
            print(f"[1/4] building a real-photo dataset from tuxpaint stamps in {data}")
            tuxpaint_photo_dataset(data)
    print(f"[1/4] data: {data}")

    print(f"[2/4] fine-tuning {model} (ImageNet weights) for {epochs} epochs")
    # finetune's defaults (docs/training.md): the head fitted on cached frozen features, then the
    # whole network; the linear probe on the same features is the floor.  A rerun starts fresh
    # (resume=False) and reuses the cached features.
    result = finetune(
        data,
        model=model,
        weights="DEFAULT",
        epochs=epochs,
        out_dir=out / "run",
        seed=0,
        resume=False,
        progress=progress,
    )
    metrics = result.metrics
    chosen = "the linear probe's head" if metrics.get("selected") == "probe" else f"epoch {metrics.get('best_epoch')}"
    probe = metrics.get("probe_acc1")
    print(f"      linear probe val top-1 {probe:.2%}" if probe is not None else "      (no linear probe)")
    print(f"      model val top-1 {metrics['val_acc1']:.2%} ({chosen}); plots: {out / 'run'}")

    print("[3/4] exporting and verifying against PyTorch")
    onnx_path = export_onnx(result, out / f"{model}.onnx")
    report = ExportReport.load(onnx_path)
    print("      " + report.summary().replace("\n", "\n      "))

    print("[4/4] classifying the validation split: torch eager vs the two backends")
    paths = [Path(p) for p, _ in result.val_samples]
    truth = np.array([label for _, label in result.val_samples])
    torch_logits, torch_seconds = _torch_reference(result.checkpoint, paths, threads)
    rows = {
        "torch": {
            "accuracy": float((torch_logits.argmax(1) == truth).mean()),
            "ms_per_image": 1000 * torch_seconds / len(paths),
        }
    }
    for backend in ("python", "rust"):
        classifier = Classifier(onnx_path, backend=backend, threads=threads)
        classifier.logits(paths[:2])  # warm-up: first-run allocations
        seconds = float("inf")
        for _ in range(3):  # best of 3: the machine may be busy with something else
            started = time.perf_counter()
            logits = classifier.logits(paths)
            seconds = min(seconds, time.perf_counter() - started)
        rows[backend] = {
            "accuracy": float((logits.argmax(1) == truth).mean()),
            "top1_agreement_with_torch": float((logits.argmax(1) == torch_logits.argmax(1)).mean()),
            "max_abs_logit_diff_vs_torch": float(np.abs(logits - torch_logits).max()),
            "ms_per_image": 1000 * seconds / len(paths),
        }
        print(f"      {classifier!r}")
    print(f"\n      {len(paths)} validation images ({len(result.labels)} classes)")
    print(f"      {'':8} {'accuracy':>9} {'= torch top-1':>14} {'max |dlogit|':>13} {'ms/image':>9}")
    for name, row in rows.items():
        agree = row.get("top1_agreement_with_torch")
        diff = row.get("max_abs_logit_diff_vs_torch")
        print(
            f"      {name:8} {row['accuracy']:>9.2%} {'' if agree is None else f'{agree:.2%}':>14} "
            f"{'' if diff is None else f'{diff:.2e}':>13} {row['ms_per_image']:>9.2f}"
        )
    summary = {
        "data": str(data),
        "model": model,
        "epochs_run": result.epochs_run,
        "val_acc1": metrics["val_acc1"],
        "probe_acc1": probe,
        "selected": metrics.get("selected"),
        "best_epoch": metrics.get("best_epoch"),
        "onnx": str(onnx_path),
        "verification": report.verification.summary() if report.verification else None,
        "validation_images": len(paths),
        "backends": rows,
    }
    with atomic_write(out / "summary.json", encoding="utf-8") as handle:
        handle.write(json.dumps(summary, indent=2))
    example = paths[0]
    print(f"\nTry it: butterfly-onnx predict {onnx_path} {example} --backend rust")
    return summary
