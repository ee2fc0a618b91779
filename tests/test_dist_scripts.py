"""scripts/gather_licenses.py and scripts/check_dist.py: the licence texts the wheel carries match
Cargo.lock, and the archive check catches a wheel that lacks a licence or a data file.
(The wheel itself is built and installed by scripts/wheel_smoke.sh, which scripts/test.sh runs.)"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gather():
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    return load("gather_licenses")


def test_licenses_match_cargo_lock():
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed")
    run = subprocess.run(
        [sys.executable, "scripts/gather_licenses.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr


def test_every_linked_c_library_and_crate_has_its_licence(gather):
    crates = {c.name: c for c in gather.linked_crates()}
    # The C libraries' -sys crates are linked, and their vendored licence files are gathered.
    for lib in gather.C_LIBRARIES:
        crate = crates[lib.crate]
        for rel in lib.files:
            assert (ROOT / "LICENSES" / "rust" / f"{crate.name}-{crate.version}" / rel).is_file()
    # Build tools and proc-macros are not linked; pyo3's runtime is.
    assert "cc" not in crates and "serde_derive" not in crates and "pyo3" in crates
    assert len(list(ROOT.glob(gather.LIBTIFF_GLOB))) == 1


def test_check_finds_a_changed_licence(gather, tmp_path):
    copy = tmp_path / "LICENSES"
    shutil.copytree(ROOT / "LICENSES", copy)
    assert gather.differences(copy, ROOT / "LICENSES") == []
    first = next(p for p in sorted(copy.rglob("*")) if p.is_file() and p.name != "README.md")
    first.write_text(first.read_text() + "changed\n")
    extra = copy / "rust" / "not-a-crate-1.0.0"
    extra.mkdir()
    (extra / "LICENSE").write_text("x")
    diffs = gather.differences(copy, ROOT / "LICENSES")
    assert any(first.name in d and "differs" in d for d in diffs)
    assert any("not-a-crate-1.0.0" in d for d in diffs)


def fake_wheel(path: Path, check_dist, drop: str | None = None) -> Path:
    dist_info = "butterfly_onnx-0.1.0.dist-info"
    names = sorted(check_dist.package_files()) + ["butterfly_onnx/_native.abi3.so"]
    names += [f"{dist_info}/licenses/{n}" for n in sorted(check_dist.licence_files())]
    with zipfile.ZipFile(path, "w") as zf:
        for name in names:
            if name != drop:
                zf.writestr(name, "x")
    return path


def test_check_dist_wheel_contents(tmp_path):
    check_dist = load("check_dist")
    licences = check_dist.licence_files()
    assert "LICENSE" in licences and "LICENSES/README.md" in licences
    assert any(p.endswith("LICENSE.md") and "libtiff" in p for p in licences)
    assert any(p.startswith("butterfly_onnx/data/") for p in check_dist.package_files())
    assert check_dist.check_wheel(fake_wheel(tmp_path / "ok.whl", check_dist)) == []
    dropped = "butterfly_onnx-0.1.0.dist-info/licenses/LICENSE"
    assert check_dist.check_wheel(fake_wheel(tmp_path / "a.whl", check_dist, drop=dropped)) == [f"missing {dropped}"]
    data = next(p for p in sorted(check_dist.package_files()) if p.startswith("butterfly_onnx/data/"))
    assert check_dist.check_wheel(fake_wheel(tmp_path / "b.whl", check_dist, drop=data)) == [f"missing {data}"]
