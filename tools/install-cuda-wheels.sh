#!/usr/bin/env bash
# CUDA 13.0 from NVIDIA's PyPI wheels into PREFIX (default .cuda-wheels): `bnb-ci install-cuda-wheels`
# does it (the wheels and their versions: pipeline/src/bitsandbytes_ci/host/install_toolkit.py); this
# script keeps the older command line. --with-cublas adds cuBLAS and cuBLASLt (about 420 MB).
# Usage: tools/install-cuda-wheels.sh [--with-cublas] [PREFIX]
#   then: export PATH="PREFIX/nvidia/cu13/bin:$PATH"   (or BNB_CUDA_ROOTS=PREFIX/nvidia/cu13 for bnb-ci)
set -euo pipefail
args=()
if [ "${1:-}" = "--with-cublas" ]; then
  args+=(--with-cublas)
  shift
fi
args+=(--prefix "${1:-.cuda-wheels}")
repo=$(cd "$(dirname "$0")/.." && pwd)
if [ -x "$repo/.venv/bin/python" ]; then
  exec "$repo/.venv/bin/python" -m bitsandbytes_ci.host.cli install-cuda-wheels "${args[@]}"
fi
exec bnb-ci install-cuda-wheels "${args[@]}"
