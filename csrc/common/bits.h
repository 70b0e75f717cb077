// Reinterpreting a float as its 32-bit pattern and back, on host and device.
#ifndef BNB_COMMON_BITS_H
#define BNB_COMMON_BITS_H

#include <cstdint>
#include <cstring>

#include "portability.h"

namespace bnb {

BNB_HOST_DEVICE std::uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

BNB_HOST_DEVICE float bits_to_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// True for inf and NaN: the exponent bits are all ones.
BNB_HOST_DEVICE bool is_nonfinite(float f) { return (float_to_bits(f) & 0x7f800000u) == 0x7f800000u; }

}  // namespace bnb

#endif
