#!/usr/bin/env bash
# Assemble a CUDA 13.0 compiler from NVIDIA's PyPI wheels into PREFIX (default .cuda-wheels).
# Only CUDA 13 ships nvcc on PyPI; 11.x and 12.x wheels carry ptxas alone.
# --with-cublas adds cuBLAS and cuBLASLt (nvidia-cublas, about 420 MB), which trees whose CUDA library
# links CUDA::cublas need (upstream bitsandbytes does).
# A PREFIX that already holds exactly these wheels is kept; any other is replaced, all at once: the
# wheels go into PREFIX.partial-<pid> first, which becomes PREFIX when complete.
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
stamp=.bnb-wheels
if [ "$(cat "$prefix/$stamp" 2>/dev/null || true)" = "${wheels[*]}" ]; then
  "$prefix/nvidia/cu13/bin/nvcc" --version | tail -n 2
  exit 0
fi
staging="$prefix.partial-$$"
trap 'rm -rf "$staging"' EXIT
rm -rf "$staging"
# One pip call for every wheel: they share the top folder nvidia/, which a later --target call would skip.
python3 -m pip install -q --disable-pip-version-check --no-deps --target "$staging" "${wheels[@]}"
lib="$staging/nvidia/cu13/lib"
# The wheels have only versioned sonames; CMake's FindCUDAToolkit wants the unversioned names.
for name in libcudart libcublas libcublasLt; do
  if [ -e "$lib/$name.so.13" ]; then ln -sf "$name.so.13" "$lib/$name.so"; fi
done
# nvcc.profile links from lib64 (-lcudadevrt, -lcudart_static).
[ -e "$staging/nvidia/cu13/lib64" ] || ln -s lib "$staging/nvidia/cu13/lib64"
"$staging/nvidia/cu13/bin/nvcc" --version | tail -n 2
echo "${wheels[*]}" > "$staging/$stamp"
rm -rf "$prefix"
mv "$staging" "$prefix"
