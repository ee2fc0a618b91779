"""Test fixture for the Rust tests (tests/cli.rs, tests/classifier.rs): a small ONNX
classifier carrying a butterfly_onnx contract, a few real photos, and the reference
predictions computed with torchvision + onnxruntime in Python.

    python make_fixture.py OUT_DIR

Writes OUT_DIR/{model.onnx, model_static2.onnx, model_no_contract.onnx, model_variant.onnx,
not_a_model.onnx,
images/*, bad/*, reference.json, reference_batch.f32 (torchvision's batch, little-endian
float32), ort_library.txt (the onnxruntime wheel's libonnxruntime, as the Python package finds
it: butterfly_onnx._backends.rust.find_onnxruntime_library)}. Image paths in reference.json
are relative to OUT_DIR.
Exits with status 77 when torch, torchvision, onnx or onnxruntime is not installed.
The model is built with onnx.helper (no torch export: a few milliseconds), the reference
uses torchvision's transforms on Image.open(p).convert("RGB"), as training does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

try:
    import onnx
    import onnxruntime as ort
    import torch  # noqa: F401  (the reference needs torchvision's transforms)
    import torchvision  # noqa: F401
    from onnx import TensorProto, helper, numpy_helper
except ImportError as exc:  # the Rust tests report this as a skip
    print(f"make_fixture.py needs the train and dev extras: {exc}", file=sys.stderr)
    raise SystemExit(77) from None

from butterfly_onnx._backends.rust import find_onnxruntime_library
from butterfly_onnx.contract import ModelContract, PreprocessSpec, write_contract

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "tests"))
import reference_images as ri  # noqa: E402  (the one generator of test images and references)

LABELS = ["admiral", "monarch", "swallowtail", "peacock", "brimstone", "skipper", "ringlet"]
SPEC = PreprocessSpec(resize_size=80, crop_size=64, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def build_model(path: Path, *, batch: int | str, with_contract: bool, noise: float = 0.0) -> None:
    """Conv(3->8, 3x3, stride 2) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(8->7); ``noise``
    perturbs the Gemm's weights (a stand-in for a reduced-precision variant of the model)."""
    rng = np.random.default_rng(7)
    crop = SPEC.crop_size
    fc_w = rng.normal(0, 1.0, (len(LABELS), 8))
    fc_w += np.random.default_rng(11).normal(0, noise, fc_w.shape) if noise else 0.0
    weights = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (8,)).astype(np.float32), "conv_b"),
        numpy_helper.from_array(fc_w.astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, (len(LABELS),)).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, crop, crop])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, len(LABELS)])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if with_contract:
        contract = ModelContract(labels=tuple(LABELS), preprocess=SPEC, provenance={"arch": "tiny_classifier"})
        write_contract(model, contract)
    onnx.save(model, str(path))


def photos(out: Path) -> list[Path]:
    """Real photos (tuxpaint stamps) as PNG (RGBA, as shipped) and JPEG (4:2:0, via Pillow)."""
    picks = ["animals/insects/cartoon/butterfly.png", "seasonal/easter/butterfly.png", "animals/fish/butterflyfish.png"]
    sources = ri.tuxpaint_photos(picks, 3)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    written = []
    for i, source in enumerate(sources):
        png = images / f"{i}_{source.stem}.png"
        png.write_bytes(source.read_bytes())
        jpeg = images / f"{i}_{source.stem}.jpg"
        Image.open(source).convert("RGB").save(jpeg, quality=90)
        written += [png, jpeg]
    if not written:  # no tuxpaint: a synthetic but non-trivial image
        rng = np.random.default_rng(1)
        array = (rng.random((150, 210, 3)) * 255).astype(np.uint8)
        png = images / "noise.png"
        Image.fromarray(array).save(png)
        written.append(png)
    # Not images: skipped when a directory is expanded.
    (images / "notes.txt").write_text("not an image")
    return sorted(written)


def reference(model: Path, files: list[Path], batch_path: Path) -> list[dict]:
    batch = np.stack([ri.torchvision_tensor(Image.open(p).convert("RGB"), SPEC) for p in files])
    batch.astype("<f4").tofile(batch_path)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"input": batch})[0]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities = exp / exp.sum(axis=1, keepdims=True)
    rows = []
    for path, row_logits, row_probabilities in zip(files, logits, probabilities, strict=True):
        order = np.argsort(-row_probabilities, kind="stable")
        rows.append(
            {
                "source": str(path.relative_to(model.parent)),
                "logits": [float(v) for v in row_logits],
                "top_k": [
                    {"label": LABELS[i], "index": int(i), "probability": float(row_probabilities[i])} for i in order
                ],
            }
        )
    return rows


def fallback_reference(out: Path, files: list[Path], batch_path: Path) -> dict:
    """``model_variant.onnx`` (the model with perturbed weights) recording a ``fallback_margin``
    between its middle top-1/top-2 gaps on ``files``, so that about half of them are near-ties,
    and what the Python ``Classifier(model_variant.onnx, fallback_model=model.onnx)`` gives."""
    from butterfly_onnx import Classifier
    from butterfly_onnx.classifier import near_ties

    variant = out / "model_variant.onnx"
    build_model(variant, batch="batch", with_contract=True, noise=0.3)
    batch = np.fromfile(batch_path, dtype="<f4").reshape(len(files), 3, SPEC.crop_size, SPEC.crop_size)
    logits = ort.InferenceSession(str(variant), providers=["CPUExecutionProvider"]).run(["logits"], {"input": batch})[0]
    top2 = np.sort(logits, axis=1)[:, -2:]
    gaps = np.sort(top2[:, 1] - top2[:, 0])
    middle = len(gaps) // 2
    margin = float((gaps[middle - 1] + gaps[middle]) / 2) if len(gaps) > 1 else float(gaps[0]) + 1.0
    contract = ModelContract(
        labels=tuple(LABELS), preprocess=SPEC, provenance={"arch": "tiny_classifier", "fallback_margin": margin}
    )
    write_contract(variant, contract, variant)
    answered = Classifier(variant, fallback_model=out / "model.onnx").logits(files)
    return {
        "margin": margin,
        "near_ties": [int(i) for i in near_ties(logits, margin)],
        "logits": [[float(v) for v in row] for row in answered],
    }


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    build_model(out / "model.onnx", batch="batch", with_contract=True)
    build_model(out / "model_static2.onnx", batch=2, with_contract=True)
    build_model(out / "model_no_contract.onnx", batch="batch", with_contract=False)
    files = photos(out)
    bad = out / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is not a JPEG")
    jpeg = next((p for p in files if p.suffix == ".jpg"), None)
    if jpeg is not None:
        (bad / "truncated.jpg").write_bytes(jpeg.read_bytes()[:300])
    (out / "not_a_model.onnx").write_text("not a protobuf")
    refs = {
        "labels": LABELS,
        "crop_size": SPEC.crop_size,
        "images": reference(out / "model.onnx", files, out / "reference_batch.f32"),
    }
    refs["fallback"] = fallback_reference(out, files, out / "reference_batch.f32")
    (out / "reference.json").write_text(json.dumps(refs, indent=1))
    (out / "ort_library.txt").write_text(str(find_onnxruntime_library()))


if __name__ == "__main__":
    main()
