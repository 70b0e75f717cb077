// Argument checks shared by every entry point; each failing check records a message naming the
// bad value and what is allowed.
#ifndef BNB_COMMON_VALIDATE_H
#define BNB_COMMON_VALIDATE_H

#include <initializer_list>

namespace bnb {

// A power of two in [minimum, BNB_MAX_BLOCKSIZE].
int check_blocksize(int blocksize, int minimum);
int check_quant_type(int quant_type);
struct NamedPointer {
  const char *name;
  const void *value;
};

// n >= 0 and no NULL pointer; messages name the function and the argument.
int check_arguments(const char *function, long long n, std::initializer_list<NamedPointer> pointers);

// The 256 values of an 8-bit code map are finite and sorted ascending (the nearest-code rule
// searches its thresholds).
int check_code_map(const char *function, const float *code);

}  // namespace bnb

#endif
