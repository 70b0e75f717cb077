// The exported C ABI (csrc/bitsandbytes.h): argument validation, then the backend.
#include "bitsandbytes.h"

#include "backend.h"
#include "errors.h"
#include "validate.h"

#ifndef BNB_VERSION
#error "BNB_VERSION must be defined by the build (CMake reads it from the VERSION file)"
#endif

namespace {

// Validation shared by the four blockwise entry points; fills blocks on success.
int prepare(const char *function, int blocksize, long long n, std::initializer_list<bnb::NamedPointer> pointers,
            bnb::Blocks &blocks) {
  if (int status = bnb::check_blocksize(blocksize)) return status;
  if (int status = bnb::check_arguments(function, n, pointers)) return status;
  blocks = {blocksize, n, (n + blocksize - 1) / blocksize};
  return BNB_OK;
}

int prepare_4bit(const char *function, int blocksize, long long n, int quant_type,
                 std::initializer_list<bnb::NamedPointer> pointers, bnb::Blocks &blocks) {
  if (int status = bnb::check_quant_type(quant_type)) return status;
  return prepare(function, blocksize, n, pointers, blocks);
}

}  // namespace

extern "C" {

const char *bnb_backend(void) { return bnb::backend::name(); }
const char *bnb_version(void) { return BNB_VERSION; }
int bnb_runtime_version(void) { return bnb::backend::runtime_version(); }
int bnb_device_count(void) { return bnb::backend::device_count(); }
const char *bnb_last_error(void) { return bnb::last_error(); }

int bnb_quantize_blockwise_fp32(const float *code, const float *A, float *absmax, unsigned char *out, int blocksize,
                                long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::quantize_blockwise(code, A, absmax, out, blocks);
}

int bnb_quantize_blockwise_fp16(const float *code, const unsigned short *A, float *absmax, unsigned char *out,
                                int blocksize, long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::quantize_blockwise(code, A, absmax, out, blocks);
}

int bnb_dequantize_blockwise_fp32(const float *code, const unsigned char *A, const float *absmax, float *out,
                                  int blocksize, long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::dequantize_blockwise(code, A, absmax, out, blocks);
}

int bnb_dequantize_blockwise_fp16(const float *code, const unsigned char *A, const float *absmax, unsigned short *out,
                                  int blocksize, long long n) {
  bnb::Blocks blocks;
  if (int status = prepare(__func__, blocksize, n, {{"code", code}, {"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::dequantize_blockwise(code, A, absmax, out, blocks);
}

int bnb_quantize_4bit_fp32(const float *A, float *absmax, unsigned char *out, int blocksize, long long n,
                           int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::quantize_4bit(A, absmax, out, blocks, quant_type);
}

int bnb_quantize_4bit_fp16(const unsigned short *A, float *absmax, unsigned char *out, int blocksize, long long n,
                           int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::quantize_4bit(A, absmax, out, blocks, quant_type);
}

int bnb_dequantize_4bit_fp32(const unsigned char *A, const float *absmax, float *out, int blocksize, long long n,
                             int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::dequantize_4bit(A, absmax, out, blocks, quant_type);
}

int bnb_dequantize_4bit_fp16(const unsigned char *A, const float *absmax, unsigned short *out, int blocksize,
                             long long n, int quant_type) {
  bnb::Blocks blocks;
  if (int status = prepare_4bit(__func__, blocksize, n, quant_type, {{"A", A}, {"absmax", absmax}, {"out", out}}, blocks))
    return status;
  if (n == 0) return BNB_OK;
  return bnb::backend::dequantize_4bit(A, absmax, out, blocks, quant_type);
}

}  // extern "C"
