"""The Classifier on both backends: logits against torch eager, every input kind, bad input
(same exception class on both backends, message naming the input), on_error="skip", model
and contract errors, thread safety, and the torch-free python backend."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx import Classifier, Prediction
from butterfly_onnx.classifier import ImageSkippedWarning
from butterfly_onnx.contract import METADATA_KEY, PreprocessSpec
from butterfly_onnx.errors import (
    BackendUnavailableError,
    ButterflyError,
    ContractError,
    ImageDecodeError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidModelError,
    ModelNotFoundError,
)
from contract_models import BACKENDS, LABELS, require_backend
from corpus import BIG, natural_rgb
from reference_images import raw_png

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")
onnx = pytest.importorskip("onnx")


def torch_reference(module, spec: PreprocessSpec, paths) -> np.ndarray:
    transform = T.Compose(
        [T.Resize(spec.resize_size), T.CenterCrop(spec.crop_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    )
    images = []
    for path in paths:
        with Image.open(path) as img:
            images.append(transform(img.convert("RGB")))
    with torch.no_grad():
        return module(torch.stack(images)).numpy()


@pytest.fixture(scope="module")
def logit_paths(corpus):
    return [path for name, path in corpus.items() if name != BIG]


@pytest.fixture(scope="module")
def torch_logits(contract_model, logit_paths):
    return torch_reference(contract_model.module, contract_model.contract.preprocess, logit_paths)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Small good files plus every kind of bad one."""
    root = tmp_path_factory.mktemp("inputs")
    good = root / "good"
    good.mkdir()
    for i, (h, w) in enumerate([(40, 60), (50, 40), (33, 33)]):  # all under 4000 pixels
        Image.fromarray(natural_rgb(h, w, seed=40 + i)).save(good / f"img{i}.jpg", quality=90)
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("this is a text file, not a JPEG\n")
    buffer = io.BytesIO()
    Image.fromarray(natural_rgb(50, 70, seed=50)).save(buffer, "JPEG", quality=95)
    (bad / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    Image.fromarray(natural_rgb(60, 80, seed=51)).save(bad / "big_4800px.png")
    return {"good": good, "bad": bad, "missing": root / "missing.jpg"}


# --- logits and predictions ---------------------------------------------------------------
def test_logits_match_torch_eager(backend, classifiers, logit_paths, torch_logits):
    clf = classifiers(backend)
    logits = clf.logits(logit_paths)
    assert logits.dtype == np.float32 and logits.shape == (len(logit_paths), len(LABELS))
    diff = float(np.abs(logits - torch_logits).max())
    assert diff <= 1e-4, f"max abs logit diff {diff}"
    assert np.array_equal(logits.argmax(1), torch_logits.argmax(1))
    spread = np.sort(torch_logits, axis=1)
    assert (spread[:, -1] - spread[:, -2]).min() > 1e-3  # top-1 is not a near-tie: the check has teeth


def test_predict_matches_torch_softmax(backend, classifiers, logit_paths, torch_logits):
    predictions = classifiers(backend).predict(logit_paths, top_k=len(LABELS))
    probabilities = torch.softmax(torch.from_numpy(torch_logits).double(), dim=1).numpy()
    for row, prediction in enumerate(predictions):
        assert isinstance(prediction, Prediction) and prediction.ok
        assert prediction.source == str(logit_paths[row])
        indices = [t.index for t in prediction.top_k]
        assert sorted(indices) == list(range(len(LABELS)))
        probs = [t.probability for t in prediction.top_k]
        assert probs == sorted(probs, reverse=True)
        assert all(t.label == LABELS[t.index] for t in prediction.top_k)
        assert prediction.index == int(torch_logits[row].argmax())
        assert prediction.label == LABELS[prediction.index] and prediction.probability == probs[0]
        assert np.allclose([probabilities[row, i] for i in indices], probs, atol=1e-5)
    assert len(classifiers(backend).predict(logit_paths[:2], top_k=3)[0].top_k) == 3


def test_backends_agree_exactly(classifiers, logit_paths):
    from contract_models import require_backend

    require_backend("rust")
    assert np.array_equal(classifiers("python").preprocess(logit_paths), classifiers("rust").preprocess(logit_paths))
    assert np.abs(classifiers("python").logits(logit_paths) - classifiers("rust").logits(logit_paths)).max() <= 1e-5


def test_output_kind_probabilities_is_not_softmaxed_again(contract_model, tmp_path, backend, logit_paths):
    model = onnx.load(str(contract_model.path))
    entry = next(p for p in model.metadata_props if p.key == METADATA_KEY)
    document = json.loads(entry.value)
    document["output"]["kind"] = "probabilities"
    entry.value = json.dumps(document)
    path = tmp_path / "probabilities.onnx"
    onnx.save(model, str(path))
    clf = Classifier(path, backend=backend)
    raw = clf.logits(logit_paths[:3])
    for row, prediction in enumerate(clf.predict(logit_paths[:3], top_k=1)):
        assert prediction.probability == pytest.approx(float(raw[row].max()), abs=0)


# --- inputs ---------------------------------------------------------------------------------
def test_every_input_kind_gives_the_same_rows(backend, classifiers, image_files):
    clf = classifiers(backend)
    files = sorted(image_files["good"].glob("*.jpg"))
    want = clf.preprocess(files)
    path = files[0]
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    array = np.asarray(rgb)
    for kind, value in {
        "Path": path,
        "str": str(path),
        "bytes": path.read_bytes(),
        "PIL": rgb,
        "PIL-L-converted": rgb,  # a PIL image is taken as RGB
        "array": array,
    }.items():
        assert np.array_equal(clf.preprocess(value)[0], want[0]), kind
    assert np.array_equal(clf.preprocess([str(f) for f in files]), want)
    assert np.array_equal(clf.preprocess(image_files["good"]), want)
    assert np.array_equal(clf.preprocess(str(image_files["good"] / "img*.jpg")), want)
    mixed = clf.preprocess([files[0].read_bytes(), np.asarray(Image.open(files[1]).convert("RGB")), files[2]])
    assert np.array_equal(mixed, want)


def test_pil_image_in_another_mode_is_converted(backend, classifiers, image_files):
    clf = classifiers(backend)
    path = sorted(image_files["good"].glob("*.jpg"))[0]
    with Image.open(path) as img:
        grey = img.convert("L")
    want = clf.preprocess(np.asarray(grey.convert("RGB")))
    assert np.array_equal(clf.preprocess(grey), want)


# --- bad input: same class on both backends, message names the input ---------------------
@pytest.mark.parametrize(
    "name, error",
    [
        ("missing", ImageNotFoundError),
        ("empty.jpg", ImageDecodeError),
        ("text.jpg", ImageDecodeError),
        ("truncated.jpg", ImageDecodeError),
        ("big_4800px.png", ImageTooLargeError),
    ],
)
def test_bad_images_raise_clear_errors(backend, classifiers, image_files, name, error):
    clf = classifiers(backend, max_image_pixels=4000)
    path = image_files["missing"] if name == "missing" else image_files["bad"] / name
    for call in (clf.preprocess, clf.logits, clf.predict):
        with pytest.raises(error) as info:
            call(path)
        assert type(info.value) is error
        assert path.name in str(info.value)
        assert isinstance(info.value, (ButterflyError, ValueError))
    if name == "missing":
        assert isinstance(info.value, FileNotFoundError)
    if name != "missing":  # the same bytes in memory fail the same way, named by position
        with pytest.raises(error, match="<bytes #1>"):
            clf.preprocess([image_files["good"] / "img0.jpg", path.read_bytes()])


def test_both_backends_word_bad_images_alike(classifiers, image_files, tmp_path):
    """The python backend words its errors as the Rust core does: the same message where the
    cause is the same (a missing, empty or too large file, whoever refuses it: our limit or Pillow's
    own ceiling), the format a broken file claims to be,
    and the same "cannot decode image" where only the decoder's reason differs."""
    require_backend("rust")
    names = ("empty.jpg", "text.jpg", "truncated.jpg", "big_4800px.png")
    inputs = {name: image_files["bad"] / name for name in names}
    inputs["missing"] = image_files["missing"]
    inputs["jpeg_signature_only.jpg"] = tmp_path / "jpeg_signature_only.jpg"
    inputs["jpeg_signature_only.jpg"].write_bytes(b"\xff\xd8\xff" + b"\xff" * 100)
    # over Pillow's own ceiling at the default limit: Image.open refuses it before our check
    inputs["bomb.png"] = tmp_path / "bomb.png"
    inputs["bomb.png"].write_bytes(raw_png(14_000, 13_000, 8, 0, [bytes(64)]))  # the header, then a few bytes
    for name, path in inputs.items():
        messages = []
        for backend in BACKENDS:
            kwargs = {} if name == "bomb.png" else {"max_image_pixels": 4000}
            with pytest.raises(ImageError) as info:
                classifiers(backend, **kwargs).preprocess(path)
            messages.append(str(info.value))
        if name in ("missing", "empty.jpg", "big_4800px.png", "bomb.png"):
            assert messages[0] == messages[1], messages
        elif name == "jpeg_signature_only.jpg":  # Pillow's JPEG check accepts it, its decoder does not
            assert all(m.startswith(f"{path}: cannot decode image: not a JPEG file Pillow can open") for m in messages)
        else:
            assert all(m.startswith(f"{path}: cannot decode image: ") for m in messages), messages


def test_on_error_skip_returns_the_good_images(backend, classifiers, image_files):
    clf = classifiers(backend, max_image_pixels=4000)
    good = sorted(image_files["good"].glob("*.jpg"))[:2]
    bad = sorted(image_files["bad"].iterdir())
    inputs = [good[0], *bad, image_files["missing"], good[1]]
    with pytest.raises(ImageError):
        clf.preprocess(inputs)
    want = clf.preprocess(good)
    with pytest.warns(ImageSkippedWarning) as caught:
        got = clf.preprocess(inputs, on_error="skip")
    assert np.array_equal(got, want)
    messages = "\n".join(str(w.message) for w in caught)
    for path in [*bad, image_files["missing"]]:
        assert path.name in messages
    with pytest.warns(ImageSkippedWarning):
        logits = clf.logits(inputs, on_error="skip")
    assert np.array_equal(logits, clf.logits(good))
    with pytest.warns(ImageSkippedWarning):
        predictions = clf.predict(inputs, on_error="skip")
    assert len(predictions) == len(inputs)
    assert predictions[0].ok and predictions[-1].ok and predictions[0].source == str(good[0])
    for prediction, path in zip(predictions[1:-1], [*bad, image_files["missing"]], strict=False):
        assert not prediction.ok and prediction.top_k == () and prediction.label is None
        assert isinstance(prediction.error, ImageError) and path.name in str(prediction.error)


def test_on_error_default_from_constructor(backend, contract_model, image_files):
    clf = Classifier(contract_model.path, backend=backend, on_error="skip")
    with pytest.warns(ImageSkippedWarning, match="text.jpg"):
        assert clf.logits([image_files["bad"] / "text.jpg"]).shape == (0, len(LABELS))
    with pytest.raises(ImageDecodeError):
        clf.logits([image_files["bad"] / "text.jpg"], on_error="raise")
    with pytest.raises(InvalidArgumentError, match="on_error"):
        Classifier(contract_model.path, backend=backend, on_error="ignore")


# --- models and contracts ---------------------------------------------------------------------
def _rewrite(source: Path, target: Path, edit) -> Path:
    model = onnx.load(str(source))
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    document = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    document = edit(document)
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if document is not None:
        entry = model.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(document)
    onnx.save(model, str(target))
    return target


def test_model_errors(backend, tmp_path):
    missing = tmp_path / "nope.onnx"
    with pytest.raises(ModelNotFoundError, match="nope.onnx"):
        Classifier(missing, backend=backend)
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("definitely not a protobuf\n" * 10)
    with pytest.raises(InvalidModelError, match="notes.onnx"):
        Classifier(not_onnx, backend=backend)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(InvalidModelError, match="empty.onnx"):
        Classifier(empty, backend=backend)


def test_model_without_contract(backend, contract_model, tmp_path, logit_paths, torch_logits):
    path = _rewrite(contract_model.path, tmp_path / "bare.onnx", lambda doc: None)
    with pytest.raises(ContractError, match="bare.onnx"):
        Classifier(path, backend=backend)
    with pytest.raises(ContractError):
        Classifier(path, backend=backend, labels=LABELS)  # preprocess still missing
    clf = Classifier(path, backend=backend, labels=LABELS, preprocess=contract_model.contract.preprocess)
    assert clf.labels == LABELS and clf.contract.input_name == "input" and clf.contract.output_name == "logits"
    assert np.abs(clf.logits(logit_paths) - torch_logits).max() <= 1e-4
    # the preprocessing may also be given as a torchvision preset
    spec = contract_model.contract.preprocess
    preset = pytest.importorskip("torchvision.transforms._presets").ImageClassification(
        crop_size=224, resize_size=256, mean=spec.mean, std=spec.std
    )
    clf = Classifier(path, backend=backend, labels=LABELS, preprocess=preset)
    assert clf.contract.preprocess == contract_model.contract.preprocess


def test_unknown_schema_version(backend, contract_model, tmp_path):
    path = _rewrite(contract_model.path, tmp_path / "future.onnx", lambda doc: {**doc, "schema_version": 99})
    with pytest.raises(ContractError, match="schema_version") as info:
        Classifier(path, backend=backend)
    assert "future.onnx" in str(info.value)
    clf = Classifier(path, backend=backend, labels=LABELS, preprocess=PreprocessSpec(256, 224))
    assert clf.num_classes == len(LABELS)


def test_contract_overrides_are_checked(backend, contract_model):
    with pytest.raises(ContractError, match="3 labels"):
        Classifier(contract_model.path, backend=backend, labels=["a", "b", "c"])
    renamed = [f"class {i}" for i in range(len(LABELS))]
    clf = Classifier(contract_model.path, backend=backend, labels=renamed, preprocess=PreprocessSpec(160, 128))
    assert clf.labels == tuple(renamed) and clf.input_size == (3, 128, 128)
    assert clf.preprocess(natural_rgb(50, 60)).shape == (1, 3, 128, 128)


@pytest.fixture(scope="module")
def fixed_shape_model(contract_model, tmp_path_factory):
    """The same network exported with a fixed input of (2, 3, 224, 224)."""
    from contract_models import export_contract_model

    path = tmp_path_factory.mktemp("fixed") / "fixed_2x3x224x224.onnx"
    export_contract_model(
        contract_model.module, path, contract_model.contract.preprocess, dynamic_hw=False, dynamic_batch=False, batch=2
    )
    return path


def test_fixed_batch_model_is_fed_in_chunks(backend, fixed_shape_model, logit_paths, torch_logits):
    clf = Classifier(fixed_shape_model, backend=backend)
    logits = clf.logits(logit_paths[:5])  # 2 + 2 + 1: the last chunk is padded
    assert logits.shape == (5, len(LABELS))
    assert np.abs(logits - torch_logits[:5]).max() <= 1e-4
    assert clf.model_batch == 2  # a fixed batch wins over the measured rule, on both backends
    assert np.array_equal(clf.logits(logit_paths[:5], batch_size=3), logits)


def test_one_model_batch_rule_on_both_backends(backend, classifiers):
    """The rule (docs/inference.md, 'Streaming'; the Rust core's classifier::pipeline): the
    smallest power of two b with b * t1 >= RUN_TARGET (4 ms), at most MAX_MODEL_BATCH (32)."""
    from butterfly_onnx._backends import MAX_MODEL_BATCH, RUN_TARGET, THREAD_RULE_FILE, model_batch_for

    rule = json.loads(THREAD_RULE_FILE.read_text())  # the one place both languages read
    assert (RUN_TARGET, MAX_MODEL_BATCH) == (rule["run_target_seconds"], rule["max_model_batch"])

    def smallest_power_of_two(t1: float) -> int:
        b = 1
        while b * t1 < RUN_TARGET and b < MAX_MODEL_BATCH:
            b *= 2
        return b

    times = (0.0057, 0.004, 0.0039, 0.0015, 0.001, 0.0004, 1e-6)
    assert [model_batch_for(t) for t in times] == [smallest_power_of_two(t) for t in times]
    assert model_batch_for(RUN_TARGET) == 1 and model_batch_for(1e-9) == MAX_MODEL_BATCH
    clf = classifiers(backend)
    batch = clf.model_batch
    assert batch in (1, 2, 4, 8, 16, 32) and clf.model_batch == batch  # measured once


def test_fixed_input_size_must_match_the_crop(backend, fixed_shape_model):
    with pytest.raises(ContractError, match="fixed_2x3x224x224.onnx"):
        Classifier(fixed_shape_model, backend=backend, preprocess=PreprocessSpec(160, 128))


def test_unknown_backend(contract_model):
    with pytest.raises(BackendUnavailableError, match="cobol"):
        Classifier(contract_model.path, backend="cobol")


def test_wrong_arguments_raise_the_packages_own_classes(contract_model, image_files):
    """Every error raised on purpose is a ButterflyError (review: no plain ValueError /
    TypeError); a wrong type is also a TypeError, an out-of-range value also a ValueError."""
    from butterfly_onnx._backends.python import Backend
    from butterfly_onnx.errors import InvalidArgumentTypeError

    with pytest.raises(InvalidArgumentError, match="threads"):
        Backend(contract_model.path, threads=0, labels=None, preprocess=None, max_image_pixels=None)
    for call, needle in (
        (lambda: Classifier(123), "model must be"),
        (lambda: Classifier(contract_model.path, labels="abc"), "labels"),
        (lambda: Classifier(contract_model.path).predict(3.5), "image #0"),
    ):
        with pytest.raises(InvalidArgumentTypeError, match=needle) as caught:
            call()
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, ButterflyError)


def test_properties_and_repr(backend, classifiers, contract_model):
    clf = classifiers(backend)
    assert clf.backend == backend and clf.contract == contract_model.contract and clf.labels == LABELS
    text = repr(clf)
    for part in (backend, contract_model.path.name, "classes=10", "3x224x224"):
        assert part in text


# --- threads ------------------------------------------------------------------------------------
def test_threads_setting_does_not_change_results(backend, contract_model, logit_paths):
    one = Classifier(contract_model.path, backend=backend, threads=1)
    two = Classifier(contract_model.path, backend=backend, threads=2)
    assert one.threads == 1 and two.threads == 2
    assert np.array_equal(one.preprocess(logit_paths), two.preprocess(logit_paths))
    assert np.abs(one.logits(logit_paths) - two.logits(logit_paths)).max() <= 1e-5


def test_one_classifier_from_four_threads(backend, classifiers, corpus):
    clf = classifiers(backend)
    names = [n for n in corpus if n != BIG][:16]
    jobs = [[corpus[n] for n in names[i::4]] for i in range(4)]
    serial = [(clf.preprocess(job), clf.logits(job)) for job in jobs]
    results: list = [None] * 4
    errors: list = []

    def work(i: int) -> None:
        try:
            for _ in range(2):
                results[i] = (clf.preprocess(jobs[i]), clf.logits(jobs[i]))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    for (pre_s, log_s), (pre_t, log_t) in zip(serial, results, strict=False):
        assert np.array_equal(pre_s, pre_t)
        assert np.array_equal(log_s, log_t)


# --- torch-free -----------------------------------------------------------------------------------
def test_inference_does_not_import_torch(backend, contract_model, image_files):
    code = (
        "import sys, butterfly_onnx\n"
        f"clf = butterfly_onnx.Classifier({str(contract_model.path)!r}, backend={backend!r})\n"
        f"print(clf.predict({str(image_files['good'])!r})[0].label)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision'))\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in LABELS


def test_empty_input_list(backend, classifiers):
    clf = classifiers(backend)
    assert clf.preprocess([]).shape == (0, 3, 224, 224)
    assert clf.logits([]).shape == (0, len(LABELS))
    assert clf.predict([]) == []
    with pytest.raises(InvalidArgumentError, match="top_k"):
        clf.predict([], top_k=0)


# --- streaming ------------------------------------------------------------------------------------
_PEAK_RSS = """
import json, sys
from butterfly_onnx import Classifier
model, backend, folder = sys.argv[1:4]
clf = Classifier(model, backend=backend, threads=2)
predictions = clf.predict(folder, progress=False)  # the plain way: no batch size given
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"peak_mb": peak_kb / 1024,
                  "rows": [[p.source.rsplit("/", 1)[-1], p.index, p.probability] for p in predictions]}))
"""


@pytest.fixture(scope="module")
def jpeg_folders(tmp_path_factory, corpus):
    """300 distinct 224x224 JPEGs re-encoded from real photos (random crops), and a folder of
    1,200 whose file k holds the bytes of file k % 300 (so its answers are known)."""
    photos = [
        Image.open(corpus[name]).convert("RGB")
        for name in sorted(corpus)
        if name.startswith(("skimage_", "sklearn_", "matplotlib_grace"))
    ]
    rng = np.random.default_rng(0)
    small, large = tmp_path_factory.mktemp("jpeg300"), tmp_path_factory.mktemp("jpeg1200")
    blobs = []
    for i in range(300):
        photo = photos[i % len(photos)]
        side = int(rng.integers(min(photo.size) // 2, min(photo.size) + 1))
        x, y = int(rng.integers(0, photo.width - side + 1)), int(rng.integers(0, photo.height - side + 1))
        out = io.BytesIO()
        photo.crop((x, y, x + side, y + side)).resize((224, 224), Image.BILINEAR).save(out, "JPEG", quality=90)
        blobs.append(out.getvalue())
        (small / f"img_{i:04d}.jpg").write_bytes(blobs[-1])
    for i in range(1200):
        (large / f"img_{i:04d}.jpg").write_bytes(blobs[i % 300])
    return small, large


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="peak RSS is read from /proc (Linux)")
def test_predict_a_folder_in_flat_memory(backend, contract_model, classifiers, jpeg_folders):
    """issue 6: peak RSS <= 1,000 MB and at most 100 MB more for 1,200 images than for 300,
    with the same answers as predicting 50 files at a time."""
    small, large = jpeg_folders
    runs = {}
    for folder in (small, large):
        done = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS, str(contract_model.path), backend, str(folder)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        runs[folder] = json.loads(done.stdout)
    peak_small, peak_large = runs[small]["peak_mb"], runs[large]["peak_mb"]
    print(f"{backend}: peak RSS {peak_small:.0f} MB for 300 images, {peak_large:.0f} MB for 1,200")
    assert peak_large <= 1000 and peak_small <= 1000
    assert peak_large - peak_small <= 100

    files = sorted(small.iterdir())
    clf = classifiers(backend, threads=2)
    reference = [p for start in range(0, 300, 50) for p in clf.predict(files[start : start + 50], batch_size=50)]
    assert [row[0] for row in runs[small]["rows"]] == [f.name for f in files]
    for row, expected in zip(runs[small]["rows"], reference, strict=False):
        assert row[1] == expected.index
        assert row[2] == pytest.approx(expected.probability, abs=1e-6)
    # file k of the large folder is file k % 300 of the small one
    assert [row[1:] for row in runs[large]["rows"]] == [runs[small]["rows"][k % 300][1:] for k in range(1200)]


def test_iter_predict_streams_in_input_order_with_failures_in_place(backend, classifiers, image_files, tmp_path):
    clf = classifiers(backend)
    good = sorted(image_files["good"].glob("*.jpg"))[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [good, broken, good, tmp_path / "missing.png", good]
    reference = clf.predict(good, top_k=3)[0]
    for batch_size in (1, 2, 32):
        stream = clf.iter_predict(inputs, top_k=3, batch_size=batch_size, on_error="skip")
        assert not isinstance(stream, list)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ImageSkippedWarning)
            got = list(stream)
        assert [p.source for p in got] == [str(p) for p in inputs]
        assert [p.ok for p in got] == [True, False, True, False, True]
        assert isinstance(got[1].error, ImageDecodeError) and isinstance(got[3].error, ImageNotFoundError)
        for p in (got[0], got[2], got[4]):
            assert p.top_k == reference.top_k
    # on_error="raise": the predictions before the bad image come out, then its error,
    # whatever the batch size (the bad image's chunk is not dropped as a whole)
    for batch_size in (1, 2, 32):
        stream = clf.iter_predict([good, good, broken, good], batch_size=batch_size)
        assert next(stream).ok and next(stream).ok
        with pytest.raises(ImageDecodeError, match="broken.jpg"):
            next(stream)
    with pytest.raises(ImageDecodeError, match="broken.jpg"):
        clf.predict(inputs, batch_size=2)


def test_logits_and_predict_do_not_depend_on_the_batch_size(backend, classifiers, logit_paths):
    clf = classifiers(backend)
    whole = clf._backend.logits([(str(p), p) for p in logit_paths])[0]  # one backend call, no chunks
    for batch_size in (1, 3, len(logit_paths) + 5):
        assert np.array_equal(clf.logits(logit_paths, batch_size=batch_size), whole)
    assert clf.predict(logit_paths, batch_size=1) == clf.predict(logit_paths)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="batch_size"):
            clf.predict(logit_paths, batch_size=bad)


def test_model_given_as_bytes(backend, contract_model, classifiers, logit_paths):
    from_bytes = Classifier(contract_model.path.read_bytes(), backend=backend)
    assert from_bytes.model_path is None and "<model bytes>" in repr(from_bytes)
    assert from_bytes.contract == contract_model.contract
    assert np.array_equal(from_bytes.logits(logit_paths), classifiers(backend).logits(logit_paths))
    with pytest.raises(InvalidModelError, match="model bytes"):
        Classifier(b"not an onnx model", backend=backend)


def test_prediction_to_dict(backend, classifiers, image_files):
    from butterfly_onnx import ClassScore

    clf = classifiers(backend)
    prediction = clf.predict(sorted(image_files["good"].glob("*.jpg"))[0], top_k=2)[0]
    assert isinstance(prediction.top_k[0], ClassScore)
    as_dict = prediction.to_dict()
    assert as_dict == json.loads(json.dumps(as_dict))
    assert as_dict["label"] == prediction.label and as_dict["error"] is None
    assert [t["label"] for t in as_dict["top_k"]] == [t.label for t in prediction.top_k]


def test_progress_bar_on_stderr_only_when_asked(classifiers, image_files, capsys):
    clf = classifiers("python")
    clf.predict(image_files["good"], progress=True)
    assert "predict" in capsys.readouterr().err  # tqdm's bar, on stderr
    clf.predict(image_files["good"], progress=False)
    clf.predict(image_files["good"])  # None: only when stderr is a terminal (it is not here)
    assert capsys.readouterr().err == ""


def test_a_truncated_lazy_pil_image_is_that_images_decode_error(backend, classifiers, image_files):
    """Image.open is lazy: a truncated file fails only when its pixels are read.  That is the
    item's ImageDecodeError (skipped in place with on_error="skip"), never a raw OSError."""
    clf = classifiers(backend)
    good = sorted(image_files["good"].glob("*.jpg"))[0]
    truncated = image_files["bad"] / "truncated.jpg"
    for mode in ("RGB", "L"):
        with Image.open(truncated) as lazy:
            if mode == "L":
                lazy.draft("L", lazy.size)
            assert lazy.mode == mode
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImageSkippedWarning)
                got = clf.predict([good, lazy, good], on_error="skip", batch_size=2)
            assert [p.ok for p in got] == [True, False, True]
            assert isinstance(got[1].error, ImageDecodeError) and got[1].error.source == got[1].source
        with Image.open(truncated) as lazy, pytest.raises(ImageDecodeError, match="PIL image #0"):
            clf.logits([lazy])
        with Image.open(truncated) as lazy:
            assert len(clf.preprocess([lazy, good], on_error="skip")) == 1


def test_pil_inputs_are_converted_a_chunk_at_a_time(backend, classifiers):
    """Memory for in-memory PIL inputs does not grow with their number: each image is converted
    when its chunk is read (tracemalloc sees NumPy's arrays, not Pillow's own pixels)."""
    import tracemalloc

    clf = classifiers(backend)
    image = Image.fromarray(natural_rgb(400, 500, seed=7))  # 600 kB as an RGB array
    images = [image.copy() for _ in range(48)]  # 29 MB if all were converted up front
    tracemalloc.start()
    try:
        clf.logits(images[:2], batch_size=2)
        tracemalloc.reset_peak()
        clf.logits(images, batch_size=2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 * 600_000, f"peak {peak / 1e6:.1f} MB for 48 PIL images at batch_size=2"


# -- non-finite model outputs ------------------------------------------------------------
@pytest.fixture(scope="module")
def non_finite_model(tmp_path_factory):
    """A model whose output is infinite/NaN for a black image (1 / channel mean, no
    normalisation: the mean is 0) and finite for any other, and three images."""
    from butterfly_onnx.errors import NonFiniteOutputError  # noqa: F401  (public name)
    from contract_models import tiny_model

    root = tmp_path_factory.mktemp("non_finite")
    spec = PreprocessSpec(40, 32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    model = tiny_model(root / "model.onnx", spec=spec, pooled_op="Reciprocal")
    for name, colour in (("white", (255, 255, 255)), ("black", (0, 0, 0)), ("violet", (128, 64, 200))):
        Image.new("RGB", (48, 40), colour).save(root / f"{name}.png")
    return model, [root / "white.png", root / "black.png", root / "violet.png"]


def test_non_finite_logits_are_a_per_image_error_never_a_prediction(backend, non_finite_model):
    """ONNX Runtime itself gives the black image a non-finite row; both backends make it that
    image's NonFiniteOutputError, which follows on_error like a bad image."""
    import onnxruntime as ort

    from butterfly_onnx.errors import NonFiniteOutputError

    model, images = non_finite_model
    classifier = Classifier(model, backend=backend)
    raw = ort.InferenceSession(str(model)).run(None, {"input": classifier.preprocess(images)})[0]
    assert [bool(np.isfinite(row).all()) for row in raw] == [True, False, True]

    with pytest.warns(ImageSkippedWarning, match="black.png: the model's output is not finite"):
        predictions = classifier.predict(images, top_k=2, on_error="skip")
    assert [p.ok for p in predictions] == [True, False, True]
    assert isinstance(predictions[1].error, NonFiniteOutputError) and predictions[1].error.source == str(images[1])
    assert all(np.isfinite(c.probability) for p in predictions for c in p.top_k)
    with pytest.warns(ImageSkippedWarning):
        logits = classifier.logits(images, on_error="skip", batch_size=1)
    np.testing.assert_allclose(logits, raw[[0, 2]], rtol=1e-6)
    with pytest.raises(NonFiniteOutputError, match="black.png"):
        classifier.predict(images)
    # Out of a whole chunk too (the error is in place whatever the chunk size).
    with pytest.warns(ImageSkippedWarning):
        assert [p.ok for p in classifier.predict(images * 3, batch_size=4, on_error="skip")] == [True, False, True] * 3


def test_non_finite_logits_in_both_clis(non_finite_model, capsys):
    """Both commands: the black image is one error line naming it, the others are predicted,
    exit status 1 (some inputs failed); the JSON Lines output holds no NaN."""
    from butterfly_onnx.cli import main
    from contract_models import run_rust_cli

    model, images = non_finite_model
    code = main(["predict", str(model), *map(str, images), "--json", "--no-progress", "--backend", "python"])
    out, err = capsys.readouterr()
    assert code == 1 and "black.png: the model's output is not finite" in err, err

    def bare_constant(name):
        raise AssertionError(f"bare {name} in the JSON Lines output")

    rows = [json.loads(line, parse_constant=bare_constant) for line in out.splitlines()]
    assert [row["source"] for row in rows if not row.get("error")] == [str(images[0]), str(images[2])]
    code, stdout, stderr = run_rust_cli("predict", model, *images, "--no-progress")
    assert code == 1 and "black.png: the model's output is not finite" in stderr, stderr
    assert [line.split()[0] for line in stdout.decode().splitlines()] == [str(images[0]), str(images[2])]


# -- file names that are not UTF-8 -------------------------------------------------------
def test_a_file_name_that_is_not_utf8_is_predicted_like_any_other(backend, non_finite_model, tmp_path):
    """Linux allows any bytes but '/' and NUL in a name.  Both backends predict such a file (by
    path, in a folder, and when it fails) with the source Python's os.fsdecode gives, which
    os.fsencode turns back into the file's bytes."""
    model, images = non_finite_model
    raw_name = b"caf\xe9 \xff.png"  # Latin-1, not UTF-8
    folder = tmp_path / "odd"
    folder.mkdir()
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), raw_name)))
    path.write_bytes(images[0].read_bytes())
    bad = Path(os.fsdecode(os.path.join(os.fsencode(folder), b"\xfe broken.png")))
    bad.write_bytes(b"not an image")
    classifier = Classifier(model, backend=backend)
    reference = classifier.predict(images[0], top_k=3)[0]
    for given in ([path, bad], [str(path), str(bad)], folder):
        with pytest.warns(ImageSkippedWarning, match="broken.png"):
            predictions = classifier.predict(given, top_k=3, on_error="skip")
        by_name = {os.fsencode(p.source): p for p in predictions}
        good = by_name[os.fsencode(path)]
        assert good.ok and good.top_k == reference.top_k
        failed = by_name[os.fsencode(bad)]
        assert isinstance(failed.error, ImageDecodeError)
        assert failed.error.source == str(bad) and str(bad) in str(failed.error)


# --- the near-tie fallback: an int8 variant with its fp32 model answering the close calls -----
def _recorded_margin(path: Path) -> float:
    """The fallback_margin in the file's contract, read with onnx (not through the Classifier)."""
    model = onnx.load(str(path), load_external_data=False)
    document = json.loads(next(p.value for p in model.metadata_props if p.key == METADATA_KEY))
    return float(document["provenance"]["fallback_margin"])


def test_near_ties_is_the_rust_cores_rule():
    """The rows whose best two are closer than the margin (classifier::near_ties has the same
    matrix); rows that are not finite are never picked, and say nothing about it."""
    from butterfly_onnx.classifier import near_ties

    nan, inf = float("nan"), float("inf")
    out = np.array(
        [[0.0, 1.0, 0.95], [2.0, 0.0, 1.0], [3.0, 3.0, -1.0], [nan, 0.0, 0.01], [0.5, 0.2, 0.7], [inf, inf, 0.0]],
        dtype=np.float32,
    )
    assert list(near_ties(out, 0.1)) == [0, 2]
    assert list(near_ties(out, 0.2000001)) == [0, 2, 4]
    assert list(near_ties(out, 0.0)) == []
    assert list(near_ties(out, 1e9)) == [0, 1, 2, 4]
    assert list(near_ties(np.array([[1.0], [2.0]], dtype=np.float32), 1e9)) == []


def _close_calls(out: np.ndarray, margin: float) -> np.ndarray:
    best_two = np.sort(out, axis=1)[:, -2:]
    return best_two[:, 1] - best_two[:, 0] < margin


def test_near_ties_are_answered_by_the_fallback_model(backend, contract_model, int8_variant, logit_paths):
    fp32 = Classifier(contract_model.path, backend=backend).logits(logit_paths)
    int8 = Classifier(int8_variant, backend=backend).logits(logit_paths)
    clf = Classifier(int8_variant, backend=backend, fallback_model=contract_model.path)
    margin = _recorded_margin(int8_variant)
    assert clf.fallback_margin == margin > 0 and f"fallback_margin={margin:g}" in repr(clf)
    close = _close_calls(int8, margin)
    assert 0 < close.sum() < len(close)  # both kinds of rows are exercised

    got = clf.logits(logit_paths, batch_size=5)  # several chunks
    assert np.array_equal(got[~close], int8[~close])
    assert np.array_equal(got[close], fp32[close])
    assert clf.fallbacks == close.sum()
    one_shot, _ = clf._backend.logits([(str(p), p) for p in logit_paths])  # the backend's one call too
    assert np.array_equal(one_shot, got) and clf.fallbacks == 2 * close.sum()
    # the answers: fp32's wherever int8's two best are close, so at least as many as int8's agree
    agree = (got.argmax(1) == fp32.argmax(1)).sum()
    assert agree >= (int8.argmax(1) == fp32.argmax(1)).sum()
    assert [p.index for p in clf.predict(logit_paths)] == list(got.argmax(1))

    # the margin decides: 0 changes nothing, one above every gap makes it fp32 throughout
    none = Classifier(int8_variant, backend=backend, fallback_model=contract_model.path, fallback_margin=np.float32(0))
    assert np.array_equal(none.logits(logit_paths), int8) and none.fallbacks == 0
    every = Classifier(int8_variant, backend=backend, fallback_model=contract_model.path, fallback_margin=1e9)
    assert np.array_equal(every.logits(logit_paths), fp32) and every.fallbacks == len(logit_paths)


def test_the_fallback_keeps_failed_images_in_place(backend, contract_model, int8_variant, logit_paths, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    images = [*logit_paths[:7], broken, *logit_paths[7:]]
    fp32 = Classifier(contract_model.path, backend=backend).logits(logit_paths)
    int8 = Classifier(int8_variant, backend=backend).logits(logit_paths)
    close = _close_calls(int8, _recorded_margin(int8_variant))
    expected = np.where(close[:, None], fp32, int8).argmax(1)
    clf = Classifier(int8_variant, backend=backend, fallback_model=contract_model.path)
    with pytest.warns(ImageSkippedWarning, match="broken.jpg"):
        predictions = clf.predict(images, batch_size=4, on_error="skip")
    assert [p.source for p in predictions] == [str(p) for p in images]
    assert predictions[7].error is not None and predictions[7].index is None
    assert [p.index for p in predictions[:7] + predictions[8:]] == list(expected)


def test_fallback_arguments_are_checked(backend, contract_model, int8_variant, tmp_path):
    with pytest.raises(InvalidArgumentError, match="fallback_margin needs fallback_model"):
        Classifier(int8_variant, backend=backend, fallback_margin=0.5)
    with pytest.raises(InvalidArgumentError, match=r"efficientnet_lite0_10.onnx: records no fallback_margin"):
        # an fp32 file records none
        Classifier(contract_model.path, backend=backend, fallback_model=contract_model.path)
    for bad in (-0.1, float("nan"), float("inf"), "0.5", True):
        with pytest.raises(InvalidArgumentError, match="fallback_margin must be a finite number >= 0"):
            Classifier(int8_variant, backend=backend, fallback_model=contract_model.path, fallback_margin=bad)
    with pytest.raises(ModelNotFoundError, match="nope.onnx"):
        Classifier(int8_variant, backend=backend, fallback_model=tmp_path / "nope.onnx")
    with pytest.raises(InvalidArgumentTypeError, match="fallback_model must be a path"):
        Classifier(int8_variant, backend=backend, fallback_model=3)

    def relabel(document):
        document["labels"] = [f"other_{i}" for i in range(len(document["labels"]))]
        return document

    other = _rewrite(contract_model.path, tmp_path / "other.onnx", relabel)
    with pytest.raises(ContractError, match="other.onnx: its labels differ from .*model.int8.onnx's"):
        Classifier(int8_variant, backend=backend, fallback_model=other)
    # explicit label overrides apply to both models alike, so they still answer the same question
    assert Classifier(int8_variant, backend=backend, fallback_model=other, labels=LABELS).labels == LABELS
