#!/usr/bin/env python3
"""The import rule of docs/architecture.md for the Rust core (rust/butterfly-onnx/src): each
top-level module uses only modules of lower layers (``crate::name`` paths, ``use crate::{...}``
groups included), so there is no circle between modules. The root's re-exports
(``crate::Error``, ``crate::Result``, ``crate::ErrorKind``) count as ``error``.

    python scripts/check_rust_layers.py [SRC]     # exit 1 on an upward or same-layer use
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: The core crate's modules, bottom layer first (docs/architecture.md, "The Rust workspace").
#: A module may use the modules of the layers below its own, never its own layer or above.
#: (A name without a file is skipped: `atomic`, the command's atomic output files, is being
#: written on another branch.)
LAYERS: list[tuple[str, set[str]]] = [
    ("errors and files", {"error", "atomic"}),
    ("the preprocessing spec", {"spec"}),
    ("contract, pixels, runtime", {"contract", "preprocess", "runtime"}),
    ("decoding", {"decode"}),
    ("inference", {"classifier"}),
    ("serving", {"serve"}),
]
#: What lib.rs re-exports at the crate root, by the module that defines it.
ROOT_REEXPORTS = {"Error": "error", "ErrorKind": "error", "Result": "error"}

_COMMENT = re.compile(r"//[^\n]*")
_PATH = re.compile(r"\bcrate::(\w+)")
_GROUP = re.compile(r"\bcrate::\{([^}]*)\}")


def layer_of(module: str) -> int | None:
    return next((i for i, (_, names) in enumerate(LAYERS) if module in names), None)


def uses(source: str) -> set[str]:
    """The top-level modules a Rust source file names through ``crate::`` (comments ignored)."""
    code = _COMMENT.sub("", source)
    names = set(_PATH.findall(code))
    for group in _GROUP.findall(code):
        names |= {item.strip().split("::")[0] for item in group.split(",") if item.strip()}
    return {ROOT_REEXPORTS.get(name, name) for name in names}


def module_files(src: Path) -> dict[str, list[Path]]:
    """Each top-level module (a file ``name.rs`` or a folder ``name/``) and its files."""
    found: dict[str, list[Path]] = {}
    for path in sorted(src.iterdir()):
        if path.suffix == ".rs" and path.stem not in ("lib", "main"):
            found[path.stem] = [path]
        elif path.is_dir() and path.name != "bin":
            found[path.name] = sorted(path.rglob("*.rs"))
    return found


def violations(src: Path) -> tuple[list[str], list[str]]:
    """(uses that break the rule, modules missing from LAYERS)."""
    problems, unknown = [], []
    for module, files in module_files(src).items():
        own = layer_of(module)
        if own is None:
            unknown.append(module)
            continue
        for path in files:
            for used in sorted(uses(path.read_text(encoding="utf-8")) - {module}):
                other = layer_of(used)
                if other is not None and other >= own:
                    where = "its own layer" if other == own else "a higher layer"
                    problems.append(
                        f"{path.relative_to(src)}: {module} ({LAYERS[own][0]}) uses {used} ({where}: {LAYERS[other][0]})"
                    )
    return problems, unknown


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "rust" / "butterfly-onnx" / "src"
    problems, unknown = violations(src)
    for line in problems:
        print(line)
    for module in unknown:
        print(f"note: module {module} has no layer in scripts/check_rust_layers.py LAYERS")
    print(f"rust layers: {len(problems)} upward or same-layer uses")
    return 1 if problems or unknown else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
