// Argument checks shared by every entry point; each failing check records a message naming the
// bad value and what is allowed.
#ifndef BNB_COMMON_VALIDATE_H
#define BNB_COMMON_VALIDATE_H

#include <initializer_list>

namespace bnb {

int check_blocksize(int blocksize);
int check_quant_type(int quant_type);
struct NamedPointer {
  const char *name;
  const void *value;
};

// n >= 0 and no NULL pointer; messages name the function and the argument.
int check_arguments(const char *function, long long n, std::initializer_list<NamedPointer> pointers);

}  // namespace bnb

#endif
