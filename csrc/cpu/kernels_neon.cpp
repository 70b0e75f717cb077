// NEON kernels (aarch64, where NEON is part of every CPU): 4 floats per vector.
//
// Nearest code: a branch-free binary search over the thresholds. Step s of the 8-bit search
// compares v with t[pos + s - 1], where pos is a multiple of 2s: a table of 256 / (2s) floats
// indexed by pos / (2s), looked up with byte-table lookups (TBL/TBX over up to 4 registers of
// 16 bytes, chained for longer tables). Only float comparisons decide, so the codes equal the
// scalar kernels' bit for bit.
#include "kernels.h"

#if defined(BNB_CPU_ARM64)

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

namespace bnb::cpu {
namespace {

constexpr int kWidth = 4;

float16x4_t as_half(uint16x4_t bits) { return vreinterpret_f16_u16(bits); }

float32x4_t load4(const float *p) { return vld1q_f32(p); }
float32x4_t load4(const unsigned short *p) { return vcvt_f32_f16(as_half(vld1_u16(p))); }
void store4(float *p, float32x4_t v) { vst1q_f32(p, v); }
void store4(unsigned short *p, float32x4_t v) { vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v))); }

float half_to_float(unsigned short h) { return vgetq_lane_f32(vcvt_f32_f16(as_half(vdup_n_u16(h))), 0); }
unsigned short float_to_half(float f) { return vget_lane_u16(vreinterpret_u16_f16(vcvt_f16_f32(vdupq_n_f32(f))), 0); }
void store1(float *p, float v) { *p = v; }
void store1(unsigned short *p, float v) { *p = float_to_half(v); }

// Largest |x| of A[begin, end); false when it holds inf or NaN. Compares absolute bit patterns:
// their order is the order of the magnitudes, and inf and NaN are at or above inf's.
bool block_absmax(const float *A, long long begin, long long end, float &absmax) {
  const uint32x4_t magnitude = vdupq_n_u32(0x7fffffffu);
  uint32x4_t largest = vdupq_n_u32(0);
  long long i = begin;
  for (; i + kWidth <= end; i += kWidth) {
    largest = vmaxq_u32(largest, vandq_u32(vreinterpretq_u32_f32(vld1q_f32(A + i)), magnitude));
  }
  std::uint32_t bits = vmaxvq_u32(largest);
  for (; i < end; ++i) {
    std::uint32_t b;
    std::memcpy(&b, A + i, sizeof b);
    b &= 0x7fffffffu;
    bits = b > bits ? b : bits;
  }
  if (bits >= 0x7f800000u) return false;
  std::memcpy(&absmax, &bits, sizeof absmax);
  return true;
}

bool block_absmax(const unsigned short *A, long long begin, long long end, float &absmax) {
  const uint16x8_t magnitude = vdupq_n_u16(0x7fff);
  uint16x8_t largest = vdupq_n_u16(0);
  long long i = begin;
  for (; i + 2 * kWidth <= end; i += 2 * kWidth) largest = vmaxq_u16(largest, vandq_u16(vld1q_u16(A + i), magnitude));
  std::uint32_t bits = vmaxvq_u16(largest);
  for (; i < end; ++i) {
    std::uint32_t b = A[i] & 0x7fffu;
    bits = b > bits ? b : bits;
  }
  if (bits >= 0x7c00u) return false;
  absmax = half_to_float(static_cast<unsigned short>(bits));
  return true;
}

// pos += step where candidate < v.
uint32x4_t advance(uint32x4_t pos, float32x4_t candidate, float32x4_t v, std::uint32_t step) {
  return vaddq_u32(pos, vandq_u32(vcltq_f32(candidate, v), vdupq_n_u32(step)));
}

// Byte indices of the floats k (< 64) of a table: 4k, 4k + 1, 4k + 2, 4k + 3.
uint8x16_t float_bytes(uint32x4_t k) {
  return vreinterpretq_u8_u32(vmlaq_n_u32(vdupq_n_u32(0x03020100u), k, 0x04040404u));
}

// A table of 64 floats as four groups of four registers (256 bytes); lookup of float k < 64.
struct Table64 {
  uint8x16x4_t part[4];
};

float32x4_t lookup64(const Table64 &t, uint8x16_t bytes) {
  uint8x16_t r = vqtbl4q_u8(t.part[0], bytes);
  r = vqtbx4q_u8(r, t.part[1], vsubq_u8(bytes, vdupq_n_u8(64)));  // out-of-range indices keep r
  r = vqtbx4q_u8(r, t.part[2], vsubq_u8(bytes, vdupq_n_u8(128)));
  r = vqtbx4q_u8(r, t.part[3], vsubq_u8(bytes, vdupq_n_u8(192)));
  return vreinterpretq_f32_u8(r);
}

uint8x16x4_t load_table(const float *entries) {
  uint8x16x4_t t;
  t.val[0] = vreinterpretq_u8_f32(vld1q_f32(entries));
  t.val[1] = vreinterpretq_u8_f32(vld1q_f32(entries + 4));
  t.val[2] = vreinterpretq_u8_f32(vld1q_f32(entries + 8));
  t.val[3] = vreinterpretq_u8_f32(vld1q_f32(entries + 12));
  return t;
}

// entries[k] = t[k * 2s + s - 1] for k < size / (2s); the rest +inf (t[size - 1]).
void step_entries(const float *t, int size, int step, float *entries, int capacity) {
  for (int k = 0; k < capacity; ++k) entries[k] = t[size - 1];
  for (int k = 0; k < size / (2 * step); ++k) entries[k] = t[k * 2 * step + step - 1];
}

struct Search8 {
  float32x4_t t1;                      // step 128
  uint8x16_t t2, t4;                   // steps 64, 32 (one register)
  uint8x16x2_t t8;                     // step 16
  uint8x16x4_t t16;                    // step 8
  uint8x16x4_t t32[2];                 // step 4
  Table64 t64;                         // step 2
  Table64 t128[2];                     // step 1: floats 0..63, 64..127
};

Search8 search8_tables(const float *t) {
  Search8 s;
  float e[128];
  step_entries(t, kThresholds8, 128, e, 4);
  s.t1 = vdupq_n_f32(e[0]);
  step_entries(t, kThresholds8, 64, e, 4);
  s.t2 = vreinterpretq_u8_f32(vld1q_f32(e));
  step_entries(t, kThresholds8, 32, e, 4);
  s.t4 = vreinterpretq_u8_f32(vld1q_f32(e));
  step_entries(t, kThresholds8, 16, e, 8);
  s.t8.val[0] = vreinterpretq_u8_f32(vld1q_f32(e));
  s.t8.val[1] = vreinterpretq_u8_f32(vld1q_f32(e + 4));
  step_entries(t, kThresholds8, 8, e, 16);
  s.t16 = load_table(e);
  step_entries(t, kThresholds8, 4, e, 32);
  s.t32[0] = load_table(e);
  s.t32[1] = load_table(e + 16);
  step_entries(t, kThresholds8, 2, e, 64);
  for (int p = 0; p < 4; ++p) s.t64.part[p] = load_table(e + 16 * p);
  step_entries(t, kThresholds8, 1, e, 128);
  for (int h = 0; h < 2; ++h) {
    for (int p = 0; p < 4; ++p) s.t128[h].part[p] = load_table(e + 64 * h + 16 * p);
  }
  return s;
}

uint32x4_t search8(const Search8 &s, float32x4_t v) {
  uint32x4_t pos = vdupq_n_u32(0);
  pos = advance(pos, s.t1, v, 128);
  pos = advance(pos, vreinterpretq_f32_u8(vqtbl1q_u8(s.t2, float_bytes(vshrq_n_u32(pos, 7)))), v, 64);
  pos = advance(pos, vreinterpretq_f32_u8(vqtbl1q_u8(s.t4, float_bytes(vshrq_n_u32(pos, 6)))), v, 32);
  pos = advance(pos, vreinterpretq_f32_u8(vqtbl2q_u8(s.t8, float_bytes(vshrq_n_u32(pos, 5)))), v, 16);
  pos = advance(pos, vreinterpretq_f32_u8(vqtbl4q_u8(s.t16, float_bytes(vshrq_n_u32(pos, 4)))), v, 8);
  uint8x16_t bytes = float_bytes(vshrq_n_u32(pos, 3));  // floats 0..31
  uint8x16_t r = vqtbl4q_u8(s.t32[0], bytes);
  r = vqtbx4q_u8(r, s.t32[1], vsubq_u8(bytes, vdupq_n_u8(64)));
  pos = advance(pos, vreinterpretq_f32_u8(r), v, 4);
  pos = advance(pos, lookup64(s.t64, float_bytes(vshrq_n_u32(pos, 2))), v, 2);
  uint32x4_t k = vshrq_n_u32(pos, 1);  // 0..127
  uint8x16_t low_bytes = float_bytes(vandq_u32(k, vdupq_n_u32(63)));
  float32x4_t low = lookup64(s.t128[0], low_bytes);
  float32x4_t high = lookup64(s.t128[1], low_bytes);
  float32x4_t candidate = vbslq_f32(vcgeq_u32(k, vdupq_n_u32(64)), high, low);
  return advance(pos, candidate, v, 1);
}

int search_scalar(const float *t, int levels, float v) {
  int position = 0;
  for (int step = 1 << (levels - 1); step > 0; step >>= 1) position += t[position + step - 1] < v ? step : 0;
  return position;
}

// Four vectors of positions 0..255 -> 16 bytes.
uint8x16_t narrow16(uint32x4_t a, uint32x4_t b, uint32x4_t c, uint32x4_t d) {
  uint16x8_t ab = vcombine_u16(vmovn_u32(a), vmovn_u32(b));
  uint16x8_t cd = vcombine_u16(vmovn_u32(c), vmovn_u32(d));
  return vcombine_u8(vmovn_u16(ab), vmovn_u16(cd));
}

template <typename T>
uint8x16_t quantize16(const Search8 &s, const T *p, float32x4_t divisor) {
  return narrow16(search8(s, vdivq_f32(load4(p), divisor)), search8(s, vdivq_f32(load4(p + 4), divisor)),
                  search8(s, vdivq_f32(load4(p + 8), divisor)), search8(s, vdivq_f32(load4(p + 12), divisor)));
}

template <typename T>
bool quantize_8bit(const Quantize8Job &job, long long first, long long end) {
  const T *A = static_cast<const T *>(job.A);
  const Search8 tables = search8_tables(job.thresholds);
  const unsigned char zero_code = static_cast<unsigned char>(search_scalar(job.thresholds, 8, 0.0f));
  for (long long b = first; b < end; ++b) {
    long long begin = b * job.blocksize;
    long long stop = begin + job.blocksize < job.n ? begin + job.blocksize : job.n;
    float absmax;
    if (!block_absmax(A, begin, stop, absmax)) return false;
    job.absmax[b] = absmax;
    if (absmax == 0.0f) {
      for (long long i = begin; i < stop; ++i) job.out[i] = zero_code;
      continue;
    }
    const float32x4_t divisor = vdupq_n_f32(absmax);
    long long i = begin;
    for (; i + 16 <= stop; i += 16) vst1q_u8(job.out + i, quantize16(tables, A + i, divisor));
    if (i < stop) {  // the last partial block: through a zero-padded copy
      T in[16] = {};
      long long count = stop - i;
      std::memcpy(in, A + i, static_cast<size_t>(count) * sizeof(T));
      unsigned char codes[16];
      vst1q_u8(codes, quantize16(tables, in, divisor));
      std::memcpy(job.out + i, codes, static_cast<size_t>(count));
    }
  }
  return true;
}

template <typename T>
void dequantize_8bit(const Dequantize8Job &job, long long first, long long end) {
  T *out = static_cast<T *>(job.out);
  const float *code = job.code;
  for (long long b = first; b < end; ++b) {
    long long begin = b * job.blocksize;
    long long stop = begin + job.blocksize < job.n ? begin + job.blocksize : job.n;
    float absmax = job.absmax[b];
    const float32x4_t scale = vdupq_n_f32(absmax);
    long long i = begin;
    for (; i + kWidth <= stop; i += kWidth) {
      const unsigned char *q = job.A + i;
      float32x4_t v = vdupq_n_f32(code[q[0]]);
      v = vsetq_lane_f32(code[q[1]], v, 1);
      v = vsetq_lane_f32(code[q[2]], v, 2);
      v = vsetq_lane_f32(code[q[3]], v, 3);
      store4(out + i, vmulq_f32(v, scale));
    }
    for (; i < stop; ++i) store1(out + i, code[job.A[i]] * absmax);
  }
}

// The search tables of a 4-bit code book (at most 8 candidates per step).
struct Search4 {
  uint8x16x2_t step[4];  // step[j] is the table of step 2^(levels - 1 - j)
  uint8x16_t code_of_position;
  bool sign_magnitude;
};

Search4 search4_tables(const Codebook4 &book) {
  Search4 s;
  for (int j = 0; j < 4; ++j) {
    float e[8];
    int step = j < book.levels ? 1 << (book.levels - 1 - j) : 1;
    step_entries(book.thresholds, 1 << book.levels, step, e, 8);
    s.step[j].val[0] = vreinterpretq_u8_f32(vld1q_f32(e));
    s.step[j].val[1] = vreinterpretq_u8_f32(vld1q_f32(e + 4));
  }
  s.code_of_position = vld1q_u8(book.code_of_position);
  s.sign_magnitude = book.sign_bit != 0;
  return s;
}

float32x4_t step_candidate(const uint8x16x2_t &table, uint32x4_t k) {
  return vreinterpretq_f32_u8(vqtbl2q_u8(table, float_bytes(k)));
}

// Positions of 4 keys (0 .. 2^Levels - 1).
template <int Levels>
uint32x4_t search4(const Search4 &s, float32x4_t key) {
  uint32x4_t pos = vdupq_n_u32(0);
  pos = advance(pos, step_candidate(s.step[0], vshrq_n_u32(pos, Levels)), key, 1u << (Levels - 1));
  pos = advance(pos, step_candidate(s.step[1], vshrq_n_u32(pos, Levels - 1)), key, 1u << (Levels - 2));
  pos = advance(pos, step_candidate(s.step[2], vshrq_n_u32(pos, Levels - 2)), key, 1u << (Levels - 3));
  if constexpr (Levels == 4) pos = advance(pos, step_candidate(s.step[3], vshrq_n_u32(pos, 1)), key, 1);
  return pos;
}

// Codes of 16 values at p (divided by divisor), as 16 bytes.
template <int Levels, typename T>
uint8x16_t codes16(const Search4 &s, const T *p, float32x4_t divisor) {
  uint32x4_t pos[4], negative[4];
  for (int g = 0; g < 4; ++g) {
    float32x4_t v = vdivq_f32(load4(p + 4 * g), divisor);
    negative[g] = vcltq_f32(v, vdupq_n_f32(0.0f));  // -0.0 is not negative
    float32x4_t key = s.sign_magnitude ? vabsq_f32(v) : v;
    pos[g] = search4<Levels>(s, key);
  }
  uint8x16_t codes = vqtbl1q_u8(s.code_of_position, narrow16(pos[0], pos[1], pos[2], pos[3]));
  if (s.sign_magnitude) {
    uint8x16_t sign = narrow16(negative[0], negative[1], negative[2], negative[3]);
    codes = vorrq_u8(codes, vandq_u8(sign, vdupq_n_u8(8)));
  }
  return codes;
}

// 16 codes -> 8 bytes, the first of each pair in the high nibble.
uint8x8_t pack_codes(uint8x16_t codes) {
  uint8x16_t even = vuzp1q_u8(codes, codes), odd = vuzp2q_u8(codes, codes);
  return vget_low_u8(vorrq_u8(vshlq_n_u8(even, 4), odd));
}

template <int Levels, typename T>
bool quantize_4bit_levels(const Quantize4Job &job, long long first, long long end) {
  const T *A = static_cast<const T *>(job.A);
  const Search4 tables = search4_tables(*job.book);
  for (long long b = first; b < end; ++b) {
    long long begin = b * job.blocksize;
    long long stop = begin + job.blocksize < job.n ? begin + job.blocksize : job.n;
    float absmax;
    if (!block_absmax(A, begin, stop, absmax)) return false;
    job.absmax[b] = absmax;
    const float32x4_t divisor = vdupq_n_f32(absmax == 0.0f ? 1.0f : absmax);  // all zero: v = x = +-0
    long long i = begin;  // even: blocks start at multiples of blocksize >= 32
    for (; i + 16 <= stop; i += 16) vst1_u8(job.out + i / 2, pack_codes(codes16<Levels>(tables, A + i, divisor)));
    if (i < stop) {  // the last partial block: through a zero-padded copy
      T in[16] = {};
      long long count = stop - i;
      std::memcpy(in, A + i, static_cast<size_t>(count) * sizeof(T));
      unsigned char bytes[8];
      vst1_u8(bytes, pack_codes(codes16<Levels>(tables, in, divisor)));
      if (count % 2 != 0) bytes[count / 2] &= 0xf0;  // no element for the last low nibble
      std::memcpy(job.out + i / 2, bytes, static_cast<size_t>((count + 1) / 2));
    }
  }
  return true;
}

template <typename T>
bool quantize_4bit(const Quantize4Job &job, long long first, long long end) {
  return job.book->levels == 4 ? quantize_4bit_levels<4, T>(job, first, end) : quantize_4bit_levels<3, T>(job, first, end);
}

template <typename T>
void dequantize_4bit(const Dequantize4Job &job, long long first, long long end) {
  T *out = static_cast<T *>(job.out);
  const uint8x16x4_t values = load_table(job.book->value);
  // Byte g of group j repeats code 4j + g / 4 and adds g % 4: the bytes of float value[code].
  const uint8x16_t spread[4] = {
      {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3},
      {4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7},
      {8, 8, 8, 8, 9, 9, 9, 9, 10, 10, 10, 10, 11, 11, 11, 11},
      {12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15},
  };
  const uint8x16_t byte_of_float = vreinterpretq_u8_u32(vdupq_n_u32(0x03020100u));
  for (long long b = first; b < end; ++b) {
    long long begin = b * job.blocksize;
    long long stop = begin + job.blocksize < job.n ? begin + job.blocksize : job.n;
    float absmax = job.absmax[b];
    const float32x4_t scale = vdupq_n_f32(absmax);
    long long i = begin;
    for (; i + 16 <= stop; i += 16) {
      uint8x8_t packed = vld1_u8(job.A + i / 2);
      uint8x8x2_t pairs = vzip_u8(vshr_n_u8(packed, 4), vand_u8(packed, vdup_n_u8(0x0f)));
      uint8x16_t codes = vcombine_u8(pairs.val[0], pairs.val[1]);
      for (int g = 0; g < 4; ++g) {
        uint8x16_t bytes = vaddq_u8(vshlq_n_u8(vqtbl1q_u8(codes, spread[g]), 2), byte_of_float);
        store4(out + i + 4 * g, vmulq_f32(vreinterpretq_f32_u8(vqtbl4q_u8(values, bytes)), scale));
      }
    }
    for (; i < stop; ++i) {
      int q = (i % 2 == 0) ? (job.A[i / 2] >> 4) : (job.A[i / 2] & 0x0f);
      store1(out + i, job.book->value[q] * absmax);
    }
  }
}

}  // namespace

const Kernels kNeonKernels = {
    "neon",
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

#endif
