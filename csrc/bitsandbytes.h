/*
 * The C ABI of the bitsandbytes native library.
 *
 * Every backend (cpu, cuda, hip, xpu) builds one shared library that exports exactly
 * these symbols and nothing else. Only C types cross this boundary.
 *
 * Memory: every pointer argument is HOST memory. GPU backends copy inputs to the
 * device, run their kernels and copy results back, so one calling convention serves
 * every backend and the Python package needs nothing but numpy.
 *
 * Numerics are specified in docs/quantization.md; bitsandbytes/reference.py is the
 * executable form of that specification.
 */
#ifndef BITSANDBYTES_H
#define BITSANDBYTES_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define BNB_API __declspec(dllexport)
#else
#define BNB_API __attribute__((visibility("default")))
#endif

/* Status codes returned by the quantization and setting functions. */
#define BNB_OK 0
#define BNB_ERROR_INVALID_BLOCKSIZE 1  /* blocksize not a power of two in [64, 4096] ([32, 4096] for 4-bit) */
#define BNB_ERROR_INVALID_QUANT_TYPE 2 /* quant_type not BNB_QUANT_FP4 / BNB_QUANT_NF4 */
#define BNB_ERROR_INVALID_ARGUMENT 3   /* NULL pointer, n < 0, code map not sorted, bad setting */
#define BNB_ERROR_NONFINITE 4          /* input holds inf or NaN: outputs are unspecified */
#define BNB_ERROR_NOT_AVAILABLE 5      /* the backend, library or CPU cannot do what is asked */
#define BNB_ERROR_RUNTIME 6            /* GPU runtime failure (no device, launch error...), out of memory */

/* Value returned by the information functions when they do not apply to a backend. */
#define BNB_NOT_AVAILABLE (-1)

/* 4-bit code books. */
#define BNB_QUANT_FP4 1
#define BNB_QUANT_NF4 2

#define BNB_MIN_BLOCKSIZE 64
#define BNB_MIN_BLOCKSIZE_4BIT 32
#define BNB_MAX_BLOCKSIZE 4096

/* "cpu", "cuda", "hip" or "xpu". */
BNB_API const char *bnb_backend(void);
/* The library version (the repository's VERSION file), e.g. "0.1.0". */
BNB_API const char *bnb_version(void);
/* GPU runtime the library was built against, encoded like cudaRuntimeGetVersion
 * (major * 1000 + minor * 10, e.g. 13000). BNB_NOT_AVAILABLE on cpu. */
BNB_API int bnb_runtime_version(void);
/* Number of visible devices (0 when the driver or device is missing).
 * BNB_NOT_AVAILABLE on cpu. */
BNB_API int bnb_device_count(void);
/* Message describing the last failed call on this thread ("" when none). */
BNB_API const char *bnb_last_error(void);

/* CPU backend: the instruction set of the kernels, chosen at the first call from what the CPU
 * supports unless the environment variable BNB_CPU_ISA names one: "avx512", "avx2" or "scalar"
 * on x86_64, "neon" or "scalar" on aarch64. "" on GPU backends, and "" while BNB_CPU_ISA names
 * one this library cannot run (every quantization call then fails, saying why). */
BNB_API const char *bnb_cpu_isa(void);
/* Runs the CPU kernels of that instruction set from now on; NULL or "auto" for the automatic
 * choice. BNB_ERROR_INVALID_ARGUMENT for an unknown name, BNB_ERROR_NOT_AVAILABLE when this CPU
 * or library cannot run it, or on a GPU backend. Every instruction set gives the same results. */
BNB_API int bnb_cpu_set_isa(const char *isa);
/* CPU backend: the most threads a call uses (the setting, else one per CPU the process may use:
 * its affinity mask, bounded by a cgroup CPU quota). BNB_NOT_AVAILABLE on GPU backends.
 * When the system refuses to start a thread (a container's pids limit, RLIMIT_NPROC), calls run
 * on the threads there are, at worst the calling one alone, with the same results. */
BNB_API int bnb_cpu_threads(void);
/* 0 (the default): one per CPU the process may use; BNB_ERROR_INVALID_ARGUMENT when threads < 0,
 * BNB_ERROR_NOT_AVAILABLE on a GPU backend. The results do not depend on it. */
BNB_API int bnb_cpu_set_threads(int threads);

/* Blockwise 8-bit quantization with a 256-entry code map sorted ascending (any finite values,
 * equal neighbours allowed; otherwise BNB_ERROR_INVALID_ARGUMENT).
 * A: n values; absmax: ceil(n / blocksize) floats; out: n codes. */
BNB_API int bnb_quantize_blockwise_fp32(const float *code, const float *A, float *absmax,
                                        unsigned char *out, int blocksize, long long n);
/* Same, with IEEE binary16 input given as raw 16-bit patterns. */
BNB_API int bnb_quantize_blockwise_fp16(const float *code, const unsigned short *A, float *absmax,
                                        unsigned char *out, int blocksize, long long n);
BNB_API int bnb_dequantize_blockwise_fp32(const float *code, const unsigned char *A,
                                          const float *absmax, float *out, int blocksize,
                                          long long n);
BNB_API int bnb_dequantize_blockwise_fp16(const float *code, const unsigned char *A,
                                          const float *absmax, unsigned short *out, int blocksize,
                                          long long n);

/* Blockwise 4-bit quantization (FP4 or NF4), two codes per byte, first element in the
 * high nibble; blocksize is a power of two in [32, 4096].
 * A: n values; absmax: ceil(n / blocksize) floats; out: ceil(n / 2) bytes. */
BNB_API int bnb_quantize_4bit_fp32(const float *A, float *absmax, unsigned char *out,
                                   int blocksize, long long n, int quant_type);
BNB_API int bnb_quantize_4bit_fp16(const unsigned short *A, float *absmax, unsigned char *out,
                                   int blocksize, long long n, int quant_type);
BNB_API int bnb_dequantize_4bit_fp32(const unsigned char *A, const float *absmax, float *out,
                                     int blocksize, long long n, int quant_type);
BNB_API int bnb_dequantize_4bit_fp16(const unsigned char *A, const float *absmax,
                                     unsigned short *out, int blocksize, long long n,
                                     int quant_type);

#ifdef __cplusplus
}
#endif

#endif /* BITSANDBYTES_H */
