// Macros that let the numerics headers of this folder compile as host C++17, CUDA, HIP and SYCL.
#ifndef BNB_COMMON_PORTABILITY_H
#define BNB_COMMON_PORTABILITY_H

#if defined(__CUDACC__) || defined(__HIPCC__) || defined(__HIP__)
#define BNB_HOST_DEVICE __host__ __device__ inline
#else
#define BNB_HOST_DEVICE inline
#endif

#endif
