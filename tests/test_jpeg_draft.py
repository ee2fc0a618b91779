"""JPEG draft mode (``Classifier(..., jpeg_draft=True)``): on both backends, a JPEG's tensor is
exactly torchvision's preset applied to Pillow's drafted image, ``im.draft("RGB", request)``
then ``convert("RGB")``, bit for bit (max abs diff 0.0), on real photos at draft scales 1, 2,
4 and 8, every chroma subsampling, grey, CMYK and progressive files.  Non-JPEG inputs, PIL
images and arrays are unaffected, and the default stays torchvision-exact.

The request is spelled out independently of the package: the issue's ``(resize_size,
resize_size)`` without ``max_size``, torchvision's own ``_compute_resized_output_size`` with it.
Images come from ``tests/reference_images.py`` (real photos of installed packages)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reference_images as ri
from butterfly_onnx import Classifier
from butterfly_onnx.contract import PreprocessSpec
from butterfly_onnx.errors import InvalidArgumentTypeError
from butterfly_onnx.parity import _PROBE_MODEL  # a tiny dynamic-shape model: preprocess() needs no real one
from contract_models import native_available, require_backend

pytest.importorskip("torchvision")
tvF = pytest.importorskip("torchvision.transforms.functional")

SPEC = PreprocessSpec(256, 224)
#: A max_size that changes the draft scale: 2400x1200 resizes to 300x150 instead of 512x256.
SPEC_MAX = PreprocessSpec(256, 224, max_size=300)
#: (width, height) -> Pillow's draft scale under SPEC: 1, 2, 4 (sizes not multiples of 4), 8.
SIZES = {(300, 400): 1, (640, 520): 2, (1283, 1030): 4, (1920, 1280): 4, (2200, 2100): 8}
#: Pillow ``save`` options: 4:4:4, 4:2:2, 4:2:0, progressive 4:2:0, grey, CMYK (Adobe, inverted).
KINDS = {
    "444": {"subsampling": 0},
    "422": {"subsampling": 1},
    "420": {"subsampling": 2},
    "progressive": {"subsampling": 2, "progressive": True},
    "grey": {"mode": "L"},
    "cmyk": {"mode": "CMYK"},
}


def _photo(name: str) -> Image.Image:
    photos = ri.real_photos(limit_tuxpaint=0)
    if name not in photos:
        pytest.skip(f"{name} is not installed")
    with Image.open(photos[name]) as im:
        return im.convert("RGB")


def _jpeg(image: Image.Image, size: tuple[int, int], kind: str) -> bytes:
    options = dict(KINDS[kind])
    mode = options.pop("mode", "RGB")
    resized = image.resize(size, Image.Resampling.BICUBIC).convert(mode)
    return ri.encode(resized, "JPEG", quality=90, **options)


def _request(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int]:
    if spec.max_size is None:
        return spec.resize_size, spec.resize_size
    new_h, new_w = tvF._compute_resized_output_size((height, width), [spec.resize_size], spec.max_size)
    return new_w, new_h


def _reference(data: bytes, spec: PreprocessSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """torchvision's preset on Pillow's drafted image, and the drafted size."""
    with Image.open(io.BytesIO(data)) as im:
        im.draft("RGB", _request(im.width, im.height, spec))
        rgb = im.convert("RGB")
    return ri.torchvision_tensor(rgb, spec), rgb.size


def _exact(data: bytes, spec: PreprocessSpec) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return ri.torchvision_tensor(im.convert("RGB"), spec)


_CACHE: dict[tuple[str, PreprocessSpec, bool], Classifier] = {}


def _classifier(backend: str, spec: PreprocessSpec = SPEC, jpeg_draft: bool = True) -> Classifier:
    key = (backend, spec, jpeg_draft)
    if key not in _CACHE:
        _CACHE[key] = Classifier(
            _PROBE_MODEL, backend=backend, threads=1, labels=["r", "g", "b"], preprocess=spec, jpeg_draft=jpeg_draft
        )
    return _CACHE[key]


@pytest.mark.parametrize("size", list(SIZES), ids=[f"{w}x{h}-scale{s}" for (w, h), s in SIZES.items()])
@pytest.mark.parametrize("kind", list(KINDS))
def test_draft_tensor_is_torchvision_on_pillows_drafted_image(backend, size, kind):
    data = _jpeg(_photo("skimage_astronaut.png"), size, kind)
    want, drafted = _reference(data, SPEC)
    scale = SIZES[size]
    assert drafted == (-(-size[0] // scale), -(-size[1] // scale))  # Pillow took the scale we expect
    got = _classifier(backend).preprocess(data)
    assert got.shape == (1, *want.shape)
    assert np.abs(got[0] - want).max() == 0.0
    if scale > 1:  # draft mode is not the exact path: the test would see a no-op
        assert np.abs(got[0] - _exact(data, SPEC)).max() > 0.0


@pytest.mark.parametrize(
    "photo", ["skimage_coffee.png", "skimage_chelsea.png", "sklearn_china.jpg", "matplotlib_grace_hopper.jpg"]
)
def test_draft_on_more_photos_from_a_file(backend, photo, tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(_photo(photo), (1920, 1280), "420"))
    want, _ = _reference(path.read_bytes(), SPEC)
    assert np.abs(_classifier(backend).preprocess(path)[0] - want).max() == 0.0


def test_max_size_asks_for_torchvisions_resize_target(backend):
    data = _jpeg(_photo("skimage_astronaut.png"), (2400, 1200), "420")
    want, drafted = _reference(data, SPEC_MAX)
    assert drafted == (300, 150)  # 1/8: the 300x150 target, where (256, 256) would allow only 1/4
    assert np.abs(_classifier(backend, SPEC_MAX).preprocess(data)[0] - want).max() == 0.0


def test_both_backends_agree_in_one_batch():
    require_backend("rust")
    images = [_jpeg(_photo("skimage_astronaut.png"), size, "420") for size in SIZES]
    python = _classifier("python").preprocess(images)
    rust = _classifier("rust").preprocess(images)
    assert np.abs(python - rust).max() == 0.0


def test_non_jpeg_and_in_memory_images_are_unaffected(backend):
    photo = _photo("skimage_astronaut.png").resize((1920, 1280), Image.Resampling.BICUBIC)
    png = ri.encode(photo, "PNG")
    jpeg = _jpeg(_photo("skimage_astronaut.png"), (1920, 1280), "420")
    draft, exact = _classifier(backend), _classifier(backend, jpeg_draft=False)
    assert np.abs(draft.preprocess(png)[0] - ri.torchvision_tensor(photo, SPEC)).max() == 0.0
    with Image.open(io.BytesIO(jpeg)) as lazy:  # a lazily opened JPEG given as a PIL image
        got = draft.preprocess(lazy)
    assert np.abs(got[0] - _exact(jpeg, SPEC)).max() == 0.0
    array = np.asarray(photo)
    assert np.abs(draft.preprocess(array) - exact.preprocess(array)).max() == 0.0


def test_default_is_exact(backend):
    jpeg = _jpeg(_photo("skimage_astronaut.png"), (1920, 1280), "420")
    classifier = _classifier(backend, jpeg_draft=False)
    assert classifier.jpeg_draft is False
    assert np.abs(classifier.preprocess(jpeg)[0] - _exact(jpeg, SPEC)).max() == 0.0


def test_flag_is_visible_and_checked(backend):
    classifier = _classifier(backend)
    assert classifier.jpeg_draft is True
    assert "jpeg_draft=True" in repr(classifier)
    assert "jpeg_draft" not in repr(_classifier(backend, jpeg_draft=False))
    with pytest.raises(InvalidArgumentTypeError, match="jpeg_draft"):
        Classifier(_PROBE_MODEL, backend=backend, labels=["r", "g", "b"], preprocess=SPEC, jpeg_draft="yes")


def test_parity_command_checks_draft_mode(tmp_path, contract_model):
    from butterfly_onnx.parity import run_parity

    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(_photo("sklearn_china.jpg"), (1920, 1280), "420"))
    backends = ["python", "rust"] if native_available()[0] else ["python"]
    result = run_parity(contract_model.path, [path], backends=backends, jpeg_draft=True)
    assert result.jpeg_draft and result.backends == backends
    for stage in ("resized", "cropped", "tensor"):
        assert all(value == 0.0 for value in result.max_diff[stage].values()), stage
    assert all(value < 1e-4 for value in result.max_diff["logits"].values())
    assert all(value == 1.0 for value in result.top1_agreement.values())
    assert all(value is None for value in result.max_diff["decoded"].values())


def test_predict_cli_jpeg_draft(contract_model, tmp_path, capsys):
    """``predict --jpeg-draft``: the python CLI on both backends (and the Rust CLI when built)
    prints the probabilities of ``Classifier(..., jpeg_draft=True)``, the same bytes."""
    import json
    import os
    import subprocess

    from butterfly_onnx.cli import main

    path = tmp_path / "photo.jpg"
    path.write_bytes(_jpeg(_photo("sklearn_china.jpg"), (1920, 1280), "420"))
    want = Classifier(contract_model.path, backend="python", jpeg_draft=True).predict(path, top_k=3)[0]
    exact = Classifier(contract_model.path, backend="python").predict(path, top_k=3)[0]
    assert want.top_k != exact.top_k  # the flag is seen: draft mode moves the probabilities
    outputs = []
    for backend in ["python", "rust"] if native_available()[0] else ["python"]:
        code = main(
            ["predict", str(contract_model.path), str(path), "--top-k", "3", "--json", "--jpeg-draft"]
            + ["--backend", backend, "--no-progress"]
        )
        out, _ = capsys.readouterr()
        assert code == 0
        outputs.append(out)
    rust_cli = Path(__file__).parents[1] / "target/release/butterfly-onnx"
    if native_available()[0] and rust_cli.is_file():
        from butterfly_onnx._backends.rust import find_onnxruntime_library

        env = {**os.environ, "ORT_DYLIB_PATH": str(find_onnxruntime_library())}
        args = [
            "predict",
            str(contract_model.path),
            str(path),
            "--top-k",
            "3",
            "--json",
            "--jpeg-draft",
            "--no-progress",
        ]
        done = subprocess.run([str(rust_cli), *args], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    assert all(out == outputs[0] for out in outputs)
    row = json.loads(outputs[0])
    assert [s["label"] for s in row["top_k"]] == [s.label for s in want.top_k]
    assert [s["probability"] for s in row["top_k"]] == pytest.approx([s.probability for s in want.top_k], abs=1e-6)


@pytest.mark.parametrize("spec", [PreprocessSpec(64, 56), SPEC], ids=["64-56", "256-224"])
def test_real_world_jpegs(backend, spec):
    """Every JPEG and MPO file (``FF D8 FF``) of Pillow's own ``Tests/images`` that torchvision
    loads, drafted, equals torchvision on Pillow's drafted image; the others fail on both.
    The corpus is fetched by ``scripts/fetch_test_images.py``
    (``tests/test_real_world_images.py`` insists on it; here it is skipped when absent)."""
    import sys
    import warnings

    from butterfly_onnx.errors import ButterflyError

    scripts = str(Path(__file__).resolve().parents[1] / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    import fetch_test_images

    folder = fetch_test_images.corpus_dir()
    if not fetch_test_images.is_complete(folder):
        pytest.skip(f"the real-world corpus is not fetched ({folder})")
    files = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.read_bytes()[:3] == b"\xff\xd8\xff"]
    assert len(files) >= 40
    classifier = Classifier(
        _PROBE_MODEL, backend=backend, threads=1, labels=["r", "g", "b"], preprocess=spec, jpeg_draft=True
    )
    exact = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in files:
            try:
                with Image.open(path) as im:
                    im.draft("RGB", _request(im.width, im.height, spec))
                    want = ri.torchvision_tensor(im.convert("RGB"), spec)
            except Exception:  # noqa: BLE001 -- torchvision's loader fails: the backend must too
                with pytest.raises(ButterflyError):
                    classifier.preprocess(path)
                continue
            got = classifier.preprocess(path)
            assert got.shape == (1, *want.shape) and np.abs(got[0] - want).max() == 0.0, path.name
            exact += 1
    assert exact >= len(files) - 4
