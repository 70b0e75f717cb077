/*
 * Runs the CPU library's threaded path in a process of its own, so that the tests can start it
 * under limits (a pids cgroup, RLIMIT_NPROC, an affinity mask) that must not touch pytest itself.
 *
 *   threads_probe LIBRARY THREADS
 *
 * Prints, one line each:
 *   default N      bnb_cpu_threads() before any setting (the CPUs the process may use)
 *   status S       the statuses of 4-bit quantization and dequantization of 4 Mi values on THREADS
 *                  threads (bnb_cpu_set_threads), "0 0" when both succeeded
 *   same yes|no    whether the codes and values equal those of the same calls on one thread
 *   error TEXT     bnb_last_error() after the threaded calls ("" when none)
 * Exit status 0 when it got that far.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*int_fn)(void);
typedef int (*set_fn)(int);
typedef const char *(*text_fn)(void);
typedef int (*q4_fn)(const float *, float *, unsigned char *, int, long long, int);
typedef int (*d4_fn)(const unsigned char *, const float *, float *, int, long long, int);

enum { N = 1 << 22, BLOCKSIZE = 64, NF4 = 2 };

static void *need(void *lib, const char *name) {
  void *found = dlsym(lib, name);
  if (found == NULL) {
    fprintf(stderr, "symbol %s not found\n", name);
    exit(3);
  }
  return found;
}

static int round_trip(q4_fn quantize, d4_fn dequantize, const float *values, float *absmax, unsigned char *codes,
                      float *back, int *dequantize_status) {
  int status = quantize(values, absmax, codes, BLOCKSIZE, N, NF4);
  *dequantize_status = dequantize(codes, absmax, back, BLOCKSIZE, N, NF4);
  return status;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: threads_probe LIBRARY THREADS\n");
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "cannot load %s: %s\n", argv[1], dlerror());
    return 3;
  }
  int_fn threads = (int_fn)need(lib, "bnb_cpu_threads");
  set_fn set_threads = (set_fn)need(lib, "bnb_cpu_set_threads");
  text_fn last_error = (text_fn)need(lib, "bnb_last_error");
  q4_fn quantize = (q4_fn)need(lib, "bnb_quantize_4bit_fp32");
  d4_fn dequantize = (d4_fn)need(lib, "bnb_dequantize_4bit_fp32");
  printf("default %d\n", threads());
  fflush(stdout);

  float *values = malloc(sizeof(float) * N), *absmax = malloc(sizeof(float) * (N / BLOCKSIZE));
  float *back = malloc(sizeof(float) * N), *absmax_one = malloc(sizeof(float) * (N / BLOCKSIZE));
  float *back_one = malloc(sizeof(float) * N);
  unsigned char *codes = malloc(N / 2), *codes_one = malloc(N / 2);
  if (!values || !absmax || !back || !absmax_one || !back_one || !codes || !codes_one) {
    fprintf(stderr, "out of memory\n");
    return 3;
  }
  for (int i = 0; i < N; ++i) values[i] = (float)(((long long)i * 7919) % 2001 - 1000) / 997.0f;

  set_threads(1);
  int d_one = 0, q_one = round_trip(quantize, dequantize, values, absmax_one, codes_one, back_one, &d_one);
  set_threads(atoi(argv[2]));
  int d = 0, q = round_trip(quantize, dequantize, values, absmax, codes, back, &d);
  int same = q_one == 0 && d_one == 0 && memcmp(codes, codes_one, N / 2) == 0 &&
             memcmp(absmax, absmax_one, sizeof(float) * (N / BLOCKSIZE)) == 0 && memcmp(back, back_one, sizeof(float) * N) == 0;
  printf("status %d %d\nsame %s\nerror %s\n", q, d, same ? "yes" : "no", last_error());
  return 0;
}
