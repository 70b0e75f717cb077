// The 4-bit code books and the nearest-code rule of docs/quantization.md.
//
// The tables live inside functions so that device code (CUDA, HIP, SYCL) can index them
// without separate constant-memory declarations.
#ifndef BNB_COMMON_CODEBOOKS_H
#define BNB_COMMON_CODEBOOKS_H

#include "bitsandbytes.h"
#include "portability.h"

namespace bnb {

// NF4[q], ascending. Written as doubles rounded once to float32, like the numpy reference.
BNB_HOST_DEVICE float nf4_value(int q) {
  const float table[16] = {
      static_cast<float>(-1.0),
      static_cast<float>(-0.6961928009986877),
      static_cast<float>(-0.5250730514526367),
      static_cast<float>(-0.39491748809814453),
      static_cast<float>(-0.28444138169288635),
      static_cast<float>(-0.18477343022823334),
      static_cast<float>(-0.09105003625154495),
      static_cast<float>(0.0),
      static_cast<float>(0.07958029955625534),
      static_cast<float>(0.16093020141124725),
      static_cast<float>(0.24611230194568634),
      static_cast<float>(0.33791524171829224),
      static_cast<float>(0.44070982933044434),
      static_cast<float>(0.5626170039176941),
      static_cast<float>(0.7229568362236023),
      static_cast<float>(1.0),
  };
  return table[q];
}

// FP4 magnitude of code bits 0..2: float32 of 0, 1/192, 2/3, 1, 1/3, 1/2, 1/6, 1/4.
BNB_HOST_DEVICE float fp4_magnitude(int q) {
  const float table[8] = {
      0.0f,
      static_cast<float>(1.0 / 192.0),
      static_cast<float>(2.0 / 3.0),
      1.0f,
      static_cast<float>(1.0 / 3.0),
      0.5f,
      static_cast<float>(1.0 / 6.0),
      0.25f,
  };
  return table[q];
}

// The FP4 magnitude codes in ascending order of their magnitude.
BNB_HOST_DEVICE int fp4_code_of_rank(int rank) {
  const int order[8] = {0, 1, 6, 7, 4, 5, 2, 3};
  return order[rank];
}

// Threshold i between neighbouring codes c[i] < c[i+1], exactly as the specification writes it.
BNB_HOST_DEVICE float threshold(float lower, float upper) { return (lower + upper) * 0.5f; }

// Nearest-code rule for a sorted list of thresholds: the number of thresholds strictly below v
// (numpy's searchsorted side="left"), found by binary search. Only comparisons, so it is exact.
BNB_HOST_DEVICE int count_thresholds_below(const float *thresholds, int count, float v) {
  int low = 0;
  int high = count;
  while (low < high) {
    int mid = (low + high) / 2;
    if (thresholds[mid] < v) {
      low = mid + 1;
    } else {
      high = mid;
    }
  }
  return low;
}

// v = x / absmax, or 0 for an all-zero block.
BNB_HOST_DEVICE float normalise(float x, float absmax) { return absmax == 0.0f ? 0.0f : x / absmax; }

BNB_HOST_DEVICE int nf4_code(float v) {
  float thresholds[15];
  for (int i = 0; i < 15; ++i) thresholds[i] = threshold(nf4_value(i), nf4_value(i + 1));
  return count_thresholds_below(thresholds, 15, v);
}

BNB_HOST_DEVICE int fp4_code(float v) {
  float thresholds[7];
  for (int i = 0; i < 7; ++i) thresholds[i] = threshold(fp4_magnitude(fp4_code_of_rank(i)), fp4_magnitude(fp4_code_of_rank(i + 1)));
  int sign = v < 0.0f ? 8 : 0;  // -0.0 is not below zero, so it counts as positive
  float magnitude = v < 0.0f ? -v : v;
  return sign | fp4_code_of_rank(count_thresholds_below(thresholds, 7, magnitude));
}

// The 4-bit code of a normalised value; quant_type has been validated.
BNB_HOST_DEVICE int code_4bit(float v, int quant_type) { return quant_type == BNB_QUANT_NF4 ? nf4_code(v) : fp4_code(v); }

// The value a 4-bit code stands for before scaling by absmax.
BNB_HOST_DEVICE float value_4bit(int q, int quant_type) {
  if (quant_type == BNB_QUANT_NF4) return nf4_value(q);
  float m = fp4_magnitude(q & 7);
  return (q & 8) ? -m : m;
}

}  // namespace bnb

#endif
