#!/usr/bin/env bash
# Assemble a CUDA 13.0 compiler from NVIDIA's PyPI wheels into PREFIX (default .cuda-wheels).
# Only CUDA 13 ships nvcc on PyPI; 11.x and 12.x wheels carry ptxas alone.
# Usage: tools/install-cuda-wheels.sh [PREFIX]   then: export PATH="PREFIX/nvidia/cu13/bin:$PATH"
set -euo pipefail
prefix=${1:-.cuda-wheels}
python3 -m pip install -q --disable-pip-version-check --no-deps --target "$prefix" \
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
# The runtime wheel has only the versioned soname; CMake's FindCUDAToolkit wants libcudart.so.
ln -sf libcudart.so.13 "$prefix/nvidia/cu13/lib/libcudart.so"
"$prefix/nvidia/cu13/bin/nvcc" --version | tail -n 2
