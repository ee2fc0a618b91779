"""Checks what scripts/build_wheels.sh put in dist/: every wheel and sdist carries the whole
Python package (data files included, also when python/butterfly_onnx/data is a symlink), the
wheel its native module, and both every licence file pyproject's license-files names (the
project's, LICENSES/, libtiff's) -- in the wheel under .dist-info/licenses/.

    python scripts/check_dist.py dist/*.whl dist/*.tar.gz
"""

from __future__ import annotations

import glob
import os
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "butterfly_onnx"
SKIP_SUFFIXES = (".pyc", ".so", ".pyd")


def package_files() -> set[str]:
    """butterfly_onnx/<path> of every source file, following symlinks (os.walk does, with followlinks)."""
    found = set()
    for folder, dirs, files in os.walk(PACKAGE, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(SKIP_SUFFIXES):
                found.add(str((Path(folder) / name).relative_to(PACKAGE.parent)))
    return found


def licence_files() -> set[str]:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license-files"]
    found = set()
    for pattern in patterns:
        matches = [p for p in glob.glob(pattern, root_dir=ROOT, recursive=True) if (ROOT / p).is_file()]
        if not matches:
            sys.exit(f"check_dist: license-files pattern {pattern!r} matches nothing")
        found.update(matches)
    return found


def check_wheel(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
    dist_info = next(n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info"))
    problems = [f"missing {n}" for n in sorted(package_files() - names)]
    if not any(n.startswith("butterfly_onnx/_native.") for n in names):
        problems.append("no native module butterfly_onnx/_native.*")
    licences = {n.removeprefix(f"{dist_info}/licenses/") for n in names if n.startswith(f"{dist_info}/licenses/")}
    problems += [f"missing {dist_info}/licenses/{n}" for n in sorted(licence_files() - licences)]
    return problems


def check_sdist(path: Path) -> list[str]:
    with tarfile.open(path) as tf:
        members = tf.getmembers()
    top = members[0].name.split("/")[0]
    names = {m.name.removeprefix(f"{top}/") for m in members}
    # A symlinked data folder may travel as the link itself plus its target folder.
    links = {m.name.removeprefix(f"{top}/") for m in members if m.issym()}
    wanted = {f"python/{n}" for n in package_files()} | licence_files()
    return [f"missing {n}" for n in sorted(wanted - names) if not any(n.startswith(f"{link}/") for link in links)]


def main() -> int:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    failed = False
    for arg in sys.argv[1:]:
        path = Path(arg)
        problems = check_wheel(path) if path.suffix == ".whl" else check_sdist(path)
        for problem in problems:
            print(f"check_dist: {path.name}: {problem}", file=sys.stderr)
        failed |= bool(problems)
        if not problems:
            print(f"check_dist: {path.name}: ok (package files and {len(licence_files())} licence files)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
