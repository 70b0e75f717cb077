// XPU backend (Intel GPUs through SYCL): copies the host arrays of the ABI into USM device memory,
// runs the kernels and copies the results back. Quantization runs one work-group per quantization
// block (looping when there are more blocks than work-groups); dequantization one work-item per
// element (8-bit) or per byte (4-bit). SYCL exceptions become BNB_ERROR_RUNTIME.
#include <sycl/sycl.hpp>

#include <algorithm>
#include <cstddef>
#include <exception>

#include "bitsandbytes.h"
#include "common/backend.h"
#include "common/bits.h"
#include "common/codebooks.h"
#include "common/elements.h"
#include "common/errors.h"

namespace bnb {
namespace {

constexpr long long kWorkGroupSize = 256;
constexpr long long kMaxWorkGroups = 65535;

// One in-order queue on the first GPU, created on first use; a failed creation is retried next call.
sycl::queue &gpu_queue() {
  static sycl::queue queue{sycl::gpu_selector_v, sycl::property::queue::in_order{}};
  return queue;
}

// USM device memory for `count` elements of T, freed when it goes out of scope.
template <typename T>
class DeviceArray {
 public:
  DeviceArray(sycl::queue &queue, long long count)
      : queue_(queue), count_(static_cast<size_t>(count)), data_(sycl::malloc_device<T>(count_, queue)) {
    if (data_ == nullptr) throw std::bad_alloc();
  }
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  ~DeviceArray() {
    try {
      queue_.wait();  // an earlier failure may leave copies in flight that still use this memory
    } catch (...) {
    }
    sycl::free(data_, queue_);
  }

  void upload(const T *host) { queue_.memcpy(data_, host, count_ * sizeof(T)); }
  void download(T *host) { queue_.memcpy(host, data_, count_ * sizeof(T)).wait_and_throw(); }
  void zero() { queue_.memset(data_, 0, count_ * sizeof(T)); }
  T *get() const { return data_; }

 private:
  sycl::queue &queue_;
  size_t count_;
  T *data_;
};

struct Range {
  long long begin;
  long long end;
};

Range block_range(const Blocks &blocks, long long b) {
  long long begin = b * blocks.blocksize;
  long long end = begin + blocks.blocksize;
  return {begin, end < blocks.n ? end : blocks.n};
}

long long group_count(long long work_items, long long per_group) {
  return std::min((work_items + per_group - 1) / per_group, kMaxWorkGroups);
}

sycl::nd_range<1> launch_shape(long long groups) {
  return {static_cast<size_t>(groups * kWorkGroupSize), static_cast<size_t>(kWorkGroupSize)};
}

// absmax of one quantization block over the work-group; every work-item gets the same results.
template <typename T>
float block_absmax(const sycl::group<1> &group, const T *A, Range range, bool &nonfinite) {
  float largest = 0.0f;
  bool found_nonfinite = false;
  for (long long i = range.begin + static_cast<long long>(group.get_local_linear_id()); i < range.end;
       i += kWorkGroupSize) {
    float x = load(A, i);
    if (is_nonfinite(x)) {
      found_nonfinite = true;
    } else {
      float magnitude = x < 0.0f ? -x : x;
      largest = magnitude > largest ? magnitude : largest;
    }
  }
  nonfinite = sycl::any_of_group(group, found_nonfinite);
  return sycl::reduce_over_group(group, largest, sycl::maximum<float>());
}

// Runs `body` and turns exceptions into error codes.
template <typename Body>
int guarded(Body body) {
  try {
    return body();
  } catch (const sycl::exception &e) {
    return fail(BNB_ERROR_RUNTIME, "SYCL runtime error: %s", e.what());
  } catch (const std::exception &e) {
    return fail(BNB_ERROR_RUNTIME, "XPU backend error: %s", e.what());
  }
}

}  // namespace

namespace backend {

const char *name() { return "xpu"; }

int runtime_version() {
#if defined(__INTEL_LLVM_COMPILER)
  // __INTEL_LLVM_COMPILER is YYYYMMPP (2025.1 -> 20250100); encoded like CUDA's major*1000 + minor*10.
  return (__INTEL_LLVM_COMPILER / 10000) * 1000 + (__INTEL_LLVM_COMPILER / 100 % 100) * 10;
#else
  return BNB_NOT_AVAILABLE;
#endif
}

int device_count() {
  try {
    return static_cast<int>(sycl::device::get_devices(sycl::info::device_type::gpu).size());
  } catch (...) {
    return 0;
  }
}

template <typename T>
int quantize_blockwise(const float *code, const T *A, float *absmax, unsigned char *out, Blocks blocks) {
  return guarded([&] {
    sycl::queue &queue = gpu_queue();
    DeviceArray<float> d_code(queue, kCodeMapSize), d_absmax(queue, blocks.count);
    DeviceArray<T> d_A(queue, blocks.n);
    DeviceArray<unsigned char> d_out(queue, blocks.n);
    DeviceArray<int> d_nonfinite(queue, 1);
    d_code.upload(code);
    d_A.upload(A);
    d_nonfinite.zero();
    const float *code_ptr = d_code.get();
    const T *A_ptr = d_A.get();
    float *absmax_ptr = d_absmax.get();
    unsigned char *out_ptr = d_out.get();
    int *nonfinite_ptr = d_nonfinite.get();
    long long groups = group_count(blocks.count, 1);
    queue.submit([&](sycl::handler &handler) {
      sycl::local_accessor<float, 1> thresholds(sycl::range<1>(kCodeMapSize - 1), handler);
      handler.parallel_for(launch_shape(groups), [=](sycl::nd_item<1> item) {
        sycl::group<1> group = item.get_group();
        long long local = static_cast<long long>(item.get_local_linear_id());
        for (long long i = local; i < kCodeMapSize - 1; i += kWorkGroupSize) {
          thresholds[i] = threshold(code_ptr[i], code_ptr[i + 1]);
        }
        sycl::group_barrier(group);
        for (long long b = group.get_group_linear_id(); b < blocks.count; b += groups) {
          Range range = block_range(blocks, b);
          bool block_nonfinite;
          float block_max = block_absmax(group, A_ptr, range, block_nonfinite);
          if (block_nonfinite) {
            if (local == 0) *nonfinite_ptr = 1;
            continue;
          }
          if (local == 0) absmax_ptr[b] = block_max;
          for (long long i = range.begin + local; i < range.end; i += kWorkGroupSize) {
            float v = normalise(load(A_ptr, i), block_max);
            out_ptr[i] = static_cast<unsigned char>(count_thresholds_below(&thresholds[0], kCodeMapSize - 1, v));
          }
        }
      });
    });
    int nonfinite = 0;
    d_nonfinite.download(&nonfinite);
    if (nonfinite) return fail_nonfinite();
    d_absmax.download(absmax);
    d_out.download(out);
    return BNB_OK;
  });
}

template <typename T>
int quantize_4bit(const T *A, float *absmax, unsigned char *out, Blocks blocks, int quant_type) {
  return guarded([&] {
    sycl::queue &queue = gpu_queue();
    DeviceArray<T> d_A(queue, blocks.n);
    DeviceArray<float> d_absmax(queue, blocks.count);
    DeviceArray<unsigned char> d_out(queue, (blocks.n + 1) / 2);
    DeviceArray<int> d_nonfinite(queue, 1);
    d_A.upload(A);
    d_nonfinite.zero();
    const T *A_ptr = d_A.get();
    float *absmax_ptr = d_absmax.get();
    unsigned char *out_ptr = d_out.get();
    int *nonfinite_ptr = d_nonfinite.get();
    long long groups = group_count(blocks.count, 1);
    queue.parallel_for(launch_shape(groups), [=](sycl::nd_item<1> item) {
      sycl::group<1> group = item.get_group();
      long long local = static_cast<long long>(item.get_local_linear_id());
      for (long long b = group.get_group_linear_id(); b < blocks.count; b += groups) {
        Range range = block_range(blocks, b);
        bool block_nonfinite;
        float block_max = block_absmax(group, A_ptr, range, block_nonfinite);
        if (block_nonfinite) {
          if (local == 0) *nonfinite_ptr = 1;
          continue;
        }
        if (local == 0) absmax_ptr[b] = block_max;
        // Blocks start at even indices (blocksize >= 32), so each byte belongs to one block.
        for (long long i = range.begin + 2 * local; i < range.end; i += 2 * kWorkGroupSize) {
          int high = code_4bit(normalise(load(A_ptr, i), block_max), quant_type);
          int low = i + 1 < range.end ? code_4bit(normalise(load(A_ptr, i + 1), block_max), quant_type) : 0;
          out_ptr[i / 2] = pack_nibbles(high, low);
        }
      }
    });
    int nonfinite = 0;
    d_nonfinite.download(&nonfinite);
    if (nonfinite) return fail_nonfinite();
    d_absmax.download(absmax);
    d_out.download(out);
    return BNB_OK;
  });
}

template <typename T>
int dequantize_blockwise(const float *code, const unsigned char *A, const float *absmax, T *out, Blocks blocks) {
  return guarded([&] {
    sycl::queue &queue = gpu_queue();
    DeviceArray<float> d_code(queue, kCodeMapSize), d_absmax(queue, blocks.count);
    DeviceArray<unsigned char> d_A(queue, blocks.n);
    DeviceArray<T> d_out(queue, blocks.n);
    d_code.upload(code);
    d_absmax.upload(absmax);
    d_A.upload(A);
    const float *code_ptr = d_code.get();
    const unsigned char *A_ptr = d_A.get();
    const float *absmax_ptr = d_absmax.get();
    T *out_ptr = d_out.get();
    queue.parallel_for(sycl::range<1>(static_cast<size_t>(blocks.n)), [=](sycl::id<1> id) {
      long long i = static_cast<long long>(id[0]);
      store(out_ptr, i, code_ptr[A_ptr[i]] * absmax_ptr[i / blocks.blocksize]);
    });
    d_out.download(out);
    return BNB_OK;
  });
}

template <typename T>
int dequantize_4bit(const unsigned char *A, const float *absmax, T *out, Blocks blocks, int quant_type) {
  return guarded([&] {
    sycl::queue &queue = gpu_queue();
    long long bytes = (blocks.n + 1) / 2;
    DeviceArray<unsigned char> d_A(queue, bytes);
    DeviceArray<float> d_absmax(queue, blocks.count);
    DeviceArray<T> d_out(queue, blocks.n);
    d_A.upload(A);
    d_absmax.upload(absmax);
    const unsigned char *A_ptr = d_A.get();
    const float *absmax_ptr = d_absmax.get();
    T *out_ptr = d_out.get();
    queue.parallel_for(sycl::range<1>(static_cast<size_t>(bytes)), [=](sycl::id<1> id) {
      long long j = static_cast<long long>(id[0]);
      long long i = 2 * j;
      float scale = absmax_ptr[i / blocks.blocksize];  // both elements of a byte share a block
      store(out_ptr, i, value_4bit(A_ptr[j] >> 4, quant_type) * scale);
      if (i + 1 < blocks.n) store(out_ptr, i + 1, value_4bit(A_ptr[j] & 0x0f, quant_type) * scale);
    });
    d_out.download(out);
    return BNB_OK;
  });
}

BNB_DEFINE_NO_CPU_KERNELS()
BNB_INSTANTIATE_BACKEND(float);
BNB_INSTANTIATE_BACKEND(unsigned short);

}  // namespace backend
}  // namespace bnb
