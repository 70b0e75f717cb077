# Cross toolchain: Debian's cross gcc for a Linux target of another architecture, with the target's
# C library as sysroot (Debian's libc6-dev-<arch>-cross in /usr/<triple>). It builds the Linux CPU
# library of a tree that uses OpenMP where no host of that architecture (or container engine) is at
# hand: gcc's own libgomp for the target comes with the cross compiler (libgomp1-<arch>-cross), so the
# library keeps OpenMP, and the wheel step vendors that libgomp as it does on the target itself.
#
#   apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross
#   BNB_GCC_CROSS_TRIPLE=aarch64-linux-gnu cmake -S . -B build -DCMAKE_TOOLCHAIN_FILE=<this file>
#
# The triple comes from BNB_GCC_CROSS_TRIPLE (a cache entry, else the environment); the compilers are
# <triple>-gcc and <triple>-g++ on PATH.

set(CMAKE_TRY_COMPILE_PLATFORM_VARIABLES BNB_GCC_CROSS_TRIPLE)

if(NOT BNB_GCC_CROSS_TRIPLE AND DEFINED ENV{BNB_GCC_CROSS_TRIPLE})
  set(BNB_GCC_CROSS_TRIPLE "$ENV{BNB_GCC_CROSS_TRIPLE}")
endif()
if(NOT BNB_GCC_CROSS_TRIPLE)
  message(FATAL_ERROR "gcc-cross.cmake: set BNB_GCC_CROSS_TRIPLE (e.g. aarch64-linux-gnu), as a cache entry or in the environment")
endif()
string(REGEX MATCH "^[^-]+" _bnb_processor "${BNB_GCC_CROSS_TRIPLE}")

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR "${_bnb_processor}")
set(CMAKE_C_COMPILER "${BNB_GCC_CROSS_TRIPLE}-gcc")
set(CMAKE_CXX_COMPILER "${BNB_GCC_CROSS_TRIPLE}-g++")
set(CMAKE_FIND_ROOT_PATH "/usr/${BNB_GCC_CROSS_TRIPLE}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
