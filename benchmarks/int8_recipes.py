"""int8 recipes measured on EfficientNet-Lite0 with its real ImageNet weights (1000 classes):
agreement with fp32 on real photos the calibration never saw, and speed on the rust backend.

    PYTHONPATH=python .venv/bin/python benchmarks/int8_recipes.py [--out DIR] \\
        [--recipes s8s8:minmax,u8s8:minmax,...] [--calibration-size 200] [--target 0.99]

Photos: every tuxpaint photo stamp (``sample_data.tuxpaint_photo_dataset`` composites each
cut-out onto a plain background; GPL, read from /usr/share/tuxpaint at run time) plus the photos
scikit-image, scikit-learn and matplotlib ship.  A seeded draw of ``--calibration-size`` of them,
every stamp category represented (``calibration_draw``), calibrates; all the others are the test
set.  Per recipe (``FORMAT:METHOD``; ``--target`` > 0 lets ``search_int8`` keep sensitive nodes in
float): top-1 agreement with fp32 on all test photos and on those where fp32's top-1 probability
is >= 0.3, fp32's top-1 inside the int8 top-5, each with its 95 % Wilson interval, the max logit
difference, and ms/image end to end (``Classifier.logits``) on the rust backend at one thread,
fp32 and every recipe interleaved, best of ``--rounds``.  Writes ``int8_recipes.json`` and prints a
markdown table (docs/export.md, "int8 recipes").  Opt-in: takes minutes per recipe on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

CONFIDENT = 0.3  # the Done-when's threshold on fp32's top-1 probability


def photos(out: Path) -> list[tuple[Path, int]]:
    """(path, category index) of every tuxpaint photo stamp and the package photos (category -1)."""
    from butterfly_onnx.sample_data import TUXPAINT_STAMPS, tuxpaint_photo_dataset
    from reference_images import real_photos

    tops = sorted(p.name for p in TUXPAINT_STAMPS.iterdir() if p.is_dir())
    root = out / "photos"
    if not root.is_dir():
        tuxpaint_photo_dataset(root, categories={top: [top] for top in tops})
    samples = [(p, index) for index, top in enumerate(tops) for p in sorted((root / top).glob("*.jpg"))]
    extra = [p for name, p in sorted(real_photos(limit_tuxpaint=0).items()) if "logo" not in name]
    return samples + [(p, -1) for p in extra]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def figures(fp32: np.ndarray, other: np.ndarray) -> dict[str, object]:
    from butterfly_onnx.export.reports import wilson_interval

    top1 = fp32.argmax(axis=1)
    agree = top1 == other.argmax(axis=1)
    confident = softmax(fp32.astype(np.float64)).max(axis=1) >= CONFIDENT
    top5 = np.argsort(-other, axis=1)[:, :5]
    in_top5 = (top5 == top1[:, None]).any(axis=1)

    def share(mask: np.ndarray) -> dict[str, object]:
        k, n = int(mask.sum()), int(mask.size)
        low, high = wilson_interval(k, n)
        return {"k": k, "n": n, "share": k / n if n else float("nan"), "low": low, "high": high}

    return {
        "agreement": share(agree),
        "agreement_confident": share(agree[confident]),
        "fp32_top1_in_top5": share(in_top5),
        "max_logit_diff": float(np.abs(fp32 - other).max()),
    }


def with_fallback(fp32: np.ndarray, out: np.ndarray, margin: float) -> dict[str, object]:
    """``figures`` of ``out`` answered as ``Classifier(fallback_model=fp32)`` answers it, and the
    share of images it runs twice."""
    from butterfly_onnx.export.variants import answered_near_ties

    answered, rows = answered_near_ties(fp32, out, margin)
    return {"margin": margin, "share_run_twice": len(rows) / len(out), **figures(fp32, answered)}


def end_to_end_speed(
    contenders: dict[str, dict[str, Any]], paths: list[str], rounds: int, threads: int
) -> dict[str, float]:
    """Best ms/image of ``Classifier(**kwargs, backend="rust", threads=threads).logits(paths)`` per
    contender, all interleaved in every round."""
    from butterfly_onnx import Classifier

    classifiers = {name: Classifier(**kwargs, backend="rust", threads=threads) for name, kwargs in contenders.items()}
    best = dict.fromkeys(contenders, float("inf"))
    for clf in classifiers.values():
        clf.logits(paths[:4])
    for _ in range(rounds):
        for name, clf in classifiers.items():
            start = time.perf_counter()
            clf.logits(paths)
            best[name] = min(best[name], (time.perf_counter() - start) * 1e3 / len(paths))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/int8_recipes"))
    parser.add_argument("--recipes", default="s8s8:minmax,u8s8:minmax")
    parser.add_argument("--calibration-size", type=int, default=200)
    parser.add_argument("--target", type=float, default=0.0, help="search float nodes up to this agreement")
    parser.add_argument("--max-float-nodes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--speed-images", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-bias-correction", action="store_true", help="quantize without correct_biases")
    parser.add_argument(
        "--demo", action="store_true", help="instead: the demo's fine-tuned model, int8 on its whole validation split"
    )
    parser.add_argument("--demo-epochs", type=int, default=4, help="the demo's epochs (1: its head phase only)")
    parser.add_argument(
        "--demo-all-categories",
        action="store_true",
        help="--demo on every tuxpaint category (16 classes, 686 photos) instead of the demo's 7",
    )
    parser.add_argument("--demo-val-fraction", type=float, default=0.2, help="--demo's validation split")
    args = parser.parse_args()
    if args.demo:
        demo(args.out, args.rounds, args.demo_epochs, args.demo_all_categories, args.demo_val_fraction)
        return

    import torchvision

    from butterfly_onnx import export_onnx
    from butterfly_onnx.contract import ModelContract, write_contract
    from butterfly_onnx.export.calibration import Int8Recipe, calibration_draw, preprocessed_batches, search_int8
    from butterfly_onnx.export.session import ort_run, ort_session
    from butterfly_onnx.train import build_model
    from butterfly_onnx.train.models import LITE0_PREPROCESS

    args.out.mkdir(parents=True, exist_ok=True)
    samples = photos(args.out)
    rng = np.random.default_rng(args.seed)
    calibration = calibration_draw(samples, args.calibration_size, rng)
    chosen = {p for p, _ in calibration}
    test = [s for s in samples if s[0] not in chosen]
    print(f"{len(samples)} photos: {len(calibration)} calibrate, {len(test)} test", flush=True)

    fp32_path = args.out / "lite0_imagenet.onnx"
    if not fp32_path.is_file():
        labels = torchvision.models.EfficientNet_B0_Weights.DEFAULT.meta["categories"]
        model = build_model("efficientnet_lite0", weights="DEFAULT").eval()
        export_onnx(model, fp32_path, labels=labels, preprocess=LITE0_PREPROCESS, verify_images=test[:16])
    spec = LITE0_PREPROCESS
    cal_inputs = preprocessed_batches([p for p, _ in calibration], spec, 16)
    test_inputs = preprocessed_batches([p for p, _ in test], spec, 16)
    fp32_session = ort_session(fp32_path)
    fp32_out = ort_run(fp32_session, test_inputs)
    contract = ModelContract.from_metadata(fp32_session.get_modelmeta().custom_metadata_map)

    results: list[dict[str, Any]] = []
    for text in args.recipes.split(","):
        fmt, method = text.split(":")
        corrected = "" if args.no_bias_correction else "_bc"
        path = args.out / f"lite0_imagenet.{fmt}_{method}{corrected}_{args.calibration_size}_t{args.target:g}.int8.onnx"
        started = time.perf_counter()
        search = search_int8(
            fp32_path,
            path,
            Int8Recipe(fmt, method, bias_correction=not args.no_bias_correction),
            cal_inputs,
            target=args.target,
            max_float_nodes=args.max_float_nodes,
        )
        seconds = time.perf_counter() - started
        margin = search.error_spread
        write_contract(path, replace(contract, provenance={"fallback_margin": margin}), path)
        out = ort_run(ort_session(path), test_inputs)
        row = {
            "recipe": text,
            "calibration_size": len(calibration),
            "float_nodes": list(search.recipe.float_nodes),
            "calibration_agreement": search.agreement,
            "tried": [[list(nodes), agreement] for nodes, agreement in search.tried],
            "seconds": seconds,
            "path": str(path),
            **figures(fp32_out, out),
            "fallback": with_fallback(fp32_out, out, margin),
        }
        print(json.dumps({k: v for k, v in row.items() if k != "tried"}), flush=True)
        results.append(row)

    # speed: rust backend, one thread, end to end, fp32 and every recipe (alone and with fp32 answering
    # its near-ties) interleaved, best of rounds
    speed_paths = [str(p) for p, _ in test[: args.speed_images or None]]
    contenders: dict[str, dict[str, Any]] = {"fp32": {"model": fp32_path}}
    for r in results:
        contenders[str(r["recipe"])] = {"model": r["path"]}
        contenders[f"{r['recipe']}+fallback"] = {"model": r["path"], "fallback_model": fp32_path}
    best = end_to_end_speed(contenders, speed_paths, args.rounds, threads=1)
    for row in results:
        row["rust_ms_per_image"] = best[str(row["recipe"])]
        row["fp32_rust_ms_per_image"] = best["fp32"]
        row["speedup"] = best["fp32"] / best[str(row["recipe"])]
        row["fallback"]["speedup"] = best["fp32"] / best[f"{row['recipe']}+fallback"]
    (args.out / "int8_recipes.json").write_text(json.dumps(results, indent=2))

    def cell(f: dict) -> str:
        return f"{f['share']:.1%} [{f['low']:.1%}, {f['high']:.1%}] ({f['k']}/{f['n']})"

    print(
        "| recipe | cal. | float nodes | agreement | agreement, fp32 p>=0.3 | fp32 top-1 in top-5 | max diff | rust t=1 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        fb = r["fallback"]
        print(
            f"| {r['recipe']} | {r['calibration_size']} | {len(r['float_nodes'])} | {cell(r['agreement'])} | "
            f"{cell(r['agreement_confident'])} | {cell(r['fp32_top1_in_top5'])} | {r['max_logit_diff']:.2f} | "
            f"{r['speedup']:.2f}x |"
        )
        print(
            f"| {r['recipe']} + fp32 on near-ties (margin {fb['margin']:.3f}, {fb['share_run_twice']:.1%} run twice) "
            f"| | | {cell(fb['agreement'])} | {cell(fb['agreement_confident'])} | {cell(fb['fp32_top1_in_top5'])} | "
            f"{fb['max_logit_diff']:.2f} | {fb['speedup']:.2f}x |"
        )


def demo(out: Path, rounds: int, epochs: int, all_categories: bool = False, val_fraction: float = 0.2) -> None:
    """The project's demo model (Lite0 fine-tuned ``epochs`` on the 7-class tuxpaint photo set, as
    ``butterfly-onnx demo`` does with 4) exported with the int8 variant by export_onnx's defaults; the
    report's figures on the whole validation split.  ``all_categories``: every tuxpaint category a
    class (a larger validation split than the demo's 38 images)."""
    from butterfly_onnx import export_onnx, finetune
    from butterfly_onnx.export import ExportReport
    from butterfly_onnx.sample_data import TUXPAINT_STAMPS, tuxpaint_photo_dataset

    data = out / ("demo_data_all" if all_categories else "demo_data")
    if not data.is_dir():
        tops = sorted(p.name for p in TUXPAINT_STAMPS.iterdir() if p.is_dir())
        tuxpaint_photo_dataset(data, categories={top: [top] for top in tops} if all_categories else None)
    run = (
        f"demo_run{epochs}"
        + ("_all" if all_categories else "")
        + (f"_val{val_fraction:g}" if val_fraction != 0.2 else "")
    )
    result = finetune(
        data,
        model="efficientnet_lite0",
        weights="DEFAULT",
        epochs=epochs,
        out_dir=out / run,
        seed=0,
        resume=False,
        val_fraction=val_fraction,
    )
    path = export_onnx(
        result,
        out / f"{run}.onnx",
        variants=("int8",),
        max_verify_images=None,
        min_agreement=0,
        benchmark_rounds=rounds,
    )
    report = ExportReport.load(path)
    print(report.summary())
    (out / f"{run}.report.json").write_text(report.to_json())
    # end to end on the whole validation split: int8 alone and with fp32 answering its near-ties
    (variant,) = report.variants
    paths = [str(p) for p, _ in result.val_samples]
    contenders = {
        "fp32": {"model": path},
        "int8": {"model": variant.path},
        "int8+fallback": {"model": variant.path, "fallback_model": path},
    }
    speed = {threads: end_to_end_speed(contenders, paths, rounds, threads) for threads in (1, 2)}
    for threads, ms in speed.items():
        print(
            f"rust threads={threads}: fp32 {ms['fp32']:.2f}, int8 {ms['int8']:.2f} (x{ms['fp32'] / ms['int8']:.2f}), "
            f"int8 + fp32 on near-ties {ms['int8+fallback']:.2f} ms/image (x{ms['fp32'] / ms['int8+fallback']:.2f})"
        )
    (out / f"{run}.fallback-speed.json").write_text(json.dumps({f"rust_t{t}": ms for t, ms in speed.items()}, indent=2))


if __name__ == "__main__":
    main()
