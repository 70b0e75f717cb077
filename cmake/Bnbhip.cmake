# HIP backend (AMD ROCm): the CUDA sources of csrc/cuda compiled as HIP through csrc/cuda/compat.h.
#
#   cmake -S . -B build -DCOMPUTE_BACKEND=hip -DBNB_ROCM_ARCH="gfx90a;gfx942"
#
# With ROCm in /opt/rocm (or ROCM_PATH) nothing else is needed. Debian's packages (hipcc,
# libamdhip64-dev; ROCm 5.2) need the pipeline's pipeline/src/bnb_build/cmake/debian-rocm.cmake, see that file.
# The library is named after the HIP version: libbitsandbytes_rocm<MAJOR><MINOR> (5.2.x -> rocm52).
include(CheckCompilerFlag)

set(BNB_ROCM_ARCH "gfx90a;gfx942;gfx1100" CACHE STRING "AMD GPU architectures, ';'-separated (e.g. \"gfx90a;gfx942\")")
# Set before enable_language: without it CMake asks rocm_agent_enumerator, which needs a GPU.
set(CMAKE_HIP_ARCHITECTURES "${BNB_ROCM_ARCH}")
enable_language(HIP)

# ROCm's hip-lang package links HIP targets with `--hip-link`, and clang then adds `-rpath <ROCm>/lib`
# (e.g. /opt/rocm-6.4.4/lib): a run path into the build machine's versioned ROCm, which the wheel must
# not carry (the ROCm runtime or PyTorch provides libamdhip64). Nothing here needs --hip-link (no
# relocatable device code): libamdhip64 and the compiler-rt builtins stay linked by hip-lang's targets.
foreach(_target IN ITEMS hip-lang::device hip::device)
  if(TARGET ${_target})
    get_target_property(_options ${_target} INTERFACE_LINK_OPTIONS)
    if(_options)
      list(FILTER _options EXCLUDE REGEX "--hip-link")
      set_property(TARGET ${_target} PROPERTY INTERFACE_LINK_OPTIONS "${_options}")
    endif()
  endif()
endforeach()

# major.minor of the HIP headers the compiler uses (hip/hip_version.h).
function(_bnb_hip_version out)
  find_file(BNB_HIP_VERSION_HEADER hip/hip_version.h
    HINTS "${CMAKE_HIP_COMPILER_ROCM_ROOT}/include" "$ENV{ROCM_PATH}/include" /opt/rocm/include
    NO_CACHE)
  if(NOT BNB_HIP_VERSION_HEADER)
    message(FATAL_ERROR "hip/hip_version.h not found under ${CMAKE_HIP_COMPILER_ROCM_ROOT}/include, "
                        "\$ROCM_PATH/include or /opt/rocm/include: install the HIP development headers")
  endif()
  file(STRINGS "${BNB_HIP_VERSION_HEADER}" _defines REGEX "#define HIP_VERSION_(MAJOR|MINOR) ")
  string(REGEX MATCH "HIP_VERSION_MAJOR ([0-9]+)" _ "${_defines}")
  set(_major "${CMAKE_MATCH_1}")
  string(REGEX MATCH "HIP_VERSION_MINOR ([0-9]+)" _ "${_defines}")
  set(${out} "${_major}${CMAKE_MATCH_1}" PARENT_SCOPE)
endfunction()

function(bnb_configure_backend target)
  set(_sources "${PROJECT_SOURCE_DIR}/csrc/cuda/backend.cu")
  set_source_files_properties(${_sources} PROPERTIES LANGUAGE HIP)
  target_sources(${target} PRIVATE ${_sources})
  set_target_properties(${target} PROPERTIES
    HIP_ARCHITECTURES "${BNB_ROCM_ARCH}"
    HIP_STANDARD 17
    HIP_STANDARD_REQUIRED ON
    HIP_VISIBILITY_PRESET hidden)
  # IEEE-exact arithmetic (clang contracts a*b+c into FMA for HIP by default).
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:HIP>:-ffp-contract=off>")
  check_compiler_flag(HIP "--offload-compress" BNB_HIP_HAS_OFFLOAD_COMPRESS)
  if(BNB_HIP_HAS_OFFLOAD_COMPRESS)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:HIP>:--offload-compress>")
  endif()

  _bnb_hip_version(_version)
  set(BNB_LIBRARY_SUFFIX "rocm${_version}" PARENT_SCOPE)
endfunction()
