// CPU backend: the kernels of docs/quantization.md, parallel over blocks with std::thread.
#include <algorithm>
#include <atomic>

#include "bitsandbytes.h"
#include "common/backend.h"
#include "common/bits.h"
#include "common/codebooks.h"
#include "common/elements.h"
#include "common/errors.h"
#include "parallel.h"

namespace bnb {
namespace {

struct BlockRange {
  long long begin;
  long long end;
};

BlockRange block_range(const Blocks &blocks, long long b) {
  long long begin = b * blocks.blocksize;
  return {begin, std::min(begin + blocks.blocksize, blocks.n)};
}

// Largest |x| of one block, or false when the block holds inf or NaN.
template <typename T>
bool block_absmax(const T *A, BlockRange range, float &absmax) {
  float largest = 0.0f;
  for (long long i = range.begin; i < range.end; ++i) {
    float x = load(A, i);
    if (is_nonfinite(x)) return false;
    largest = std::max(largest, x < 0.0f ? -x : x);
  }
  absmax = largest;
  return true;
}

}  // namespace

namespace backend {

const char *name() { return "cpu"; }
int runtime_version() { return BNB_NOT_AVAILABLE; }
int device_count() { return BNB_NOT_AVAILABLE; }

template <typename T>
int quantize_blockwise(const float *code, const T *A, float *absmax, unsigned char *out, Blocks blocks) {
  float thresholds[kCodeMapSize - 1];
  for (int i = 0; i < kCodeMapSize - 1; ++i) thresholds[i] = threshold(code[i], code[i + 1]);
  std::atomic<bool> finite{true};
  cpu::parallel_for_blocks(blocks.count, [&](long long first, long long end) {
    for (long long b = first; b < end; ++b) {
      BlockRange range = block_range(blocks, b);
      if (!block_absmax(A, range, absmax[b])) {
        finite = false;
        return;
      }
      for (long long i = range.begin; i < range.end; ++i) {
        float v = normalise(load(A, i), absmax[b]);
        out[i] = static_cast<unsigned char>(count_thresholds_below(thresholds, kCodeMapSize - 1, v));
      }
    }
  });
  return finite ? BNB_OK : fail_nonfinite();
}

template <typename T>
int dequantize_blockwise(const float *code, const unsigned char *A, const float *absmax, T *out, Blocks blocks) {
  cpu::parallel_for_blocks(blocks.count, [&](long long first, long long end) {
    for (long long b = first; b < end; ++b) {
      BlockRange range = block_range(blocks, b);
      for (long long i = range.begin; i < range.end; ++i) store(out, i, code[A[i]] * absmax[b]);
    }
  });
  return BNB_OK;
}

template <typename T>
int quantize_4bit(const T *A, float *absmax, unsigned char *out, Blocks blocks, int quant_type) {
  std::atomic<bool> finite{true};
  cpu::parallel_for_blocks(blocks.count, [&](long long first, long long end) {
    for (long long b = first; b < end; ++b) {
      BlockRange range = block_range(blocks, b);
      if (!block_absmax(A, range, absmax[b])) {
        finite = false;
        return;
      }
      // Blocks start at even indices (blocksize >= 64), so each byte belongs to one block.
      for (long long i = range.begin; i < range.end; i += 2) {
        int high = code_4bit(normalise(load(A, i), absmax[b]), quant_type);
        int low = i + 1 < range.end ? code_4bit(normalise(load(A, i + 1), absmax[b]), quant_type) : 0;
        out[i / 2] = pack_nibbles(high, low);
      }
    }
  });
  return finite ? BNB_OK : fail_nonfinite();
}

template <typename T>
int dequantize_4bit(const unsigned char *A, const float *absmax, T *out, Blocks blocks, int quant_type) {
  cpu::parallel_for_blocks(blocks.count, [&](long long first, long long end) {
    for (long long b = first; b < end; ++b) {
      BlockRange range = block_range(blocks, b);
      for (long long i = range.begin; i < range.end; ++i) {
        store(out, i, value_4bit(nibble(A, i), quant_type) * absmax[b]);
      }
    }
  });
  return BNB_OK;
}

BNB_INSTANTIATE_BACKEND(float);
BNB_INSTANTIATE_BACKEND(unsigned short);

}  // namespace backend
}  // namespace bnb
