#!/usr/bin/env bash
# Assemble a CUDA 13.0 compiler from NVIDIA's PyPI wheels into PREFIX (default .cuda-wheels).
# Only CUDA 13 ships nvcc on PyPI; 11.x and 12.x wheels carry ptxas alone.
# --with-cublas adds cuBLAS and cuBLASLt (nvidia-cublas, about 420 MB), which trees whose CUDA library
# links CUDA::cublas need (upstream bitsandbytes does).
# Usage: tools/install-cuda-wheels.sh [--with-cublas] [PREFIX]
#   then: export PATH="PREFIX/nvidia/cu13/bin:$PATH"   (or BNB_CUDA_ROOTS=PREFIX/nvidia/cu13 for bnb-ci)
set -euo pipefail
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
if [ "${1:-}" = "--with-cublas" ]; then
  wheels+=(nvidia-cublas==13.0.2.14)
  shift
fi
prefix=${1:-.cuda-wheels}
# One pip call for every wheel: a second --target install into the same prefix skips what exists.
python3 -m pip install -q --disable-pip-version-check --no-deps --target "$prefix" "${wheels[@]}"
lib="$prefix/nvidia/cu13/lib"
# The wheels have only versioned sonames; CMake's FindCUDAToolkit wants the unversioned names.
for name in libcudart libcublas libcublasLt; do
  if [ -e "$lib/$name.so.13" ]; then ln -sf "$name.so.13" "$lib/$name.so"; fi
done
# nvcc.profile links from lib64 (-lcudadevrt, -lcudart_static).
[ -e "$prefix/nvidia/cu13/lib64" ] || ln -s lib "$prefix/nvidia/cu13/lib64"
"$prefix/nvidia/cu13/bin/nvcc" --version | tail -n 2
