"""Import hygiene of python/butterfly_onnx (docs/architecture.md, "what may import what"):

- no import cycles between modules, counting function-level and ``TYPE_CHECKING`` imports
  (a submodule reading its own package's ``__init__`` is not a cycle);
- no module takes an underscore name from another module that is not itself private
  (``_native``, ``_backends``, ``_version`` may be read); a shared helper gets a public name
  in a module of its own;
- no module imports from a higher layer of :data:`LAYERS` (a module in no layer is listed, not
  failed: give it a layer here and in docs/architecture.md).

Prints what it finds, the counts last; exits 1 when there is anything.  Run by scripts/lint.sh.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "python" / "butterfly_onnx"

#: The layers of docs/architecture.md, bottom first: a module (or package, with its submodules)
#: imports only from its own layer or the ones below.  The package ``__init__`` (the lazy public
#: facade) and ``__main__`` are outside the layers.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("contract and errors", ("_version", "errors", "atomic", "contract")),
    ("images and preprocessing", ("images", "preprocess", "datasets")),
    ("backends", ("_backends", "_native")),
    ("inference", ("classifier", "results", "evaluate")),
    ("training and export", ("train", "export", "settings", "catalog", "sample_data")),
    ("CLI and tools", ("cli", "demo", "ray", "bench", "parity", "serving")),
)
OUTSIDE = {"butterfly_onnx", "butterfly_onnx.__main__"}


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        name = ".".join(path.relative_to(root.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's imported modules of the package, and the private names it takes."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private: list[str] = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = parts[: len(parts) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    dst = full if full in mods else target
                    if dst not in mods or dst == name:
                        continue
                    edges[name].add(dst)
                    is_private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if is_private and dst == target and not dst.rpartition(".")[2].startswith("_"):
                        private.append(f"{name} imports {alias.name} from {dst}")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != name:
                        edges[name].add(alias.name)
    return edges, private


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if v.startswith(w + "."):
                    continue  # a submodule reading its own package
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module`` (``butterfly_onnx.x.y`` belongs where ``x`` does)."""
    top = module.split(".")[1] if module.count(".") else ""
    for index, (_, names) in enumerate(LAYERS):
        if top in names:
            return index
    return None


def upward(edges: dict[str, set[str]]) -> tuple[list[str], list[str]]:
    """Imports from a higher layer, and the modules that are in no layer."""
    wrong, unlayered = [], []
    for module in sorted(edges):
        if module in OUTSIDE:
            continue
        mine = layer_of(module)
        if mine is None:
            unlayered.append(module)
            continue
        for target in sorted(edges[module]):
            theirs = layer_of(target)
            if target not in OUTSIDE and theirs is not None and theirs > mine:
                wrong.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({LAYERS[theirs][0]})")
    return wrong, unlayered


def main() -> int:
    mods = modules(ROOT)
    edges, private = imports(mods)
    found = cycles(edges)
    wrong, unlayered = upward(edges)
    for component in found:
        print("cycle: " + " <-> ".join(component))
    for line in private:
        print("private import: " + line)
    for line in wrong:
        print("upward import: " + line)
    for module in unlayered:
        print(f"note: {module} is in no layer (scripts/check_imports.py LAYERS, docs/architecture.md)")
    print(
        f"imports: {len(mods)} modules, {len(found)} import cycles, {len(private)} private cross-module imports, "
        f"{len(wrong)} upward imports"
    )
    return 1 if found or private or wrong else 0


if __name__ == "__main__":
    sys.exit(main())
