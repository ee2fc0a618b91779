"""butterfly_onnx/settings.py: FinetuneSettings and ExportSettings are the one definition of the
knobs of finetune / export_onnx and of the CLI's finetune / export options (defaults, help),
checked against the real signatures and the real parser; bad values and unknown names are
clear errors."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys

import pytest

from butterfly_onnx.cli import build_parser
from butterfly_onnx.errors import ExportError, TrainingError
from butterfly_onnx.settings import ExportSettings, FinetuneSettings, cli_fields, settings_with


def _knobs(kind):
    return [f for f in dataclasses.fields(kind) if f.name != "notes"]


def _subparser(name):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[name]


@pytest.mark.parametrize(
    "kind, module, function",
    [
        (FinetuneSettings, "butterfly_onnx.train", "finetune"),
        (ExportSettings, "butterfly_onnx.export", "export_onnx"),
    ],
)
def test_the_signature_shows_every_knob_with_the_dataclass_default(kind, module, function):
    pytest.importorskip("torch")
    import importlib

    signature = inspect.signature(getattr(importlib.import_module(module), function))
    for f in _knobs(kind):
        parameter = signature.parameters[f.name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
        assert parameter.default == f.default, f.name


@pytest.mark.parametrize(
    "kind, command, positional, skip",
    [
        (FinetuneSettings, "finetune", ["data"], ()),
        # variants, verify, providers and device come from the CLI's own --variant, --no-verify, --device, --provider
        (ExportSettings, "export", ["model.pt", "model.onnx"], ("variants", "verify", "providers", "device")),
    ],
)
def test_the_cli_options_are_the_settings_fields_with_their_defaults(kind, command, positional, skip):
    args = build_parser().parse_args([command, *positional])
    fields = [f for f in cli_fields(kind) if f.name not in skip]
    assert {f.name for f in fields} | set(skip) == {f.name for f in _knobs(kind)}  # every knob exposed
    for f in fields:
        assert getattr(args, f.name) == f.default, f.name
    # a parsed command line with no options builds the default settings
    values = {f.name: getattr(args, f.name) for f in fields}
    assert kind(**values) == kind()


def test_finetune_help_shows_every_option_with_its_default():
    # the real command, as a user runs it; no torch needed for --help
    text = subprocess.run(
        [sys.executable, "-m", "butterfly_onnx", "finetune", "--help"], capture_output=True, text=True, check=True
    ).stdout
    entries: dict[str, str] = {}  # "--flag" -> its whole help entry (the option line and its continuation)
    current = None
    for line in text.splitlines():
        if re.match(r"^  -", line):
            names = re.findall(r"--[a-z][a-z0-9-]*", line.split("  ")[1] if "  " in line.strip() else line)
            current = " ".join(line.split())
            for name in names:
                entries[name] = current
        elif current is not None and line.startswith("   "):
            for name, entry in list(entries.items()):
                if entry == current:
                    entries[name] = entry + " " + " ".join(line.split())
            current = entries[name]
        else:
            current = None
    for f in cli_fields(FinetuneSettings):
        flag = "--" + f.name.replace("_", "-")
        assert re.search(r"\(default: [^)]+\)", entries[flag]), (flag, entries.get(flag))
    parser = _subparser("finetune")
    for action in parser._actions:
        takes_value = action.nargs != 0 and action.option_strings and action.dest != "help"
        if takes_value:
            assert "default" in (action.help or ""), action.option_strings


def test_cli_values_are_parsed_and_validated(capsys):
    from butterfly_onnx.cli import main

    args = build_parser().parse_args(
        [
            "finetune",
            "data",
            "--weights",
            "none",
            "--finetune-lr",
            "0.01",
            "--unfreeze",
            "0.5",
            "--patience",
            "none",
            "--preprocess",
            '{"resize_size": 72, "crop_size": 64, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}',
            "--no-channels-last",
            "--precision",
            "bf16",
            "--no-cache-features",
        ]
    )
    settings = FinetuneSettings(**{f.name: getattr(args, f.name) for f in cli_fields(FinetuneSettings)})
    assert settings.weights is None and settings.finetune_lr == 0.01 and settings.unfreeze == 0.5
    assert settings.patience is None and settings.preprocess.crop_size == 64
    assert settings.channels_last is False and settings.precision == "bf16" and settings.cache_features is False
    assert main(["finetune", "data", "--precision", "fp64"]) == 2
    assert "--precision" in capsys.readouterr().err
    assert main(["finetune", "data", "--lr", "fast"]) == 2
    assert "--lr" in capsys.readouterr().err


def test_unknown_or_bad_settings_are_clear_errors():
    with pytest.raises(TrainingError, match=r"unknown FinetuneSettings settings \['epoch'\]"):
        settings_with(FinetuneSettings, None, {"epoch": 3}, TrainingError)
    with pytest.raises(ExportError, match="settings must be a ExportSettings"):
        settings_with(ExportSettings, FinetuneSettings(), {}, ExportError)
    base = FinetuneSettings(epochs=4)
    assert settings_with(FinetuneSettings, base, {"lr": 0.5}, TrainingError) == FinetuneSettings(epochs=4, lr=0.5)
    for bad, match in [
        ({"precision": "fp64"}, "precision must be one of"),
        ({"channels_last": "yes"}, "channels_last must be None, True or False"),
        ({"threads": 0}, "threads must be >= 1"),
    ]:
        with pytest.raises(TrainingError, match=match):
            FinetuneSettings(**bad)
    for bad, match in [
        ({"opset": 9}, "opset must be an int >= 11"),
        ({"max_abs_diff": -1}, "max_abs_diff must be >= 0"),
        ({"variants": "int8"}, "sequence of names"),
        ({"benchmark_rounds": 0}, "benchmark_rounds must be >= 1"),
    ]:
        with pytest.raises(ExportError, match=match):
            ExportSettings(**bad)
    assert ExportSettings(variants=["fp16"]).variants == ("fp16",)


def test_export_defaults_match_the_calibration_module():
    pytest.importorskip("torch")
    from butterfly_onnx.export.calibration import DEFAULT_CALIBRATION_SIZE, DEFAULT_INT8_FORMAT

    assert ExportSettings().calibration_size == DEFAULT_CALIBRATION_SIZE
    assert ExportSettings().int8_format == DEFAULT_INT8_FORMAT
