/*
 * Round trip through a bitsandbytes native library loaded at run time, for libraries of another
 * platform run under an emulator (Wine, qemu-user). Cross-compiled per target by the tests.
 *
 *   roundtrip LIBRARY INPUT
 *
 * INPUT (little-endian): int32 n, int32 blocksize, 256 float32 (the 8-bit code map), n float32 values.
 * Output, one line each, bytes in hex: the backend name, then the outputs of
 *   q8   bnb_quantize_blockwise_fp32  (codes, absmax)
 *   d8   bnb_dequantize_blockwise_fp32 of those codes
 *   nf4  bnb_quantize_4bit_fp32 NF4   (packed codes, absmax)
 *   fp4  bnb_quantize_4bit_fp32 FP4   (packed codes, absmax)
 *   dnf4 bnb_dequantize_4bit_fp32 of the NF4 codes
 * The test compares them with bitsandbytes.reference computed on the build machine.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
typedef HMODULE library_t;
static library_t open_library(const char *path) { return LoadLibraryA(path); }
static void *symbol(library_t lib, const char *name) { return (void *)GetProcAddress(lib, name); }
static const char *load_error(void) { static char text[64]; snprintf(text, sizeof text, "error %lu", GetLastError()); return text; }
#else
#include <dlfcn.h>
typedef void *library_t;
static library_t open_library(const char *path) { return dlopen(path, RTLD_NOW | RTLD_LOCAL); }
static void *symbol(library_t lib, const char *name) { return dlsym(lib, name); }
static const char *load_error(void) { return dlerror(); }
#endif

typedef const char *(*text_fn)(void);
typedef int (*q8_fn)(const float *, const float *, float *, unsigned char *, int, long long);
typedef int (*d8_fn)(const float *, const unsigned char *, const float *, float *, int, long long);
typedef int (*q4_fn)(const float *, float *, unsigned char *, int, long long, int);
typedef int (*d4_fn)(const unsigned char *, const float *, float *, int, long long, int);

static library_t lib;

static void *need(const char *name) {
  void *found = symbol(lib, name);
  if (!found) {
    fprintf(stderr, "symbol %s not found\n", name);
    exit(3);
  }
  return found;
}

static void hex(const char *label, const void *data, size_t size) {
  const unsigned char *bytes = (const unsigned char *)data;
  printf("%s ", label);
  for (size_t i = 0; i < size; i++) printf("%02x", bytes[i]);
  printf("\n");
}

static void check(const char *what, int status) {
  if (status != 0) {
    fprintf(stderr, "%s returned %d: %s\n", what, status, ((text_fn)need("bnb_last_error"))());
    exit(4);
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s LIBRARY INPUT\n", argv[0]);
    return 2;
  }
  lib = open_library(argv[1]);
  if (!lib) {
    fprintf(stderr, "cannot load %s: %s\n", argv[1], load_error());
    return 1;
  }
  FILE *f = fopen(argv[2], "rb");
  int header[2];
  if (!f || fread(header, sizeof(int), 2, f) != 2) {
    fprintf(stderr, "cannot read %s\n", argv[2]);
    return 2;
  }
  long long n = header[0];
  int blocksize = header[1];
  long long blocks = (n + blocksize - 1) / blocksize, packed = (n + 1) / 2;
  float *code = malloc(256 * sizeof(float)), *a = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
  float *absmax = malloc(blocks * sizeof(float));
  unsigned char *codes = malloc(n), *codes4 = malloc(packed);
  if (fread(code, sizeof(float), 256, f) != 256 || fread(a, sizeof(float), (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "%s is too short\n", argv[2]);
    return 2;
  }
  fclose(f);

  printf("backend %s\n", ((text_fn)need("bnb_backend"))());
  check("q8", ((q8_fn)need("bnb_quantize_blockwise_fp32"))(code, a, absmax, codes, blocksize, n));
  hex("q8.codes", codes, n);
  hex("q8.absmax", absmax, blocks * sizeof(float));
  check("d8", ((d8_fn)need("bnb_dequantize_blockwise_fp32"))(code, codes, absmax, out, blocksize, n));
  hex("d8", out, n * sizeof(float));
  check("nf4", ((q4_fn)need("bnb_quantize_4bit_fp32"))(a, absmax, codes4, blocksize, n, 2));
  hex("nf4.codes", codes4, packed);
  hex("nf4.absmax", absmax, blocks * sizeof(float));
  check("dnf4", ((d4_fn)need("bnb_dequantize_4bit_fp32"))(codes4, absmax, out, blocksize, n, 2));
  hex("dnf4", out, n * sizeof(float));
  check("fp4", ((q4_fn)need("bnb_quantize_4bit_fp32"))(a, absmax, codes4, blocksize, n, 1));
  hex("fp4.codes", codes4, packed);
  hex("fp4.absmax", absmax, blocks * sizeof(float));
  return 0;
}
