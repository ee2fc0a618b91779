#!/usr/bin/env bash
# Installs what scripts/build_wheels.sh built into a fresh venv of another Python minor and runs
# the torch-free smoke test (scripts/wheel_smoke.py): both backends must reproduce the development
# install's logits bit for bit. scripts/test.sh runs the wheel mode (BUTTERFLY_ONNX_WHEEL=0 skips).
#
#   scripts/wheel_smoke.sh            # the x86-64 wheel, with no compiler on PATH
#   scripts/wheel_smoke.sh --sdist    # the sdist, built by pip from a clean unpack (Rust + C compiler)
#
# The wheel is built only when dist/ holds none for the current sources (dist/BUILD_KEY).
# Environment: BUTTERFLY_ONNX_PYTHON, the development venv's Python (default .venv/bin/python);
# BUTTERFLY_ONNX_SMOKE_PYTHON, the fresh venv's Python (default: python3.13, else python3.12, from
# PATH or pyenv, whichever differs from the development minor).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=wheel
[[ "${1:-}" == --sdist ]] && mode=sdist
dev_python=${BUTTERFLY_ONNX_PYTHON:-.venv/bin/python}
work=$PWD/build/smoke-$mode
total=$SECONDS

if [[ "$(cat dist/BUILD_KEY 2>/dev/null)" != "$(scripts/build_wheels.sh --key)" ]]; then
    echo "wheel_smoke: building dist/ (scripts/build_wheels.sh)"
    t=$SECONDS
    scripts/build_wheels.sh
    echo "wheel_smoke: build took $((SECONDS - t)) s"
fi
wheel=$(ls dist/butterfly_onnx-*-manylinux_2_28_x86_64.whl)
sdist=$(ls dist/butterfly_onnx-*.tar.gz)

# The fresh venv's Python: another minor than the development one.
dev_minor=$("$dev_python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
smoke_python=${BUTTERFLY_ONNX_SMOKE_PYTHON:-}
if [[ -z "$smoke_python" ]]; then
    for minor in 3.13 3.12; do
        [[ "$minor" == "$dev_minor" ]] && continue
        for candidate in "$(command -v "python$minor" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$minor".*/bin/"python$minor"; do
            if [[ -x "$candidate" ]] && "$candidate" -c '' 2>/dev/null; then
                smoke_python=$("$candidate" -c 'import sys; print(sys.executable)') # past pyenv's shim
                break 2
            fi
        done
    done
fi
[[ -n "$smoke_python" ]] || {
    echo "wheel_smoke: no Python 3.12/3.13 other than the development $dev_minor (set BUTTERFLY_ONNX_SMOKE_PYTHON)" >&2
    exit 1
}

rm -rf "$work"
mkdir -p "$work"
"$dev_python" scripts/wheel_smoke.py reference "$work/data"

# The dependencies come from a local wheelhouse (downloaded once, binary only), pinned to the
# development install's numpy, Pillow and onnxruntime.
wheelhouse=build/wheelhouse
"$smoke_python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip download -q --disable-pip-version-check --only-binary :all: \
    -d "$wheelhouse" -r "$work/data/pins.txt" "$wheel"
rm -f "$wheelhouse"/butterfly_onnx-* # a stale copy of ours would be kept (same file name)
pip_install=("$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --find-links "$wheelhouse")

if [[ $mode == wheel ]]; then
    # PATH without any compiler: the venv's bin, then symlinks to /usr/bin and /bin minus toolchains.
    shim=$work/bin
    mkdir -p "$shim"
    for dir in /usr/bin /bin; do
        for tool in "$dir"/*; do
            name=${tool##*/}
            [[ -e "$shim/$name" ]] && continue
            [[ "$name" =~ ^(cc|c\+\+|cpp|gcc|g\+\+|clang|cargo|rustc|rustup|rustdoc|nasm|yasm|zig|ld|as|tcc|c89|c99)($|[-.0-9]) ||
                "$name" =~ -linux-gnu-(gcc|g\+\+|cc|cpp|ld|as)($|[-.0-9]) ]] && continue
            ln -s "$tool" "$shim/$name"
        done
    done
    smoke_path="$work/venv/bin:$shim"
    for tool in cc gcc cargo rustc nasm; do
        if PATH=$smoke_path command -v "$tool" >/dev/null; then
            echo "wheel_smoke: $tool is still on the smoke test's PATH" >&2
            exit 1
        fi
    done
    t=$SECONDS
    PATH=$smoke_path "${pip_install[@]}" --only-binary :all: "$wheel" -r "$work/data/pins.txt"
    echo "wheel_smoke: pip install of $(basename "$wheel") and its dependencies (local wheelhouse): $((SECONDS - t)) s"
else
    # pip unpacks the sdist into a temporary folder and builds it there: nothing from this checkout.
    smoke_path="$work/venv/bin:$PATH"
    t=$SECONDS
    PATH=$smoke_path "${pip_install[@]}" --only-binary :all: -r "$work/data/pins.txt"
    PATH=$smoke_path "$work/venv/bin/python" -m pip install -q --disable-pip-version-check \
        --find-links "$wheelhouse" --no-binary butterfly-onnx "$sdist"
    echo "wheel_smoke: pip install of $(basename "$sdist") (built from source): $((SECONDS - t)) s"
fi

# Out of the checkout, without PYTHONPATH: only the installed package can be imported.
(cd "$work" && env -u PYTHONPATH PATH="$smoke_path" "$work/venv/bin/python" "$OLDPWD/scripts/wheel_smoke.py" check "$work/data")
echo "wheel_smoke: $mode ok in $((SECONDS - total)) s"
