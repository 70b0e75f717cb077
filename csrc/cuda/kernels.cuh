// CUDA/HIP kernels of docs/quantization.md. Quantization runs one thread block per quantization
// block (a grid-stride loop when there are more blocks than the grid holds); dequantization runs
// one thread per element (8-bit) or per byte (4-bit).
#ifndef BNB_CUDA_KERNELS_CUH
#define BNB_CUDA_KERNELS_CUH

#include "common/backend.h"
#include "common/bits.h"
#include "common/codebooks.h"
#include "common/elements.h"
#include "compat.h"

namespace bnb::gpu {

constexpr int kThreads = 256;  // a power of two, for the tree reduction below
constexpr long long kMaxGrid = 65535;

struct Range {
  long long begin;
  long long end;
};

__device__ inline Range block_range(const Blocks &blocks, long long b) {
  long long begin = b * blocks.blocksize;
  long long end = begin + blocks.blocksize;
  return {begin, end < blocks.n ? end : blocks.n};
}

// absmax of one quantization block, reduced over the thread block. Sets *nonfinite when the block
// holds inf or NaN. Every thread of the block must call it; all get the same results.
template <typename T>
__device__ float block_absmax(const T *A, Range range, bool *nonfinite) {
  __shared__ float partial[kThreads];
  __shared__ int found_nonfinite;
  if (threadIdx.x == 0) found_nonfinite = 0;
  __syncthreads();
  float largest = 0.0f;
  for (long long i = range.begin + threadIdx.x; i < range.end; i += blockDim.x) {
    float x = load(A, i);
    if (is_nonfinite(x)) {
      found_nonfinite = 1;
    } else {
      float magnitude = x < 0.0f ? -x : x;
      largest = magnitude > largest ? magnitude : largest;
    }
  }
  partial[threadIdx.x] = largest;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride && partial[threadIdx.x + stride] > partial[threadIdx.x]) {
      partial[threadIdx.x] = partial[threadIdx.x + stride];
    }
    __syncthreads();
  }
  float result = partial[0];
  *nonfinite = found_nonfinite != 0;
  __syncthreads();  // partial and found_nonfinite are reused by the next block
  return result;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    quantize_blockwise_kernel(const float *code, const T *A, float *absmax, unsigned char *out, Blocks blocks,
                              int *nonfinite) {
  __shared__ float thresholds[kCodeMapSize - 1];
  for (int i = threadIdx.x; i < kCodeMapSize - 1; i += blockDim.x) thresholds[i] = threshold(code[i], code[i + 1]);
  __syncthreads();
  for (long long b = blockIdx.x; b < blocks.count; b += gridDim.x) {
    Range range = block_range(blocks, b);
    bool block_nonfinite;
    float block_max = block_absmax(A, range, &block_nonfinite);
    if (block_nonfinite) {
      if (threadIdx.x == 0) *nonfinite = 1;
      continue;
    }
    if (threadIdx.x == 0) absmax[b] = block_max;
    for (long long i = range.begin + threadIdx.x; i < range.end; i += blockDim.x) {
      float v = normalise(load(A, i), block_max);
      out[i] = static_cast<unsigned char>(count_thresholds_below(thresholds, kCodeMapSize - 1, v));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    quantize_4bit_kernel(const T *A, float *absmax, unsigned char *out, Blocks blocks, int quant_type,
                         int *nonfinite) {
  for (long long b = blockIdx.x; b < blocks.count; b += gridDim.x) {
    Range range = block_range(blocks, b);
    bool block_nonfinite;
    float block_max = block_absmax(A, range, &block_nonfinite);
    if (block_nonfinite) {
      if (threadIdx.x == 0) *nonfinite = 1;
      continue;
    }
    if (threadIdx.x == 0) absmax[b] = block_max;
    // Blocks start at even indices (blocksize >= 32), so each byte belongs to one block.
    for (long long i = range.begin + 2 * threadIdx.x; i < range.end; i += 2 * blockDim.x) {
      int high = code_4bit(normalise(load(A, i), block_max), quant_type);
      int low = i + 1 < range.end ? code_4bit(normalise(load(A, i + 1), block_max), quant_type) : 0;
      out[i / 2] = pack_nibbles(high, low);
    }
  }
}

template <typename T>
__global__ void dequantize_blockwise_kernel(const float *code, const unsigned char *A, const float *absmax, T *out,
                                            Blocks blocks) {
  long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < blocks.n; i += stride) {
    store(out, i, code[A[i]] * absmax[i / blocks.blocksize]);
  }
}

template <typename T>
__global__ void dequantize_4bit_kernel(const unsigned char *A, const float *absmax, T *out, Blocks blocks,
                                       int quant_type) {
  long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  long long bytes = (blocks.n + 1) / 2;
  for (long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; j < bytes; j += stride) {
    long long i = 2 * j;
    float scale = absmax[i / blocks.blocksize];  // both elements of a byte share a block
    store(out, i, value_4bit(A[j] >> 4, quant_type) * scale);
    if (i + 1 < blocks.n) store(out, i + 1, value_4bit(A[j] & 0x0f, quant_type) * scale);
  }
}

}  // namespace bnb::gpu

#endif
