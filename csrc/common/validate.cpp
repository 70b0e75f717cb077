#include "validate.h"

#include "bitsandbytes.h"
#include "bits.h"
#include "elements.h"
#include "errors.h"

namespace bnb {

int check_blocksize(int blocksize, int minimum) {
  bool power_of_two = blocksize > 0 && (blocksize & (blocksize - 1)) == 0;
  if (!power_of_two || blocksize < minimum || blocksize > BNB_MAX_BLOCKSIZE) {
    return fail(BNB_ERROR_INVALID_BLOCKSIZE, "invalid blocksize %d: must be a power of two in [%d, %d]", blocksize,
                minimum, BNB_MAX_BLOCKSIZE);
  }
  return BNB_OK;
}

int check_quant_type(int quant_type) {
  if (quant_type != BNB_QUANT_FP4 && quant_type != BNB_QUANT_NF4) {
    return fail(BNB_ERROR_INVALID_QUANT_TYPE, "invalid quant_type %d: must be %d (FP4) or %d (NF4)", quant_type,
                BNB_QUANT_FP4, BNB_QUANT_NF4);
  }
  return BNB_OK;
}

int check_arguments(const char *function, long long n, std::initializer_list<NamedPointer> pointers) {
  if (n < 0) return fail(BNB_ERROR_INVALID_ARGUMENT, "%s: invalid n %lld: must be >= 0", function, n);
  for (const NamedPointer &pointer : pointers) {
    if (pointer.value == nullptr) return fail(BNB_ERROR_INVALID_ARGUMENT, "%s: %s is NULL", function, pointer.name);
  }
  return BNB_OK;
}

int check_code_map(const char *function, const float *code) {
  for (int i = 0; i < kCodeMapSize; ++i) {
    if (is_nonfinite(code[i])) {
      return fail(BNB_ERROR_INVALID_ARGUMENT, "%s: code[%d] is %g: the code map must hold finite values", function, i,
                  static_cast<double>(code[i]));
    }
    if (i > 0 && code[i] < code[i - 1]) {
      return fail(BNB_ERROR_INVALID_ARGUMENT,
                  "%s: code[%d] = %.9g is below code[%d] = %.9g: the code map must be sorted ascending", function, i,
                  static_cast<double>(code[i]), i - 1, static_cast<double>(code[i - 1]));
    }
  }
  return BNB_OK;
}

}  // namespace bnb
