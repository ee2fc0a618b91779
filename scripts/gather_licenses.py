"""Gathers the licence texts of everything linked into the native module (butterfly_onnx._native)
into LICENSES/, which the wheel and the sdist carry under .dist-info/licenses/ (pyproject's
license-files).

    python scripts/gather_licenses.py           # rewrite LICENSES/ from Cargo.lock
    python scripts/gather_licenses.py --check   # exit 1 when LICENSES/ is out of date

The crates are those `cargo tree` links into butterfly-onnx-python on any target (normal
dependencies, proc-macros and build tools excluded: they run at build time, nothing of them is
linked); their licence files are copied from the crates' registry sources (cargo fetches them).
The C libraries come vendored inside three of those crates (their licence files are listed in
C_LIBRARIES) and, for libtiff, inside this repository (pyproject lists that file directly, so
it is not copied). ONNX Runtime is not linked: it is loaded at run time from the onnxruntime
wheel, which carries its own licences.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "LICENSES"
PYTHON_CRATE = "butterfly-onnx-python"
# The files at a crate's root that carry its licence.
LICENSE_NAME = re.compile(r"^(LICEN[CS]E|COPYING|COPYRIGHT|NOTICE|UNLICENSE|PATENTS)([-._].*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class CLibrary:
    name: str
    crate: str  # the -sys crate that vendors and builds it
    files: tuple[str, ...]  # its licence files, relative to that crate's root
    license: str  # SPDX


# The C code built into the module and where its licence texts live.
C_LIBRARIES = (
    CLibrary("libjpeg-turbo (as MozJPEG)", "mozjpeg-sys", ("LICENSE",), "IJG AND BSD-3-Clause AND Zlib"),
    CLibrary("libwebp", "libwebp-sys", ("vendor/COPYING", "vendor/PATENTS"), "BSD-3-Clause"),
    CLibrary("zlib", "libz-sys", ("src/zlib/LICENSE",), "Zlib"),
)
# libtiff is vendored in this repository (its folder may move; pyproject globs it the same way).
LIBTIFF_GLOB = "rust/butterfly-onnx-libtiff/*/LICENSE.md"


@dataclass(frozen=True)
class Crate:
    name: str
    version: str
    license: str
    root: Path


def cargo(*args: str) -> str:
    return subprocess.run(["cargo", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def linked_crates() -> list[Crate]:
    tree = cargo(
        "tree", "--locked", "-p", PYTHON_CRATE, "-e", "normal,no-proc-macro",
        "--target", "all", "--prefix", "none", "--format", "{p}",
    )  # fmt: skip
    wanted = set()
    for line in tree.splitlines():
        parts = line.split()
        if len(parts) >= 2 and not (len(parts) > 2 and parts[2].startswith("(/")):  # skip path crates
            wanted.add((parts[0], parts[1].removeprefix("v")))
    meta = json.loads(cargo("metadata", "--locked", "--format-version", "1"))
    crates = []
    for pkg in meta["packages"]:
        if (pkg["name"], pkg["version"]) in wanted and pkg["source"]:
            crates.append(Crate(pkg["name"], pkg["version"], pkg["license"] or "", Path(pkg["manifest_path"]).parent))
            wanted.discard((pkg["name"], pkg["version"]))
    if wanted:
        sys.exit(f"gather_licenses: not found in cargo metadata: {sorted(wanted)}")
    return sorted(crates, key=lambda c: (c.name, c.version))


def licence_files(crate: Crate) -> list[str]:
    found = sorted(p.name for p in crate.root.iterdir() if p.is_file() and LICENSE_NAME.match(p.name))
    for lib in C_LIBRARIES:
        if lib.crate == crate.name:
            for rel in lib.files:
                if not (crate.root / rel).is_file():
                    sys.exit(f"gather_licenses: {crate.name} {crate.version} has no {rel} (update C_LIBRARIES)")
            found += [rel for rel in lib.files if rel not in found]
    return found


def write(out: Path) -> None:
    crates = linked_crates()
    libtiff = sorted(ROOT.glob(LIBTIFF_GLOB))
    if len(libtiff) != 1:
        sys.exit(f"gather_licenses: expected one libtiff licence at {LIBTIFF_GLOB}, found {libtiff}")
    rows = []
    for crate in crates:
        files = licence_files(crate)
        if not files:
            sys.exit(f"gather_licenses: crate {crate.name} {crate.version} ships no licence file")
        folder = out / "rust" / f"{crate.name}-{crate.version}"
        for rel in files:
            dest = folder / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(crate.root / rel, dest)
        rows.append(f"| {crate.name} | {crate.version} | {crate.license} | {', '.join(files)} |")
    c_rows = [
        f"| {lib.name} | {lib.crate} | {lib.license} | rust/{lib.crate}-*/{', '.join(lib.files)} |"
        for lib in C_LIBRARIES
    ]
    c_rows.append(f"| libtiff | butterfly-onnx-libtiff | libtiff | ../{LIBTIFF_GLOB} (in this repository) |")
    text = "\n".join(
        [
            "# Third-party licences of the butterfly_onnx._native module",
            "",
            "Written by scripts/gather_licenses.py from Cargo.lock; do not edit. butterfly_onnx itself is",
            "Apache-2.0 (../LICENSE). ONNX Runtime is not linked in: it is loaded at run time from the",
            "onnxruntime wheel, which carries its own licences.",
            "",
            "## C libraries built into the module",
            "",
            "| library | built by | licence | licence files |",
            "|---|---|---|---|",
            *c_rows,
            "",
            "## Rust crates linked into the module (any target)",
            "",
            "| crate | version | licence | licence files (under rust/<crate>-<version>/) |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )
    (out / "README.md").write_text(text)


def differences(a: Path, b: Path) -> list[str]:
    cmp = filecmp.dircmp(a, b)
    diffs = [f"only in {a.name}: {n}" for n in cmp.left_only] + [f"only in {b}: {n}" for n in cmp.right_only]
    diffs += [f"differs: {n}" for n in cmp.diff_files + cmp.funny_files]
    for sub in cmp.common_dirs:
        diffs += [f"{sub}/{d}" for d in differences(a / sub, b / sub)]
    return diffs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare LICENSES/ with Cargo.lock; change nothing")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = Path(tmp) / "LICENSES"
            fresh.mkdir()
            write(fresh)
            diffs = differences(fresh, OUT) if OUT.is_dir() else ["LICENSES/ is missing"]
        if diffs:
            print(
                "LICENSES/ is out of date (run scripts/gather_licenses.py):", *diffs[:20], sep="\n  ", file=sys.stderr
            )
            return 1
        return 0
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir()
    write(OUT)
    print(f"gather_licenses: wrote {OUT.relative_to(ROOT)}/ ({sum(1 for p in OUT.rglob('*') if p.is_file())} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
