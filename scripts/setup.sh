#!/usr/bin/env bash
# Sets up a development environment from a fresh clone, with registries only:
#   Debian packages (when root and missing): nasm (libjpeg-turbo's SIMD), tuxpaint-stamps-default
#   (real photos for tests and the demo, read at run time);
#   .venv with butterfly-onnx built from source (Rust extension included) and the train + dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nasm >/dev/null || missing+=(nasm)
[ -d /usr/share/tuxpaint/stamps/animals ] || missing+=(tuxpaint-stamps-default)
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "setup: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "setup: warning: please install ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
    fi
fi
command -v cargo >/dev/null || { echo "setup: error: a Rust toolchain is needed (https://rustup.rs)" >&2; exit 1; }
# scripts/lint.sh needs rustfmt and clippy (rustup toolchains may lack them)
if command -v rustup >/dev/null && ! (cargo fmt --version && cargo clippy --version) >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# Editable install: maturin builds the native module (release profile) into python/butterfly_onnx/.
.venv/bin/python -m pip install -q -e ".[${EXTRAS:-train,dev}]"
# The real-world image corpus (Pillow's own Tests/images, from the installed Pillow's PyPI sdist,
# sha256-checked; read at run time by tests/test_real_world_images.py, never copied into the repo).
.venv/bin/python scripts/fetch_test_images.py >/dev/null ||
    echo "setup: warning: the real-world image corpus could not be fetched (scripts/fetch_test_images.py)" >&2
# The onnxruntime-openvino venv of tests/test_providers.py (cached in .venv-openvino; the tests
# make it themselves when missing).
.venv/bin/python tests/provider_envs.py >/dev/null ||
    echo "setup: warning: the onnxruntime-openvino venv could not be made (tests/provider_envs.py)" >&2
echo "setup: ok ($(.venv/bin/python -c 'import butterfly_onnx, butterfly_onnx._native; print("butterfly_onnx", butterfly_onnx.__version__, "with the Rust backend")'))"
