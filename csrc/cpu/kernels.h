// The CPU kernels of one instruction set, as a table of plain functions over a range of blocks.
//
// backend.cpp (compiled for the baseline CPU) validates, prepares the tables below, splits the
// blocks over threads and calls the kernels of the instruction set that isa.cpp chose. Each
// kernels_<isa>.cpp implements the whole table; the AVX2 and AVX-512 files are compiled with
// their instruction sets enabled (cmake/Bnbcpu.cmake), so they must not define anything another
// file could share: this header holds declarations and plain data only, and those files include
// no header of csrc/common/ (an inline function compiled there could be picked by the linker for
// baseline code and fault on a CPU without the instructions).
//
// Every kernel gives the codes of docs/quantization.md bit for bit, like the scalar kernels: the
// nearest-code rule is a binary search over thresholds sorted ascending and padded with +inf.
#ifndef BNB_CPU_KERNELS_H
#define BNB_CPU_KERNELS_H

namespace bnb::cpu {

// 8-bit quantization: thresholds[i] = (code[i] + code[i + 1]) * 0.5f for i < 255, thresholds[255] = +inf.
constexpr int kThresholds8 = 256;
// 4-bit quantization: up to 15 thresholds padded with +inf to 16.
constexpr int kThresholds4 = 16;

// A: n input values, float32 or IEEE binary16 bit patterns (unsigned short), in blocks of blocksize.
struct Quantize8Job {
  const float *thresholds;  // kThresholds8 values
  const void *A;
  float *absmax;
  unsigned char *out;
  long long blocksize;
  long long n;
};

// out: n values, float32 or binary16 bit patterns; out[i] = code[A[i]] * absmax[block].
struct Dequantize8Job {
  const float *code;  // 256 values
  const unsigned char *A;
  const float *absmax;
  void *out;
  long long blocksize;
  long long n;
};

// The nearest-code rule of a 4-bit code book: position = number of thresholds below the value
// (levels steps of binary search over 2^levels thresholds); code = code_of_position[position].
// FP4 searches |v| over its 8 magnitudes and adds the sign bit 8 when v < 0 (sign_bit = 8);
// NF4 searches v over its 16 values (sign_bit = 0).
struct Codebook4 {
  float thresholds[kThresholds4];
  unsigned char code_of_position[16];
  int levels;    // 4 (NF4) or 3 (FP4)
  int sign_bit;  // 0 (NF4) or 8 (FP4)
  float value[16];  // value[q]: the value code q stands for before scaling by absmax
};

// out: ceil(n / 2) bytes, element 2j in the high nibble of byte j.
struct Quantize4Job {
  const Codebook4 *book;
  const void *A;
  float *absmax;
  unsigned char *out;
  long long blocksize;
  long long n;
};

struct Dequantize4Job {
  const Codebook4 *book;
  const unsigned char *A;
  const float *absmax;
  void *out;
  long long blocksize;
  long long n;
};

// Each kernel runs the blocks [first, end) of its job. Quantizers return false as soon as a block
// holds inf or NaN (outputs are then unspecified). *_fp16 read or write binary16 bit patterns.
struct Kernels {
  const char *name;
  bool (*quantize_8bit_fp32)(const Quantize8Job &job, long long first, long long end);
  bool (*quantize_8bit_fp16)(const Quantize8Job &job, long long first, long long end);
  void (*dequantize_8bit_fp32)(const Dequantize8Job &job, long long first, long long end);
  void (*dequantize_8bit_fp16)(const Dequantize8Job &job, long long first, long long end);
  bool (*quantize_4bit_fp32)(const Quantize4Job &job, long long first, long long end);
  bool (*quantize_4bit_fp16)(const Quantize4Job &job, long long first, long long end);
  void (*dequantize_4bit_fp32)(const Dequantize4Job &job, long long first, long long end);
  void (*dequantize_4bit_fp16)(const Dequantize4Job &job, long long first, long long end);
};

extern const Kernels kScalarKernels;  // kernels_scalar.cpp, every CPU
#if defined(__x86_64__) || defined(_M_X64)
#define BNB_CPU_X86 1
extern const Kernels kAvx2Kernels;    // kernels_avx2.cpp: AVX2 + F16C
extern const Kernels kAvx512Kernels;  // kernels_avx512.cpp: AVX-512 F, BW, DQ, VL
#endif
#if defined(__aarch64__) || defined(_M_ARM64)
#define BNB_CPU_ARM64 1
extern const Kernels kNeonKernels;  // kernels_neon.cpp: NEON, part of every aarch64 CPU
#endif

}  // namespace bnb::cpu

#endif
