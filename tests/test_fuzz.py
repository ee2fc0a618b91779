"""The differential image fuzzer (scripts/fuzz_images.py) as a test, and its regression corpus.

* A short seeded campaign: real photos in every promised format, mutated, each case through
  Pillow + torchvision and both backends in worker processes; zero crashes, hangs, silent
  mismatches, tensors where Pillow raised, errors outside the hierarchy, error-class and
  top-1 disagreements between the backends, and refusals of every kind (unsupported layouts
  included) under 0.5% of the cases Pillow decodes.
* tests/fixtures/regressions/: files the fuzzer found defects with (kept small), checked
  here against Pillow + torchvision on both backends and by the Rust crate's
  decode_pillow.rs against Pillow's pixels.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from contract_models import require_backend

ROOT = Path(__file__).resolve().parents[1]
REGRESSIONS = ROOT / "tests" / "fixtures" / "regressions"


def _fuzzer():
    # On sys.path (not loaded from a file spec) so that the spawned workers can import it.
    scripts = str(ROOT / "scripts")
    if scripts not in sys.path:
        sys.path.insert(0, scripts)
    return importlib.import_module("fuzz_images")


@pytest.fixture(scope="module")
def fuzz():
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    pytest.importorskip("onnx")
    require_backend("rust")
    return _fuzzer()


def test_short_seeded_campaign_finds_no_defect(fuzz, tmp_path):
    counts = fuzz.run_campaign(seed=20261201, cases=4000, out=tmp_path / "found")
    report = json.dumps(counts.to_dict(), indent=1)
    assert counts.cases == 4000, report
    assert counts.pillow_decodes > 300 and counts.pillow_raises > 300, report  # both verdicts exercised
    assert set(counts.by_format) == set(fuzz.FORMATS), report
    for backend, defects in counts.per_backend.items():
        for kind, n in defects.items():
            if not kind.startswith("refusal"):
                assert n == 0, f"{backend}: {n} {kind}\n{report}\ncases kept in {tmp_path / 'found'}"
        # Every refusal counts, those of layouts documented as unsupported included.
        assert counts.all_refusal_rate(backend) < fuzz.REFUSAL_LIMIT, f"{backend} refusals\n{report}"
    assert counts.per_backend["python"]["refusal_unsupported"] == 0, report
    assert fuzz.verdict(counts) == [], report
    assert counts.error_class_disagreement == 0, report
    assert counts.class_disagreement == 0, report


def test_parallel_jobs_run_the_same_cases_and_merge_the_counts(fuzz, tmp_path):
    one = fuzz.run_campaign(seed=31, cases=300, out=tmp_path / "one", backends=("rust",), keep_all=True)
    two = fuzz.run_campaign(seed=31, cases=300, out=tmp_path / "two", backends=("rust",), keep_all=True, jobs=2)
    assert two.cases == 300
    assert two.to_dict() == one.to_dict()
    assert sorted((tmp_path / "one" / "cases.jsonl").read_text().splitlines()) == sorted(
        (tmp_path / "two" / "cases.jsonl").read_text().splitlines()
    )


def test_verdict_counts_every_refusal_against_the_limit(fuzz):
    counts = fuzz.Counts(pillow_decodes=1000)
    assert fuzz.verdict(counts) == []
    counts.per_backend["rust"]["refusal_unsupported"] = 3
    counts.per_backend["rust"]["refusal"] = 2
    assert any("refusals 0.50 %" in v for v in fuzz.verdict(counts)), fuzz.verdict(counts)
    counts.per_backend["rust"]["refusal_unsupported"] = 2
    assert fuzz.verdict(counts) == []
    counts.error_class_disagreement = 1
    assert fuzz.verdict(counts) == ["1 error-class disagreements"]


def test_mutations_are_deterministic_and_change_the_file(fuzz):
    import random

    seeds = fuzz.make_seeds(random.Random(7))
    assert set(seeds) == set(fuzz.FORMATS)
    base = seeds["png"][0][1]
    a = fuzz.mutate("png", base, [base], random.Random(3))
    b = fuzz.mutate("png", base, [base], random.Random(3))
    assert a == b
    changed = sum(fuzz.mutate("png", base, [base], random.Random(i))[0] != base for i in range(50))
    assert changed >= 45


def test_a_crashing_or_hanging_worker_is_counted_and_replaced(fuzz, tmp_path):
    model = str(fuzz.build_model(tmp_path / "m.onnx"))
    worker = fuzz.Worker("python", model)
    try:
        worker.proc.kill()  # dies between two cases: the next case reports a crash
        assert worker.run(b"x", timeout=30).get("crash")
        good = worker.run((REGRESSIONS / "bmp_rgb555.bmp").read_bytes(), timeout=60)
        assert good["ok"], good  # a fresh worker took over
    finally:
        worker.close()


def _regression_files() -> list[dict]:
    return json.loads((REGRESSIONS / "index.json").read_text())


def _reference(data: bytes):
    import torch
    from PIL import Image
    from torchvision import transforms as T

    fuzz = sys.modules.get("fuzz_images") or _fuzzer()
    torch.set_num_threads(1)
    transform = T.Compose(
        [T.Resize(fuzz.RESIZE), T.CenterCrop(fuzz.CROP), T.ToTensor(), T.Normalize(fuzz.MEAN, fuzz.STD)]
    )
    try:
        img = Image.open(io.BytesIO(data)).convert("RGB")
    except Exception as exc:  # noqa: BLE001 -- Pillow's verdict
        return exc
    return transform(img).numpy()


@pytest.fixture(scope="module")
def regression_classifiers(fuzz, tmp_path_factory):
    from butterfly_onnx import Classifier

    model = fuzz.build_model(tmp_path_factory.mktemp("fuzz_model") / "fuzz.onnx")
    return {b: Classifier(model, backend=b, threads=1) for b in ("python", "rust")}


def test_regression_index_lists_every_file():
    listed = {e["file"] for e in _regression_files()}
    present = {p.name for p in REGRESSIONS.iterdir() if p.name != "index.json"}
    assert listed == present
    assert all(p.stat().st_size <= 16384 for p in REGRESSIONS.iterdir() if p.name != "index.json")


def _regression_params():
    for entry in _regression_files():
        marks = ()
        if entry.get("known_mismatch"):  # an open defect, documented in docs/reliability.md
            marks = (pytest.mark.xfail(reason=entry["known_mismatch"], strict=True),)
        yield pytest.param(entry, id=entry["file"], marks=marks)


@pytest.mark.parametrize("entry", list(_regression_params()))
def test_regression_corpus_matches_pillow_on_both_backends(entry, regression_classifiers):
    from butterfly_onnx.errors import ImageDecodeError, ImageError

    data = (REGRESSIONS / entry["file"]).read_bytes()
    expected = _reference(data)
    results = {}
    for backend, clf in regression_classifiers.items():
        try:
            results[backend] = np.asarray(clf.preprocess([data]))[0]
        except ImageError as exc:
            results[backend] = exc
    if isinstance(expected, Exception):
        for backend, got in results.items():
            assert isinstance(got, ImageError), f"{backend} decoded a file Pillow rejects ({expected!r})"
        assert type(results["python"]) is type(results["rust"]), results
        return
    assert isinstance(results["python"], np.ndarray), results["python"]
    np.testing.assert_array_equal(results["python"], expected)
    got = results["rust"]
    if isinstance(got, Exception):
        # Only layouts documented as refused (docs/reliability.md) may be refused, and only
        # with the project's decode error.
        assert entry.get("rust_may_refuse") and isinstance(got, ImageDecodeError), f"rust refuses: {got}"
    else:
        assert got.shape == expected.shape and np.array_equal(got, expected), "rust tensor differs from torchvision's"
