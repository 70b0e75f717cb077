// AVX-512 kernels (F, BW, DQ, VL and F16C): 16 values per vector. Compiled with those instruction
// sets enabled (cmake/Bnbcpu.cmake) and run only where isa.cpp found them, so everything here is
// internal to this file (see kernels.h).
//
// Nearest code: a branch-free binary search over the thresholds. Step s of the 8-bit search
// compares v with t[pos + s - 1], where pos is a multiple of 2s: a table of 256 / (2s) entries
// indexed by pos / (2s), looked up with permutes (one register up to 16 entries, two up to 32,
// and register pairs merged by index bits beyond). Only float comparisons decide, so the codes
// equal the scalar kernels' bit for bit.
#include "kernels.h"

#if defined(BNB_CPU_X86)

#include <immintrin.h>

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 warns about the registers its AVX-512 intrinsics leave undefined on purpose (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace bnb::cpu {
namespace {

constexpr int kWidth = 16;

__mmask16 first_lanes(long long count) {
  return count >= kWidth ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << count) - 1u);
}

int log2_of(long long blocksize) {
  int shift = 0;
  while ((1LL << shift) < blocksize) ++shift;
  return shift;
}

// Values [i, i + 16) as float32; lanes outside the mask are 0.
__m512 load(const float *A, long long i, __mmask16 mask) { return _mm512_maskz_loadu_ps(mask, A + i); }
__m512 load(const unsigned short *A, long long i, __mmask16 mask) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mask, A + i));
}

void store(float *out, long long i, __m512 v, __mmask16 mask) {
  if (mask == 0xffff) {
    _mm512_storeu_ps(out + i, v);
  } else {
    _mm512_mask_storeu_ps(out + i, mask, v);
  }
}
void store(unsigned short *out, long long i, __m512 v, __mmask16 mask) {
  __m256i half = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if (mask == 0xffff) {
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i), half);
  } else {
    _mm256_mask_storeu_epi16(out + i, mask, half);
  }
}

// Writes consecutive vectors of 16 values to out[i, stop) with stores aligned to the vector size
// (64 bytes of float32, 32 of binary16): numpy's large arrays start 16 bytes past a page, and
// stores that straddle cache lines cost about an eighth of the dequantization time. Each stored
// vector joins the end of one computed vector and the start of the next (a two-source permute).
template <typename T>
class AlignedWriter {
 public:
  AlignedWriter(T *out, long long i, long long stop) : out_(out), next_(i), stop_(stop) {
    unsigned long long element = reinterpret_cast<unsigned long long>(out + i) / sizeof(T);
    // Lanes before the first aligned address (0 when the pointer is not even element-aligned).
    bool element_aligned = reinterpret_cast<unsigned long long>(out) % sizeof(T) == 0;
    lead_ = element_aligned ? static_cast<int>((kWidth - element % kWidth) % kWidth) : 0;
    __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    index_ = _mm512_add_epi32(lane, _mm512_set1_epi32(lead_));
  }

  // The values of out[next, next + 16), all before stop, after the first put.
  void put_inside(__m512 v) {
    if (lead_ == 0) {  // already aligned: no joining
      store_full(next_, v);
      next_ += kWidth;
      return;
    }
    store_full(next_ - kWidth + lead_, _mm512_permutex2var_ps(carry_, index_, v));
    carry_ = v;
    next_ += kWidth;
  }

  // The values of out[next, next + 16) (those at or beyond stop are not written).
  void put(__m512 v) {
    if (lead_ == 0) {
      write(next_, v, kWidth);
      next_ += kWidth;
      return;
    }
    if (!started_) {
      write(next_, v, lead_);  // up to the first aligned address
      started_ = true;
    } else {
      write(next_ - kWidth + lead_, _mm512_permutex2var_ps(carry_, index_, v), kWidth);
    }
    carry_ = v;
    next_ += kWidth;
  }

  void finish() {
    if (lead_ != 0 && started_) write(next_ - kWidth + lead_, _mm512_permutexvar_ps(index_, carry_), kWidth - lead_);
  }

 private:
  void store_full(long long at, __m512 v) { store(out_, at, v, 0xffff); }

  void write(long long at, __m512 v, long long lanes) {
    long long count = stop_ - at < lanes ? stop_ - at : lanes;
    if (count > 0) store(out_, at, v, first_lanes(count));
  }

  T *out_;
  long long next_;
  long long stop_;
  int lead_;
  __m512i index_;
  __m512 carry_ = _mm512_setzero_ps();
  bool started_ = false;
};

float half_bits_to_float(std::uint32_t bits) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits))));
}

// Largest |x| of A[begin, end); false when it holds inf or NaN. Compares absolute bit patterns:
// their order is the order of the magnitudes, and inf and NaN are at or above inf's.
bool block_absmax(const float *A, long long begin, long long end, float &absmax) {
  const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
  __m512i largest = _mm512_setzero_si512();
  long long i = begin;
  for (; i + kWidth <= end; i += kWidth) {
    largest = _mm512_max_epu32(largest, _mm512_and_si512(_mm512_loadu_si512(A + i), magnitude));
  }
  if (i < end) {
    __m512i tail = _mm512_maskz_loadu_epi32(first_lanes(end - i), A + i);
    largest = _mm512_max_epu32(largest, _mm512_and_si512(tail, magnitude));
  }
  std::uint32_t bits = _mm512_reduce_max_epu32(largest);
  if (bits >= 0x7f800000u) return false;
  absmax = _mm_cvtss_f32(_mm_castsi128_ps(_mm_cvtsi32_si128(static_cast<int>(bits))));
  return true;
}

bool block_absmax(const unsigned short *A, long long begin, long long end, float &absmax) {
  const __m512i magnitude = _mm512_set1_epi16(0x7fff);
  __m512i largest = _mm512_setzero_si512();
  long long i = begin;
  for (; i + 2 * kWidth <= end; i += 2 * kWidth) {
    largest = _mm512_max_epu16(largest, _mm512_and_si512(_mm512_loadu_si512(A + i), magnitude));
  }
  if (i < end) {
    long long count = end - i;
    __mmask32 mask = count >= 32 ? 0xffffffffu : static_cast<__mmask32>((1u << count) - 1u);
    largest = _mm512_max_epu16(largest, _mm512_and_si512(_mm512_maskz_loadu_epi16(mask, A + i), magnitude));
  }
  __m512i wide = _mm512_max_epu32(_mm512_and_si512(largest, _mm512_set1_epi32(0xffff)), _mm512_srli_epi32(largest, 16));
  std::uint32_t bits = _mm512_reduce_max_epu32(wide);
  if (bits >= 0x7c00u) return false;
  absmax = half_bits_to_float(bits);
  return true;
}

// The nearest-code tables of a search over 256 thresholds (see the top of the file).
struct Search8 {
  __m512 t1, t2, t4, t8, t16;  // steps 128 (broadcast), 64, 32, 16, 8
  __m512 t32[2];               // step 4
  __m512 t64[4];               // step 2
  __m512 t128[8];              // step 1
};

// entries[k] = t[k * 2s + s - 1] for k < 256 / (2s), in registers of 16 (unused lanes +inf).
void step_table(const float *t, int step, __m512 *registers, int count) {
  alignas(64) float entries[128];
  int size = kThresholds8 / (2 * step);
  for (int k = 0; k < 16 * count; ++k) entries[k] = t[kThresholds8 - 1];  // +inf
  for (int k = 0; k < size; ++k) entries[k] = t[k * 2 * step + step - 1];
  for (int r = 0; r < count; ++r) registers[r] = _mm512_load_ps(entries + 16 * r);
}

Search8 search8_tables(const float *t) {
  Search8 s;
  s.t1 = _mm512_set1_ps(t[127]);  // the first step compares every lane with t[127]
  step_table(t, 64, &s.t2, 1);
  step_table(t, 32, &s.t4, 1);
  step_table(t, 16, &s.t8, 1);
  step_table(t, 8, &s.t16, 1);
  step_table(t, 4, s.t32, 2);
  step_table(t, 2, s.t64, 4);
  step_table(t, 1, s.t128, 8);
  return s;
}

// pos += step where candidate < v.
__m512i advance(__m512i pos, __m512 candidate, __m512 v, int step) {
  __mmask16 below = _mm512_cmp_ps_mask(candidate, v, _CMP_LT_OQ);
  return _mm512_mask_add_epi32(pos, below, pos, _mm512_set1_epi32(step));
}

__m512i search8(const Search8 &s, __m512 v) {
  __m512i pos = _mm512_setzero_si512();
  pos = advance(pos, s.t1, v, 128);
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, 7), s.t2), v, 64);
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, 6), s.t4), v, 32);
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, 5), s.t8), v, 16);
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, 4), s.t16), v, 8);
  __m512i index = _mm512_srli_epi32(pos, 3);  // 0..31
  pos = advance(pos, _mm512_permutex2var_ps(s.t32[0], index, s.t32[1]), v, 4);
  index = _mm512_srli_epi32(pos, 2);  // 0..63
  __mmask16 upper32 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(32));
  __m512 low = _mm512_permutex2var_ps(s.t64[0], index, s.t64[1]);
  __m512 high = _mm512_permutex2var_ps(s.t64[2], index, s.t64[3]);
  pos = advance(pos, _mm512_mask_blend_ps(upper32, low, high), v, 2);
  index = _mm512_srli_epi32(pos, 1);  // 0..127
  upper32 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(32));
  __mmask16 upper64 = _mm512_test_epi32_mask(index, _mm512_set1_epi32(64));
  __m512 q0 = _mm512_permutex2var_ps(s.t128[0], index, s.t128[1]);
  __m512 q1 = _mm512_permutex2var_ps(s.t128[2], index, s.t128[3]);
  __m512 q2 = _mm512_permutex2var_ps(s.t128[4], index, s.t128[5]);
  __m512 q3 = _mm512_permutex2var_ps(s.t128[6], index, s.t128[7]);
  __m512 candidate =
      _mm512_mask_blend_ps(upper64, _mm512_mask_blend_ps(upper32, q0, q1), _mm512_mask_blend_ps(upper32, q2, q3));
  return advance(pos, candidate, v, 1);
}

// Scalar search, for the code of 0 in all-zero blocks.
int search_scalar(const float *t, int levels, float v) {
  int position = 0;
  for (int step = 1 << (levels - 1); step > 0; step >>= 1) position += t[position + step - 1] < v ? step : 0;
  return position;
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
    const __m512 divisor = _mm512_set1_ps(absmax);
    long long i = begin;
    for (; i + 2 * kWidth <= stop; i += 2 * kWidth) {
      __m512i c0 = search8(tables, _mm512_div_ps(load(A, i, 0xffff), divisor));
      __m512i c1 = search8(tables, _mm512_div_ps(load(A, i + kWidth, 0xffff), divisor));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(job.out + i), _mm512_cvtepi32_epi8(c0));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(job.out + i + kWidth), _mm512_cvtepi32_epi8(c1));
    }
    for (; i < stop; i += kWidth) {
      __mmask16 mask = first_lanes(stop - i);
      __m512i codes = search8(tables, _mm512_div_ps(load(A, i, mask), divisor));
      _mm512_mask_cvtepi32_storeu_epi8(job.out + i, mask, codes);
    }
  }
  return true;
}

// Chunks of 16 elements never straddle blocks (blocksize >= 64), so the loop runs over chunks and
// takes each chunk's scale from its block.
template <typename T>
void dequantize_8bit(const Dequantize8Job &job, long long first, long long end) {
  const int shift = log2_of(job.blocksize);
  long long i = first * job.blocksize;
  long long stop = end * job.blocksize < job.n ? end * job.blocksize : job.n;
  AlignedWriter<T> writer(static_cast<T *>(job.out), i, stop);
  auto chunk = [&](long long at) {
    __m512i index = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(job.A + at)));
    return _mm512_mul_ps(_mm512_i32gather_ps(index, job.code, 4), _mm512_set1_ps(job.absmax[at >> shift]));
  };
  if (i + kWidth <= stop) {
    writer.put(chunk(i));
    i += kWidth;
  }
  for (; i + kWidth <= stop; i += kWidth) writer.put_inside(chunk(i));
  if (i < stop) {  // the end of the last, partial block
    __mmask16 mask = first_lanes(stop - i);
    __m512i index = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, job.A + i));
    __m512 values = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mask, index, job.code, 4);
    writer.put(_mm512_mul_ps(values, _mm512_set1_ps(job.absmax[i >> shift])));
  }
  writer.finish();
}

// The nearest-code tables of a 4-bit code book: one register per search step.
struct Search4 {
  __m512 step[4];  // step[j] is the table of step 2^(levels - 1 - j)
  __m512i code_of_position;
  int levels;
  bool sign_magnitude;
};

Search4 search4_tables(const Codebook4 &book) {
  Search4 s{};
  s.levels = book.levels;
  s.sign_magnitude = book.sign_bit != 0;
  int size = 1 << book.levels;
  for (int j = 0; j < book.levels; ++j) {
    int step = 1 << (book.levels - 1 - j);
    alignas(64) float entries[16];
    for (float &e : entries) e = book.thresholds[kThresholds4 - 1];  // +inf
    for (int k = 0; k < size / (2 * step); ++k) entries[k] = book.thresholds[k * 2 * step + step - 1];
    s.step[j] = _mm512_load_ps(entries);
  }
  alignas(64) std::int32_t codes[16];
  for (int q = 0; q < 16; ++q) codes[q] = book.code_of_position[q];
  s.code_of_position = _mm512_load_si512(codes);
  return s;
}

template <int Levels>
__m512i search4(const Search4 &s, __m512 key) {
  __m512i pos = _mm512_setzero_si512();
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, Levels), s.step[0]), key, 1 << (Levels - 1));
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, Levels - 1), s.step[1]), key, 1 << (Levels - 2));
  pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, Levels - 2), s.step[2]), key, 1 << (Levels - 3));
  if constexpr (Levels == 4) pos = advance(pos, _mm512_permutexvar_ps(_mm512_srli_epi32(pos, 1), s.step[3]), key, 1);
  return pos;
}

// Codes of 16 normalised values; lanes outside the mask get code 0.
template <int Levels>
__m512i codes_4bit(const Search4 &s, __m512 v, __mmask16 mask) {
  __m512i codes;
  if (s.sign_magnitude) {
    __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);  // -0.0 is not negative
    __m512 magnitude = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
    codes = _mm512_permutexvar_epi32(search4<Levels>(s, magnitude), s.code_of_position);
    codes = _mm512_mask_or_epi32(codes, negative, codes, _mm512_set1_epi32(8));
  } else {
    codes = _mm512_permutexvar_epi32(search4<Levels>(s, v), s.code_of_position);
  }
  return _mm512_maskz_mov_epi32(mask, codes);
}

// Two codes per byte, the first of each pair in the high nibble: 16 codes -> 8 bytes (as 16-bit words).
__m128i pair_codes(__m512i codes) {
  return _mm_maddubs_epi16(_mm512_cvtepi32_epi8(codes), _mm_set1_epi16(0x0110));
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
    // An all-zero block: v = 0 (x / 1 is x, +-0).
    const __m512 divisor = _mm512_set1_ps(absmax == 0.0f ? 1.0f : absmax);
    long long i = begin;  // even: blocks start at multiples of blocksize >= 32
    for (; i + 2 * kWidth <= stop; i += 2 * kWidth) {
      __m512i c0 = codes_4bit<Levels>(tables, _mm512_div_ps(load(A, i, 0xffff), divisor), 0xffff);
      __m512i c1 = codes_4bit<Levels>(tables, _mm512_div_ps(load(A, i + kWidth, 0xffff), divisor), 0xffff);
      _mm_storeu_si128(reinterpret_cast<__m128i *>(job.out + i / 2), _mm_packus_epi16(pair_codes(c0), pair_codes(c1)));
    }
    for (; i < stop; i += kWidth) {
      long long count = stop - i;
      __mmask16 mask = first_lanes(count);
      __m512i codes = codes_4bit<Levels>(tables, _mm512_div_ps(load(A, i, mask), divisor), mask);
      __m128i bytes = _mm_packus_epi16(pair_codes(codes), _mm_setzero_si128());
      long long out_bytes = (count < kWidth ? count : kWidth) + 1;
      _mm_mask_storeu_epi8(job.out + i / 2, first_lanes(out_bytes / 2), bytes);
    }
  }
  return true;
}

template <typename T>
bool quantize_4bit(const Quantize4Job &job, long long first, long long end) {
  return job.book->levels == 4 ? quantize_4bit_levels<4, T>(job, first, end) : quantize_4bit_levels<3, T>(job, first, end);
}

// Values of the 32 codes in 16 bytes (high nibble first); the permutes use the low 4 bits of each
// index, so the high nibble needs no mask after the 16-bit shift.
void values32(__m128i packed, __m512 values, __m512 &first, __m512 &second) {
  __m128i high = _mm_srli_epi16(packed, 4);
  first = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(high, packed)), values);
  second = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_unpackhi_epi8(high, packed)), values);
}

// Chunks of 32 elements never straddle blocks (blocks start at multiples of blocksize >= 32), so
// the loop runs over chunks and takes each chunk's scale from its block.
template <typename T>
void dequantize_4bit(const Dequantize4Job &job, long long first, long long end) {
  const __m512 values = _mm512_loadu_ps(job.book->value);
  const int shift = log2_of(job.blocksize);
  long long i = first * job.blocksize;
  long long stop = end * job.blocksize < job.n ? end * job.blocksize : job.n;
  AlignedWriter<T> writer(static_cast<T *>(job.out), i, stop);
  auto chunk = [&](long long at, __m512 &v0, __m512 &v1) {
    const __m512 scale = _mm512_set1_ps(job.absmax[at >> shift]);
    values32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(job.A + (at >> 1))), values, v0, v1);
    v0 = _mm512_mul_ps(v0, scale);
    v1 = _mm512_mul_ps(v1, scale);
  };
  __m512 v0, v1;
  if (i + 2 * kWidth <= stop) {
    chunk(i, v0, v1);
    writer.put(v0);
    writer.put(v1);
    i += 2 * kWidth;
  }
  for (; i + 4 * kWidth <= stop; i += 4 * kWidth) {  // 64 codes from 32 bytes (two chunks: two scales)
    const __m512 scale0 = _mm512_set1_ps(job.absmax[i >> shift]);
    const __m512 scale1 = _mm512_set1_ps(job.absmax[(i + 2 * kWidth) >> shift]);
    __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(job.A + (i >> 1)));
    __m256i high = _mm256_srli_epi16(packed, 4);
    __m256i first = _mm256_unpacklo_epi8(high, packed);   // codes 0..15 | 32..47
    __m256i second = _mm256_unpackhi_epi8(high, packed);  // codes 16..31 | 48..63
    auto scaled = [&](__m128i codes, __m512 scale) {
      return _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(codes), values), scale);
    };
    writer.put_inside(scaled(_mm256_castsi256_si128(first), scale0));
    writer.put_inside(scaled(_mm256_castsi256_si128(second), scale0));
    writer.put_inside(scaled(_mm256_extracti128_si256(first, 1), scale1));
    writer.put_inside(scaled(_mm256_extracti128_si256(second, 1), scale1));
  }
  for (; i + 2 * kWidth <= stop; i += 2 * kWidth) {
    chunk(i, v0, v1);
    writer.put_inside(v0);
    writer.put_inside(v1);
  }
  if (i < stop) {  // the end of the last, partial block
    long long count = stop - i;
    const __m512 scale = _mm512_set1_ps(job.absmax[i >> shift]);
    values32(_mm_maskz_loadu_epi8(first_lanes((count + 1) / 2), job.A + i / 2), values, v0, v1);
    writer.put(_mm512_mul_ps(v0, scale));
    if (count > kWidth) writer.put(_mm512_mul_ps(v1, scale));
  }
  writer.finish();
}

}  // namespace

const Kernels kAvx512Kernels = {
    "avx512",
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
