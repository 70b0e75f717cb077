// Scalar CPU kernels: the reference for the vector kernels (tests compare them bit for bit), and
// the kernels of CPUs without a supported vector extension. Branch-free binary searches, so the
// time does not depend on the data.
#include <algorithm>
#include <cstdint>

#include "common/bits.h"
#include "common/half.h"
#include "kernels.h"

namespace bnb::cpu {
namespace {

float load_value(const float *A, long long i) { return A[i]; }
float load_value(const unsigned short *A, long long i) { return half_to_float(A[i]); }
void store_value(float *out, long long i, float v) { out[i] = v; }
void store_value(unsigned short *out, long long i, float v) { out[i] = float_to_half(v); }

struct Block {
  long long begin;
  long long end;
};

Block block(long long blocksize, long long n, long long b) {
  long long begin = b * blocksize;
  return {begin, std::min(begin + blocksize, n)};
}

// Largest |x| of a block; false when the block holds inf or NaN. The largest absolute bit pattern
// is the largest magnitude, and any pattern at or above that of inf is inf or NaN.
template <typename T>
bool block_absmax(const T *A, Block range, float &absmax) {
  std::uint32_t largest = 0;
  for (long long i = range.begin; i < range.end; ++i) {
    std::uint32_t magnitude = float_to_bits(load_value(A, i)) & 0x7fffffffu;
    largest = std::max(largest, magnitude);
  }
  if (largest >= 0x7f800000u) return false;
  absmax = bits_to_float(largest);
  return true;
}

// Number of thresholds strictly below v among 2^levels sorted thresholds (the last one +inf).
int search(const float *thresholds, int levels, float v) {
  int position = 0;
  for (int step = 1 << (levels - 1); step > 0; step >>= 1) {
    position += thresholds[position + step - 1] < v ? step : 0;
  }
  return position;
}

template <typename T>
bool quantize_8bit(const Quantize8Job &job, long long first, long long end) {
  const T *A = static_cast<const T *>(job.A);
  for (long long b = first; b < end; ++b) {
    Block range = block(job.blocksize, job.n, b);
    float absmax;
    if (!block_absmax(A, range, absmax)) return false;
    job.absmax[b] = absmax;
    for (long long i = range.begin; i < range.end; ++i) {
      float v = absmax == 0.0f ? 0.0f : load_value(A, i) / absmax;
      job.out[i] = static_cast<unsigned char>(search(job.thresholds, 8, v));
    }
  }
  return true;
}

template <typename T>
void dequantize_8bit(const Dequantize8Job &job, long long first, long long end) {
  T *out = static_cast<T *>(job.out);
  for (long long b = first; b < end; ++b) {
    Block range = block(job.blocksize, job.n, b);
    float scale = job.absmax[b];
    for (long long i = range.begin; i < range.end; ++i) store_value(out, i, job.code[job.A[i]] * scale);
  }
}

int code_4bit(const Codebook4 &book, float v) {
  int sign = book.sign_bit != 0 && v < 0.0f ? book.sign_bit : 0;  // -0.0 is not below zero
  float key = book.sign_bit != 0 ? bits_to_float(float_to_bits(v) & 0x7fffffffu) : v;
  return sign | book.code_of_position[search(book.thresholds, book.levels, key)];
}

template <typename T>
bool quantize_4bit(const Quantize4Job &job, long long first, long long end) {
  const T *A = static_cast<const T *>(job.A);
  for (long long b = first; b < end; ++b) {
    Block range = block(job.blocksize, job.n, b);
    float absmax;
    if (!block_absmax(A, range, absmax)) return false;
    job.absmax[b] = absmax;
    // Blocks start at even indices (blocksize >= 32), so each byte belongs to one block.
    for (long long i = range.begin; i < range.end; i += 2) {
      int high = code_4bit(*job.book, absmax == 0.0f ? 0.0f : load_value(A, i) / absmax);
      int low = i + 1 < range.end ? code_4bit(*job.book, absmax == 0.0f ? 0.0f : load_value(A, i + 1) / absmax) : 0;
      job.out[i / 2] = static_cast<unsigned char>((high << 4) | low);
    }
  }
  return true;
}

template <typename T>
void dequantize_4bit(const Dequantize4Job &job, long long first, long long end) {
  T *out = static_cast<T *>(job.out);
  for (long long b = first; b < end; ++b) {
    Block range = block(job.blocksize, job.n, b);
    float scale = job.absmax[b];
    for (long long i = range.begin; i < range.end; ++i) {
      int q = (i % 2 == 0) ? (job.A[i / 2] >> 4) : (job.A[i / 2] & 0x0f);
      store_value(out, i, job.book->value[q] * scale);
    }
  }
}

}  // namespace

const Kernels kScalarKernels = {
    "scalar",
    quantize_8bit<float>,
    quantize_8bit<unsigned short>,
    dequantize_8bit<float>,
    dequantize_8bit<unsigned short>,
    quantize_4bit<float>,
    quantize_4bit<unsigned short>,
    dequantize_4bit<float>,
    dequantize_4bit<unsigned short>,
};

}  // namespace bnb::cpu
