"""The rust backend's adapter (``_backends/rust.py``): where its ONNX Runtime library comes
from.  A libonnxruntime planted where the working directory (or a folder above it) would
reach it is never opened, and a found library that others could have written is refused
(the file or its folder group/world-writable, or owned by neither the user nor root).

The planted library is a real shared object compiled here with ``cc``, whose constructor
writes a marker file: it runs inside ``dlopen``, before any check could refuse the library,
so the marker's absence proves the file was never opened."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from contract_models import native_available, tiny_model

pytestmark = pytest.mark.skipif(not native_available()[0], reason="butterfly_onnx._native is not built")

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "python"
ORT_VARS = ("BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH", "VIRTUAL_ENV", "CONDA_PREFIX")


def planted_library(folder: Path, marker: Path) -> Path:
    """``folder/libonnxruntime.so.99.0.0``: a shared object whose constructor writes ``marker``."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the planted library")
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "planted.c"
    source.write_text(
        textwrap.dedent(
            f"""
            #include <stdio.h>
            __attribute__((constructor)) static void planted(void) {{
                FILE *f = fopen({str(marker)!r}, "w");
                if (f) {{ fputs("the planted library ran", f); fclose(f); }}
            }}
            """
        ).replace("'", '"')
    )
    library = folder / "libonnxruntime.so.99.0.0"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(library), str(source)], check=True, capture_output=True)
    source.unlink()
    return library


def plant_wheel(site_packages: Path, marker: Path) -> Path:
    """A fake onnxruntime wheel in ``site_packages``: its ``__init__`` (if ever imported) and
    its ``capi/libonnxruntime`` (if ever loaded) both write ``marker``."""
    package = site_packages / "onnxruntime"
    library = planted_library(package / "capi", marker)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\n")
    return library


def run_python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ORT_VARS}
    environment.update(PYTHONPATH=str(PACKAGE_ROOT), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=environment, capture_output=True, text=True)


@pytest.fixture(autouse=True)
def no_ort_environment(monkeypatch):
    for name in ORT_VARS:
        monkeypatch.delenv(name, raising=False)


def test_a_library_planted_above_or_in_the_working_directory_is_never_opened(tmp_path):
    """``.venv/`` and ``venv/`` in the folders above the working directory, and an
    ``onnxruntime/`` package in the working directory itself (``python -c`` puts '' on
    sys.path): the rust backend loads the real wheel's library, the planted ones never run."""
    marker = tmp_path / "marker"
    parent = tmp_path / "parent"
    cwd = parent / "child"
    cwd.mkdir(parents=True)
    for prefix in (tmp_path / ".venv", parent / ".venv", parent / "venv"):
        plant_wheel(prefix / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages", marker)
    plant_wheel(cwd, marker)
    model = tiny_model(tmp_path / "model.onnx")
    done = run_python(
        "from butterfly_onnx import Classifier\n"
        "from butterfly_onnx import _native\n"
        f"c = Classifier({str(model)!r}, backend='rust')\n"
        "print(_native.loaded_ort_library())\n",
        cwd,
    )
    assert done.returncode == 0, done.stderr
    assert not marker.exists(), marker.read_text()
    loaded = Path(done.stdout.strip())
    assert loaded.name.startswith("libonnxruntime") and tmp_path not in loaded.parents


def _wheel_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the installed wheel's ``onnxruntime`` package folder layout with the real
    library (so it would load), on a PYTHONPATH entry of its own."""
    from butterfly_onnx._backends.rust import find_onnxruntime_library

    real = find_onnxruntime_library()
    site = tmp_path / "site"
    capi = site / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    (site / "onnxruntime" / "__init__.py").write_text("")
    shutil.copy2(real, capi / real.name)
    return site, capi / real.name


@pytest.mark.parametrize("where", ["file", "folder"])
def test_a_found_library_writable_by_others_is_refused(tmp_path, where, monkeypatch):
    """OpenSSH's rule: group/world-writable (the file or its folder) is refused with a clear
    error naming the file; the same library named in $BUTTERFLY_ONNX_ORT_LIB only warns."""
    from butterfly_onnx._backends.rust import find_onnxruntime_library
    from butterfly_onnx.errors import BackendUnavailableError

    site, library = _wheel_copy(tmp_path)
    target = library if where == "file" else library.parent
    target.chmod(target.stat().st_mode | stat.S_IWOTH)
    sys.path.insert(0, str(site))
    try:
        with pytest.raises(BackendUnavailableError, match=r"refusing to load .*libonnxruntime.*writable by everyone"):
            find_onnxruntime_library()
        target.chmod(target.stat().st_mode & ~stat.S_IWOTH | stat.S_IWGRP)
        with pytest.raises(BackendUnavailableError, match="writable by its group"):
            find_onnxruntime_library()
        target.chmod(target.stat().st_mode & ~stat.S_IWGRP)
        assert find_onnxruntime_library() == library
    finally:
        sys.path.remove(str(site))
    target.chmod(target.stat().st_mode | stat.S_IWOTH)
    monkeypatch.setenv("BUTTERFLY_ONNX_ORT_LIB", str(library))
    with pytest.warns(UserWarning, match=r"\$BUTTERFLY_ONNX_ORT_LIB: .*writable by everyone"):
        assert find_onnxruntime_library() == library


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_found_library_owned_by_another_user_is_refused(tmp_path):
    from butterfly_onnx._backends.rust import find_onnxruntime_library
    from butterfly_onnx.errors import BackendUnavailableError

    site, library = _wheel_copy(tmp_path)
    os.chown(library, 65534, 65534)
    sys.path.insert(0, str(site))
    try:
        with pytest.raises(BackendUnavailableError, match=r"owned by uid 65534, neither you \(uid 0\) nor root"):
            find_onnxruntime_library()
        os.chown(library, 0, 0)
        os.chown(library.parent, 65534, 65534)
        with pytest.raises(BackendUnavailableError, match="its folder .* owned by uid 65534"):
            find_onnxruntime_library()
    finally:
        sys.path.remove(str(site))
