#!/usr/bin/env bash
# The GPU checks: every test marked `gpu`, on a machine with an NVIDIA GPU and the train extra
# (scripts/setup.sh installs it): tests/test_providers.py (the CUDA and TensorRT providers on both
# backends against the CPU provider, the fp16 variant on CUDA) and tests/test_train_hardware.py
# (CUDA fine-tuning with mixed precision and channels_last, DDP over NCCL with two GPUs). Skips
# become failures here (BUTTERFLY_ONNX_REQUIRE_GPU=1), so a run that reports passes really ran on
# the GPU; the DDP test needs two GPUs (deselect it with -k 'not ddp' on one).
#
#   scripts/setup.sh && scripts/gpu_checks.sh [pytest args...]
#
# onnxruntime-gpu replaces onnxruntime in .venv when the installed wheel lacks the CUDA
# provider (both install the package `onnxruntime`; the rust backend loads that wheel's library).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu_checks: no NVIDIA GPU here (nvidia-smi)" >&2; exit 2; }
"$python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_checks: torch sees no CUDA GPU (a CPU-only torch wheel?)')"
has_cuda() { "$python" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; }
if ! has_cuda; then
    echo "gpu_checks: installing onnxruntime-gpu in place of onnxruntime"
    "$python" -m pip uninstall -y -q onnxruntime
    "$python" -m pip install -q onnxruntime-gpu
    has_cuda || { echo "gpu_checks: onnxruntime-gpu still has no CUDA provider" >&2; exit 2; }
fi
export BUTTERFLY_ONNX_REQUIRE_GPU=1 BUTTERFLY_ONNX_REQUIRE_RUST=1
exec "$python" -m pytest tests -m gpu -v -rs "$@"
