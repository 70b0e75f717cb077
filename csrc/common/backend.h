// What each backend (csrc/cpu, csrc/cuda, csrc/xpu) implements. csrc/common/api.cpp exports the
// C ABI on top of it: it validates every argument first, so these functions only ever see
// n > 0, non-NULL pointers, a valid blocksize and a valid quant_type.
//
// T is the element type of the unquantized side: float, or unsigned short holding IEEE binary16
// bit patterns. Each function returns BNB_OK, or BNB_ERROR_NONFINITE / BNB_ERROR_RUNTIME after
// recording a message with bnb::fail.
#ifndef BNB_COMMON_BACKEND_H
#define BNB_COMMON_BACKEND_H

namespace bnb {

struct Blocks {
  int blocksize;
  long long n;
  long long count;  // ceil(n / blocksize)
};

namespace backend {

const char *name();
int runtime_version();
int device_count();

// The CPU kernels' instruction set and thread count (bnb_cpu_isa and friends in bitsandbytes.h).
// GPU backends have no CPU kernels: "" and BNB_NOT_AVAILABLE, and the setters fail with
// BNB_ERROR_NOT_AVAILABLE. set_cpu_isa receives NULL, "auto" or a name; set_cpu_threads >= 0.
const char *cpu_isa();
int set_cpu_isa(const char *isa);
int cpu_threads();
int set_cpu_threads(int threads);

template <typename T>
int quantize_blockwise(const float *code, const T *A, float *absmax, unsigned char *out, Blocks blocks);
template <typename T>
int dequantize_blockwise(const float *code, const unsigned char *A, const float *absmax, T *out, Blocks blocks);
template <typename T>
int quantize_4bit(const T *A, float *absmax, unsigned char *out, Blocks blocks, int quant_type);
template <typename T>
int dequantize_4bit(const unsigned char *A, const float *absmax, T *out, Blocks blocks, int quant_type);

}  // namespace backend
}  // namespace bnb

// What a GPU backend writes once, inside namespace bnb::backend, for the four CPU functions above.
#define BNB_DEFINE_NO_CPU_KERNELS()                                                                  \
  static int no_cpu_kernels(const char *function) {                                                  \
    return fail(BNB_ERROR_NOT_AVAILABLE, "%s: the %s backend has no CPU kernels", function, name()); \
  }                                                                                                  \
  const char *cpu_isa() { return ""; }                                                               \
  int set_cpu_isa(const char *) { return no_cpu_kernels("bnb_cpu_set_isa"); }                        \
  int cpu_threads() { return BNB_NOT_AVAILABLE; }                                                    \
  int set_cpu_threads(int) { return no_cpu_kernels("bnb_cpu_set_threads"); }

// A backend's source defines the four templates above and then writes this once, inside
// namespace bnb::backend, to compile them for both element types.
#define BNB_INSTANTIATE_BACKEND(T)                                                                         \
  template int quantize_blockwise<T>(const float *, const T *, float *, unsigned char *, Blocks);          \
  template int dequantize_blockwise<T>(const float *, const unsigned char *, const float *, T *, Blocks); \
  template int quantize_4bit<T>(const T *, float *, unsigned char *, Blocks, int);                        \
  template int dequantize_4bit<T>(const unsigned char *, const float *, T *, Blocks, int)

#endif
