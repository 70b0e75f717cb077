/*
 * Round trip through a bitsandbytes native library loaded at run time, for libraries of another
 * platform run under an emulator (Wine, qemu-user). Cross-compiled per target by the tests.
 *
 *   roundtrip LIBRARY INPUT
 *
 * INPUT (little-endian): int32 n, int32 blocksize (8-bit), int32 blocksize (4-bit), 256 float32
 * (the 8-bit code map), n float32 values, n uint16 (the values as IEEE binary16).
 * Output, one line each: the backend name, the instruction set of the CPU kernels (bnb_cpu_isa;
 * BNB_CPU_ISA in the environment chooses it), then in hex the bytes of the outputs of
 *   q8    bnb_quantize_blockwise_fp32   (codes, absmax)
 *   d8    bnb_dequantize_blockwise_fp32 of those codes
 *   nf4   bnb_quantize_4bit_fp32 NF4    (packed codes, absmax)
 *   dnf4  bnb_dequantize_4bit_fp32 of the NF4 codes
 *   fp4   bnb_quantize_4bit_fp32 FP4    (packed codes, absmax)
 *   dfp4  bnb_dequantize_4bit_fp32 of the FP4 codes
 * and the same from binary16 input to binary16 output (q8h, d8h, nf4h, dnf4h, fp4h, dfp4h).
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
typedef int (*q8_fn)(const float *, const void *, float *, unsigned char *, int, long long);
typedef int (*d8_fn)(const float *, const unsigned char *, const float *, void *, int, long long);
typedef int (*q4_fn)(const void *, float *, unsigned char *, int, long long, int);
typedef int (*d4_fn)(const unsigned char *, const float *, void *, int, long long, int);

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

/* One pass over the library: input of `width` bytes per value (4: float32, 2: binary16). */
static void run(const char *suffix, const char *tag, const float *code, const void *a, size_t width, long long n,
                int blocksize, int blocksize4, void *out) {
  char name[64], label[32];
  long long blocks = (n + blocksize - 1) / blocksize, blocks4 = (n + blocksize4 - 1) / blocksize4, packed = (n + 1) / 2;
  float *absmax = malloc((blocks > blocks4 ? blocks : blocks4) * sizeof(float));
  unsigned char *codes = malloc(n), *codes4 = malloc(packed);
  static const char *kinds[2] = {"fp4", "nf4"};

  snprintf(name, sizeof name, "bnb_quantize_blockwise_%s", suffix);
  check(name, ((q8_fn)need(name))(code, a, absmax, codes, blocksize, n));
  snprintf(label, sizeof label, "q8%s.codes", tag);
  hex(label, codes, n);
  snprintf(label, sizeof label, "q8%s.absmax", tag);
  hex(label, absmax, blocks * sizeof(float));
  snprintf(name, sizeof name, "bnb_dequantize_blockwise_%s", suffix);
  check(name, ((d8_fn)need(name))(code, codes, absmax, out, blocksize, n));
  snprintf(label, sizeof label, "d8%s", tag);
  hex(label, out, n * width);
  for (int k = 1; k >= 0; k--) { /* NF4 (2), then FP4 (1) */
    snprintf(name, sizeof name, "bnb_quantize_4bit_%s", suffix);
    check(name, ((q4_fn)need(name))(a, absmax, codes4, blocksize4, n, k + 1));
    snprintf(label, sizeof label, "%s%s.codes", kinds[k], tag);
    hex(label, codes4, packed);
    snprintf(label, sizeof label, "%s%s.absmax", kinds[k], tag);
    hex(label, absmax, blocks4 * sizeof(float));
    snprintf(name, sizeof name, "bnb_dequantize_4bit_%s", suffix);
    check(name, ((d4_fn)need(name))(codes4, absmax, out, blocksize4, n, k + 1));
    snprintf(label, sizeof label, "d%s%s", kinds[k], tag);
    hex(label, out, n * width);
  }
  free(absmax);
  free(codes);
  free(codes4);
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
  int header[3];
  if (!f || fread(header, sizeof(int), 3, f) != 3) {
    fprintf(stderr, "cannot read %s\n", argv[2]);
    return 2;
  }
  long long n = header[0];
  int blocksize = header[1], blocksize4 = header[2];
  float *code = malloc(256 * sizeof(float)), *a = malloc(n * sizeof(float)), *out = malloc(n * sizeof(float));
  unsigned short *a16 = malloc(n * sizeof(unsigned short));
  if (fread(code, sizeof(float), 256, f) != 256 || fread(a, sizeof(float), (size_t)n, f) != (size_t)n ||
      fread(a16, sizeof(unsigned short), (size_t)n, f) != (size_t)n) {
    fprintf(stderr, "%s is too short\n", argv[2]);
    return 2;
  }
  fclose(f);

  printf("backend %s\n", ((text_fn)need("bnb_backend"))());
  const char *isa = ((text_fn)need("bnb_cpu_isa"))();
  if (!*isa) { /* BNB_CPU_ISA names kernels this library cannot run: the calls say why */
    check("bnb_cpu_isa", ((q4_fn)need("bnb_quantize_4bit_fp32"))(a, out, (unsigned char *)out, blocksize4, n, 2));
  }
  printf("isa %s\n", isa);
  run("fp32", "", code, a, sizeof(float), n, blocksize, blocksize4, out);
  run("fp16", "h", code, a16, sizeof(unsigned short), n, blocksize, blocksize4, out);
  return 0;
}
