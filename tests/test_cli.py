"""The python ``butterfly-onnx`` command (cli.py), run in-process.

``predict`` runs every golden case of tests/fixtures/cli/predict_cases.json (the Rust CLI's
tests run the same file) on both backends and checks each answer against Classifier.predict;
then the one-line errors and exit codes of the other subcommands."""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from butterfly_onnx.classifier import Classifier
from butterfly_onnx.cli import build_parser, main

GOLDEN = json.loads((Path(__file__).parent / "fixtures" / "cli" / "predict_cases.json").read_text())
PREFIX = "butterfly-onnx: error:"


@pytest.fixture(scope="module")
def photos(corpus):
    return [corpus[name] for name in sorted(corpus) if name.startswith(("skimage_", "sklearn_"))][:4]


@pytest.fixture(scope="module")
def golden_data(tmp_path_factory, photos):
    """The golden layout built from real photos (each 'photo' a different one, saved in the
    format its extension names)."""
    root = tmp_path_factory.mktemp("golden")
    for i, (name, kind) in enumerate(sorted(GOLDEN["layout"].items())):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "photo":
            image = Image.open(photos[i % len(photos)]).convert("RGB")
            image.thumbnail((320, 320))
            image.save(path, "PNG" if path.suffix == ".png" else "JPEG", quality=90)
        elif kind == "text":
            path.write_text("not an image")
        elif kind.startswith("csv"):  # csv:a,b (a filename column) or csv@COLUMN:a,b
            head, names = kind.split(":", 1)
            column = head[4:] if head.startswith("csv@") else "filename"
            path.write_text(f"{column}\n" + "".join(f"{n}\n" for n in names.split(",")))
        else:
            raise AssertionError(kind)
    return root


def _substitute(args, model, data, out):
    return [a.replace("{model}", str(model)).replace("{data}", str(data)).replace("{out}", str(out)) for a in args]


def _rel(source: str, data: Path) -> str:
    assert source.startswith(str(data) + "/"), source
    return source[len(str(data)) + 1 :]


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_predict_golden_case(case, backend, contract_model, classifiers, golden_data, tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    args = _substitute(case["args"], contract_model.path, golden_data, out_dir) + [
        "--backend",
        backend,
        "--no-progress",
    ]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == case["exit"], err
    err_lines = err.splitlines()
    assert all(line.startswith(PREFIX) for line in err_lines), err
    for absent in case.get("absent", []):
        assert not Path(_substitute([absent], contract_model.path, golden_data, out_dir)[0]).exists(), absent
    if case["format"] == "none":
        assert out == "" and len(err_lines) == case.get("stderr_lines", 1), err
        for text in case["stderr_contains"]:
            assert text in err
        return
    for name in case["failed"]:
        assert any(name in line for line in err_lines), (name, err)
    for note in case.get("notes", []):
        assert any(note in line for line in err_lines), (note, err)
    assert len(err_lines) == len(case["failed"]) + len(case.get("notes", [])), err
    top_k = case["top_k"]
    good = [s for s in case["sources"] if s not in case["failed"]]
    reference = {
        _rel(p.source, golden_data): p
        for p in classifiers(backend).predict([golden_data / s for s in good], top_k=top_k)
    }

    def check(source, label, index, probability):
        expected = reference[source]
        assert label == expected.label
        assert index is None or index == expected.index
        assert probability == pytest.approx(expected.probability, abs=1e-5)

    fmt = case["format"]
    if "output" in case:
        assert out == ""
        text = Path(_substitute([case["output"]], contract_model.path, golden_data, out_dir)[0]).read_text()
    else:
        text = out
    if fmt == "text":
        lines = [line.split("\t") for line in text.splitlines()]
        assert [_rel(line[0], golden_data) for line in lines] == case["sources"]
        for line in lines:
            source = _rel(line[0], golden_data)
            assert len(line) == 1 + top_k
            scores = [(cell.rsplit(" (", 1)[0], float(cell.rsplit(" (", 1)[1].rstrip(")"))) for cell in line[1:]]
            assert [s[0] for s in scores] == [t.label for t in reference[source].top_k]
            for (_, p), t in zip(scores, reference[source].top_k, strict=False):
                assert p == pytest.approx(t.probability, abs=5e-5)  # printed with 4 decimals
    elif fmt == "jsonl":
        records = [json.loads(line) for line in text.splitlines()]
        assert [_rel(r["source"], golden_data) for r in records] == case["sources"]
        for record in records:
            source = _rel(record["source"], golden_data)
            assert set(record) == {"source", "label", "index", "probability", "top_k", "error"}
            if source in case["failed"]:
                assert record["label"] is None and record["top_k"] == [] and source.split("/")[-1] in record["error"]
                continue
            assert record["error"] is None and len(record["top_k"]) == top_k
            check(source, record["label"], record["index"], record["probability"])
            for got, want in zip(record["top_k"], reference[source].top_k, strict=False):
                assert (got["label"], got["index"]) == (want.label, want.index)
                assert got["probability"] == pytest.approx(want.probability, abs=1e-5)
    elif fmt == "csv":
        rows = list(csv.DictReader(text.splitlines()))
        header = text.splitlines()[0].split(",")
        expected_header = ["source", "label", "index", "probability"]
        for k in range(1, top_k + 1):
            expected_header += [f"label_{k}", f"index_{k}", f"probability_{k}"]
        assert header == expected_header + ["error"]
        assert [_rel(r["source"], golden_data) for r in rows] == case["sources"]
        for row in rows:
            source = _rel(row["source"], golden_data)
            if source in case["failed"]:
                assert row["label"] == "" and row["error"]
                continue
            assert row["error"] == ""
            check(source, row["label"], int(row["index"]), float(row["probability"]))
            for k, want in enumerate(reference[source].top_k, 1):
                assert row[f"label_{k}"] == want.label and int(row[f"index_{k}"]) == want.index
    elif fmt == "submission":
        rows = list(csv.reader(text.splitlines()))
        assert rows[0] == ["filename", "label"]
        assert [r[0] for r in rows[1:]] == case["filenames"]
        for (_filename, label), source in zip(rows[1:], case["sources"], strict=True):
            assert label == (case["fill"] if source in case["failed"] else reference[source].label)
    else:
        raise AssertionError(fmt)


def test_info_shows_the_contract(contract_model, capsys):
    assert main(["info", str(contract_model.path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == contract_model.contract.to_dict()
    assert main(["info", str(contract_model.path)]) == 0
    out = capsys.readouterr().out
    assert contract_model.contract.preprocess.describe() in out and "species_00" in out


def _one_error_line(capsys, *needles):
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["info", "{tmp}/nope.onnx"], ["nope.onnx"]),
        (["info", "{tmp}/text.onnx"], ["text.onnx"]),
        (["val", "{tmp}/nope.onnx", "{tmp}"], ["nope.onnx"]),
        (["predict"], ["required"]),
        (["bogus"], ["bogus"]),
        (["predict", "{tmp}/nope.onnx", "x.jpg", "--top-k", "zero"], ["top-k"]),
        (["finetune", "{tmp}/no-data", "--resume", "--fresh"], ["--fresh"]),
        (["finetune", "{tmp}/no-data", "--epochs", "0"], ["epochs"]),
        (["models", "--plot", "{tmp}/missing/dir/x.png"], ["missing/dir"]),
        (["export", "{tmp}/nope.pt", "{tmp}/x.onnx"], ["nope.pt"]),
        (
            ["predict", "{tmp}/nope.onnx", "x.jpg", "--fallback-margin", "0.5"],
            ["--fallback-margin needs --fallback-model"],
        ),
        (["predict", "{tmp}/text.onnx", "x.jpg", "--fallback-model", "{tmp}/nope.onnx"], ["nope.onnx"]),
    ],
)
def test_errors_are_one_line_with_exit_status_2(args, needles, tmp_path, capsys):
    (tmp_path / "text.onnx").write_text("not a model")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(args) == 2
    _one_error_line(capsys, *needles)


def test_predict_with_a_fallback_model(contract_model, int8_variant, photos, capsys):
    """--fallback-model and --fallback-margin reach the Classifier: the near-ties of the int8 file
    get the fp32 file's outputs (tests/test_classifier.py checks which rows those are)."""
    from butterfly_onnx import Classifier

    def probabilities(*options):
        args = ["predict", str(int8_variant), *map(str, photos), "--json", "--no-progress", *options]
        assert main(args) == 0
        return [json.loads(line)["probability"] for line in capsys.readouterr().out.splitlines()]

    def expected(model, **kwargs):
        return pytest.approx([p.probability for p in Classifier(model, backend="rust", **kwargs).predict(photos)])

    fp32 = str(contract_model.path)
    plain = probabilities()
    assert plain == expected(int8_variant)
    assert probabilities("--fallback-model", fp32) == expected(int8_variant, fallback_model=fp32)
    everything = probabilities("--fallback-model", fp32, "--fallback-margin", "1e9")
    assert everything == expected(fp32) and everything != plain


def test_models_errors_and_listing(tmp_path, capsys):
    pytest.importorskip("torchvision")
    assert main(["models", "--sort", "bogus"]) == 2
    _one_error_line(capsys, "bogus")
    assert main(["models", "--max-gflops", "0.1", "--csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].startswith("arch,weights,") and len(rows) > 2
    assert all(float(row.split(",")[6]) <= 0.1 for row in rows[1:])


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.onnx"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.splitlines()[-1].startswith(PREFIX)


def test_finetune_flags_reach_finetune(monkeypatch, tmp_path, capsys):
    import butterfly_onnx.train as train

    seen = []

    def fake_finetune(data, **options):
        seen.append(options["resume"])
        raise train.TrainingError("stop here") if hasattr(train, "TrainingError") else RuntimeError("stop")

    monkeypatch.setattr(train, "finetune", fake_finetune)
    for flags, _expected in (([], None), (["--resume"], True), (["--fresh"], False)):
        assert main(["finetune", str(tmp_path), *flags]) == 2
        _one_error_line(capsys, "stop")
    assert seen == [None, True, False]


def test_every_subcommand_is_registered():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"predict", "val", "info", "models", "finetune", "export", "demo"} <= set(sub.choices)
    import importlib.util

    for name in ("bench", "parity"):  # registered when their modules are installed
        assert (name in sub.choices) == (importlib.util.find_spec(f"butterfly_onnx.{name}") is not None)
    predict = sub.choices["predict"]
    has_ray = importlib.util.find_spec("butterfly_onnx.ray") is not None
    assert any("--ray" in a.option_strings for a in predict._actions) == has_ray


def test_predict_and_val_default_to_the_rust_backend():
    """One default for the command line (docs/inference.md): the rust backend, which the
    install always builds; ``--backend python`` picks the other."""
    parser = build_parser()
    for command in (["predict", "m.onnx", "x.jpg"], ["val", "m.onnx", "data/"]):
        assert parser.parse_args(command).backend == "rust"
        assert parser.parse_args([*command, "--backend", "python"]).backend == "python"


def test_export_a_checkpoint_then_predict(contract_model, photos, tmp_path, capsys):
    pytest.importorskip("torch")
    from butterfly_onnx.train import save_checkpoint

    checkpoint = save_checkpoint(
        tmp_path / "best.pt",
        contract_model.module,
        {
            "arch": "efficientnet_lite0",
            "num_classes": 10,
            "labels": list(contract_model.contract.labels),
            "weights": "DEFAULT",
            "preprocess": contract_model.contract.preprocess,
            "metrics": {},
            "epoch": 1,
            "train_config": {},
        },
    )
    out_path = tmp_path / "cli.onnx"
    assert main(["export", str(checkpoint), str(out_path), "--verify-images", *map(str, photos)]) == 0
    printed = capsys.readouterr().out
    assert "exported" in printed
    # the verification's figures and where the report is, not only the path
    assert f"verified: {len(photos)} images: max |torch - onnx|" in printed
    assert f"report: {out_path.with_name('cli.export.json')}" in printed
    assert out_path.with_name("cli.export.json").is_file()
    ours = Classifier(out_path, backend="rust").logits(photos)
    reference = Classifier(contract_model.path, backend="python").logits(photos)
    assert abs(ours - reference).max() <= 1e-4
    # no verification images given and no training data recorded: one line naming the flags
    assert main(["export", str(checkpoint), str(tmp_path / "x.onnx"), "--variant", "int8"]) == 2
    _one_error_line(capsys, "--verify-images", "--calibration-images")
    # the rule: a checkpoint that records its (still existing) dataset is verified on it
    data = tmp_path / "data"
    for i, photo in enumerate(photos):
        (data / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, data / f"class{i % 2}" / photo.name)
    checkpoint = save_checkpoint(
        tmp_path / "best2.pt",
        contract_model.module,
        {
            "arch": "efficientnet_lite0",
            "num_classes": 10,
            "labels": list(contract_model.contract.labels),
            "weights": "DEFAULT",
            "preprocess": contract_model.contract.preprocess,
            "metrics": {},
            "epoch": 1,
            "train_config": {"data": str(data)},
        },
    )
    assert main(["export", str(checkpoint), str(tmp_path / "y.onnx")]) == 0
    assert (tmp_path / "y.onnx").is_file()


def _rust_cli() -> Path | None:
    import os

    candidate = Path(
        os.environ.get("BUTTERFLY_ONNX_RUST_CLI", Path(__file__).parents[1] / "target/release/butterfly-onnx")
    )
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


@pytest.mark.skipif(_rust_cli() is None, reason="the Rust CLI is not built (target/release/butterfly-onnx)")
@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_python_and_rust_clis_write_the_same_bytes(case, contract_model, golden_data, tmp_path, capsys):
    """Both CLIs on one golden case: the same exit code, the same stdout and -o file, byte for
    byte (the python CLI on the rust backend: the same decoder and runtime), and the same
    number of one-line errors."""
    import os
    import subprocess

    from butterfly_onnx._backends.rust import find_onnxruntime_library
    from contract_models import require_backend

    require_backend("rust")
    results = []
    for which in ("python", "rust"):
        out_dir = tmp_path / which
        out_dir.mkdir()
        args = _substitute(case["args"], contract_model.path, golden_data, out_dir)
        if which == "python":
            code = main([*args, "--backend", "rust", "--no-progress"])
            out, err = capsys.readouterr()
        else:
            env = {**os.environ, "ORT_DYLIB_PATH": str(find_onnxruntime_library())}
            done = subprocess.run(
                [str(_rust_cli()), *args, "--no-progress"], capture_output=True, text=True, env=env, timeout=300
            )
            code, out, err = done.returncode, done.stdout, done.stderr
        written = {p.name: p.read_bytes() for p in out_dir.iterdir()}
        results.append((code, out, written, [line.startswith(PREFIX) for line in err.splitlines()]))
    assert results[0] == results[1]


# --- argument errors, --help, --version: the same in both command lines -------------------
ARGUMENT_ERRORS = [
    ["predict", "m.onnx", "x.jpg", "--threads", "-1"],
    ["predict", "m.onnx", "x.jpg", "--top-k", "0"],
    ["predict", "m.onnx", "x.jpg", "--top-k", "abc"],
    ["predict", "m.onnx", "x.jpg", "--batch-size=-3"],
    ["predict", "m.onnx", "x.jpg", "--bogus"],
    ["predict"],
]


@pytest.mark.parametrize("args", ARGUMENT_ERRORS, ids=[" ".join(a[2:]) or "missing" for a in ARGUMENT_ERRORS])
def test_argument_errors_read_the_same_in_both_clis(args, capsys):
    import subprocess

    assert main(args) == 2
    python_err = capsys.readouterr().err
    assert python_err.startswith(PREFIX) and "--help" in python_err and len(python_err.splitlines()) == 1
    rust = _rust_cli()
    if rust is None:
        pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
    done = subprocess.run([str(rust), *args], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, python_err)


def test_version_in_both_clis(capsys):
    import subprocess

    from butterfly_onnx import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"butterfly-onnx {__version__}\n"
    rust = _rust_cli()
    if rust is not None:
        done = subprocess.run([str(rust), "--version"], capture_output=True, text=True, timeout=60)
        assert (done.returncode, done.stdout) == (0, f"butterfly-onnx {__version__}\n")


def test_every_option_has_help_and_its_default():
    """--help: a sentence for every option and positional of the commands this file covers,
    and the default of every option that has one (finetune/export: tests/test_train_*)."""
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name in ("predict", "serve", "val", "info", "annotate", "models", "demo", "bench", "parity"):
        if name not in sub.choices:
            continue
        parser = sub.choices[name]
        text = parser.format_help()
        for action in parser._actions:
            if action.dest in ("help",):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
            default = action.default
            if action.option_strings and default not in (None, False, True, argparse.SUPPRESS) and action.nargs != 0:
                shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
                assert "default" in action.help or f"(default: {default})" in " ".join(text.split()), (
                    name,
                    action.option_strings,
                    shown,
                )


# --- cells a spreadsheet would run, names that are not UTF-8 -------------------------------
def _run_both(args, cwd, capsys, backend="rust"):
    """The finished processes of the python CLI (on `backend`) and the Rust CLI, each run with
    ``{which}`` in ``args`` replaced by its name."""
    import os
    import subprocess

    from butterfly_onnx._backends.rust import find_onnxruntime_library
    from contract_models import require_backend

    rust = _rust_cli()
    if rust is None:
        pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
    require_backend("rust")
    env = {**os.environ, "ORT_DYLIB_PATH": str(find_onnxruntime_library())}
    python = subprocess.run(
        [sys.executable, "-m", "butterfly_onnx", *[a.replace("{which}", "python") for a in args]]
        + ["--backend", backend, "--no-progress"],
        capture_output=True,
        cwd=cwd,
        env={**env, "PYTHONPATH": str(Path(__file__).parents[1] / "python")},
        timeout=300,
    )
    args = [a.replace("{which}", "rust") for a in args]
    native = subprocess.run([str(rust), *args, "--no-progress"], capture_output=True, cwd=cwd, env=env, timeout=300)
    return python, native


@pytest.fixture
def formula_folder(tmp_path, photos):
    folder = tmp_path / "formula"
    folder.mkdir()
    for i, name in enumerate(["=HYPERLINK(1).jpg", "-2+3.jpg", "+A1.png", "@SUM.jpg", "plain.jpg"]):
        image = Image.open(photos[i % len(photos)]).convert("RGB")
        image.thumbnail((200, 200))
        image.save(folder / name, "PNG" if name.endswith(".png") else "JPEG")
    return folder


def test_formula_cells_escaped_and_json_valid(formula_folder, contract_model, capsys):
    shutil.copy(contract_model.path, formula_folder / "model.onnx")
    results = {}
    for output in ("p.csv", "p.jsonl"):
        args = ["predict", "model.onnx", ".", "-o", "{which}-" + output]
        for which, done in zip(("python", "rust"), _run_both(args, formula_folder, capsys), strict=True):
            assert done.returncode == 0, done.stderr
            results[which, output] = (formula_folder / f"{which}-{output}").read_bytes()
        assert results["python", output] == results["rust", output], output
    rows = list(csv.reader(results["python", "p.csv"].decode().splitlines()))
    sources = [row[0] for row in rows[1:]]
    assert sources == ["'+A1.png", "'-2+3.jpg", "'=HYPERLINK(1).jpg", "'@SUM.jpg", "plain.jpg"]
    records = [json.loads(line) for line in results["python", "p.jsonl"].decode().splitlines()]
    assert [r["source"] for r in records] == ["+A1.png", "-2+3.jpg", "=HYPERLINK(1).jpg", "@SUM.jpg", "plain.jpg"]


def test_names_that_are_not_utf8_are_written_losslessly(tmp_path, photos, contract_model, capsys):
    import os

    folder = tmp_path / "latin1"
    folder.mkdir()
    raw = [b"caf\xe9.jpg", b"ok.jpg"]
    for i, name in enumerate(raw):
        image = Image.open(photos[i]).convert("RGB")
        image.thumbnail((200, 200))
        image.save(os.path.join(os.fsencode(folder), name), "JPEG")
    # and a broken one: its error names it as Python does (the Rust CLI used to print U+FFFD)
    with open(os.path.join(os.fsencode(folder), b"d\xe9fait.jpg"), "wb") as broken:
        broken.write(b"not an image")
    shutil.copy(contract_model.path, folder / "model.onnx")
    outputs, errors = {}, {}
    for output in ("p.csv", "p.jsonl", None):
        args = ["predict", "model.onnx", "."] + (["-o", f"out/{{which}}-{output}"] if output else [])
        (folder / "out").mkdir(exist_ok=True)
        # The python backend (the rust one takes such names once they are passed as bytes).
        for which, done in zip(("python", "rust"), _run_both(args, folder, capsys, "python"), strict=True):
            assert done.returncode == 1, done.stderr  # the broken one
            outputs[which, output] = (folder / "out" / f"{which}-{output}").read_bytes() if output else done.stdout
            errors[which, output] = done.stderr
    csv_bytes = outputs["python", "p.csv"]
    assert csv_bytes.split(b"\r\n")[1].startswith(b"caf\xe9.jpg,")  # the name's own bytes
    assert json.loads(outputs["python", "p.jsonl"].splitlines()[0])["source"] == "caf\udce9.jpg"
    assert outputs["python", None].startswith(b"caf\xe9.jpg\t")
    # The broken one, named alike by both (the reason is each backend's own words: Pillow's, the core's)
    for which in ("python", "rust"):
        rows = list(csv.reader(outputs[which, "p.csv"].decode("utf-8", "surrogateescape").splitlines()))
        assert rows[2][0] == "d\udce9fait.jpg" and rows[2][-1].startswith("d\udce9fait.jpg: ")  # its own bytes
        record = json.loads(outputs[which, "p.jsonl"].splitlines()[1])
        assert record["source"] == "d\udce9fait.jpg" and record["error"].startswith("d\udce9fait.jpg: ")
        for output in ("p.csv", "p.jsonl", None):
            assert errors[which, output].startswith(b"butterfly-onnx: error: d\\udce9fait.jpg: "), errors[which, output]
    for output in ("p.csv", "p.jsonl", None):
        same = [
            line
            for line in outputs["python", output].splitlines()
            if b"d\xe9fait" not in line and b"udce9fait" not in line
        ]
        assert same == [
            line
            for line in outputs["rust", output].splitlines()
            if b"d\xe9fait" not in line and b"udce9fait" not in line
        ]


# --- progress never garbles results ----------------------------------------------------------
@pytest.mark.parametrize("which", ["python", "rust"])
@pytest.mark.parametrize("progress", [None, "--progress"], ids=["auto", "forced"])
def test_redirected_output_is_clean(which, progress, golden_data, contract_model, tmp_path):
    """stdout and stderr redirected to files: no escape sequence or carriage return in either
    (auto: no bar at all, stderr is not a terminal), and with a bar forced on stderr the
    results file still holds only whole result lines."""
    import os
    import re
    import subprocess

    from butterfly_onnx._backends.rust import find_onnxruntime_library

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "python")}
    env["BUTTERFLY_ONNX_ORT_LIB"] = str(find_onnxruntime_library())
    args = ["predict", str(contract_model.path), str(golden_data / "mixed"), "--batch-size", "1", "--top-k", "2"]
    args += [progress] if progress else []
    if which == "python":
        command = [sys.executable, "-m", "butterfly_onnx", *args, "--backend", "python"]
    else:
        if _rust_cli() is None:
            pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
        command = [str(_rust_cli()), *args]
    with open(tmp_path / "out.txt", "wb") as out, open(tmp_path / "err.txt", "wb") as err:
        done = subprocess.run(command, stdout=out, stderr=err, env=env, timeout=300)
    assert done.returncode == 1  # mixed/ holds one broken image
    stdout = (tmp_path / "out.txt").read_text()
    stderr = (tmp_path / "err.txt").read_text()
    assert "\x1b" not in stdout and "\r" not in stdout
    line = re.compile(r"^\S+\.(jpg|png)(\t[^\t]+ \(\d\.\d{4}\)){2}$")
    assert [bool(line.match(text)) for text in stdout.splitlines()] == [True, True], stdout
    if progress is None:
        assert "\x1b" not in stderr and "\r" not in stderr
        assert [text.startswith(PREFIX) for text in stderr.splitlines()] == [True], stderr
    else:  # the bar is on stderr only, and the error line is whole there
        assert any(text.startswith(PREFIX) and "broken.jpg" in text for text in re.split(r"[\r\n]", stderr)), stderr


# --- a model without our metadata: the one way -------------------------------------------
def test_annotate_gives_a_plain_onnx_model_its_contract(contract_model, photos, tmp_path, capsys):
    """A plain ONNX file (the contract removed) is refused by predict with the way out named;
    ``annotate --labels ... --resize ... --crop ... --mean ... --std ...`` writes the contract,
    and then both command lines predict exactly as with the exported model."""
    import os
    import subprocess

    import onnx

    from butterfly_onnx._backends.rust import find_onnxruntime_library

    plain = onnx.load(str(contract_model.path))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    assert main(["predict", str(tmp_path / "plain.onnx"), str(photos[0])]) == 2
    assert "butterfly-onnx annotate" in capsys.readouterr().err
    spec = contract_model.contract.preprocess
    (tmp_path / "labels.txt").write_text("\n".join(contract_model.contract.labels) + "\n")
    args = ["annotate", str(tmp_path / "plain.onnx"), "--labels", str(tmp_path / "labels.txt")]
    args += ["--resize", str(spec.resize_size), "--crop", str(spec.crop_size), "--interpolation", spec.interpolation]
    args += ["--mean", *map(str, spec.mean), "--std", *map(str, spec.std), "-o", str(tmp_path / "annotated.onnx")]
    assert main(args) == 0, capsys.readouterr().err
    assert "annotated:" in capsys.readouterr().out
    want = Classifier(contract_model.path, backend="python").predict(photos, top_k=3)
    got = Classifier(tmp_path / "annotated.onnx", backend="python").predict(photos, top_k=3)
    assert [p.top_k for p in got] == [p.top_k for p in want]
    assert main(["predict", str(tmp_path / "annotated.onnx"), *map(str, photos), "--no-progress"]) == 0
    python_out = capsys.readouterr().out
    rust = _rust_cli()
    if rust is not None:
        env = {**os.environ, "BUTTERFLY_ONNX_ORT_LIB": str(find_onnxruntime_library())}
        done = subprocess.run(
            [str(rust), "predict", str(tmp_path / "annotated.onnx"), *map(str, photos)],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert (done.returncode, done.stdout) == (0, python_out)
        done = subprocess.run(
            [str(rust), "predict", str(tmp_path / "plain.onnx"), str(photos[0])],
            capture_output=True,
            text=True,
            env=env,
        )
        assert done.returncode == 2 and "butterfly-onnx annotate" in done.stderr
    assert main(["annotate", str(tmp_path / "plain.onnx"), "--labels", str(tmp_path / "none.txt")]) == 2
    assert "none.txt" in capsys.readouterr().err


def test_finetune_export_path_checked_before_training(tmp_path, capsys):
    """`finetune --export missing/dir/x.onnx` is refused at once (exit 2, one line naming the
    folder), before any data is read or any run folder is made, not after hours of training."""
    data = tmp_path / "data"
    (data / "a").mkdir(parents=True)
    out = tmp_path / "run"
    code = main(["finetune", str(data), "--out", str(out), "--export", str(tmp_path / "missing" / "x.onnx")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing" in err and "does not exist" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
