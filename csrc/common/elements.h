// Reading and writing one element as float32, whatever the storage type, and the size of the
// 8-bit code map; shared by every backend's kernels.
#ifndef BNB_COMMON_ELEMENTS_H
#define BNB_COMMON_ELEMENTS_H

#include "half.h"
#include "portability.h"

namespace bnb {

constexpr int kCodeMapSize = 256;

BNB_HOST_DEVICE float load(const float *p, long long i) { return p[i]; }
BNB_HOST_DEVICE float load(const unsigned short *p, long long i) { return half_to_float(p[i]); }
BNB_HOST_DEVICE void store(float *p, long long i, float v) { p[i] = v; }
BNB_HOST_DEVICE void store(unsigned short *p, long long i, float v) { p[i] = float_to_half(v); }

// Byte j holds element 2j in its high nibble and element 2j+1 in its low nibble.
BNB_HOST_DEVICE unsigned char pack_nibbles(int high, int low) { return static_cast<unsigned char>((high << 4) | low); }
BNB_HOST_DEVICE int nibble(const unsigned char *packed, long long i) {
  return (i % 2 == 0) ? (packed[i / 2] >> 4) : (packed[i / 2] & 0x0f);
}

}  // namespace bnb

#endif
