"""Every ``butterfly-onnx`` command in README.md and docs/*.md, as written: each one is parsed
by the real argument parser, and the ones that need no training (predict, val, info, models,
--help) are run for real, in a sandbox holding the files the docs name (a contract model as
``butterflies.onnx`` / ``model.onnx``, real photos in ``images/`` and ``photos/``, a Kaggle
layout in ``butterfly-dataset/``), and must exit 0.

docs/rust.md documents the Rust CLI (``--ort-lib`` and friends) and is left to the Rust tests.
Synopsis lines (with ``[``, ``...``, ``|`` or an upper-case placeholder such as ``MODEL``) are
not commands and are skipped.
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


def _commands_in(text: str) -> list[str]:
    """Shell lines of the fenced blocks, and inline code spans, that start with butterfly-onnx."""
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
    commands = []
    for command in found:
        command = command[2:] if command.startswith("$ ") else command
        first = command.split(" ", 1)[0]
        if first == "butterfly-onnx" or (first.endswith("/butterfly-onnx") and not first.startswith("target/")):
            commands.append(command)
    return commands


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


def test_the_docs_have_commands():
    names = {words[0] for _, words in COMMANDS}
    assert {"predict", "val", "info", "models", "finetune", "export"} <= names, names


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
