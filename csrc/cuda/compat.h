// Lets the CUDA sources of this folder compile as HIP: maps the cuda* runtime names they use to
// hip*, and holds the two things that differ between the platforms (name and runtime version).
#ifndef BNB_CUDA_COMPAT_H
#define BNB_CUDA_COMPAT_H

#include "bitsandbytes.h"

#if defined(__HIP__) || defined(__HIP_PLATFORM_AMD__)
#define BNB_HIP 1
#include <hip/hip_runtime.h>

#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaMalloc hipMalloc
#define cudaFree hipFree
#define cudaMemcpy hipMemcpy
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define cudaMemset hipMemset
#define cudaGetLastError hipGetLastError
#define cudaGetErrorName hipGetErrorName
#define cudaGetErrorString hipGetErrorString
#define cudaGetDeviceCount hipGetDeviceCount

namespace bnb::gpu {
constexpr const char *kBackendName = "hip";
constexpr const char *kRuntimeName = "HIP";
// The HIP version the library was compiled against, encoded like cudaRuntimeGetVersion.
inline int runtime_version() { return HIP_VERSION_MAJOR * 1000 + HIP_VERSION_MINOR * 10; }
}  // namespace bnb::gpu

#else
#include <cuda_runtime.h>

namespace bnb::gpu {
constexpr const char *kBackendName = "cuda";
constexpr const char *kRuntimeName = "CUDA";
// The static runtime reports the version it was built from; no driver is needed.
inline int runtime_version() {
  int version = 0;
  return cudaRuntimeGetVersion(&version) == cudaSuccess ? version : BNB_NOT_AVAILABLE;
}
}  // namespace bnb::gpu
#endif

#endif
