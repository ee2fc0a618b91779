"""The ``butterfly-onnx`` command: predict, val, info, models, finetune, export, demo (and
bench / parity / ``predict --ray`` where those modules are installed).

Each subcommand imports only what it needs, so ``butterfly-onnx predict`` and ``val`` run
without torch.  Conventions, the same for the Rust CLI (docs/inference.md, 'Command line'):

- every error is one line on stderr, ``butterfly-onnx: error: <message>``; a traceback only
  with ``--debug``;
- exit status 0: all done; 1: some inputs failed, the rest were written; 2: nothing done
  (usage error, missing or invalid model, no ONNX Runtime, unreadable data, no images matched).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._backends.providers import add_provider_arguments, provider_arguments
from ._version import __version__
from .errors import ButterflyError, InvalidArgumentError
from .results import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_PARTIAL,
    PROG,
    console_logging,
    dumps,
    kaggle_csv_input,
    print_error,
    report_failures,
    text_line,
    writable_path,
    write_line,
)

__all__ = ["main", "build_parser", "EXIT_OK", "EXIT_PARTIAL", "EXIT_FAILED"]


class UsageError(ButterflyError):
    """A command line that cannot run as given (exit status 2)."""


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, when it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" not in text
            and action.option_strings
            and default not in (None, False, True, argparse.SUPPRESS)
            and action.nargs != 0
        ):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``butterfly-onnx: error: ...``, exit status 2) and
    every option's default in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        print_error(f"{message} (see '{self.prog} --help')")
        raise SystemExit(EXIT_FAILED)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _positive(name: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name} must be a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"--{name} must be a positive integer, got {text!r}")
        return value

    return parse


def _pixel_limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-image-pixels must be a non-negative integer, got {text!r}")
    return value


def _max_image_pixels(option: int | None) -> Any:
    """``--max-image-pixels`` as ``Classifier(max_image_pixels=...)``: absent = the default;
    N = exactly N and 0 = no limit, on both backends, as the Rust CLI.  This process is the
    command's own, so Pillow's ceiling is lifted for it (the python backend decodes with
    Pillow, which would otherwise cut a larger limit short)."""
    from .classifier import DEFAULT

    if option is None:
        return DEFAULT
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return option or None


# --- predict ------------------------------------------------------------------------------
def _cmd_predict(args: argparse.Namespace) -> int:
    _check_fallback_flags(args)
    if getattr(args, "ray", None) is not None:
        if args.fallback_model is not None:
            raise InvalidArgumentError("--fallback-model runs on one machine; it does not combine with --ray")
        from .ray import predict_cli

        return predict_cli(args)
    import warnings

    from .classifier import Classifier, ImageSkippedWarning
    from .datasets import read_image_list
    from .images import expand_images
    from .results import output_format, write_predictions

    fmt = output_format(args.output) if args.output is not None else None  # before any work
    if args.output is not None:
        writable_path(args.output, "predictions")
    csv_input = kaggle_csv_input(args.inputs)
    filenames: list[str] | None = None
    if csv_input is not None:
        listed = read_image_list(csv_input, filename_column=args.filename_column)
        images: Any = [item.path for item in listed]
        filenames = [item.filename for item in listed]
    else:
        images = expand_images(list(args.inputs))  # empty folders / unmatched globs: exit 2 here
    classifier = Classifier(
        args.model,
        backend=args.backend,
        threads=args.threads,
        jpeg_draft=args.jpeg_draft,
        max_image_pixels=_max_image_pixels(args.max_image_pixels),
        fallback_model=args.fallback_model,
        fallback_margin=args.fallback_margin,
        **provider_arguments(args),
    )
    counts = {"ok": 0, "failed": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ImageSkippedWarning)  # each failure is printed once
        stream = report_failures(
            classifier.iter_predict(
                [payload for _, payload in images] if csv_input is None else images,
                top_k=args.top_k,
                batch_size=args.batch_size,
                progress=args.progress,
                on_error="skip",
            ),
            counts,
        )
        if args.output is not None and filenames is not None and fmt == "csv":
            return _submission(stream, filenames, args.output, args.fill_label, counts)
        elif args.output is not None:
            write_predictions(stream, args.output, top_k=args.top_k, keep_empty=False)
        else:
            for prediction in stream:
                if args.json:
                    write_line(dumps(prediction.to_dict()))
                elif prediction.ok:
                    write_line(text_line(prediction))
            sys.stdout.flush()
    return _exit_status(counts)


def _exit_status(counts: dict[str, int]) -> int:
    """0 all done; 1 some inputs failed (the rest written); 2 no input produced a result."""
    if not counts["failed"]:
        return EXIT_OK
    return EXIT_PARTIAL if counts["ok"] else EXIT_FAILED


def _submission(stream: Any, filenames: list[str], path: Path, fill: str | None, counts: dict[str, int]) -> int:
    """A Kaggle submission with every row, or (some images failed, no --fill-label) the
    predictions made in X.partial.csv and X.csv left alone."""
    from .results import partial_path, write_submission

    failed = write_submission(stream, filenames, path, fill=fill)
    if not failed:
        return EXIT_OK
    if not counts["ok"]:
        print_error(f"{path}: not written: none of the {len(filenames)} images could be predicted")
        return EXIT_FAILED
    if fill is None:
        print_error(
            f"{path}: not written: {len(failed)} of {len(filenames)} images have no prediction (named above) "
            f"and Kaggle rejects a submission with rows missing; the {counts['ok']} predictions made are in "
            f"{partial_path(path)} (--fill-label LABEL writes a complete submission with LABEL for those rows)"
        )
    else:
        print_error(f"{path}: {len(failed)} of {len(filenames)} rows filled with {fill!r} (--fill-label)")
    return EXIT_PARTIAL


# --- serve --------------------------------------------------------------------------------
def _cmd_serve(args: argparse.Namespace) -> int:
    from .serving import serve

    _check_fallback_flags(args)
    pixels: dict[str, Any] = (
        {} if args.max_image_pixels is None else {"max_image_pixels": args.max_image_pixels or None}
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        name=args.name,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        threads=args.threads,
        fallback_model=args.fallback_model,
        fallback_margin=args.fallback_margin,
        **pixels,
        **provider_arguments(args),
    )
    return EXIT_OK


# --- val ----------------------------------------------------------------------------------
def _cmd_val(args: argparse.Namespace) -> int:
    from .classifier import Classifier
    from .evaluate import evaluate

    if args.plot is not None:  # before scoring a single image
        writable_path(args.plot, "confusion-matrix plot")
    classifier = Classifier(args.model, backend=args.backend, threads=args.threads, **provider_arguments(args))
    report = evaluate(
        classifier,
        args.data,
        backend=args.backend,
        threads=args.threads,
        batch_size=args.batch_size,
        progress=args.progress,
        filename_column=args.filename_column,
        label_column=args.label_column,
    )
    for failure in report.failed:
        print_error(failure)
    if report.count == 0:
        raise UsageError(f"{report.data}: no image could be scored ({len(report.failed)} failed): nothing to report")
    if args.plot is not None:
        report.plot_confusion(args.plot)
    if args.json:
        write_line(dumps({**report.to_dict(), "backend": classifier.backend, "providers": list(classifier.providers)}))
    else:
        write_line(report.summary())
        if args.errors:
            write_line(report.errors_table())
        if args.plot is not None:
            write_line(f"confusion matrix: {args.plot}")
    return EXIT_PARTIAL if report.failed else EXIT_OK


# --- info ---------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    from .classifier import Classifier

    classifier = Classifier(args.model, backend="python", threads=1, **provider_arguments(args))
    contract = classifier.contract
    if args.json:
        print(contract.to_json())
        return EXIT_OK
    print(repr(classifier))
    print(f"preprocess: {contract.preprocess.describe()}")
    print(f"input: {contract.input_name}  output: {contract.output_name} ({contract.output_kind})")
    print(
        f"labels ({contract.num_classes}): {', '.join(contract.labels[:20])}"
        + (" ..." if contract.num_classes > 20 else "")
    )
    for key, value in contract.provenance.items():
        print(f"{key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return EXIT_OK


# --- annotate -----------------------------------------------------------------------------
def _cmd_annotate(args: argparse.Namespace) -> int:
    """Write the contract into an ONNX file that has none (e.g. from a plain torch.onnx.export):
    the one way to give such a model to both command lines."""
    import onnx

    from .atomic import atomic_write
    from .contract import ModelContract, PreprocessSpec

    output = writable_path(args.output or args.model, "annotated model")
    try:
        labels = [line.strip() for line in Path(args.labels).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{args.labels}: cannot read the labels: {exc}") from None
    if not labels:
        raise UsageError(f"{args.labels}: no labels (one per line)")
    try:
        model = onnx.load(str(args.model))
    except Exception as exc:  # onnx raises several types for a bad file
        raise UsageError(f"{args.model}: not a readable ONNX model: {exc}") from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    outputs = [o.name for o in model.graph.output]
    if len(inputs) != 1 or len(outputs) != 1:
        raise UsageError(f"{args.model}: needs exactly one input and one output (inputs {inputs}, outputs {outputs})")
    contract = ModelContract(
        labels=tuple(labels),
        preprocess=PreprocessSpec(
            resize_size=args.resize,
            crop_size=args.crop,
            mean=tuple(args.mean),
            std=tuple(args.std),
            interpolation=args.interpolation,
        ),
        input_name=inputs[0],
        output_name=outputs[0],
        output_kind=args.output_kind,
        provenance={"annotated_by": "butterfly-onnx annotate"},
    )
    from .contract import write_contract

    write_contract(model, contract)
    with atomic_write(output, "wb") as handle:
        handle.write(model.SerializeToString())
    write_line(f"annotated: {output} ({len(labels)} labels, {contract.preprocess.describe()})")
    return EXIT_OK


# --- models -------------------------------------------------------------------------------
def _cmd_models(args: argparse.Namespace) -> int:
    from . import catalog

    if args.plot is not None:
        writable_path(args.plot, "plot")
    try:
        entries = catalog.model_catalog(
            min_acc1=args.min_acc1,
            max_gflops=args.max_gflops,
            max_params_m=args.max_params,
            default_only=not args.all_weights,
            sort_by=args.sort,
        )
    except ValueError as exc:  # an unknown --sort column
        if isinstance(exc, ButterflyError):
            raise
        raise UsageError(f"--sort: {exc}") from None
    if args.pareto:
        front = {e.weights for e in catalog.pareto_front(entries, "gflops")}
        entries = [e for e in entries if e.weights in front]
    print(catalog.catalog_table(entries, fmt="csv" if args.csv else "markdown"), end="")
    if args.plot:
        if not entries:
            raise UsageError("no models match the filters: nothing to plot")
        print(f"plot: {catalog.plot_catalog(entries, args.plot)}", file=sys.stderr)
    return EXIT_OK


# --- finetune -----------------------------------------------------------------------------
def _cmd_finetune(args: argparse.Namespace) -> int:
    from .settings import FinetuneSettings
    from .train import finetune
    from .train.progress import log_to_stderr

    settings = FinetuneSettings(**_settings_values(args, FinetuneSettings))
    if args.export:  # before hours of training, not after
        writable_path(args.export, "exported model")
    with log_to_stderr():  # the per-epoch lines, also with --no-progress and in a redirected log
        result = finetune(args.data, settings=settings, out_dir=args.out, resume=args.resume, progress=args.progress)
    print(f"best checkpoint: {result.checkpoint}")
    print(
        json.dumps({k: v for k, v in result.metrics.items() if not isinstance(v, (list, dict))}, indent=2, default=str)
    )
    if args.export:
        from .export import export_onnx

        path = export_onnx(result, args.export)
        print(f"exported: {path}")
    return EXIT_OK


# --- options generated from the settings dataclasses (their one definition) ----------------
def _shown(value: Any) -> str:
    if value is None or value == ():
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _option_parser(flag: str, annotation: str) -> Any:
    """argparse ``type=`` for a settings field, from its annotation (``none`` for None)."""
    optional = annotation.endswith("| None") or annotation == "Any"
    base = annotation.removesuffix(" | None")

    def parse(text: str) -> Any:
        if optional and text.lower() == "none":
            return None
        try:
            if base == "int":
                return int(text)
            if base == "float":
                return float(text)
            if base == "str | float":  # unfreeze: a word or a fraction
                return text if text in ("all", "none") else float(text)
            if base.startswith(("PreprocessSpec", "Mapping")):
                value = json.loads(text)
                if not isinstance(value, dict):
                    raise ValueError("not a JSON object")
                return value
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{flag}: cannot read {text!r} ({exc})") from None
        return text

    return parse


def _add_settings_options(p: argparse.ArgumentParser, kind: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--name`` option per field of ``kind`` (a settings dataclass), its help and default
    taken from the field; booleans as ``--name/--no-name``."""
    from .settings import cli_fields

    group = p.add_argument_group(f"{kind.__name__} (every option defaults to the API's default)")
    for f in cli_fields(kind):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        text = f"{f.metadata['help']} (default: {_shown(f.default)})"
        annotation = str(f.type)
        if annotation in ("bool", "bool | None"):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=text)
            continue
        choices = f.metadata.get("choices")
        group.add_argument(
            flag,
            type=_option_parser(flag, annotation),
            default=f.default,
            choices=choices,
            metavar=None if choices else f.name.upper(),
            help=text,
        )


def _settings_values(args: argparse.Namespace, kind: type) -> dict[str, Any]:
    from .settings import cli_fields

    return {f.name: getattr(args, f.name) for f in cli_fields(kind) if hasattr(args, f.name)}


# --- export -------------------------------------------------------------------------------
def _training_images(checkpoint: str) -> list[Path] | None:
    """The images of the dataset a checkpoint was fine-tuned on (its ``train_config["data"]``),
    when that is a path that still exists; else None."""
    from .datasets import load_dataset
    from .train.checkpoint import read_checkpoint

    config = read_checkpoint(checkpoint).get("config", {})
    data = (config.get("train_config") or {}).get("data")
    if not isinstance(data, str) or data.startswith("<") or not Path(data).exists():
        return None
    return [path for path, _ in load_dataset(data, check=False).samples]


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_onnx
    from .settings import ExportSettings

    variants = tuple(args.variant or ())
    kwargs: dict[str, Any] = {}
    verify_images = args.verify_images
    calibration = args.calibration_images
    needs_images = (not args.no_verify and not verify_images) or ("int8" in variants and not calibration)
    if needs_images:
        # The rule: without --verify-images / --calibration-images, a checkpoint written by
        # finetune is verified (and int8 calibrated) on the images of the dataset it was trained on.
        found = _training_images(args.checkpoint)
        if found is None:
            missing = []
            if not args.no_verify and not verify_images:
                missing.append("--verify-images IMAGES (or --no-verify)")
            if "int8" in variants and not calibration:
                missing.append("--calibration-images IMAGES for the int8 variant")
            raise UsageError(
                f"{args.checkpoint}: the dataset it was trained on is not recorded or no longer exists; "
                f"pass {' and '.join(missing)}"
            )
        verify_images = verify_images or found
        calibration = calibration or found
    if not args.no_verify:
        kwargs["verify_images"] = verify_images
    if calibration:
        kwargs["calibration_images"] = calibration
    values = _settings_values(args, ExportSettings)
    settings = ExportSettings(**values, **provider_arguments(args), variants=variants, verify=not args.no_verify)
    path = export_onnx(args.checkpoint, args.output, settings=settings, **kwargs)
    print(f"exported: {path}")
    from .export import ExportReport, report_path_for

    # What was measured, so nobody has to open the JSON: torch vs ONNX, then each variant against
    # fp32 (agreement with its interval, accuracy, max logit difference, speed).
    report = ExportReport.load(path)
    if report.verification is not None:
        print(f"verified: {report.verification.summary()}")
    for variant in report.variants:
        print(f"variant {variant.summary()}")
    print(f"report: {report_path_for(path)}")
    return EXIT_OK


# --- demo ---------------------------------------------------------------------------------
def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .train.progress import log_to_stderr

    with log_to_stderr():  # the training's report and epoch lines as plain lines, as in finetune
        run_demo(out_dir=args.out, data=args.data, epochs=args.epochs, threads=args.threads, progress=args.progress)
    return EXIT_OK


def _plugin(name: str):
    def run(args: argparse.Namespace) -> int:
        module = importlib.import_module(f".{name}", __package__)
        return int(module.run(args))

    return run


# --- the parser ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser = _Parser(
        prog=PROG,
        parents=[common],
        description="Fine-tune torchvision classifiers, export self-describing ONNX, run it torch-free. "
        "Exit status: 0 all done, 1 some inputs failed (the rest written), 2 nothing done.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    # one function per subcommand, in the order `--help` lists them
    _predict_parser(sub, common)
    _serve_parser(sub, common)
    _val_parser(sub, common)
    _info_parser(sub, common)
    _annotate_parser(sub, common)
    _models_parser(sub, common)
    _finetune_parser(sub, common, _progress_flags)
    _export_parser(sub, common)
    _demo_parser(sub, common)

    for name, help_text in (
        ("bench", "time decode, preprocess and inference per backend"),
        ("parity", "max difference per stage between torchvision, python and rust"),
    ):
        if _has_module(f"butterfly_onnx.{name}"):
            p = sub.add_parser(name, parents=[common], help=help_text)
            importlib.import_module(f".{name}", __package__).add_arguments(p)
            p.set_defaults(run=_plugin(name))
    return parser


def _progress_flags(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal)",
    )
    group.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _fallback_flags(p: argparse.ArgumentParser) -> None:
    """The near-tie fallback of ``predict`` and ``serve`` (docs/inference.md, "Near-tie fallback")."""
    p.add_argument(
        "--fallback-model",
        metavar="FP32.onnx",
        help="run images whose two best classes are closer than the margin again on this model (the fp32 "
        "file of an int8 MODEL) and give its answer",
    )
    p.add_argument(
        "--fallback-margin",
        type=float,
        metavar="X",
        help="the margin for --fallback-model (default: the one the int8 file records)",
    )


def _check_fallback_flags(args: argparse.Namespace) -> None:
    if args.fallback_margin is not None and args.fallback_model is None:
        raise InvalidArgumentError("--fallback-margin needs --fallback-model")


def _predict_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="classify images with an exported model")
    p.add_argument("model", help="an exported .onnx file")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUTS",
        help="image files, directories (their images, sorted), glob patterns, or one Kaggle-style CSV "
        "(Testing_set.csv: only a CSV input makes a submission)",
    )
    p.add_argument("--top-k", type=_positive("top-k"), default=5, help="how many classes per image")
    p.add_argument(
        "--batch-size",
        type=_positive("batch-size"),
        default=None,
        help="images decoded and held at once; bounds memory, not results (default: 32)",
    )
    p.add_argument(
        "--threads",
        type=_positive("threads"),
        default=None,
        help="threads for decoding and inference (default: all cores)",
    )
    p.add_argument("--json", action="store_true", help="JSON Lines on stdout, one object per input")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write .csv or .jsonl here instead of stdout, atomically (a CSV input + .csv: a Kaggle "
        "submission filename,label; its folder must exist)",
    )
    p.add_argument(
        "--filename-column",
        default="filename",
        help="the column of a CSV input that names the images",
    )
    p.add_argument(
        "--fill-label",
        metavar="LABEL",
        help="a CSV input + -o X.csv: give images that failed this label, so the submission has every row "
        "(default: X.csv is not written, the predictions made go to X.partial.csv)",
    )
    _progress_flags(p)
    p.add_argument("--backend", choices=("python", "rust"), default="rust", help="which inference backend")
    add_provider_arguments(p)
    p.add_argument(
        "--max-image-pixels",
        type=_pixel_limit,
        default=None,
        metavar="N",
        help="refuse images with more pixels than N, from the header, before decoding (0 = no limit; "
        "default: Pillow's decompression-bomb ceiling, 2 * PIL.Image.MAX_IMAGE_PIXELS)",
    )
    p.add_argument(
        "--jpeg-draft",
        action="store_true",
        help="JPEG draft mode: decode JPEGs at a reduced DCT scale as Pillow's draft() does "
        "(faster on large photos, not torchvision-exact)",
    )
    _fallback_flags(p)
    if _has_module("butterfly_onnx.ray"):
        p.add_argument(
            "--ray",
            nargs="?",
            const="auto",
            default=None,
            metavar="ADDRESS",
            help="run on Ray Data (a cluster address, default: auto)",
        )
    p.set_defaults(run=_cmd_predict)


def _serve_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "serve", parents=[common], help="serve a model over HTTP (Open Inference Protocol v2, /v1/classify, /metrics)"
    )
    p.add_argument("model", help="an exported .onnx file")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="the port (0: any free one, printed on start; default 8000)")
    p.add_argument("--name", help="the model's name in /v2/models/NAME (default: the file's stem)")
    p.add_argument(
        "--max-batch",
        type=_positive("max-batch"),
        help="images per model batch across requests (default: the server's, docs/serving.md)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=int,
        help="how long a batch waits to fill, in milliseconds (default: the server's, docs/serving.md)",
    )
    p.add_argument(
        "--max-queue",
        type=_positive("max-queue"),
        help="requests admitted at once; past it, 503 (default: the server's, docs/serving.md)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=_positive("max-body-bytes"),
        help="largest request body; past it, 413 (default: the server's, docs/serving.md)",
    )
    p.add_argument(
        "--threads",
        type=_positive("threads"),
        default=None,
        help="threads for decoding and inference (default: all cores)",
    )
    p.add_argument("--max-image-pixels", type=int, help="refuse larger images (0: no limit; default Pillow's)")
    _fallback_flags(p)
    add_provider_arguments(p)
    p.set_defaults(run=_cmd_serve)


def _val_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("val", parents=[common], help="accuracy of a model on labelled images (torch-free)")
    p.add_argument("model", help="an exported .onnx file")
    p.add_argument("data", help="a Kaggle folder/CSV (filename,label) or a class-per-folder tree")
    p.add_argument("--backend", choices=("python", "rust"), default="rust", help="which inference backend")
    p.add_argument(
        "--threads",
        type=_positive("threads"),
        default=None,
        help="threads for decoding and inference (default: all cores)",
    )
    p.add_argument(
        "--batch-size", type=_positive("batch-size"), default=None, help="images decoded and held at once (default: 32)"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object (top1, top5, count, per_class, misclassified, ...)"
    )
    p.add_argument("--errors", action="store_true", help="also list each misclassified image: true and predicted label")
    p.add_argument(
        "--plot", type=Path, help="write the confusion matrix PNG here (needs matplotlib; its folder must exist)"
    )
    p.add_argument("--filename-column", default="filename", help="the CSV column naming the images")
    p.add_argument("--label-column", default="label", help="the CSV column holding the true labels")
    _progress_flags(p)
    add_provider_arguments(p)
    p.set_defaults(run=_cmd_val)


def _info_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("info", parents=[common], help="show a model's contract")
    p.add_argument("model", help="an exported .onnx file")
    p.add_argument("--json", action="store_true", help="the contract as JSON")
    add_provider_arguments(p)
    p.set_defaults(run=_cmd_info)


def _annotate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "annotate",
        parents=[common],
        help="add the contract (labels, preprocessing) to an ONNX model that has none, e.g. a plain torch.onnx.export",
    )
    p.add_argument("model", type=Path, help="the .onnx model (one input, one output)")
    p.add_argument("--labels", type=Path, required=True, help="a text file: one class label per line, in output order")
    p.add_argument("--resize", type=_positive("resize"), default=256, help="Resize: the shorter side, in pixels")
    p.add_argument("--crop", type=_positive("crop"), default=224, help="CenterCrop: the square side, in pixels")
    from .contract import IMAGENET_MEAN, IMAGENET_STD, INTERPOLATIONS

    p.add_argument("--mean", type=float, nargs=3, default=list(IMAGENET_MEAN), help="Normalize: per-channel mean")
    p.add_argument("--std", type=float, nargs=3, default=list(IMAGENET_STD), help="Normalize: per-channel std")
    p.add_argument("--interpolation", choices=INTERPOLATIONS, default="bilinear", help="Resize's filter")
    p.add_argument(
        "--output-kind", choices=("logits", "probabilities"), default="logits", help="what the model's output holds"
    )
    p.add_argument(
        "-o", "--output", type=Path, help="write the annotated model here (default: MODEL itself, atomically)"
    )
    p.set_defaults(run=_cmd_annotate)


def _models_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("models", parents=[common], help="torchvision's classification weights: table and plot")
    p.add_argument("--min-acc1", type=float, help="only weights with at least this ImageNet top-1 (%%)")
    p.add_argument("--max-gflops", type=float, help="only weights with at most this many GFLOPS per image")
    p.add_argument("--max-params", type=float, help="only weights with at most this many millions of parameters")
    p.add_argument("--all-weights", action="store_true", help="every weights, not only each model's default")
    p.add_argument("--sort", default="acc1", help="the column to sort by: acc1, gflops, params_m, ...")
    p.add_argument("--pareto", action="store_true", help="only the accuracy/GFLOPS Pareto front")
    p.add_argument("--csv", action="store_true", help="CSV instead of a Markdown table")
    p.add_argument("--plot", type=Path, help="write a PNG plot of accuracy vs GFLOPS here (its folder must exist)")
    p.set_defaults(run=_cmd_models)


def _demo_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo", parents=[common], help="the whole job on real photos: fine-tune, export, predict with both backends"
    )
    p.add_argument(
        "--data", help="a dataset (e.g. Kaggle's butterfly folder); default: real photos from tuxpaint stamps"
    )
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="the folder for everything (default: demo_out)")
    p.add_argument("--epochs", type=_positive("epochs"), default=4, help="fine-tuning epochs (default: 4)")
    p.add_argument(
        "--threads",
        type=_positive("threads"),
        default=None,
        help="threads for the inference backends (default: all cores)",
    )
    _progress_flags(p)
    p.set_defaults(run=_cmd_demo)


def _finetune_parser(sub: Any, common: argparse.ArgumentParser, progress_flags: Any) -> None:
    from .settings import FinetuneSettings

    p = sub.add_parser(
        "finetune",
        parents=[common],
        help="fine-tune a torchvision model on a labelled image folder or CSV",
        description="Fine-tune a torchvision model: a head phase on cached features, then the whole "
        "network; checkpoints, metrics and plots in --out, one log line per epoch on stderr.",
    )
    p.add_argument("data", help="Kaggle folder (Training_set.csv + train/), a CSV, or a class-per-folder root")
    p.add_argument("--out", type=Path, default=Path("runs/finetune"), help="output folder (default: runs/finetune)")
    resume = p.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume",
        dest="resume",
        action="store_true",
        default=None,
        help="continue the run in --out (its last checkpoint)",
    )
    resume.add_argument("--fresh", dest="resume", action="store_false", help="start over, replacing the run in --out")
    p.add_argument("--export", type=Path, help="also export the best checkpoint to this .onnx path (default: none)")
    progress_flags(p)
    _add_settings_options(p, FinetuneSettings)
    p.set_defaults(run=_cmd_finetune)


def _export_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    from .settings import ExportSettings

    p = sub.add_parser("export", parents=[common], help="export a checkpoint to a verified, self-describing ONNX file")
    p.add_argument("checkpoint")
    p.add_argument("output", type=Path)
    p.add_argument("--variant", action="append", choices=("optimized", "fp16", "int8", "bf16"), help="(default: none)")
    verify = p.add_mutually_exclusive_group()
    verify.add_argument(
        "--verify-images",
        nargs="+",
        help="real images (files, directories) to verify torch vs ONNX on "
        "(default: the checkpoint's training images, when they still exist)",
    )
    verify.add_argument("--no-verify", action="store_true", help="skip the verification against PyTorch")
    p.add_argument(
        "--calibration-images",
        nargs="+",
        help="training images to calibrate the int8 variant on (default: the checkpoint's training images)",
    )
    _add_settings_options(p, ExportSettings, skip=("variants", "verify"))
    add_provider_arguments(p)  # where the verification's ONNX Runtime runs
    p.set_defaults(run=_cmd_export)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    with console_logging(debug):
        return _main(argv, debug)


def _main(argv: list[str], debug: bool) -> int:
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:  # names that are not UTF-8 printed as their bytes, as the Rust CLI
        try:
            reconfigure(errors="surrogateescape")
        except (ValueError, OSError):  # pragma: no cover - a detached stream
            pass
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (already printed, 2)
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except KeyboardInterrupt:  # pragma: no cover
        print_error("interrupted")
        return 130
    except BrokenPipeError:  # pragma: no cover - e.g. `| head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK
    except (ButterflyError, OSError, ValueError, TypeError, ImportError, RuntimeError, MemoryError) as exc:
        if debug:
            traceback.print_exc()
        print_error(_describe(exc))
        return EXIT_FAILED
    except Exception as exc:  # a bug: still one line (the traceback with --debug)
        if debug:
            traceback.print_exc()
        print_error(f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)")
        return EXIT_FAILED


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ButterflyError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
