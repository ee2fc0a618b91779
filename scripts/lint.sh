#!/usr/bin/env bash
# The habits that keep the code tidy (issue 11.7), all at once; exits non-zero on the first
# failing check group after running them all.  Config: ruff.toml, mypy.ini, rustfmt.toml;
# tool versions: ruff and mypy pinned in pyproject's dev extra, rustfmt/clippy from the toolchain.
#   scripts/lint.sh          check everything
#   scripts/lint.sh --fix    apply ruff's safe fixes, ruff format and cargo fmt first, then check
# Import hygiene (no cycles, no private cross-module imports): scripts/check_imports.py, and
# scripts/check_rust_layers.py for the Rust core's modules.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${BUTTERFLY_ONNX_PYTHON:-$PWD/.venv/bin/python}"
failed=()

run() {  # run NAME CMD...: run a check, remember it when it fails
    local name="$1"
    shift
    echo "== $name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}

if [[ "${1:-}" == "--fix" ]]; then
    "$PY" -m ruff check --fix .
    "$PY" -m ruff format .
    cargo fmt --all
fi

run "ruff check" "$PY" -m ruff check .
run "ruff format" "$PY" -m ruff format --check .
run "mypy" "$PY" -m mypy
run "cargo fmt" cargo fmt --all --check
run "cargo clippy" cargo clippy --workspace --all-targets --quiet -- -D warnings
run "imports" "$PY" scripts/check_imports.py
run "rust layers" "$PY" scripts/check_rust_layers.py

if ((${#failed[@]})); then
    echo "lint: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "lint: all checks passed"
