"""butterfly_onnx.ray on a local Ray cluster of 2 CPUs (one per module, shut down at the end).

Every row of ``predict_dataset`` must equal ``Classifier.predict`` on the same file — label,
index, probability and the whole top-k, exactly — for both backends and both kinds of
source (paths listed by the module and read by the actors; a Ray Dataset of
``read_binary_files(..., include_paths=True)``); bad images become ``error`` rows; a worker
that dies mid-batch is restarted by Ray and its batch retried, with no row lost or doubled.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import warnings
from argparse import Namespace
from collections import Counter
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from butterfly_onnx.errors import InvalidArgumentError  # noqa: E402
from butterfly_onnx.ray import (  # noqa: E402
    COLUMNS,
    Predictor,
    predict_cli,
    predict_dataset,
    write_csv,
    write_parquet,
    write_submission,
)

pytestmark = pytest.mark.timeout(600)  # a starved Ray job hangs; fail instead

TOP_K = 3
#: Left out of the corpus here (decoding them dominates; test_classifier covers them).
SLOW = ("jpeg_6000x4000", "jpeg_tall_257x26000")


@pytest.fixture(scope="module")
def ray_cluster():
    if ray.is_initialized():  # someone else's session: not ours to configure or stop
        pytest.skip("a Ray session is already running in this process")
    tests_dir = str(Path(__file__).parent)  # the workers unpickle this module's KillOnce class
    path = os.pathsep.join(p for p in (tests_dir, os.environ.get("PYTHONPATH")) if p)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def image_files(corpus, tmp_path_factory) -> list[str]:
    """Real photos, a few synthetic formats, and three bad files (text named .jpg, an empty
    .png, a truncated JPEG), as path strings."""
    bad = tmp_path_factory.mktemp("bad")
    (bad / "text.jpg").write_text("not an image\n")
    (bad / "empty.png").write_bytes(b"")
    full = corpus.get("jpeg_420") or next(p for p in corpus.values() if str(p).endswith(".jpg"))
    data = Path(full).read_bytes()
    (bad / "truncated.jpg").write_bytes(data[: len(data) // 2])
    files = [str(path) for name, path in sorted(corpus.items()) if name not in SLOW]
    files += [str(bad / n) for n in ("text.jpg", "empty.png", "truncated.jpg")]
    return files


@pytest.fixture(scope="module")
def references(image_files, classifiers):
    """``{backend: {path: Prediction}}``, from Classifier.predict(on_error="skip")."""

    def get(backend: str):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {p.source: p for p in classifiers(backend).predict(image_files, top_k=TOP_K, on_error="skip")}

    cache: dict[str, dict] = {}
    return lambda backend: cache.setdefault(backend, get(backend))


def _check_rows(rows: list[dict], reference: dict, *, same_messages: bool) -> None:
    paths = [r["path"] for r in rows]
    assert Counter(paths) == Counter(list(reference)), "rows lost or duplicated"
    failed = 0
    for row in rows:
        assert tuple(row) == COLUMNS
        expected = reference[row["path"]]
        if expected.ok:
            assert row["error"] is None, row
            assert (row["label"], row["index"], row["probability"]) == (
                expected.label,
                expected.index,
                expected.probability,
            )
            assert [(s["label"], s["index"], s["probability"]) for s in row["top_k"]] == [
                tuple(s) for s in expected.top_k
            ]
        else:
            failed += 1
            assert row["label"] is None and row["index"] is None and row["probability"] is None
            assert list(row["top_k"]) == []
            assert row["error"].startswith(row["path"] + ":"), row["error"]
            if same_messages:
                assert row["error"] == str(expected.error)
    assert failed == 3  # the three bad files, and only them


def _source(kind: str, image_files: list[str]):
    if kind == "paths":
        return image_files
    return ray.data.read_binary_files(image_files, include_paths=True)


@pytest.mark.parametrize("kind", ["paths", "ray_dataset"])
def test_rows_equal_classifier_predict(ray_cluster, contract_model, image_files, references, backend, kind):
    """The defaults (fractional CPUs per actor) finish on 2 CPUs with concurrency=2."""
    ds = predict_dataset(
        _source(kind, image_files), contract_model.path, backend=backend, top_k=TOP_K, concurrency=2, batch_size=8
    )
    rows = ds.take_all()
    _check_rows(rows, references(backend), same_messages=(kind == "paths"))


def test_jpeg_draft_rows_equal_classifier_predict_in_draft_mode(ray_cluster, classifiers, image_files, capsys):
    """``jpeg_draft=True`` reaches the actors' Classifiers: rows equal Classifier(jpeg_draft=True)
    and differ from exact mode on some JPEG (the corpus has JPEGs far above 256 px)."""
    ds = predict_dataset(image_files, classifiers("rust").model_path, top_k=TOP_K, concurrency=2, jpeg_draft=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        drafted = classifiers("rust", jpeg_draft=True).predict(image_files, top_k=TOP_K, on_error="skip")
        exact = classifiers("rust").predict(image_files, top_k=TOP_K, on_error="skip")
    _check_rows(ds.take_all(), {p.source: p for p in drafted}, same_messages=True)
    assert any(d.ok and d.top_k != e.top_k for d, e in zip(drafted, exact, strict=True))
    with pytest.raises(InvalidArgumentError, match="jpeg_draft"):
        predict_dataset(image_files, classifiers("rust").model_path, jpeg_draft="yes")

    # the same through the command line: predict ... --json --ray --jpeg-draft
    from butterfly_onnx.cli import main

    picked = [d.source for d, e in zip(drafted, exact, strict=True) if d.ok and d.top_k != e.top_k]
    argv = ["predict", str(classifiers("rust").model_path), *picked, "--json", "--top-k", str(TOP_K)]
    assert main([*argv, "--backend", "rust", "--no-progress", "--ray", "--jpeg-draft"]) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = {d.source: d for d in drafted}
    assert [o["source"] for o in objects] == picked
    for o in objects:
        assert [s["index"] for s in o["top_k"]] == [s.index for s in expected[o["source"]].top_k]


def test_model_by_path_and_bytes_and_writers(ray_cluster, contract_model, image_files, references, tmp_path):
    """model_transfer="path", the model given as bytes, and the three writers."""
    reference = references("rust")
    ds = predict_dataset(
        image_files, contract_model.path, top_k=TOP_K, concurrency=1, model_transfer="path"
    ).materialize()
    rows = ds.take_all()
    _check_rows(rows, reference, same_messages=True)
    by_bytes = predict_dataset(image_files, contract_model.path.read_bytes(), top_k=1, concurrency=1).take_all()
    assert sorted((r["path"], r["label"], r["probability"]) for r in by_bytes) == sorted(
        (r["path"], r["label"], r["probability"]) for r in rows
    )

    write_parquet(ds, tmp_path / "out.parquet")
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == list(COLUMNS)
    assert sorted(table.to_pylist(), key=lambda r: r["path"]) == sorted(rows, key=lambda r: r["path"])

    write_csv(ds, tmp_path / "csv", top_k=TOP_K)
    parts = sorted((tmp_path / "csv").glob("*.csv"))
    assert parts
    flat = []
    for part in parts:
        with part.open(newline="") as handle:
            flat += csv.DictReader(handle)
    assert len(flat) == len(rows)
    for row in flat:
        expected = reference[row["path"]]
        if expected.ok:
            assert row["label"] == expected.label and row["error"] == ""
            for i, score in enumerate(expected.top_k, 1):
                assert (row[f"label_{i}"], int(row[f"index_{i}"])) == (score.label, score.index)
                assert abs(float(row[f"probability_{i}"]) - score.probability) <= 1e-6
        else:
            assert row["label"] == "" and row["error"] == str(expected.error)

    names = [os.path.basename(p) for p in image_files]
    left_out = write_submission(ds, tmp_path / "submission.csv", filenames=names[::-1])
    # images failed: no submission under that name (Kaggle rejects missing rows), the rows
    # predicted go to submission.partial.csv (results.write_submission's rule)
    assert not (tmp_path / "submission.csv").exists()
    with (tmp_path / "submission.partial.csv").open(newline="") as handle:
        lines = list(csv.reader(handle))
    assert lines[0] == ["filename", "label"]
    good = [p for p in image_files[::-1] if reference[p].ok]
    assert lines[1:] == [[os.path.basename(p), reference[p].label] for p in good]
    assert len(left_out) == 3 and all("bad" in m or ":" in m for m in left_out)


class KillOnce(Predictor):
    """Kills its own worker process at its first batch, once per test (marker file next to
    the images, created atomically so exactly one actor dies)."""

    def __call__(self, batch):
        marker = Path(str(batch.column("path")[0])).parent / ".killed_once"
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return super().__call__(batch)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        os._exit(1)


def test_job_survives_a_worker_restart(ray_cluster, contract_model, image_files, references, tmp_path):
    files = []
    for path in image_files:  # a private copy: the marker lives beside the images
        target = tmp_path / Path(path).name
        target.write_bytes(Path(path).read_bytes())
        files.append(str(target))
    reference = {str(tmp_path / Path(p).name): pred for p, pred in references("rust").items()}
    ds = predict_dataset(
        ray.data.read_binary_files(files, include_paths=True),
        contract_model.path,
        top_k=TOP_K,
        concurrency=2,
        batch_size=4,
        _predictor=KillOnce,
    )
    rows = ds.take_all()
    assert (tmp_path / ".killed_once").exists(), "no worker was killed"
    _check_rows(rows, {k: v for k, v in reference.items()}, same_messages=False)


def test_predict_cli_kaggle_csv_and_jsonl(ray_cluster, contract_model, image_files, references, tmp_path, capsys):
    reference = references("rust")
    folder = tmp_path / "kaggle"
    (folder / "test").mkdir(parents=True)
    picked = [p for p in image_files if reference[p].ok][:4] + [image_files[-1]]  # the last is bad
    for p in picked:
        (folder / "test" / Path(p).name).write_bytes(Path(p).read_bytes())
    with open(folder / "Testing_set.csv", "w") as f:
        f.write("filename\n" + "".join(Path(p).name + "\n" for p in picked))
    args = Namespace(
        model=str(contract_model.path),
        inputs=[str(folder / "Testing_set.csv")],
        top_k=2,
        batch_size=None,
        threads=None,
        output=str(tmp_path / "sub.csv"),
        backend="rust",
        json=False,
        progress=False,
        ray=None,
    )
    from butterfly_onnx.results import console_logging

    with console_logging():  # the command line's error lines on stderr, as main() sets them up
        code = predict_cli(args)
    assert code == 1  # one image failed: sub.csv is not written, sub.partial.csv is
    assert not (tmp_path / "sub.csv").exists()
    lines = (tmp_path / "sub.partial.csv").read_text().splitlines()
    assert lines == ["filename,label"] + [f"{Path(p).name},{reference[p].label}" for p in picked[:4]]
    err = capsys.readouterr().err
    assert err.count("butterfly-onnx: error: ") == 1 and Path(picked[-1]).name in err

    # the same through the command line: predict ... --json --ray (the running session)
    from butterfly_onnx.cli import main

    argv = ["predict", str(contract_model.path), *picked, "--json", "--top-k", "2", "--backend", "rust"]
    assert main([*argv, "--no-progress", "--ray"]) == 1
    out = capsys.readouterr().out.splitlines()
    objects = [json.loads(line) for line in out]
    assert [o["source"] for o in objects] == picked  # the input order
    for o in objects[:4]:
        assert o["label"] == reference[o["source"]].label
        assert abs(o["probability"] - reference[o["source"]].probability) <= 1e-5
        assert len(o["top_k"]) == 2 and o["error"] is None
    assert objects[4]["label"] is None and objects[4]["error"]

    # a directory input, and Ray's Parquet writer
    args.inputs, args.output = [str(folder / "test")], str(tmp_path / "out.parquet")
    with console_logging():
        assert predict_cli(args) == 1
    table = pq.read_table(tmp_path / "out.parquet")
    assert sorted(table.column("path").to_pylist()) == sorted(str(folder / "test" / Path(p).name) for p in picked)
    assert capsys.readouterr().err.count("butterfly-onnx: error: ") == 1

    args.model = str(tmp_path / "missing.onnx")
    with console_logging():
        assert predict_cli(args) == 2
    assert "missing.onnx" in capsys.readouterr().err


def test_on_error_raise_fails_the_job(ray_cluster, contract_model, image_files):
    bad = image_files[-1]  # truncated.jpg
    with pytest.raises(Exception, match="truncated.jpg"):
        predict_dataset([bad], contract_model.path, on_error="raise", concurrency=1).take_all()


def test_bad_arguments_fail_before_any_job(contract_model, tmp_path):
    with pytest.raises(ValueError, match="concurrency"):
        predict_dataset([str(tmp_path)], contract_model.path, concurrency=0)
    with pytest.raises(ValueError, match="on_error"):
        predict_dataset([str(tmp_path)], contract_model.path, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        predict_dataset([str(tmp_path)], tmp_path / "nope.onnx")


def test_import_butterfly_onnx_does_not_import_ray():
    code = "import sys, butterfly_onnx, butterfly_onnx.ray; assert 'ray' not in sys.modules, 'ray imported'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_serve_deployment_answers_equal_classifier_predict(ray_cluster, contract_model, image_files, references):
    """Ray Serve on the local cluster: 2 replicas (one Classifier each), @serve.batch batching;
    every answer equals Classifier.predict on the same file, bad images answered alone, over
    the deployment handle and over Serve's HTTP proxy (127.0.0.1)."""
    import http.client
    import socket
    from concurrent.futures import ThreadPoolExecutor

    serve = pytest.importorskip("ray.serve")
    from butterfly_onnx.ray import serve_deployment

    reference = references("rust")
    with socket.socket() as probe:  # a free port for Serve's HTTP proxy
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        app = serve_deployment(contract_model.path, num_replicas=2, top_k=TOP_K, num_cpus=0.5)
        handle = serve.run(app, name="butterfly", route_prefix="/classify")
        files = image_files  # sent at once: both replicas get batches of several
        answers = [handle.classify.remote(Path(f).read_bytes()) for f in files]
        for path, answer in zip(files, answers, strict=True):
            got = answer.result(timeout_s=120)
            expected = reference[path]
            if expected.ok:
                assert got["error"] is None
                assert [(s["label"], s["index"], s["probability"]) for s in got["top_k"]] == [
                    tuple(s) for s in expected.top_k
                ], path
            else:
                assert got["top_k"] == [] and got["error_class"] == type(expected.error).__name__

        def post(path: str):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                connection.request("POST", "/classify?top_k=2", body=Path(path).read_bytes())
                response = connection.getresponse()
                return path, response.status, json.loads(response.read())
            finally:
                connection.close()

        with ThreadPoolExecutor(8) as pool:
            for path, status, got in pool.map(post, image_files):
                expected = reference[path]
                assert status == (200 if expected.ok else 400)
                if expected.ok:
                    assert [(s["label"], s["index"], s["probability"]) for s in got["top_k"]] == [
                        tuple(s) for s in expected.top_k[:2]
                    ]
        replicas = serve.status().applications["butterfly"].deployments["butterfly_onnx"].replica_states
        assert replicas.get("RUNNING") == 2
    finally:
        serve.shutdown()
