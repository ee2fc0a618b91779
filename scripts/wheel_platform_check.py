"""A torch-free check of an installed wheel on any platform (the release workflow runs it where
no development install exists to compare with): both backends must preprocess real photos
identically, bit for bit, and give identical logits on a small seeded ONNX model.

Needs the installed butterfly-onnx plus onnx (to write the model) and scikit-image (the photos):

    pip install butterfly_onnx-*.whl onnx scikit-image && python scripts/wheel_platform_check.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import skimage
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from butterfly_onnx import Classifier, ModelContract, PreprocessSpec, write_contract

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png")
LABELS = ("a", "b", "c", "d", "e")


def small_model(path: Path) -> None:
    """Conv 3->8 (3x3, stride 2) + ReLU + global average pool + Gemm to 5 logits, seeded."""
    rng = np.random.default_rng(0)
    init = [
        numpy_helper.from_array(rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32), "conv_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "conv_b"),
        numpy_helper.from_array(rng.normal(0, 1.0, (8, 5)).astype(np.float32), "fc_w"),
        numpy_helper.from_array(rng.normal(0, 0.1, 5).astype(np.float32), "fc_b"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv_w", "conv_b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "smoke",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_contract(model, ModelContract(labels=LABELS, preprocess=PreprocessSpec(256, 224)), path)


def main() -> int:
    data = Path(skimage.__file__).parent / "data"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = [data / name for name in PHOTOS if (data / name).is_file()]
        # WebP and TIFF (Deflate, JPEG, LZW) re-encodings: every C library in the module decodes.
        with Image.open(data / "chelsea.png") as im:
            rgb = im.convert("RGB")
        for name, kwargs in {
            "chelsea.webp": {"quality": 90},
            "chelsea_deflate.tiff": {"compression": "tiff_adobe_deflate"},
            "chelsea_jpeg.tiff": {"compression": "jpeg"},
            "chelsea_lzw.tiff": {"compression": "tiff_lzw"},
        }.items():
            rgb.save(folder / name, **kwargs)
            files.append(folder / name)
        small_model(folder / "model.onnx")
        python = Classifier(folder / "model.onnx", backend="python", threads=2)
        rust = Classifier(folder / "model.onnx", backend="rust", threads=2)
        problems = []
        if not np.array_equal(python.preprocess(files), rust.preprocess(files)):
            problems.append("the backends' preprocessed tensors differ")
        if not np.array_equal(python.logits(files), rust.logits(files)):
            problems.append("the backends' logits differ")
    if problems:
        print("wheel_platform_check: FAILED:", "; ".join(problems), file=sys.stderr)
        return 1
    print(f"wheel_platform_check: ok: {len(files)} images, both backends bit-identical (onnx {onnx.__version__})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
