"""A second Python environment whose onnxruntime is another wheel (``onnxruntime-openvino``),
made by the test setup and cached, for tests/test_providers.py.

The environment is a venv of the running interpreter holding only that wheel: a ``.pth`` file
puts the running environment's site-packages *after* the venv's own, so everything else
(numpy, Pillow, torch...) is shared and ``import onnxruntime`` finds the venv's wheel first.
The rust backend then loads that wheel's ``libonnxruntime`` too: ``_backends/rust.py`` finds
the library through ``importlib.util.find_spec("onnxruntime")``, i.e. the same wheel.

Made once (``pip install --no-deps``, about 40 s and 70 MB) under ``.venv-openvino`` at the
repository root (git-ignored; ``$BUTTERFLY_ONNX_OPENVINO_VENV`` moves it) and reused while its
marker names the same wheel.  Run as a script to make it ahead of the tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The wheel and version the tests run (checked on this machine: it reports
#: OpenVINOExecutionProvider and ships its own libonnxruntime with the provider beside it).
OPENVINO_WHEEL = "onnxruntime-openvino==1.24.1"


def openvino_venv() -> Path:
    return Path(os.environ.get("BUTTERFLY_ONNX_OPENVINO_VENV") or ROOT / ".venv-openvino")


def venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def make_openvino_env() -> Path:
    """The python of the cached OpenVINO environment, made (or remade) when missing or stale.
    Raises ``subprocess.CalledProcessError`` when pip cannot install the wheel."""
    folder = openvino_venv()
    python = venv_python(folder)
    marker = folder / "butterfly-onnx-wheel.txt"
    shared = sysconfig.get_paths()["purelib"]
    wanted = f"{OPENVINO_WHEEL}\n{sys.version_info[:2]}\n{shared}\n"
    if python.exists() and marker.exists() and marker.read_text(encoding="utf-8") == wanted:
        return python
    venv.EnvBuilder(clear=True, with_pip=False).create(folder)
    own = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # After the venv's own site-packages: its onnxruntime shadows the shared one.
    Path(own, "zz_butterfly_shared_site.pth").write_text(shared + "\n", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", own, OPENVINO_WHEEL],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    marker.write_text(wanted, encoding="utf-8")
    return python


if __name__ == "__main__":
    print(make_openvino_env())
