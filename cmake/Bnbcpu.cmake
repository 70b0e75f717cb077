# CPU backend: C++17 with std::thread (no OpenMP, so no libgomp dependency).
#
# The library is compiled for the target's baseline CPU; the kernels of each vector instruction set
# live in their own file, compiled with that instruction set enabled, and csrc/cpu/isa.cpp picks
# the best one the CPU runs at the first call (BNB_CPU_ISA=scalar|avx2|avx512|neon forces one):
#   x86_64:  kernels_avx512.cpp (AVX-512 F/BW/DQ/VL), kernels_avx2.cpp (AVX2 + F16C), kernels_scalar.cpp
#   aarch64: kernels_neon.cpp (NEON is baseline there), kernels_scalar.cpp
find_package(Threads REQUIRED)

function(bnb_configure_backend target)
  set(_cpu "${PROJECT_SOURCE_DIR}/csrc/cpu")
  target_sources(${target} PRIVATE
    "${_cpu}/backend.cpp"
    "${_cpu}/isa.cpp"
    "${_cpu}/parallel.cpp"
    "${_cpu}/kernels_scalar.cpp"
    "${_cpu}/kernels_avx2.cpp"
    "${_cpu}/kernels_avx512.cpp"
    "${_cpu}/kernels_neon.cpp")
  # The vector files compile to nothing on other architectures (preprocessor guards inside), so
  # only x86_64 needs the instruction-set flags.
  string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" _processor)
  if(_processor MATCHES "^(x86_64|amd64|x64)$")
    if(MSVC)
      set(_avx2 "/arch:AVX2")
      set(_avx512 "/arch:AVX512")
    else()
      set(_avx2 "-mavx2;-mf16c")
      set(_avx512 "-mavx512f;-mavx512bw;-mavx512dq;-mavx512vl;-mavx2;-mf16c")
    endif()
    set_source_files_properties("${_cpu}/kernels_avx2.cpp" PROPERTIES COMPILE_OPTIONS "${_avx2}")
    set_source_files_properties("${_cpu}/kernels_avx512.cpp" PROPERTIES COMPILE_OPTIONS "${_avx512}")
  endif()
  target_link_libraries(${target} PRIVATE Threads::Threads)
  set(BNB_LIBRARY_SUFFIX "cpu" PARENT_SCOPE)
endfunction()
