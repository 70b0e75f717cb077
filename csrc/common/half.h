// IEEE binary16 <-> binary32 conversion in portable integer arithmetic, so that every backend
// rounds the same way: half -> float is exact, float -> half rounds to nearest-even, keeps
// denormals, saturates to inf and keeps NaN a (quiet) NaN.
#ifndef BNB_COMMON_HALF_H
#define BNB_COMMON_HALF_H

#include <cstdint>

#include "bits.h"
#include "portability.h"

namespace bnb {

BNB_HOST_DEVICE float half_to_float(std::uint16_t h) {
  std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exponent = (h >> 10) & 0x1fu;
  std::uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf, NaN
  if (exponent == 0) {
    if (mantissa == 0) return bits_to_float(sign);  // +-0
    // Denormal: shift the leading one up to the implicit bit, lowering the exponent as we go.
    int e = -14;
    while ((mantissa & 0x400u) == 0) {
      mantissa <<= 1;
      --e;
    }
    return bits_to_float(sign | (static_cast<std::uint32_t>(e + 127) << 23) | ((mantissa & 0x3ffu) << 13));
  }
  return bits_to_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

BNB_HOST_DEVICE std::uint16_t float_to_half(float f) {
  std::uint32_t u = float_to_bits(f);
  std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  std::uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  // 65520 = 0x477ff000 lies halfway between the largest half (65504) and 2^16; ties go to the
  // even neighbour, which is 2^16, i.e. inf.
  if (a >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
  std::uint32_t exponent = a >> 23;
  if (exponent < 113) {  // below the smallest normal half 2^-14: a half denormal or zero
    if (exponent < 102) return sign;  // below 2^-25: rounds to zero (float denormals included)
    // The half denormal is round(f * 2^24); f * 2^24 = m * 2^-(126 - exponent).
    std::uint32_t m = (a & 0x7fffffu) | 0x800000u;
    std::uint32_t shift = 126 - exponent;
    std::uint32_t q = m >> shift;
    std::uint32_t rest = m & ((1u << shift) - 1u);
    std::uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (q & 1u))) ++q;
    return static_cast<std::uint16_t>(sign | q);
  }
  std::uint32_t h = ((exponent - 112) << 10) | ((a >> 13) & 0x3ffu);
  std::uint32_t rest = a & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // a carry into the exponent is correct
  return static_cast<std::uint16_t>(sign | h);
}

}  // namespace bnb

#endif
