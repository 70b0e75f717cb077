// The nearest-code rule of csrc/common/codebooks.h, which the CUDA, HIP and SYCL kernels run,
// compiled for the host: reads float32 values v (raw little-endian) from the file argv[1] and
// writes, per value, its NF4 code, its FP4 code and its position in the 8-bit code map given as
// argv[2] (256 raw float32), as three bytes to argv[3]. test_native_gpu_rules.py compares them
// with the CPU library's kernels.
#include <cstdio>
#include <vector>

#include "bitsandbytes.h"
#include "common/codebooks.h"
#include "common/elements.h"

static std::vector<float> read_floats(const char *path) {
  std::vector<float> values;
  FILE *f = std::fopen(path, "rb");
  if (f == nullptr) return values;
  float v;
  while (std::fread(&v, sizeof v, 1, f) == 1) values.push_back(v);
  std::fclose(f);
  return values;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s VALUES CODE OUT\n", argv[0]);
    return 2;
  }
  std::vector<float> values = read_floats(argv[1]), code = read_floats(argv[2]);
  if (code.size() != static_cast<size_t>(bnb::kCodeMapSize)) return 2;
  float thresholds[bnb::kCodeMapSize - 1];
  for (int i = 0; i < bnb::kCodeMapSize - 1; ++i) thresholds[i] = bnb::threshold(code[i], code[i + 1]);
  FILE *out = std::fopen(argv[3], "wb");
  if (out == nullptr) return 2;
  for (float v : values) {
    unsigned char codes[3] = {static_cast<unsigned char>(bnb::code_4bit(v, BNB_QUANT_NF4)),
                              static_cast<unsigned char>(bnb::code_4bit(v, BNB_QUANT_FP4)),
                              static_cast<unsigned char>(bnb::count_thresholds_below(thresholds, bnb::kCodeMapSize - 1, v))};
    std::fwrite(codes, 1, 3, out);
  }
  std::fclose(out);
  return 0;
}
