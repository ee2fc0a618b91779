"""Every ``butterfly-onnx`` command in README.md and docs/*.md, as written: each one is parsed
by the real argument parser, and the ones that need no training (predict, val, info, models,
--help) are run for real, in a sandbox holding the files the docs name (a contract model as
``butterflies.onnx`` / ``model.onnx``, real photos in ``images/`` and ``photos/``, a Kaggle
layout in ``butterfly-dataset/``), and must exit 0.

The Rust CLI's commands -- ``cargo run --release -p butterfly-onnx -- ARGS``,
``target/release/butterfly-onnx ARGS`` anywhere, and every ``butterfly-onnx ...`` in
docs/rust.md (which documents the Rust CLI) -- run with the built binary in the same sandbox
(``$BUTTERFLY_ONNX_RUST_CLI``, else ``target/release/butterfly-onnx``, else built once with
``cargo build --release -p butterfly-onnx``; skipped when none can be had), ONNX Runtime given
by ``BUTTERFLY_ONNX_ORT_LIB``.  ``cargo run`` is run as the binary it builds (the sandbox is
not the workspace).

``finetune`` and ``export`` commands are parsed only: run as written they train for 10 epochs
from downloaded ImageNet weights (fine-tuning and exporting on tiny data is tested in
tests/test_train_loop.py, tests/test_workflow.py and tests/test_cli.py's export test).  Synopsis lines (with ``[``, ``...``, ``|`` or an upper-case placeholder such as
``MODEL``) are not commands and are skipped.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import shlex
import shutil
from pathlib import Path

import pytest
from PIL import Image

from butterfly_onnx.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_DOCS = {"rust.md"}
RUNNABLE = {"predict", "val", "info", "models"}
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
PLACEHOLDER = re.compile(r"^[A-Z][A-Z_]{2,}(\.\.\.)?$")
LABELS = [
    "MONARCH",
    "ADMIRAL",
    "PEACOCK",
    "SWALLOWTAIL",
    "BIRDWING",
    "CABBAGE WHITE",
    "ORANGE TIP",
    "RED ADMIRAL",
    "CLOUDED YELLOW",
    "COMMA",
]


def _snippets_in(text: str) -> list[str]:
    """Shell lines of the fenced blocks, and inline code spans."""
    found: list[str] = []
    in_block, lang, pending = False, "", ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            in_block, lang = (not in_block, fence.group(1).lower()) if not in_block else (False, "")
            continue
        if in_block:
            if lang in SHELL_LANGS:
                line = pending + line.strip()
                if line.endswith("\\"):
                    pending = line[:-1] + " "
                    continue
                pending = ""
                found += [part.strip() for part in line.split("&&")]
            continue
    # inline spans (joined across line breaks inside a paragraph)
    for span in re.findall(r"`([^`]+)`", re.sub(r"```.*?```", "", text, flags=re.S).replace("\n", " ")):
        found.append(span.strip())
    return [command[2:] if command.startswith("$ ") else command for command in found]


def _commands_in(text: str) -> list[str]:
    """The python CLI's commands: snippets that start with butterfly-onnx."""
    commands = []
    for command in _snippets_in(text):
        first = command.split(" ", 1)[0]
        if first == "butterfly-onnx" or (first.endswith("/butterfly-onnx") and not first.startswith("target/")):
            commands.append(command)
    return commands


CARGO_RUN = ["cargo", "run", "--release", "-p", "butterfly-onnx", "--"]


def rust_commands() -> list[tuple[str, list[str]]]:
    """(id, the Rust CLI's arguments) of every Rust CLI command in README.md and docs/."""
    out = []
    for doc in DOCS:
        for command in _snippets_in(doc.read_text(encoding="utf-8")):
            try:
                words = shlex.split(command, comments=True)
            except ValueError:
                continue
            if words[: len(CARGO_RUN)] == CARGO_RUN:
                args = words[len(CARGO_RUN) :]
            elif words[:1] == ["target/release/butterfly-onnx"] or (
                doc.name in SKIP_DOCS and words[:1] == ["butterfly-onnx"]
            ):
                args = words[1:]
            else:
                continue
            if args and not _is_synopsis(args):
                out.append((f"{doc.relative_to(ROOT)}: {command}", args))
    return out


def _is_synopsis(words: list[str]) -> bool:
    return any("[" in w or "..." in w or w == "|" or PLACEHOLDER.match(w) for w in words)


def documented_commands() -> list[tuple[str, list[str]]]:
    out = []
    for doc in DOCS:
        if doc.name in SKIP_DOCS:
            continue
        for command in _commands_in(doc.read_text(encoding="utf-8")):
            words = shlex.split(command, comments=True)[1:]
            if words and not _is_synopsis(words):
                out.append((f"{doc.relative_to(ROOT)}: {command}", words))
    return out


COMMANDS = documented_commands()


RUST_COMMANDS = rust_commands()


def test_the_docs_have_commands():
    names = {words[0] for _, words in COMMANDS}
    assert {"predict", "val", "info", "models", "finetune", "export"} <= names, names
    sources = {source.split(":")[0] for source, _ in RUST_COMMANDS}
    assert {"README.md", "docs/tutorial.md", "docs/rust.md"} <= sources, sources


def test_the_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in [*sorted((ROOT / "docs").glob("*.md")), ROOT / "CHANGELOG.md"]:
        assert f"]({doc.relative_to(ROOT)})" in readme, f"README.md does not link {doc.relative_to(ROOT)}"


@pytest.mark.parametrize("words", [w for _, w in COMMANDS], ids=[i for i, _ in COMMANDS])
def test_documented_command_parses(words):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if words[0] not in sub.choices:
        pytest.skip(f"subcommand {words[0]!r} is not installed here")
    parser.parse_args(words)  # a usage error exits (status 2) and fails the test


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, contract_model, corpus):
    """The files the docs' commands name."""
    import onnx

    from butterfly_onnx.contract import write_contract

    root = tmp_path_factory.mktemp("docs")
    contract = contract_model.contract
    renamed = dataclasses.replace(contract, labels=tuple(LABELS))
    model = onnx.load(str(contract_model.path))
    write_contract(model, renamed, root / "butterflies.onnx")
    shutil.copy(root / "butterflies.onnx", root / "model.onnx")
    photos = [corpus[n] for n in sorted(corpus) if n.startswith(("skimage_", "sklearn_", "matplotlib_grace"))]
    for folder in ("images", "photos"):
        (root / folder).mkdir()
        for photo in photos[:3]:
            Image.open(photo).convert("RGB").save(root / folder / (Path(photo).stem + ".jpg"), quality=90)
    data = root / "butterfly-dataset"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    rows = []
    for i, photo in enumerate(photos):
        name = f"Image_{i + 1}.jpg"
        image = Image.open(photo).convert("RGB")
        image.thumbnail((256, 256))
        image.save(data / "train" / name, quality=90)
        image.save(data / "test" / name, quality=90)
        rows.append((name, LABELS[i % 3]))
    with open(data / "Training_set.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "label"), *rows])
    (data / "Testing_set.csv").write_text("filename\n" + "".join(f"{n}\n" for n, _ in rows))
    return root


RUN = [(i, w) for i, w in COMMANDS if (w[0] in RUNNABLE or "--help" in w) and "--ray" not in w]  # --ray needs a cluster


@pytest.mark.parametrize("words", [w for _, w in RUN], ids=[i for i, _ in RUN])
def test_documented_command_runs(words, sandbox, monkeypatch, capsys):
    if words[0] == "models":
        pytest.importorskip("torchvision")
        pytest.importorskip("matplotlib")
    if "rust" in words:
        from contract_models import require_backend

        require_backend("rust")
    monkeypatch.chdir(sandbox)
    code = main([*words, "--no-progress"] if words[0] in ("predict", "val") else words)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "error" not in err


@pytest.fixture(scope="session")
def rust_cli() -> Path:
    import os
    import subprocess

    configured = os.environ.get("BUTTERFLY_ONNX_RUST_CLI")
    binary = Path(configured) if configured else ROOT / "target" / "release" / "butterfly-onnx"
    if not binary.is_file() and not configured and shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--release", "-p", "butterfly-onnx"], cwd=ROOT, check=False, capture_output=True
        )
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.skip(f"the Rust CLI is not built ({binary}) and cargo could not build it")
    return binary


@pytest.mark.parametrize("args", [a for _, a in RUST_COMMANDS], ids=[i for i, _ in RUST_COMMANDS])
def test_documented_rust_command_runs(args, rust_cli, sandbox):
    import os
    import subprocess

    from butterfly_onnx._backends.rust import find_onnxruntime_library

    env = {**os.environ, "BUTTERFLY_ONNX_ORT_LIB": str(find_onnxruntime_library())}
    result = subprocess.run([str(rust_cli), *args], cwd=sandbox, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr and result.stdout.strip(), result.stderr
