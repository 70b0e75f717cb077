// CPU backend: the kernels of docs/quantization.md, parallel over blocks with std::thread. The
// kernels themselves (kernels_*.cpp) are chosen at run time for the CPU (isa.cpp).
#include <atomic>
#include <limits>

#include "bitsandbytes.h"
#include "common/backend.h"
#include "common/codebooks.h"
#include "common/elements.h"
#include "common/errors.h"
#include "isa.h"
#include "kernels.h"
#include "parallel.h"

namespace bnb {
namespace {

// A thread gets at least this many elements: starting one costs about as much as quantizing that many.
constexpr long long kMinElementsPerThread = 1 << 16;

// Runs kernel(first, end) over the blocks of a call on the configured number of threads. A
// quantizer's false (inf or NaN in a block) becomes BNB_ERROR_NONFINITE.
template <typename Kernel>
int run_blocks(const Blocks &blocks, Kernel kernel) {
  long long threads = backend::cpu_threads();
  long long min_blocks = kMinElementsPerThread / blocks.blocksize;
  std::atomic<bool> finite{true};
  cpu::parallel_for_blocks(blocks.count, threads, min_blocks, [&](long long first, long long end) {
    if (!kernel(first, end)) finite = false;
  });
  return finite ? BNB_OK : fail_nonfinite();
}

void threshold_table(const float *code, float thresholds[cpu::kThresholds8]) {
  for (int i = 0; i < kCodeMapSize - 1; ++i) thresholds[i] = threshold(code[i], code[i + 1]);
  thresholds[kCodeMapSize - 1] = std::numeric_limits<float>::infinity();
}

// The code book of docs/quantization.md in the form the kernels search (kernels.h).
cpu::Codebook4 codebook_4bit(int quant_type) {
  cpu::Codebook4 book{};
  for (int q = 0; q < 16; ++q) book.value[q] = value_4bit(q, quant_type);
  for (float &t : book.thresholds) t = std::numeric_limits<float>::infinity();
  if (quant_type == BNB_QUANT_NF4) {
    book.levels = 4;
    book.sign_bit = 0;
    for (int i = 0; i < 15; ++i) book.thresholds[i] = threshold(nf4_value(i), nf4_value(i + 1));
    for (int q = 0; q < 16; ++q) book.code_of_position[q] = static_cast<unsigned char>(q);
  } else {
    book.levels = 3;
    book.sign_bit = 8;
    for (int i = 0; i < 7; ++i) {
      book.thresholds[i] = threshold(fp4_magnitude(fp4_code_of_rank(i)), fp4_magnitude(fp4_code_of_rank(i + 1)));
    }
    for (int rank = 0; rank < 8; ++rank) book.code_of_position[rank] = static_cast<unsigned char>(fp4_code_of_rank(rank));
  }
  return book;
}

template <typename T>
constexpr bool kHalf = sizeof(T) == 2;

}  // namespace

namespace backend {

const char *name() { return "cpu"; }
int runtime_version() { return BNB_NOT_AVAILABLE; }
int device_count() { return BNB_NOT_AVAILABLE; }

const char *cpu_isa() { return cpu::active_isa(); }
int set_cpu_isa(const char *isa) { return cpu::select_isa(isa); }
int cpu_threads() { return cpu::thread_setting() > 0 ? cpu::thread_setting() : cpu::default_threads(); }
int set_cpu_threads(int threads) { return cpu::set_thread_setting(threads); }

template <typename T>
int quantize_blockwise(const float *code, const T *A, float *absmax, unsigned char *out, Blocks blocks) {
  int status = BNB_OK;
  const cpu::Kernels *kernels = cpu::active_kernels(&status);
  if (kernels == nullptr) return status;
  float thresholds[cpu::kThresholds8];
  threshold_table(code, thresholds);
  cpu::Quantize8Job job{thresholds, A, absmax, out, blocks.blocksize, blocks.n};
  auto kernel = kHalf<T> ? kernels->quantize_8bit_fp16 : kernels->quantize_8bit_fp32;
  return run_blocks(blocks, [&](long long first, long long end) { return kernel(job, first, end); });
}

template <typename T>
int dequantize_blockwise(const float *code, const unsigned char *A, const float *absmax, T *out, Blocks blocks) {
  int status = BNB_OK;
  const cpu::Kernels *kernels = cpu::active_kernels(&status);
  if (kernels == nullptr) return status;
  cpu::Dequantize8Job job{code, A, absmax, out, blocks.blocksize, blocks.n};
  auto kernel = kHalf<T> ? kernels->dequantize_8bit_fp16 : kernels->dequantize_8bit_fp32;
  return run_blocks(blocks, [&](long long first, long long end) {
    kernel(job, first, end);
    return true;
  });
}

template <typename T>
int quantize_4bit(const T *A, float *absmax, unsigned char *out, Blocks blocks, int quant_type) {
  int status = BNB_OK;
  const cpu::Kernels *kernels = cpu::active_kernels(&status);
  if (kernels == nullptr) return status;
  cpu::Codebook4 book = codebook_4bit(quant_type);
  cpu::Quantize4Job job{&book, A, absmax, out, blocks.blocksize, blocks.n};
  auto kernel = kHalf<T> ? kernels->quantize_4bit_fp16 : kernels->quantize_4bit_fp32;
  return run_blocks(blocks, [&](long long first, long long end) { return kernel(job, first, end); });
}

template <typename T>
int dequantize_4bit(const unsigned char *A, const float *absmax, T *out, Blocks blocks, int quant_type) {
  int status = BNB_OK;
  const cpu::Kernels *kernels = cpu::active_kernels(&status);
  if (kernels == nullptr) return status;
  cpu::Codebook4 book = codebook_4bit(quant_type);
  cpu::Dequantize4Job job{&book, A, absmax, out, blocks.blocksize, blocks.n};
  auto kernel = kHalf<T> ? kernels->dequantize_4bit_fp16 : kernels->dequantize_4bit_fp32;
  return run_blocks(blocks, [&](long long first, long long end) {
    kernel(job, first, end);
    return true;
  });
}

BNB_INSTANTIATE_BACKEND(float);
BNB_INSTANTIATE_BACKEND(unsigned short);

}  // namespace backend
}  // namespace bnb
