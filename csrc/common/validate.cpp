#include "validate.h"

#include "bitsandbytes.h"
#include "errors.h"

namespace bnb {

int check_blocksize(int blocksize) {
  bool power_of_two = blocksize > 0 && (blocksize & (blocksize - 1)) == 0;
  if (!power_of_two || blocksize < BNB_MIN_BLOCKSIZE || blocksize > BNB_MAX_BLOCKSIZE) {
    return fail(BNB_ERROR_INVALID_BLOCKSIZE, "invalid blocksize %d: must be a power of two in [%d, %d]", blocksize,
                BNB_MIN_BLOCKSIZE, BNB_MAX_BLOCKSIZE);
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

}  // namespace bnb
