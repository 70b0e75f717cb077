# XPU backend (Intel GPUs): csrc/xpu/*.cpp compiled as SYCL by Intel's oneAPI DPC++ compiler.
#
#   source /opt/intel/oneapi/setvars.sh
#   CXX=icpx cmake -S . -B build -DCOMPUTE_BACKEND=xpu [-DBNB_SYCL_TARGETS=spir64]
#
# The library is named after the compiler's release year: libbitsandbytes_xpu<YEAR> (2025.1 -> xpu2025).
include(CheckCXXCompilerFlag)

set(BNB_SYCL_TARGETS "spir64" CACHE STRING "SYCL device targets passed to -fsycl-targets (spir64: JIT on any Intel GPU)")

function(bnb_configure_backend target)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "IntelLLVM")
    message(FATAL_ERROR "COMPUTE_BACKEND=xpu needs Intel's oneAPI DPC++ compiler (icpx), but the C++ compiler is "
                        "${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION} (${CMAKE_CXX_COMPILER}): "
                        "configure a fresh build folder with CXX=icpx")
  endif()
  set(_sycl "-fsycl" "-fsycl-targets=${BNB_SYCL_TARGETS}")
  target_sources(${target} PRIVATE "${PROJECT_SOURCE_DIR}/csrc/xpu/backend.cpp")
  # icpx defaults to fast floating point: docs/quantization.md needs IEEE division, no contraction.
  target_compile_options(${target} PRIVATE ${_sycl} -fp-model=precise -ffp-contract=off)
  target_link_options(${target} PRIVATE ${_sycl})  # links libsycl and embeds the device images

  string(REGEX MATCH "^[0-9]+" _year "${CMAKE_CXX_COMPILER_VERSION}")
  set(BNB_LIBRARY_SUFFIX "xpu${_year}" PARENT_SCOPE)
endfunction()
