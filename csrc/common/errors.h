// The thread-local message behind bnb_last_error().
#ifndef BNB_COMMON_ERRORS_H
#define BNB_COMMON_ERRORS_H

#include "bitsandbytes.h"

namespace bnb {

// Records a printf-style message for this thread and returns status, so callers can write
// `return fail(BNB_ERROR_..., "...", ...);`.
int fail(int status, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// What every backend reports for input holding inf or NaN.
inline int fail_nonfinite() { return fail(BNB_ERROR_NONFINITE, "input holds inf or NaN"); }

// The message of this thread's last failure, "" when none.
const char *last_error();

}  // namespace bnb

#endif
