"""The seed's workload at its real size (opt-in, not CI): finetune -> export -> predict.

Builds a dataset shaped like Kaggle's butterfly set -- 75 classes, 6,499 training and 2,786 test
224x224 JPEGs, ``Training_set.csv`` (filename,label) + ``train/`` and ``Testing_set.csv``
(filename) + ``test/`` -- from real photos available offline (Debian's tuxpaint stamps, each
composited at a seeded random scale, position, flip and background tint, so every file differs),
then times the three commands a user runs, each in its own process, with their peak memory:

    butterfly-onnx finetune DATA --out RUN            (the defaults; --epochs to shorten)
    butterfly-onnx export RUN/best.pt model.onnx
    butterfly-onnx predict model.onnx DATA/Testing_set.csv -o submission.csv

The labels are assigned round-robin, so the accuracy means nothing; time and memory do.

    python benchmarks/kaggle_scale.py --work /tmp/kaggle_scale            # full size, defaults
    python benchmarks/kaggle_scale.py --work /tmp/k --epochs 3 -- --precision fp32 --no-channels-last
    python benchmarks/kaggle_scale.py --work /tmp/k --train 150 --test 60 --classes 5 --epochs 1   # smoke

Arguments after ``--`` go to ``finetune``.  Prints one JSON object (also written to
``WORK/kaggle_scale.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

TRAIN, TEST, CLASSES, SIZE = 6_499, 2_786, 75, 224
STAMPS = Path("/usr/share/tuxpaint/stamps")


def _stamps(root: Path) -> list[Path]:
    files = sorted(p for p in root.rglob("*.png") if "cartoon" not in p.relative_to(root).parts)
    if not files:
        raise SystemExit(f"{root}: no tuxpaint photo stamps (apt-get install tuxpaint-stamps-default)")
    return files


def _image(stamp_path: Path, rng: random.Random, cache: dict):
    from PIL import Image, ImageOps

    stamp = cache.get(stamp_path)
    if stamp is None:
        with Image.open(stamp_path) as opened:
            stamp = opened.convert("RGBA")
        stamp.thumbnail((SIZE * 2, SIZE * 2))
        cache[stamp_path] = stamp
    scale = rng.uniform(0.5, 0.95)
    piece = stamp.copy()
    piece.thumbnail((int(SIZE * scale), int(SIZE * scale)), Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        piece = ImageOps.mirror(piece)
    canvas = Image.new("RGB", (SIZE, SIZE), tuple(rng.randint(150, 255) for _ in range(3)))
    offset = (rng.randint(0, SIZE - piece.width), rng.randint(0, SIZE - piece.height))
    canvas.paste(piece, offset, piece)
    return canvas


def build_dataset(root: Path, n_train: int, n_test: int, n_classes: int, seed: int = 0) -> Path:
    """The Kaggle-shaped dataset (skipped when ``root`` already holds one of this size)."""
    marker = root / "dataset.json"
    shape = {"train": n_train, "test": n_test, "classes": n_classes, "seed": seed, "size": SIZE}
    if marker.is_file() and json.loads(marker.read_text()) == shape:
        return root
    rng = random.Random(seed)
    stamps = _stamps(STAMPS)
    cache: dict = {}
    labels = [f"species_{i:02d}" for i in range(n_classes)]
    for split, count in (("train", n_train), ("test", n_test)):
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for i in range(count):
            name = f"Image_{i + 1}.jpg"
            _image(stamps[rng.randrange(len(stamps))], rng, cache).save(folder / name, quality=90)
            rows.append([name, labels[i % n_classes]] if split == "train" else [name])
        csv_name = "Training_set.csv" if split == "train" else "Testing_set.csv"
        with open(root / csv_name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["filename", "label"] if split == "train" else ["filename"])
            writer.writerows(rows)
    marker.write_text(json.dumps(shape))
    return root


def _timed(cmd: list[str]) -> dict:
    """Run ``cmd`` in a child that reports its own peak RSS; wall seconds and MiB."""
    probe = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_kib = int(done.stdout.strip().splitlines()[-1])
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak_kib / 1024), "stderr_tail": done.stderr[-600:]}


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1 :]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the dataset and the run")
    parser.add_argument("--train", type=int, default=TRAIN)
    parser.add_argument("--test", type=int, default=TEST)
    parser.add_argument("--classes", type=int, default=CLASSES)
    parser.add_argument("--epochs", type=int, default=None, help="finetune --epochs (default: finetune's)")
    parser.add_argument("--name", default="run", help="name of this run's folder under --work")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    data = build_dataset(args.work / "data", args.train, args.test, args.classes)
    build_seconds = time.perf_counter() - started
    run, model = args.work / args.name, args.work / f"{args.name}.onnx"
    cli = [sys.executable, "-m", "butterfly_onnx"]
    finetune = [*cli, "finetune", str(data), "--out", str(run), "--fresh", *_quiet(cli), *extra]
    if args.epochs is not None:
        finetune += ["--epochs", str(args.epochs)]
    steps = {
        "finetune": _timed(finetune),
        "export": _timed([*cli, "export", str(run / "best.pt"), str(model)]),
        "predict": _timed(
            [*cli, "predict", str(model), str(data / "Testing_set.csv"), "-o", str(args.work / "submission.csv")]
        ),
    }
    with open(args.work / "submission.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["filename", "label"] and len(rows) == args.test + 1, rows[:2]
    metrics = json.loads((run / "metrics.json").read_text())
    result = {
        "dataset": {
            "train": args.train,
            "test": args.test,
            "classes": args.classes,
            "build_seconds": round(build_seconds),
        },
        "finetune_args": finetune[4:],
        "train_config": {
            k: v
            for k, v in _train_config(run).items()
            if k in ("precision", "channels_last", "amp", "torch_threads", "epochs", "device")
        },
        "epochs_run": len(metrics["history"]),
        "feature_seconds": (metrics["best"].get("features") or {}).get("seconds"),
        "epoch_seconds": [round(row["seconds"], 1) for row in metrics["history"]],
        "steps": {k: {kk: vv for kk, vv in v.items() if kk != "stderr_tail"} for k, v in steps.items()},
        "total_seconds": round(sum(v["seconds"] for v in steps.values()), 1),
    }
    (args.work / f"{args.name}.kaggle_scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return result


def _quiet(cli: list[str]) -> list[str]:
    """``--no-progress`` where this version's finetune has it (an older one, timed for the
    'before' figure, has no such flag)."""
    text = subprocess.run([*cli, "finetune", "--help"], capture_output=True, text=True).stdout
    return ["--no-progress"] if "--no-progress" in text else []


def _train_config(run: Path) -> dict:
    import torch

    return torch.load(run / "last.pt", map_location="cpu", weights_only=True)["config"]["train_config"]


if __name__ == "__main__":
    main()
