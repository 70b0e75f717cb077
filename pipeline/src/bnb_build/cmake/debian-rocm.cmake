# Toolchain file for Debian's ROCm packages (bookworm: `apt-get install hipcc libamdhip64-dev`,
# ROCm 5.2 with clang-15). They put ROCm in /usr instead of /opt/rocm, which CMake's HIP support
# does not find on its own. Usage:
#
#   export HIP_PLATFORM=amd   # with nvcc on PATH, hipcc would otherwise pick the NVIDIA platform
#   export CMAKE_TOOLCHAIN_FILE=$PWD/pipeline/src/bnb_build/cmake/debian-rocm.cmake
#   cmake -S . -B build-hip -G Ninja -DCOMPUTE_BACKEND=hip -DBNB_ROCM_ARCH=gfx90a
#   cmake --build build-hip
#
# Debian's device libraries stop at gfx1036/gfx940: gfx11xx and later cannot be built with them.
# Another clang can be chosen with BNB_HIP_CLANG (environment), e.g. /usr/bin/clang++-16.
if(DEFINED ENV{BNB_HIP_CLANG})
  set(_clang "$ENV{BNB_HIP_CLANG}")
else()
  find_program(_clang NAMES clang++-15 REQUIRED NO_CACHE)
endif()
set(_multiarch_lib "/usr/lib/${CMAKE_HOST_SYSTEM_PROCESSOR}-linux-gnu")  # Debian's multiarch folder

set(CMAKE_HIP_COMPILER "${_clang}")
set(CMAKE_HIP_PLATFORM amd)  # CMake >= 3.28 would otherwise follow HIP_PLATFORM/nvcc to "nvidia"
set(CMAKE_HIP_FLAGS_INIT "--rocm-path=/usr --hip-device-lib-path=${_multiarch_lib}/amdgcn/bitcode")

if(CMAKE_VERSION VERSION_GREATER_EQUAL 3.28)
  set(CMAKE_HIP_COMPILER_ROCM_ROOT /usr)
  set(CMAKE_HIP_COMPILER_ROCM_LIB "${_multiarch_lib}")
else()
  # Older CMake looks for <ROCm root>/lib/cmake/hip-lang only: give it a root that has one.
  set(_root "${CMAKE_BINARY_DIR}/debian-rocm-root")
  file(MAKE_DIRECTORY "${_root}/lib/cmake")
  if(NOT EXISTS "${_root}/lib/cmake/hip-lang")
    file(CREATE_LINK "${_multiarch_lib}/cmake/hip-lang" "${_root}/lib/cmake/hip-lang" SYMBOLIC)
  endif()
  set(CMAKE_HIP_COMPILER_ROCM_ROOT "${_root}")
  # hip-lang's dependencies (amd_comgr, hsa-runtime64) live next to it; the environment variable
  # also reaches CMake's internal try_compile projects.
  set(ENV{CMAKE_PREFIX_PATH} "${_multiarch_lib}/cmake")
endif()
