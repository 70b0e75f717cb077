// CUDA/HIP backend: copies the host arrays of the ABI to the device, runs the kernels of
// kernels.cuh and copies the results back. Any runtime failure (no driver, no device, launch
// error) becomes BNB_ERROR_RUNTIME with the runtime's message in bnb_last_error().
#include <algorithm>
#include <cstddef>

#include "common/backend.h"
#include "common/errors.h"
#include "compat.h"
#include "kernels.cuh"

namespace bnb {
namespace {

int runtime_error(const char *call, cudaError_t error) {
  return fail(BNB_ERROR_RUNTIME, "%s runtime error in %s: %s (%s)", gpu::kRuntimeName, call, cudaGetErrorName(error),
              cudaGetErrorString(error));
}

// Returns BNB_ERROR_RUNTIME from the calling function when a runtime call fails.
#define BNB_GPU_CHECK(call)                                                         \
  do {                                                                              \
    cudaError_t bnb_gpu_error_ = (call);                                            \
    if (bnb_gpu_error_ != cudaSuccess) return runtime_error(#call, bnb_gpu_error_); \
  } while (0)

// Device memory for `count` elements of T, freed when it goes out of scope.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(long long count) : bytes_(static_cast<size_t>(count) * sizeof(T)) {}
  DeviceArray(const DeviceArray &) = delete;
  DeviceArray &operator=(const DeviceArray &) = delete;
  ~DeviceArray() {
    if (data_ != nullptr) (void)cudaFree(data_);  // nothing to report from a destructor
  }

  cudaError_t allocate() { return cudaMalloc(reinterpret_cast<void **>(&data_), bytes_); }
  cudaError_t upload(const T *host) { return cudaMemcpy(data_, host, bytes_, cudaMemcpyHostToDevice); }
  cudaError_t download(T *host) const { return cudaMemcpy(host, data_, bytes_, cudaMemcpyDeviceToHost); }
  cudaError_t zero() { return cudaMemset(data_, 0, bytes_); }
  T *get() const { return data_; }

 private:
  size_t bytes_;
  T *data_ = nullptr;
};

unsigned int grid_size(long long work_items, long long per_block) {
  return static_cast<unsigned int>(std::min((work_items + per_block - 1) / per_block, gpu::kMaxGrid));
}

// Drops an error left over from an earlier call, so that the check after a launch sees this launch only.
void clear_stale_error() { (void)cudaGetLastError(); }

}  // namespace

namespace backend {

const char *name() { return gpu::kBackendName; }
int runtime_version() { return gpu::runtime_version(); }

int device_count() {
  int count = 0;
  return cudaGetDeviceCount(&count) == cudaSuccess ? count : 0;
}

template <typename T>
int quantize_blockwise(const float *code, const T *A, float *absmax, unsigned char *out, Blocks blocks) {
  DeviceArray<float> d_code(kCodeMapSize), d_absmax(blocks.count);
  DeviceArray<T> d_A(blocks.n);
  DeviceArray<unsigned char> d_out(blocks.n);
  DeviceArray<int> d_nonfinite(1);
  BNB_GPU_CHECK(d_code.allocate());
  BNB_GPU_CHECK(d_absmax.allocate());
  BNB_GPU_CHECK(d_A.allocate());
  BNB_GPU_CHECK(d_out.allocate());
  BNB_GPU_CHECK(d_nonfinite.allocate());
  BNB_GPU_CHECK(d_code.upload(code));
  BNB_GPU_CHECK(d_A.upload(A));
  BNB_GPU_CHECK(d_nonfinite.zero());
  clear_stale_error();
  gpu::quantize_blockwise_kernel<<<grid_size(blocks.count, 1), gpu::kThreads>>>(
      d_code.get(), d_A.get(), d_absmax.get(), d_out.get(), blocks, d_nonfinite.get());
  BNB_GPU_CHECK(cudaGetLastError());
  int nonfinite = 0;
  BNB_GPU_CHECK(d_nonfinite.download(&nonfinite));
  if (nonfinite) return fail_nonfinite();
  BNB_GPU_CHECK(d_absmax.download(absmax));
  BNB_GPU_CHECK(d_out.download(out));
  return BNB_OK;
}

template <typename T>
int quantize_4bit(const T *A, float *absmax, unsigned char *out, Blocks blocks, int quant_type) {
  DeviceArray<T> d_A(blocks.n);
  DeviceArray<float> d_absmax(blocks.count);
  DeviceArray<unsigned char> d_out((blocks.n + 1) / 2);
  DeviceArray<int> d_nonfinite(1);
  BNB_GPU_CHECK(d_A.allocate());
  BNB_GPU_CHECK(d_absmax.allocate());
  BNB_GPU_CHECK(d_out.allocate());
  BNB_GPU_CHECK(d_nonfinite.allocate());
  BNB_GPU_CHECK(d_A.upload(A));
  BNB_GPU_CHECK(d_nonfinite.zero());
  clear_stale_error();
  gpu::quantize_4bit_kernel<<<grid_size(blocks.count, 1), gpu::kThreads>>>(d_A.get(), d_absmax.get(), d_out.get(),
                                                                           blocks, quant_type, d_nonfinite.get());
  BNB_GPU_CHECK(cudaGetLastError());
  int nonfinite = 0;
  BNB_GPU_CHECK(d_nonfinite.download(&nonfinite));
  if (nonfinite) return fail_nonfinite();
  BNB_GPU_CHECK(d_absmax.download(absmax));
  BNB_GPU_CHECK(d_out.download(out));
  return BNB_OK;
}

template <typename T>
int dequantize_blockwise(const float *code, const unsigned char *A, const float *absmax, T *out, Blocks blocks) {
  DeviceArray<float> d_code(kCodeMapSize), d_absmax(blocks.count);
  DeviceArray<unsigned char> d_A(blocks.n);
  DeviceArray<T> d_out(blocks.n);
  BNB_GPU_CHECK(d_code.allocate());
  BNB_GPU_CHECK(d_absmax.allocate());
  BNB_GPU_CHECK(d_A.allocate());
  BNB_GPU_CHECK(d_out.allocate());
  BNB_GPU_CHECK(d_code.upload(code));
  BNB_GPU_CHECK(d_absmax.upload(absmax));
  BNB_GPU_CHECK(d_A.upload(A));
  clear_stale_error();
  gpu::dequantize_blockwise_kernel<<<grid_size(blocks.n, gpu::kThreads), gpu::kThreads>>>(
      d_code.get(), d_A.get(), d_absmax.get(), d_out.get(), blocks);
  BNB_GPU_CHECK(cudaGetLastError());
  BNB_GPU_CHECK(d_out.download(out));
  return BNB_OK;
}

template <typename T>
int dequantize_4bit(const unsigned char *A, const float *absmax, T *out, Blocks blocks, int quant_type) {
  long long bytes = (blocks.n + 1) / 2;
  DeviceArray<unsigned char> d_A(bytes);
  DeviceArray<float> d_absmax(blocks.count);
  DeviceArray<T> d_out(blocks.n);
  BNB_GPU_CHECK(d_A.allocate());
  BNB_GPU_CHECK(d_absmax.allocate());
  BNB_GPU_CHECK(d_out.allocate());
  BNB_GPU_CHECK(d_A.upload(A));
  BNB_GPU_CHECK(d_absmax.upload(absmax));
  clear_stale_error();
  gpu::dequantize_4bit_kernel<<<grid_size(bytes, gpu::kThreads), gpu::kThreads>>>(d_A.get(), d_absmax.get(),
                                                                                  d_out.get(), blocks, quant_type);
  BNB_GPU_CHECK(cudaGetLastError());
  BNB_GPU_CHECK(d_out.download(out));
  return BNB_OK;
}

BNB_DEFINE_NO_CPU_KERNELS()
BNB_INSTANTIATE_BACKEND(float);
BNB_INSTANTIATE_BACKEND(unsigned short);

}  // namespace backend
}  // namespace bnb
