"""The ``butterfly-onnx`` command: predict, inspect, fine-tune, export, choose a model, demo.

Each subcommand imports only what it needs, so ``butterfly-onnx predict`` runs without torch.
Errors from the package's hierarchy are printed as one line (exit status 1); a prediction run
with bad images reports them on stderr, prints the rest and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .errors import ButterflyError

__all__ = ["main", "build_parser"]


def _cmd_predict(args: argparse.Namespace) -> int:
    import warnings

    from .classifier import Classifier, ImageSkippedWarning

    classifier = Classifier(args.model, backend=args.backend, threads=args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageSkippedWarning)  # each failure is printed below
        predictions = classifier.predict(args.images, top_k=args.top_k, on_error="skip" if args.keep_going else "raise")
    failed = 0
    for prediction in predictions:
        if prediction.error is not None:
            failed += 1
            print(f"error: {prediction.error}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({
                "source": prediction.source,
                "top_k": [{"label": t.label, "index": t.index, "probability": t.probability} for t in prediction.top_k],
            }))
        else:
            best = ", ".join(f"{t.label} {t.probability:.3f}" for t in prediction.top_k)
            print(f"{prediction.source}\t{best}")
    return 2 if failed else 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .classifier import Classifier

    classifier = Classifier(args.model, backend="python", threads=1)
    contract = classifier.spec
    if args.json:
        print(contract.to_json())
        return 0
    print(repr(classifier))
    print(f"preprocess: {contract.preprocess.describe()}")
    print(f"input: {contract.input_name}  output: {contract.output_name} ({contract.output_kind})")
    print(f"labels ({contract.num_classes}): {', '.join(contract.labels[:20])}" + (" ..." if contract.num_classes > 20 else ""))
    for key, value in contract.provenance.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .catalog import catalog_table, model_catalog, pareto_front, plot_catalog

    entries = model_catalog(
        min_acc1=args.min_acc1, max_gflops=args.max_gflops, max_params_m=args.max_params,
        default_only=not args.all_weights, sort_by=args.sort,
    )
    if args.pareto:
        front = {e.weights for e in pareto_front(entries, "gflops")}
        entries = [e for e in entries if e.weights in front]
    print(catalog_table(entries, fmt="csv" if args.csv else "markdown"), end="")
    if args.plot:
        print(f"plot: {plot_catalog(entries, args.plot)}", file=sys.stderr)
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .train import finetune

    options = {
        "model": args.model, "weights": None if args.weights in ("none", "None") else args.weights,
        "epochs": args.epochs, "out_dir": args.out, "seed": args.seed,
    }
    for name in ("batch_size", "lr", "head_epochs", "val_fraction", "num_workers", "patience", "device"):
        value = getattr(args, name)
        if value is not None:
            options[name] = value
    result = finetune(args.data, **options)
    print(f"best checkpoint: {result.checkpoint}")
    print(json.dumps({k: v for k, v in result.metrics.items() if not isinstance(v, (list, dict))}, indent=2, default=str))
    if args.export:
        from .export import export_onnx

        path = export_onnx(result, args.export)
        print(f"exported: {path}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx

    kwargs = {"variants": tuple(args.variant or ())}
    if args.no_verify:
        kwargs["verify"] = False
    else:
        kwargs["verify_images"] = args.verify_images
    if args.calibration_images:
        kwargs["calibration_images"] = args.calibration_images
    path = export_onnx(args.checkpoint, args.output, **kwargs)
    print(f"exported: {path}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, data=args.data, epochs=args.epochs, threads=args.threads)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="butterfly-onnx",
        description="Fine-tune torchvision classifiers, export self-describing ONNX, run it torch-free.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="classify images with an exported model")
    p.add_argument("model", help="an exported .onnx file")
    p.add_argument("images", nargs="+", help="image files, directories or glob patterns")
    p.add_argument("--backend", choices=("python", "rust"), default="rust")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="one JSON object per image")
    p.add_argument("--keep-going", action="store_true", help="report bad images and go on (exit status 2)")
    p.set_defaults(run=_cmd_predict)

    p = sub.add_parser("info", help="show a model's contract")
    p.add_argument("model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cmd_info)

    p = sub.add_parser("models", help="torchvision's classification weights: table and plot")
    p.add_argument("--min-acc1", type=float)
    p.add_argument("--max-gflops", type=float)
    p.add_argument("--max-params", type=float, help="millions of parameters")
    p.add_argument("--all-weights", action="store_true", help="every weights, not only each model's default")
    p.add_argument("--sort", default="acc1", help="a column: acc1, gflops, params_m, ...")
    p.add_argument("--pareto", action="store_true", help="only the accuracy/GFLOPS Pareto front")
    p.add_argument("--csv", action="store_true")
    p.add_argument("--plot", type=Path, help="write a PNG plot here")
    p.set_defaults(run=_cmd_models)

    p = sub.add_parser("finetune", help="fine-tune a torchvision model on a labelled image folder or CSV")
    p.add_argument("data", help="Kaggle folder (Training_set.csv + train/), a CSV, or a class-per-folder root")
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--weights", default="DEFAULT", help="DEFAULT, a torchvision weights name, a local file, or none")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("runs/finetune"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--head-epochs", type=int)
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--patience", type=int)
    p.add_argument("--device")
    p.add_argument("--export", type=Path, help="also export the best checkpoint to this .onnx path")
    p.set_defaults(run=_cmd_finetune)

    p = sub.add_parser("export", help="export a checkpoint to a verified, self-describing ONNX file")
    p.add_argument("checkpoint")
    p.add_argument("output", type=Path)
    p.add_argument("--variant", action="append", choices=("optimized", "fp16", "int8"))
    verify = p.add_mutually_exclusive_group(required=True)
    verify.add_argument("--verify-images", nargs="+", help="real images (files, directories) to verify torch vs ONNX on")
    verify.add_argument("--no-verify", action="store_true", help="skip the verification against PyTorch")
    p.add_argument("--calibration-images", nargs="+", help="training images to calibrate the int8 variant on")
    p.set_defaults(run=_cmd_export)

    p = sub.add_parser("demo", help="the whole job on real photos: fine-tune, export, predict with both backends")
    p.add_argument("--data", help="a dataset (e.g. Kaggle's butterfly folder); default: real photos from tuxpaint stamps")
    p.add_argument("--out", type=Path, default=Path("demo_out"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(run=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ButterflyError as exc:
        print(f"butterfly-onnx: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # pragma: no cover
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
