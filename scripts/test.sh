#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs every test: the Rust crate's tests, then pytest over
# tests/ and benchmarks/ (benchmarks run once each, untimed, as smoke tests).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
# Missing native module = failure, not a skip.
export BUTTERFLY_ONNX_REQUIRE_RUST=1
export BUTTERFLY_ONNX_PYTHON="$PWD/.venv/bin/python"
# Lint, format, type and import checks (scripts/lint.sh; BUTTERFLY_ONNX_LINT=0 skips them).
if [[ "${BUTTERFLY_ONNX_LINT:-1}" == 1 ]]; then
    scripts/lint.sh
fi
cargo test -p butterfly-onnx --release
python -m pytest tests benchmarks "$@"
# The manylinux wheel, installed into a fresh venv of another Python minor with no compiler on
# PATH, must predict bit for bit like this install (scripts/wheel_smoke.sh; dist/ is rebuilt only
# when the sources changed). BUTTERFLY_ONNX_WHEEL=0 skips it.
if [[ "${BUTTERFLY_ONNX_WHEEL:-1}" == 1 ]]; then
    scripts/wheel_smoke.sh
fi
