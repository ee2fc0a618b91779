"""_version.py: the version is written once, in Cargo's [workspace.package]; pyproject.toml takes it
from there (dynamic) and ``butterfly_onnx.__version__`` reads it (the checkout's Cargo.toml, or the
installed metadata)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import butterfly_onnx
from butterfly_onnx import _version

ROOT = Path(__file__).resolve().parent.parent


def test_one_version_from_cargo():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["version"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert butterfly_onnx.__version__ == cargo
    for crate in sorted((ROOT / "rust").glob("*/Cargo.toml")):
        package = tomllib.loads(crate.read_text())["package"]
        assert package["version"] == {"workspace": True}, crate


def test_installed_metadata_when_there_is_no_checkout(tmp_path, monkeypatch):
    from importlib import metadata

    monkeypatch.setattr(_version, "_CARGO_TOML", tmp_path / "Cargo.toml")
    try:
        installed = metadata.version(_version.DISTRIBUTION)
    except metadata.PackageNotFoundError:
        installed = "0+unknown"
    assert _version._version() == installed


def test_import_raises_no_warning():
    code = "import butterfly_onnx, butterfly_onnx.cli, butterfly_onnx.settings; butterfly_onnx.Classifier"
    subprocess.run([sys.executable, "-W", "error", "-c", code], check=True, cwd=ROOT)
