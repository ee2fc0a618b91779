"""The import rule of docs/architecture.md holds: scripts/check_imports.py finds no import cycle,
no private cross-module import and no import from a higher layer in python/butterfly_onnx, and it
does find them when they exist."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "check_imports.py"


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_import_cycles_and_no_private_cross_module_imports():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("0 import cycles, 0 private cross-module imports, 0 upward imports")
    assert "note:" not in result.stdout  # every module has a layer


def test_the_checker_finds_cycles_and_private_imports(tmp_path):
    checker = _checker()
    pkg = tmp_path / "butterfly_onnx"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("def f():\n    from .b import g  # function-level: counts\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n")
    (pkg / "c.py").write_text("from .a import _hidden\nfrom ._version import __version__\n")
    (pkg / "contract.py").write_text("def f():\n    from .cli import main  # upward, even inside a function\n")
    (pkg / "cli.py").write_text("")
    (pkg / "_version.py").write_text("__version__ = '0'\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "x.py").write_text("from .. import a\nfrom ._y import _ok\n")  # _y is private: allowed
    (pkg / "sub" / "_y.py").write_text("_ok = 1\n")
    mods = checker.modules(pkg)
    edges, private = checker.imports(mods)
    assert checker.cycles(edges) == [["butterfly_onnx.a", "butterfly_onnx.b"]]
    assert private == ["butterfly_onnx.c imports _hidden from butterfly_onnx.a"]
    assert checker.upward(edges)[0] == [
        "butterfly_onnx.contract (contract and errors) imports butterfly_onnx.cli (CLI and tools)"
    ]
    assert "butterfly_onnx.a" in checker.upward(edges)[1]  # in no layer: listed


def test_the_rust_core_uses_only_lower_layers(tmp_path):
    """scripts/check_rust_layers.py: the crate's modules pass, and a circle is found."""
    script = ROOT / "scripts" / "check_rust_layers.py"
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "rust layers: 0 upward or same-layer uses"
    # contract.rs and preprocess/ using each other (as before spec.rs existed) is two findings.
    (tmp_path / "preprocess").mkdir()
    (tmp_path / "lib.rs").write_text("pub mod contract;\npub mod preprocess;\n")
    (tmp_path / "spec.rs").write_text("use crate::{Error, Result};\n")
    (tmp_path / "contract.rs").write_text("use crate::preprocess::PreprocessSpec; // crate::classifier\n")
    (tmp_path / "preprocess" / "mod.rs").write_text("use crate::{contract::check_spec, Error};\n")
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "contract.rs: contract (contract, pixels, runtime) uses preprocess (its own layer: contract, pixels, runtime)",
        "preprocess/mod.rs: preprocess (contract, pixels, runtime) uses contract (its own layer: contract, pixels, runtime)",
        "rust layers: 2 upward or same-layer uses",
    ]
