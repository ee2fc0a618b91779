#!/usr/bin/env bash
# The tests marked `gpu` (CUDA training with mixed precision and channels_last, DDP over NCCL with
# two GPUs), on a machine with a CUDA GPU and the train extra installed.  Elsewhere they are
# skipped; nothing else depends on them.
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible to torch')"
exec python -m pytest -m gpu -rs -q tests "$@"
