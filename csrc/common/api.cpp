// The exported C ABI (csrc/bitsandbytes.h): argument validation, then the backend.
//
// No C++ exception may cross this boundary (it would end the calling process with std::terminate):
// every exported function runs its body through guarded(), which turns one into a status and a
// message for bnb_last_error().
#include "bitsandbytes.h"

#include <exception>
#include <new>

#include "backend.h"
#include "errors.h"
#include "validate.h"

#ifndef BNB_VERSION
#error "BNB_VERSION must be defined by the build (CMake reads it from the VERSION file)"
#endif

namespace {

// body(), or `failed` after recording what was thrown (BNB_ERROR_RUNTIME for a function returning a status).
template <typename Result, typename Body>
Result guarded(const char *function, Result failed, Body body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc &) {
    bnb::fail(BNB_ERROR_RUNTIME, "%s: out of memory", function);
  } catch (const std::exception &e) {
    bnb::fail(BNB_ERROR_RUNTIME, "%s: %s", function, e.what());
  } catch (...) {
    bnb::fail(BNB_ERROR_RUNTIME, "%s: unexpected failure", function);
  }
  return failed;
}

// Validation shared by the blockwise entry points; fills blocks on success.
int prepare(const char *function, int blocksize, long long n, std::initializer_list<bnb::NamedPointer> pointers,
            bnb::Blocks &blocks, int min_blocksize = BNB_MIN_BLOCKSIZE) {
  if (int status = bnb::check_blocksize(blocksize, min_blocksize)) return status;
  if (int status = bnb::check_arguments(function, n, pointers)) return status;
  blocks = {blocksize, n, (n + blocksize - 1) / blocksize};
  return BNB_OK;
}

int prepare_4bit(const char *function, int blocksize, long long n, int quant_type,
                 std::initializer_list<bnb::NamedPointer> pointers, bnb::Blocks &blocks) {
  if (int status = bnb::check_quant_type(quant_type)) return status;
  return prepare(function, blocksize, n, pointers, blocks, BNB_MIN_BLOCKSIZE_4BIT);
}

}  // namespace

extern "C" {

const char *bnb_backend(void) { return bnb::backend::name(); }
const char *bnb_version(void) { return BNB_VERSION; }
int bnb_runtime_version(void) { return guarded(__func__, BNB_NOT_AVAILABLE, [] { return bnb::backend::runtime_version(); }); }
int bnb_device_count(void) { return guarded(__func__, 0, [] { return bnb::backend::device_count(); }); }
const char *bnb_last_error(void) { return bnb::last_error(); }

const char *bnb_cpu_isa(void) { return guarded(__func__, "", [] { return bnb::backend::cpu_isa(); }); }
int bnb_cpu_set_isa(const char *isa) { return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::set_cpu_isa(isa); }); }
int bnb_cpu_threads(void) { return guarded(__func__, 1, [] { return bnb::backend::cpu_threads(); }); }
int bnb_cpu_set_threads(int threads) {
  if (threads < 0) {
    return bnb::fail(BNB_ERROR_INVALID_ARGUMENT, "%s: invalid threads %d: must be >= 0 (0: one per CPU the process may use)",
                     __func__, threads);
  }
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::set_cpu_threads(threads); });
}

int bnb_quantize_blockwise_fp32(const float *code, const float *A, float *absmax, unsigned char *out, int blocksize,
                                long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (int status = bnb::check_code_map(__func__, code)) return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::quantize_blockwise(code, A, absmax, out, blocks); });
}

int bnb_quantize_blockwise_fp16(const float *code, const unsigned short *A, float *absmax, unsigned char *out,
                                int blocksize, long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (int status = bnb::check_code_map(__func__, code)) return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::quantize_blockwise(code, A, absmax, out, blocks); });
}

int bnb_dequantize_blockwise_fp32(const float *code, const unsigned char *A, const float *absmax, float *out,
                                  int blocksize, long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::dequantize_blockwise(code, A, absmax, out, blocks); });
}

int bnb_dequantize_blockwise_fp16(const float *code, const unsigned char *A, const float *absmax, unsigned short *out,
                                  int blocksize, long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::dequantize_blockwise(code, A, absmax, out, blocks); });
}

int bnb_quantize_4bit_fp32(const float *A, float *absmax, unsigned char *out, int blocksize, long long n,
                           int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::quantize_4bit(A, absmax, out, blocks, quant_type); });
}

int bnb_quantize_4bit_fp16(const unsigned short *A, float *absmax, unsigned char *out, int blocksize, long long n,
                           int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::quantize_4bit(A, absmax, out, blocks, quant_type); });
}

int bnb_dequantize_4bit_fp32(const unsigned char *A, const float *absmax, float *out, int blocksize, long long n,
                             int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::dequantize_4bit(A, absmax, out, blocks, quant_type); });
}

int bnb_dequantize_4bit_fp16(const unsigned char *A, const float *absmax, unsigned short *out, int blocksize,
                             long long n, int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return guarded(__func__, BNB_ERROR_RUNTIME, [&] { return bnb::backend::dequantize_4bit(A, absmax, out, blocks, quant_type); });
}

}  // extern "C"
