"""Fine-tuning speed per precision and memory format, as ratios to fp32 NCHW (opt-in, not CI).

Two measurements, contenders interleaved round by round, best round kept (the machine is
shared and noisy):

- ``step``: per architecture, one full-phase training step (forward, backward, AdamW) and one
  eval forward (what feature caching and validation run) on a batch of real photos
  (tuxpaint stamps composited by ``tuxpaint_photo_dataset``), for fp32/bf16 x NCHW/channels_last;
- ``e2e``: ``butterfly-onnx finetune`` end to end with the defaults against
  ``--precision fp32 --no-channels-last`` on the same ~100-photo dataset, 5 epochs, same seed.

    python benchmarks/train_hardware.py step --models efficientnet_lite0 resnet18 --rounds 3
    python benchmarks/train_hardware.py e2e --rounds 2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {  # name -> (precision, channels_last)
    "fp32 NCHW": ("fp32", False),
    "fp32 channels_last": ("fp32", True),
    "bf16 NCHW": ("bf16", False),
    "bf16 channels_last": ("bf16", True),
}


def _photos(root: Path, per_class: int, size: int = 256) -> Path:
    from butterfly_onnx.sample_data import tuxpaint_photo_dataset

    classes = ["birds", "fish", "flowers", "fruit", "insects"]
    return tuxpaint_photo_dataset(root, categories=classes, size=size, per_class=per_class, seed=0)


def _batch(root: Path, batch: int, crop: int):
    import torch

    from butterfly_onnx.contract import PreprocessSpec
    from butterfly_onnx.train.data import load_dataset, load_rgb
    from butterfly_onnx.train.transforms import eval_transforms

    spec = PreprocessSpec(resize_size=crop * 8 // 7, crop_size=crop)
    samples = load_dataset(root, check=False).samples[:batch]
    images = torch.stack([eval_transforms(spec)(load_rgb(p)) for p, _ in samples])
    return images, torch.tensor([c for _, c in samples])


def _timers(arch: str, images, targets, precision: str, channels_last: bool):
    """(train step, eval forward) closures for one configuration."""
    import torch

    from butterfly_onnx.train.hardware import Precision, to_layout
    from butterfly_onnx.train.models import build_model

    torch.manual_seed(0)
    net = build_model(arch, weights=None, num_classes=5)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    mode = Precision(precision, "cpu")
    x = to_layout(images, torch.device("cpu"), channels_last)
    criterion = torch.nn.CrossEntropyLoss()

    def step() -> None:
        net.train()
        with mode.autocast():
            loss = criterion(net(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def forward() -> None:
        net.eval()
        with torch.no_grad(), mode.autocast():
            net(x)

    return step, forward


def run_steps(args: argparse.Namespace) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        images, targets = _batch(_photos(Path(tmp) / "photos", per_class=8), args.batch, args.crop)
    results: dict = {}
    for arch in args.models:
        timers = {name: _timers(arch, images, targets, *cfg) for name, cfg in CONFIGS.items()}
        best = {name: {"step": float("inf"), "forward": float("inf")} for name in CONFIGS}
        for step, forward in timers.values():  # warm-up (oneDNN primitive creation)
            step()
            forward()
        for _ in range(args.rounds):
            for name, (step, forward) in timers.items():  # interleaved: every config each round
                for kind, fn in (("step", step), ("forward", forward)):
                    started = time.perf_counter()
                    for _ in range(args.repeats):
                        fn()
                    ms = (time.perf_counter() - started) / (args.repeats * len(targets)) * 1000
                    best[name][kind] = min(best[name][kind], ms)
            print(json.dumps({"arch": arch, "round_best": best}), flush=True)  # partial results survive a kill
        base = best["fp32 NCHW"]
        results[arch] = {
            name: {
                "step_ms_per_image": round(v["step"], 2),
                "forward_ms_per_image": round(v["forward"], 2),
                "step_speedup": round(base["step"] / v["step"], 2),
                "forward_speedup": round(base["forward"] / v["forward"], 2),
            }
            for name, v in best.items()
        }
        print(json.dumps({arch: results[arch]}), flush=True)
    return results


def run_e2e(args: argparse.Namespace) -> dict:
    """``butterfly-onnx finetune`` (defaults) vs ``--precision fp32 --no-channels-last``: the wall
    time of the whole command, and from its metrics.json the feature caching's seconds, the
    full-phase epochs' seconds and the best validation top-1."""
    contenders = {"defaults": [], "fp32 NCHW": ["--precision", "fp32", "--no-channels-last"]}
    runs: dict[str, list[dict]] = {name: [] for name in contenders}
    with tempfile.TemporaryDirectory() as tmp:
        data = _photos(Path(tmp) / "photos", per_class=args.per_class)
        for round_ in range(args.rounds):
            for name, extra in contenders.items():
                out = Path(tmp) / f"run_{round_}_{name.replace(' ', '_')}"
                cmd = [sys.executable, "-m", "butterfly_onnx", "finetune", str(data), "--out", str(out)]
                cmd += ["--epochs", str(args.epochs), "--seed", "0", "--no-progress", *extra]
                started = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                seconds = time.perf_counter() - started
                metrics = json.loads((out / "metrics.json").read_text())
                best = metrics["best"]
                row = {
                    "seconds": round(seconds, 1),
                    "features_seconds": round(best["features"]["seconds"], 1),
                    "full_epoch_seconds": [round(r["seconds"], 1) for r in metrics["history"] if r["phase"] != "head"],
                    "best_val_acc1": best["val_acc1"],
                    "num_val": best["num_val"],
                }
                runs[name].append(row)
                print(json.dumps({"round": round_, "contender": name, **row}), flush=True)

    def best_of(name: str, key: str) -> float:
        return min(r[key] if key != "full" else sum(r["full_epoch_seconds"]) for r in runs[name])

    result = {
        "seconds_best": {k: best_of(k, "seconds") for k in runs},
        "speedup": round(best_of("fp32 NCHW", "seconds") / best_of("defaults", "seconds"), 2),
        "features_speedup": round(
            best_of("fp32 NCHW", "features_seconds") / best_of("defaults", "features_seconds"), 2
        ),
        "full_phase_speedup": round(best_of("fp32 NCHW", "full") / best_of("defaults", "full"), 2),
        "best_val_acc1": {k: [r["best_val_acc1"] for r in v] for k, v in runs.items()},
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("step", help="train step and eval forward per config")
    p.add_argument("--models", nargs="+", default=["efficientnet_lite0"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--crop", type=int, default=224)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p = sub.add_parser("e2e", help="finetune end to end, defaults vs fp32 NCHW")
    p.add_argument("--per-class", type=int, default=20, help="photos per class (5 classes)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    (run_steps if args.what == "step" else run_e2e)(args)


if __name__ == "__main__":
    main()
