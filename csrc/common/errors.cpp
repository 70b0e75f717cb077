#include "errors.h"

#include <cstdarg>
#include <cstdio>
#include <string>

namespace bnb {

namespace {
thread_local std::string message;
}

int fail(int status, const char *format, ...) {
  char buffer[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buffer, sizeof buffer, format, args);
  va_end(args);
  try {
    message = buffer;
  } catch (...) {  // no memory for the text (the C ABI lets no exception out): the status still tells
    message.clear();
  }
  return status;
}

const char *last_error() { return message.c_str(); }

}  // namespace bnb
