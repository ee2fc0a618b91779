#!/usr/bin/env bash
# Builds the release artefacts into dist/: the sdist and the manylinux_2_28 x86-64 wheel (and the
# aarch64 one where rustup's aarch64-unknown-linux-gnu target is installed), on a plain Linux
# machine with a Rust toolchain and only the package registries reachable.
#
#   scripts/build_wheels.sh          # build, then check each archive (auditwheel show, contents)
#   scripts/build_wheels.sh --key    # print the source key that dist/BUILD_KEY records, build nothing
#
# The build tools (scripts/wheel-build-requirements.txt: maturin, ziglang, auditwheel, pinned)
# live in their own venv, build/wheel-venv. The C libraries are compiled with zig (maturin --zig),
# which links against glibc 2.28's symbols whatever the build host's glibc is (plain gcc on a
# glibc >= 2.38 host pulls in __isoc23_* symbols). nasm, when installed, adds libjpeg-turbo's x86
# SIMD; on aarch64 its NEON code is plain C intrinsics and needs nothing extra.
set -euo pipefail
cd "$(dirname "$0")/.."

# The sources the artefacts are built from: HEAD plus uncommitted and untracked changes.
source_key() {
    {
        git rev-parse HEAD
        git diff HEAD --binary
        git ls-files -z --others --exclude-standard | xargs -0 -r sha256sum
    } | sha256sum | cut -d' ' -f1
}
if [[ "${1:-}" == --key ]]; then
    source_key
    exit 0
fi

venv=build/wheel-venv
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r scripts/wheel-build-requirements.txt
export PATH="$PWD/$venv/bin:$PATH" # maturin finds zig through this venv's Python

# The licence texts the wheel carries must match Cargo.lock.
python scripts/gather_licenses.py --check

# Its own target folder: zig as the C compiler would invalidate the development build's C objects.
export CARGO_TARGET_DIR="$PWD/target/wheel"
rm -f dist/butterfly_onnx-* dist/BUILD_KEY
mkdir -p dist
key=$(source_key)
start=$SECONDS
maturin sdist --out dist
targets=(x86_64-unknown-linux-gnu)
if command -v rustup >/dev/null && rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    targets+=(aarch64-unknown-linux-gnu)
else
    echo "build_wheels: aarch64-unknown-linux-gnu is not installed (rustup target add ...): x86-64 wheel only"
fi
status=0
for target in "${targets[@]}"; do
    maturin build --release --zig --compatibility manylinux_2_28 --target "$target" --out dist
    # libjpeg-turbo's SIMD kernels (the wheel's module is stripped: look at mozjpeg-sys's objects).
    out=$(ls -td "$CARGO_TARGET_DIR/$target"/release/build/mozjpeg-sys-*/out | head -1)
    case $target in
    x86_64-*) simd=$(find "$out" -name '*-avx2.o' | wc -l) need=$(command -v nasm >/dev/null && echo 1 || echo 0) ;;
    aarch64-*) simd=$(find "$out" -name '*-neon.o' | wc -l) need=1 ;;
    esac
    if ((simd == 0 && need)); then
        echo "build_wheels: $target: libjpeg-turbo's SIMD path was not built ($out)" >&2
        status=1
    elif ((simd == 0)); then
        echo "build_wheels: warning: $target: no libjpeg-turbo SIMD (nasm is not installed): slower JPEG decoding" >&2
    else
        echo "build_wheels: $target: libjpeg-turbo SIMD built ($simd objects)"
    fi
done
echo "build_wheels: built in $((SECONDS - start)) s"

for wheel in dist/butterfly_onnx-*.whl; do
    arch=$(basename "$wheel" .whl)
    arch=${arch##*manylinux_2_28_}
    report=$(auditwheel show "$wheel")
    echo "$report"
    if ! grep -q "manylinux_2_28_$arch" <<<"$report"; then
        echo "build_wheels: $wheel is not consistent with manylinux_2_28_$arch" >&2
        status=1
    fi
done
python scripts/check_dist.py dist/butterfly_onnx-*.whl dist/butterfly_onnx-*.tar.gz || status=1
if ((status == 0)); then
    echo "$key" >dist/BUILD_KEY
    ls -l dist/butterfly_onnx-*
fi
exit $status
