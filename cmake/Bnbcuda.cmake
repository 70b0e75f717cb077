# CUDA backend: csrc/cuda/*.cu compiled by nvcc (found through CUDACXX, CMAKE_CUDA_COMPILER or PATH).
#
#   cmake -S . -B build -DCOMPUTE_BACKEND=cuda -DCOMPUTE_CAPABILITY="75;90"
#
# COMPUTE_CAPABILITY lists the GPU architectures (default: a list suited to the nvcc found); the
# fatbin holds SASS for each and PTX for the highest. The library is named after the nvcc
# version: libbitsandbytes_cuda<MAJOR><MINOR> (13.0.88 -> cuda130).
set(COMPUTE_CAPABILITY "" CACHE STRING "CUDA architectures, ';'-separated (e.g. \"75;90\"); empty: a default for the nvcc found")
# nvcc compiles the architectures of one file one after the other unless --threads N is given; N
# threads do them in parallel (0: one per CPU). The output does not depend on it (benchmarks/nvcc_archs.py).
set(BNB_NVCC_THREADS "0" CACHE STRING "nvcc --threads: archs compiled in parallel per file (0: one per CPU, 1: one at a time)")

enable_language(CUDA)

# Supported architectures of this nvcc, from `nvcc --list-gpu-arch` (compute_75 ... compute_121).
function(_bnb_nvcc_architectures out)
  execute_process(COMMAND "${CMAKE_CUDA_COMPILER}" --list-gpu-arch
    OUTPUT_VARIABLE _listing RESULT_VARIABLE _result ERROR_QUIET)
  set(_archs "")
  if(_result EQUAL 0)
    string(REGEX MATCHALL "compute_[0-9]+" _computes "${_listing}")
    foreach(_compute IN LISTS _computes)
      string(REPLACE "compute_" "" _arch "${_compute}")
      list(APPEND _archs "${_arch}")
    endforeach()
  endif()
  set(${out} "${_archs}" PARENT_SCOPE)
endfunction()

function(_bnb_default_cuda_architectures out)
  set(_version "${CMAKE_CUDA_COMPILER_VERSION}")
  if(_version VERSION_GREATER_EQUAL 13.0)
    set(_archs 75 80 86 89 90 100 120)
  elseif(_version VERSION_GREATER_EQUAL 12.8)
    set(_archs 50 60 70 75 80 86 89 90 100 120)
  elseif(_version VERSION_GREATER_EQUAL 11.8)
    set(_archs 50 60 70 75 80 86 89 90)
  else()
    set(_archs 50 60 70 75 80 86)
  endif()
  set(${out} "${_archs}" PARENT_SCOPE)
endfunction()

function(bnb_configure_backend target)
  if(COMPUTE_CAPABILITY)
    set(_requested "${COMPUTE_CAPABILITY}")
  else()
    _bnb_default_cuda_architectures(_requested)
  endif()
  list(REMOVE_DUPLICATES _requested)
  list(SORT _requested COMPARE NATURAL)

  _bnb_nvcc_architectures(_supported)
  foreach(_arch IN LISTS _requested)
    if(NOT _arch MATCHES "^[0-9]+[af]?$")
      message(FATAL_ERROR "COMPUTE_CAPABILITY holds '${_arch}': expected numbers such as \"75;90\"")
    endif()
    string(REGEX REPLACE "[af]$" "" _base "${_arch}")
    if(_supported AND NOT _base IN_LIST _supported)
      list(JOIN _supported " " _allowed)
      message(FATAL_ERROR "COMPUTE_CAPABILITY ${_arch} is not supported by nvcc ${CMAKE_CUDA_COMPILER_VERSION} "
                          "(${CMAKE_CUDA_COMPILER}); it supports: ${_allowed}")
    endif()
  endforeach()

  # SASS for every architecture, plus PTX for the highest so newer GPUs can JIT it.
  list(POP_BACK _requested _highest)
  list(TRANSFORM _requested APPEND "-real")
  list(APPEND _requested "${_highest}")

  target_sources(${target} PRIVATE "${PROJECT_SOURCE_DIR}/csrc/cuda/backend.cu")
  set_target_properties(${target} PROPERTIES
    CUDA_ARCHITECTURES "${_requested}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CUDA_VISIBILITY_PRESET hidden
    CUDA_RUNTIME_LIBRARY Static)
  # IEEE float division and denormals (nvcc's defaults, stated so a global flag cannot change them).
  target_compile_options(${target} PRIVATE
    "$<$<COMPILE_LANGUAGE:CUDA>:--prec-div=true;--ftz=false;--fmad=false>")
  if(NOT BNB_NVCC_THREADS MATCHES "^[0-9]+$")
    message(FATAL_ERROR "BNB_NVCC_THREADS='${BNB_NVCC_THREADS}': expected a whole number (0: one thread per CPU)")
  endif()
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 11.2 AND NOT BNB_NVCC_THREADS EQUAL 1)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:--threads=${BNB_NVCC_THREADS}>")
  endif()
  if(CMAKE_CUDA_COMPILER_VERSION VERSION_GREATER_EQUAL 13.0)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:--compress-mode=size>")
  endif()

  string(REGEX MATCH "^([0-9]+)\\.([0-9]+)" _ "${CMAKE_CUDA_COMPILER_VERSION}")
  set(BNB_LIBRARY_SUFFIX "cuda${CMAKE_MATCH_1}${CMAKE_MATCH_2}" PARENT_SCOPE)
endfunction()
