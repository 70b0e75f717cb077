# Cross toolchain: clang through zig (the PyPI package `ziglang`, pinned in pipeline/step-requirements.txt),
# which carries libc headers, import libraries and libc++ for every target it names. One file for every
# target; the target comes from BNB_ZIG_TARGET (a cache entry, else the environment):
#
#   x86_64-linux-gnu.2.17   aarch64-linux-gnu.2.17   (glibc 2.17 floor: manylinux2014)
#   x86_64-windows-gnu      aarch64-windows-gnu      (links the UCRT: api-ms-win-crt-*.dll, KERNEL32.dll)
#   aarch64-macos           (deployment target from CMAKE_OSX_DEPLOYMENT_TARGET, e.g. 14.0)
#
#   cmake -S . -B build-win -G Ninja -DCMAKE_TOOLCHAIN_FILE=<pipeline>/src/bnb_build/cmake/zig.cmake \
#         -DBNB_ZIG_TARGET=x86_64-windows-gnu -DCOMPUTE_BACKEND=cpu
#
# The file ships with the pipeline's step programs (the native step passes it for cross jobs), so a
# tree needs no toolchain file of its own. libc++ and compiler-rt are linked statically, so a library
# needs nothing but the platform's C runtime. zig has no OpenMP runtime: find_package(OpenMP) is made
# to find nothing (instead of accepting -fopenmp and leaving __kmpc_* undefined), so a tree that uses
# OpenMP builds without it, and the native step reports that. The first build for a target is slow
# (zig builds libc/libc++ for it, minutes); ZIG_GLOBAL_CACHE_DIR (environment) keeps that work.
#
# Nested try-compiles: CMake forwards the platform variables below to source-file try_compile()s, but
# a whole-project try_compile (check_ipo_supported() runs one) starts from the toolchain file alone;
# the target and the zig executable therefore also go into this process's environment, which such a
# nested configure reads.
#
# zig is found as the `zig` executable of the `ziglang` package of python3 on PATH (BNB_ZIG, cache
# entry or environment, names another zig). The compiler is that executable with `c++ -target T`.

set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES BNB_ZIG_TARGET BNB_ZIG CMAKE_OSX_DEPLOYMENT_TARGET)

if(NOT BNB_ZIG_TARGET AND DEFINED ENV{BNB_ZIG_TARGET})
  set(BNB_ZIG_TARGET "$ENV{BNB_ZIG_TARGET}")
endif()
if(NOT BNB_ZIG_TARGET)
  message(FATAL_ERROR "zig toolchain: set BNB_ZIG_TARGET (-DBNB_ZIG_TARGET=x86_64-windows-gnu, or the environment)")
endif()
set(BNB_ZIG_TARGET "${BNB_ZIG_TARGET}" CACHE STRING "zig target triple of the cross build")
set(ENV{BNB_ZIG_TARGET} "${BNB_ZIG_TARGET}")

if(NOT BNB_ZIG AND DEFINED ENV{BNB_ZIG})
  set(BNB_ZIG "$ENV{BNB_ZIG}")
endif()
if(NOT BNB_ZIG)
  find_program(_bnb_python NAMES python3 python REQUIRED NO_CACHE)
  execute_process(
    COMMAND "${_bnb_python}" -c "import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), 'zig'))"
    OUTPUT_VARIABLE BNB_ZIG OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _bnb_rc ERROR_VARIABLE _bnb_err)
  if(NOT _bnb_rc EQUAL 0)
    message(FATAL_ERROR "zig toolchain: ${_bnb_python} cannot import ziglang (pip install ziglang): ${_bnb_err}")
  endif()
  if(CMAKE_HOST_WIN32)
    string(APPEND BNB_ZIG ".exe")
  endif()
endif()
set(BNB_ZIG "${BNB_ZIG}" CACHE FILEPATH "zig executable")
set(ENV{BNB_ZIG} "${BNB_ZIG}")

if(BNB_ZIG_TARGET MATCHES "^(x86_64|aarch64)-linux-gnu")
  set(CMAKE_SYSTEM_NAME Linux)
elseif(BNB_ZIG_TARGET MATCHES "^(x86_64|aarch64)-windows-gnu$")
  set(CMAKE_SYSTEM_NAME Windows)
elseif(BNB_ZIG_TARGET MATCHES "^(x86_64|aarch64)-macos")
  set(CMAKE_SYSTEM_NAME Darwin)
else()
  message(FATAL_ERROR "zig toolchain: unsupported BNB_ZIG_TARGET '${BNB_ZIG_TARGET}'")
endif()
set(CMAKE_SYSTEM_PROCESSOR "${CMAKE_MATCH_1}")
if(CMAKE_SYSTEM_NAME STREQUAL "Darwin" AND CMAKE_SYSTEM_PROCESSOR STREQUAL "aarch64")
  set(CMAKE_SYSTEM_PROCESSOR arm64)
endif()

# macOS: the deployment target goes into the zig target (aarch64-macos.14.0), which is what zig honours.
set(_bnb_target "${BNB_ZIG_TARGET}")
if(CMAKE_SYSTEM_NAME STREQUAL "Darwin" AND CMAKE_OSX_DEPLOYMENT_TARGET AND NOT BNB_ZIG_TARGET MATCHES "\\.[0-9]")
  set(_bnb_target "${BNB_ZIG_TARGET}.${CMAKE_OSX_DEPLOYMENT_TARGET}")
endif()

set(CMAKE_C_COMPILER "${BNB_ZIG}" cc -target "${_bnb_target}")
set(CMAKE_CXX_COMPILER "${BNB_ZIG}" c++ -target "${_bnb_target}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Archiver and ranlib: zig's own (`zig ar`, `zig ranlib`), which read its LLVM bitcode; a host llvm-ar
# of another LLVM version cannot (check_ipo_supported() archives -flto objects). CMake wants one
# executable per tool, hence a two-line wrapper each in the build folder.
foreach(_bnb_tool ar ranlib)
  set(_bnb_wrapper "${CMAKE_BINARY_DIR}/bnb-zig-${_bnb_tool}")
  if(NOT EXISTS "${_bnb_wrapper}")
    file(WRITE "${_bnb_wrapper}" "#!/bin/sh\nexec \"${BNB_ZIG}\" ${_bnb_tool} \"$@\"\n")
    file(CHMOD "${_bnb_wrapper}" PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endif()
  string(TOUPPER "${_bnb_tool}" _bnb_name)
  set(CMAKE_${_bnb_name} "${_bnb_wrapper}" CACHE FILEPATH "zig ${_bnb_tool}" FORCE)
  foreach(_bnb_lang C CXX)
    set(CMAKE_${_bnb_lang}_COMPILER_${_bnb_name} "${_bnb_wrapper}" CACHE FILEPATH "zig ${_bnb_tool}" FORCE)
  endforeach()
endforeach()

# No OpenMP runtime for zig's clang (see above).
set(CMAKE_DISABLE_FIND_PACKAGE_OpenMP ON)
