// AVX2 kernels (with F16C): 8 values per vector. Compiled with those instruction sets enabled
// (cmake/Bnbcpu.cmake) and run only where isa.cpp found them, so everything here is internal to
// this file (see kernels.h).
//
// Nearest code: a branch-free binary search over the thresholds. Step s of the 8-bit search
// compares v with t[pos + s - 1], where pos is a multiple of 2s: the first steps (up to 8
// candidates) are permutes of one register, the last four gathers from the threshold array. Only
// float comparisons decide, so the codes equal the scalar kernels' bit for bit.
#include "kernels.h"

#if defined(BNB_CPU_X86)

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace bnb::cpu {
namespace {

constexpr int kWidth = 8;

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

float half_to_float(unsigned short h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }

__m256 load8(const float *p) { return _mm256_loadu_ps(p); }
__m256 load8(const unsigned short *p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))); }
void store8(float *p, __m256 v) { _mm256_storeu_ps(p, v); }
void store8(unsigned short *p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i *>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

// The first `count` (< 8) values of v.
void store_partial(float *p, __m256 v, long long count) {
  alignas(32) float values[kWidth];
  _mm256_store_ps(values, v);
  std::memcpy(p, values, static_cast<size_t>(count) * sizeof(float));
}
void store_partial(unsigned short *p, __m256 v, long long count) {
  alignas(16) unsigned short values[kWidth];
  _mm_store_si128(reinterpret_cast<__m128i *>(values), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  std::memcpy(p, values, static_cast<size_t>(count) * sizeof(unsigned short));
}

// Writes consecutive vectors of 8 values to out[i, stop) with stores aligned to the vector size
// (32 bytes of float32, 16 of binary16): numpy's large arrays start 16 bytes past a page, and
// stores that straddle cache lines slow the dequantization down. Each stored vector joins the end
// of one computed vector and the start of the next (two permutes and a blend).
template <typename T>
class AlignedWriter {
 public:
  AlignedWriter(T *out, long long i, long long stop) : out_(out), next_(i), stop_(stop) {
    unsigned long long element = reinterpret_cast<unsigned long long>(out + i) / sizeof(T);
    bool element_aligned = reinterpret_cast<unsigned long long>(out) % sizeof(T) == 0;
    lead_ = element_aligned ? static_cast<int>((kWidth - element % kWidth) % kWidth) : 0;
    __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    index_ = _mm256_and_si256(_mm256_add_epi32(lane, _mm256_set1_epi32(lead_)), _mm256_set1_epi32(7));
    from_next_ = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(kWidth - 1 - lead_)));
  }

  // The values of out[next, next + 8), all before stop, after the first put.
  void put_inside(__m256 v) {
    if (lead_ == 0) {  // already aligned: no joining
      store8(out_ + next_, v);
      next_ += kWidth;
      return;
    }
    store8(out_ + next_ - kWidth + lead_, join(v));
    carry_ = v;
    next_ += kWidth;
  }

  // The values of out[next, next + 8) (those at or beyond stop are not written).
  void put(__m256 v) {
    if (lead_ == 0) {
      write(next_, v, kWidth);
      next_ += kWidth;
      return;
    }
    if (!started_) {
      write(next_, v, lead_);  // up to the first aligned address
      started_ = true;
    } else {
      write(next_ - kWidth + lead_, join(v), kWidth);
    }
    carry_ = v;
    next_ += kWidth;
  }

  void finish() {
    if (lead_ != 0 && started_) write(next_ - kWidth + lead_, _mm256_permutevar8x32_ps(carry_, index_), kWidth - lead_);
  }

 private:
  // The end of the previous vector, then the start of v.
  __m256 join(__m256 v) const {
    return _mm256_blendv_ps(_mm256_permutevar8x32_ps(carry_, index_), _mm256_permutevar8x32_ps(v, index_), from_next_);
  }

  void write(long long at, __m256 v, long long lanes) {
    long long count = stop_ - at < lanes ? stop_ - at : lanes;
    if (count == kWidth) {
      store8(out_ + at, v);
    } else if (count > 0) {
      store_partial(out_ + at, v, count);
    }
  }

  T *out_;
  long long next_;
  long long stop_;
  int lead_;
  __m256i index_;
  __m256 from_next_;
  __m256 carry_ = _mm256_setzero_ps();
  bool started_ = false;
};

int log2_of(long long blocksize) {
  int shift = 0;
  while ((1LL << shift) < blocksize) ++shift;
  return shift;
}

std::uint32_t max_lane(__m256i v) {
  __m128i m = _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0x4e));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, 0xb1));
  return static_cast<std::uint32_t>(_mm_cvtsi128_si32(m));
}

// Largest |x| of A[begin, end); false when it holds inf or NaN. Compares absolute bit patterns:
// their order is the order of the magnitudes, and inf and NaN are at or above inf's.
bool block_absmax(const float *A, long long begin, long long end, float &absmax) {
  const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
  __m256i largest = _mm256_setzero_si256();
  long long i = begin;
  for (; i + kWidth <= end; i += kWidth) {
    __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(A + i));
    largest = _mm256_max_epu32(largest, _mm256_and_si256(bits, magnitude));
  }
  std::uint32_t bits = max_lane(largest);
  for (; i < end; ++i) {
    std::uint32_t b = bits_of(A[i]) & 0x7fffffffu;
    bits = b > bits ? b : bits;
  }
  if (bits >= 0x7f800000u) return false;
  absmax = float_of(bits);
  return true;
}

bool block_absmax(const unsigned short *A, long long begin, long long end, float &absmax) {
  const __m256i magnitude = _mm256_set1_epi16(0x7fff);
  __m256i largest = _mm256_setzero_si256();
  long long i = begin;
  for (; i + 2 * kWidth <= end; i += 2 * kWidth) {
    __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(A + i));
    largest = _mm256_max_epu16(largest, _mm256_and_si256(bits, magnitude));
  }
  __m256i wide = _mm256_max_epu32(_mm256_and_si256(largest, _mm256_set1_epi32(0xffff)), _mm256_srli_epi32(largest, 16));
  std::uint32_t bits = max_lane(wide);
  for (; i < end; ++i) {
    std::uint32_t b = A[i] & 0x7fffu;
    bits = b > bits ? b : bits;
  }
  if (bits >= 0x7c00u) return false;
  absmax = half_to_float(static_cast<unsigned short>(bits));
  return true;
}

// pos += step where candidate < v.
__m256i advance(__m256i pos, __m256 candidate, __m256 v, int step) {
  __m256i below = _mm256_castps_si256(_mm256_cmp_ps(candidate, v, _CMP_LT_OQ));
  return _mm256_add_epi32(pos, _mm256_and_si256(below, _mm256_set1_epi32(step)));
}

// Register tables of the steps with at most 8 candidates: entries[k] = t[k * 2s + s - 1].
__m256 step_table(const float *t, int size, int step) {
  alignas(32) float entries[8];
  for (float &e : entries) e = t[size - 1];  // +inf
  for (int k = 0; k < size / (2 * step); ++k) entries[k] = t[k * 2 * step + step - 1];
  return _mm256_load_ps(entries);
}

struct Search8 {
  const float *t;
  __m256 t1, t2, t4, t8;  // steps 128 (broadcast), 64, 32, 16
};

Search8 search8_tables(const float *t) {
  return {t, _mm256_set1_ps(t[127]), step_table(t, kThresholds8, 64), step_table(t, kThresholds8, 32),
          step_table(t, kThresholds8, 16)};
}

__m256i search8(const Search8 &s, __m256 v) {
  __m256i pos = _mm256_setzero_si256();
  pos = advance(pos, s.t1, v, 128);
  pos = advance(pos, _mm256_permutevar8x32_ps(s.t2, _mm256_srli_epi32(pos, 7)), v, 64);
  pos = advance(pos, _mm256_permutevar8x32_ps(s.t4, _mm256_srli_epi32(pos, 6)), v, 32);
  pos = advance(pos, _mm256_permutevar8x32_ps(s.t8, _mm256_srli_epi32(pos, 5)), v, 16);
  for (int step = 8; step > 0; step >>= 1) {
    __m256 candidate = _mm256_i32gather_ps(s.t, _mm256_add_epi32(pos, _mm256_set1_epi32(step - 1)), 4);
    pos = advance(pos, candidate, v, step);
  }
  return pos;
}

int search_scalar(const float *t, int levels, float v) {
  int position = 0;
  for (int step = 1 << (levels - 1); step > 0; step >>= 1) position += t[position + step - 1] < v ? step : 0;
  return position;
}

// 16 dword lanes (values 0..255) of two vectors -> 16 bytes, in order.
__m128i narrow16(__m256i a, __m256i b) {
  __m128i wa = _mm_packus_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));
  __m128i wb = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  return _mm_packus_epi16(wa, wb);
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
    const __m256 divisor = _mm256_set1_ps(absmax);
    long long i = begin;
    for (; i + 2 * kWidth <= stop; i += 2 * kWidth) {
      __m256i c0 = search8(tables, _mm256_div_ps(load8(A + i), divisor));
      __m256i c1 = search8(tables, _mm256_div_ps(load8(A + i + kWidth), divisor));
      _mm_storeu_si128(reinterpret_cast<__m128i *>(job.out + i), narrow16(c0, c1));
    }
    if (i < stop) {  // the last partial block: through a zero-padded copy
      T in[2 * kWidth] = {};
      long long count = stop - i;
      std::memcpy(in, A + i, static_cast<size_t>(count) * sizeof(T));
      __m256i c0 = search8(tables, _mm256_div_ps(load8(in), divisor));
      __m256i c1 = search8(tables, _mm256_div_ps(load8(in + kWidth), divisor));
      alignas(16) unsigned char codes[2 * kWidth];
      _mm_store_si128(reinterpret_cast<__m128i *>(codes), narrow16(c0, c1));
      std::memcpy(job.out + i, codes, static_cast<size_t>(count));
    }
  }
  return true;
}

// Chunks of 8 elements never straddle blocks (blocksize >= 64), so the loop runs over chunks and
// takes each chunk's scale from its block.
template <typename T>
void dequantize_8bit(const Dequantize8Job &job, long long first, long long end) {
  const int shift = log2_of(job.blocksize);
  long long i = first * job.blocksize;
  long long stop = end * job.blocksize < job.n ? end * job.blocksize : job.n;
  AlignedWriter<T> writer(static_cast<T *>(job.out), i, stop);
  auto chunk = [&](long long at) {
    __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(job.A + at)));
    return _mm256_mul_ps(_mm256_i32gather_ps(job.code, index, 4), _mm256_set1_ps(job.absmax[at >> shift]));
  };
  if (i + kWidth <= stop) {
    writer.put(chunk(i));
    i += kWidth;
  }
  for (; i + kWidth <= stop; i += kWidth) writer.put_inside(chunk(i));
  if (i < stop) {  // the end of the last, partial block
    unsigned char codes[kWidth] = {};
    std::memcpy(codes, job.A + i, static_cast<size_t>(stop - i));
    __m256i index = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(codes)));
    writer.put(_mm256_mul_ps(_mm256_i32gather_ps(job.code, index, 4), _mm256_set1_ps(job.absmax[i >> shift])));
  }
  writer.finish();
}

// One register per search step of a 4-bit code book (at most 8 candidates each).
struct Search4 {
  __m256 step[4];  // step[j] is the table of step 2^(levels - 1 - j)
  __m256i code_low, code_high;  // code_of_position[0..7], [8..15]
  bool sign_magnitude;
};

Search4 search4_tables(const Codebook4 &book) {
  Search4 s{};
  for (int j = 0; j < book.levels; ++j) s.step[j] = step_table(book.thresholds, 1 << book.levels, 1 << (book.levels - 1 - j));
  alignas(32) std::int32_t codes[16];
  for (int q = 0; q < 16; ++q) codes[q] = book.code_of_position[q];
  s.code_low = _mm256_load_si256(reinterpret_cast<const __m256i *>(codes));
  s.code_high = _mm256_load_si256(reinterpret_cast<const __m256i *>(codes + 8));
  s.sign_magnitude = book.sign_bit != 0;
  return s;
}

// 8 lanes of a 16-entry table: bit 3 of the index picks the register.
__m256i lookup16(__m256i low, __m256i high, __m256i index) {
  __m256 a = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(low, index));
  __m256 b = _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(high, index));
  return _mm256_castps_si256(_mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(index, 28))));
}

template <int Levels>
__m256i codes_4bit(const Search4 &s, __m256 v) {
  __m256 key = v;
  __m256i negative = _mm256_setzero_si256();
  if (s.sign_magnitude) {
    negative = _mm256_castps_si256(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));  // -0.0 is not negative
    key = _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(v), _mm256_set1_epi32(0x7fffffff)));
  }
  __m256i pos = _mm256_setzero_si256();
  pos = advance(pos, _mm256_permutevar8x32_ps(s.step[0], _mm256_srli_epi32(pos, Levels)), key, 1 << (Levels - 1));
  pos = advance(pos, _mm256_permutevar8x32_ps(s.step[1], _mm256_srli_epi32(pos, Levels - 1)), key, 1 << (Levels - 2));
  pos = advance(pos, _mm256_permutevar8x32_ps(s.step[2], _mm256_srli_epi32(pos, Levels - 2)), key, 1 << (Levels - 3));
  if constexpr (Levels == 4) pos = advance(pos, _mm256_permutevar8x32_ps(s.step[3], _mm256_srli_epi32(pos, 1)), key, 1);
  __m256i codes = lookup16(s.code_low, s.code_high, pos);
  return _mm256_or_si256(codes, _mm256_and_si256(negative, _mm256_set1_epi32(8)));
}

// 16 codes (two vectors) -> 8 bytes, the first of each pair in the high nibble.
__m128i pack_codes(__m256i a, __m256i b) {
  __m128i words = _mm_maddubs_epi16(narrow16(a, b), _mm_set1_epi16(0x0110));
  return _mm_packus_epi16(words, words);
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
    const __m256 divisor = _mm256_set1_ps(absmax == 0.0f ? 1.0f : absmax);  // all zero: v = x = +-0
    long long i = begin;  // even: blocks start at multiples of blocksize >= 32
    for (; i + 2 * kWidth <= stop; i += 2 * kWidth) {
      __m256i c0 = codes_4bit<Levels>(tables, _mm256_div_ps(load8(A + i), divisor));
      __m256i c1 = codes_4bit<Levels>(tables, _mm256_div_ps(load8(A + i + kWidth), divisor));
      _mm_storel_epi64(reinterpret_cast<__m128i *>(job.out + i / 2), pack_codes(c0, c1));
    }
    if (i < stop) {  // the last partial block: through a zero-padded copy
      T in[2 * kWidth] = {};
      long long count = stop - i;
      std::memcpy(in, A + i, static_cast<size_t>(count) * sizeof(T));
      __m256i c0 = codes_4bit<Levels>(tables, _mm256_div_ps(load8(in), divisor));
      __m256i c1 = codes_4bit<Levels>(tables, _mm256_div_ps(load8(in + kWidth), divisor));
      alignas(16) unsigned char bytes[16];
      _mm_store_si128(reinterpret_cast<__m128i *>(bytes), pack_codes(c0, c1));
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

// Values of the 16 codes in 8 bytes (high nibble first); the lookups use the low 4 index bits, so
// the high nibble needs no mask after the 16-bit shift.
void values16(__m128i packed, __m256i low, __m256i high, __m256 &first, __m256 &second) {
  __m128i codes = _mm_unpacklo_epi8(_mm_srli_epi16(packed, 4), packed);
  first = _mm256_castsi256_ps(lookup16(low, high, _mm256_cvtepu8_epi32(codes)));
  second = _mm256_castsi256_ps(lookup16(low, high, _mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8))));
}

// Chunks of 16 elements never straddle blocks (blocks start at multiples of blocksize >= 32), so
// the loop runs over chunks and takes each chunk's scale from its block.
template <typename T>
void dequantize_4bit(const Dequantize4Job &job, long long first, long long end) {
  const __m256i values_low = _mm256_castps_si256(_mm256_loadu_ps(job.book->value));
  const __m256i values_high = _mm256_castps_si256(_mm256_loadu_ps(job.book->value + 8));
  const int shift = log2_of(job.blocksize);
  long long i = first * job.blocksize;
  long long stop = end * job.blocksize < job.n ? end * job.blocksize : job.n;
  AlignedWriter<T> writer(static_cast<T *>(job.out), i, stop);
  auto chunk = [&](long long at, __m256 &v0, __m256 &v1) {
    const __m256 scale = _mm256_set1_ps(job.absmax[at >> shift]);
    values16(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(job.A + (at >> 1))), values_low, values_high, v0, v1);
    v0 = _mm256_mul_ps(v0, scale);
    v1 = _mm256_mul_ps(v1, scale);
  };
  __m256 v0, v1;
  if (i + 2 * kWidth <= stop) {
    chunk(i, v0, v1);
    writer.put(v0);
    writer.put(v1);
    i += 2 * kWidth;
  }
  for (; i + 2 * kWidth <= stop; i += 2 * kWidth) {
    chunk(i, v0, v1);
    writer.put_inside(v0);
    writer.put_inside(v1);
  }
  if (i < stop) {  // the end of the last, partial block
    long long count = stop - i;
    unsigned char packed[kWidth] = {};
    std::memcpy(packed, job.A + i / 2, static_cast<size_t>((count + 1) / 2));
    const __m256 scale = _mm256_set1_ps(job.absmax[i >> shift]);
    __m256 v0, v1;
    values16(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(packed)), values_low, values_high, v0, v1);
    writer.put(_mm256_mul_ps(v0, scale));
    if (count > kWidth) writer.put(_mm256_mul_ps(v1, scale));
  }
  writer.finish();
}

}  // namespace

const Kernels kAvx2Kernels = {
    "avx2",
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
