# Included after every project() of the tree being built (the native step passes
# -DCMAKE_PROJECT_INCLUDE=<this file>), so a tree needs none of this in its own CMake files:
#
# - reproducible binaries: the source and build folders are mapped away from file names in the
#   output (-ffile-prefix-map, or -fmacro-prefix-map/-fdebug-prefix-map where the compiler lacks it;
#   nvcc hands them to its host compiler), no build id, and no run path into this machine's folders
#   (a library goes into a wheel: its dependencies are found where it is installed, and a build
#   folder in RUNPATH would differ between two builds);
# - release builds drop the debug information (--strip-debug) and keep the static symbol table, as
#   upstream's published libraries do: a crash report and the audit's ISA report name every
#   function (zig builds: no strip option, see below). A tree's `strip = "all"` passes
#   -DBNB_PIPELINE_STRIP=all: the static symbol table goes
#   too (the exported symbols always stay). A target with CUDA sources drops it always: nvcc's
#   temporary file names (tmpxft_<pid>_...) are file symbols there, different in every build;
# - nvcc's generated names (relocatable device code: __fatbinwrap_<random>_..., module ids) from a
#   seed per source file, its path below the source folder (--frandom-seed, where nvcc has it),
#   instead of random numbers, so two builds give the same bytes;
# - a report of what the configure found, for build-info.json: whether the tree asked for OpenMP
#   (find_package(OpenMP) ran) and whether it was found; written when the top-level CMakeLists.txt
#   has been processed, to <build>/bnb-configure.json.
include_guard(GLOBAL)
set(CMAKE_SKIP_BUILD_RPATH ON)
set(BNB_PIPELINE_STRIP "debug" CACHE STRING "what release builds strip: debug (debug information) or all (the static symbol table too)")
if(NOT BNB_PIPELINE_STRIP MATCHES "^(debug|all)$")
  message(FATAL_ERROR "BNB_PIPELINE_STRIP is '${BNB_PIPELINE_STRIP}'; allowed: debug, all")
endif()
include(CheckCXXCompilerFlag OPTIONAL RESULT_VARIABLE _bnb_has_check)
include(CheckLinkerFlag OPTIONAL)

get_property(_bnb_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
if(CMAKE_CXX_COMPILER_LOADED OR "CXX" IN_LIST _bnb_languages)
  set(_bnb_maps "${CMAKE_SOURCE_DIR}=." "${CMAKE_BINARY_DIR}=build")
  check_cxx_compiler_flag("-ffile-prefix-map=${CMAKE_SOURCE_DIR}=." BNB_PIPELINE_FILE_PREFIX_MAP)
  check_cxx_compiler_flag("-fmacro-prefix-map=${CMAKE_SOURCE_DIR}=." BNB_PIPELINE_MACRO_PREFIX_MAP)
  foreach(_bnb_map IN LISTS _bnb_maps)
    if(BNB_PIPELINE_FILE_PREFIX_MAP)
      add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX,HIP>:-ffile-prefix-map=${_bnb_map}>"
                          "$<$<COMPILE_LANGUAGE:CUDA>:SHELL:-Xcompiler=-ffile-prefix-map=${_bnb_map}>")
    elseif(BNB_PIPELINE_MACRO_PREFIX_MAP)
      add_compile_options("$<$<COMPILE_LANGUAGE:C,CXX,HIP>:-fmacro-prefix-map=${_bnb_map};-fdebug-prefix-map=${_bnb_map}>")
    endif()
  endforeach()
  if(NOT CMAKE_SYSTEM_NAME STREQUAL "Darwin" AND NOT CMAKE_SYSTEM_NAME STREQUAL "Windows")
    check_linker_flag(CXX "LINKER:--build-id=none" BNB_PIPELINE_BUILD_ID_NONE)
    if(BNB_PIPELINE_BUILD_ID_NONE)
      add_link_options("LINKER:--build-id=none")
    endif()
    if(BNB_PIPELINE_STRIP STREQUAL "all")
      check_linker_flag(CXX "LINKER:--strip-all" BNB_PIPELINE_STRIP_ALL)
      set(_bnb_strip_supported "${BNB_PIPELINE_STRIP_ALL}")
    elseif(BNB_ZIG)
      # zig's linker drops the symbol table with --strip-debug too; its release builds carry no
      # debug information to strip (no -g), so they get no strip option.
      set(_bnb_strip_supported FALSE)
    else()
      check_linker_flag(CXX "LINKER:--strip-debug" BNB_PIPELINE_STRIP_DEBUG)
      set(_bnb_strip_supported "${BNB_PIPELINE_STRIP_DEBUG}")
    endif()
    if(_bnb_strip_supported)
      add_link_options("$<$<CONFIG:Release,MinSizeRel>:LINKER:--strip-${BNB_PIPELINE_STRIP}>")
    endif()
  endif()
endif()

function(_bnb_pipeline_cuda_seeds directory)
  get_property(_targets DIRECTORY "${directory}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_sources ${_target} SOURCES)
    get_target_property(_target_dir ${_target} SOURCE_DIR)
    foreach(_source IN LISTS _sources)
      if(_source MATCHES "\\.cu$")
        get_filename_component(_absolute "${_source}" ABSOLUTE BASE_DIR "${_target_dir}")
        file(RELATIVE_PATH _relative "${CMAKE_SOURCE_DIR}" "${_absolute}")
        set_property(SOURCE "${_absolute}" TARGET_DIRECTORY ${_target} APPEND PROPERTY COMPILE_OPTIONS "-frandom-seed=${_relative}")
      endif()
    endforeach()
  endforeach()
  get_property(_subdirectories DIRECTORY "${directory}" PROPERTY SUBDIRECTORIES)
  foreach(_subdirectory IN LISTS _subdirectories)
    _bnb_pipeline_cuda_seeds("${_subdirectory}")
  endforeach()
endfunction()

function(_bnb_pipeline_strip_cuda directory)
  get_property(_targets DIRECTORY "${directory}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_sources ${_target} SOURCES)
    if(_sources MATCHES "\\.cu(;|$)")
      set_property(TARGET ${_target} APPEND PROPERTY LINK_OPTIONS "$<$<CONFIG:Release,MinSizeRel>:LINKER:--strip-all>")
    endif()
  endforeach()
  get_property(_subdirectories DIRECTORY "${directory}" PROPERTY SUBDIRECTORIES)
  foreach(_subdirectory IN LISTS _subdirectories)
    _bnb_pipeline_strip_cuda("${_subdirectory}")
  endforeach()
endfunction()

function(_bnb_pipeline_configure_report)
  set(_asked false)
  set(_found false)
  get_property(_not_found GLOBAL PROPERTY PACKAGES_NOT_FOUND)
  get_property(_found_list GLOBAL PROPERTY PACKAGES_FOUND)
  # find_package(OpenMP) defines OpenMP_FOUND, also when CMAKE_DISABLE_FIND_PACKAGE_OpenMP makes it find nothing
  if("OpenMP" IN_LIST _not_found OR "OpenMP" IN_LIST _found_list OR DEFINED OpenMP_FOUND)
    set(_asked true)
  endif()
  if("OpenMP" IN_LIST _found_list OR OpenMP_CXX_FOUND)
    set(_found true)
  endif()
  get_property(_languages GLOBAL PROPERTY ENABLED_LANGUAGES)
  if("CUDA" IN_LIST _languages)
    include(CheckCompilerFlag)
    check_compiler_flag(CUDA "-frandom-seed=bnb" BNB_PIPELINE_CUDA_RANDOM_SEED)
    if(BNB_PIPELINE_CUDA_RANDOM_SEED)
      _bnb_pipeline_cuda_seeds("${CMAKE_SOURCE_DIR}")
    endif()
    if(BNB_PIPELINE_STRIP_DEBUG)
      _bnb_pipeline_strip_cuda("${CMAKE_SOURCE_DIR}")
    endif()
  endif()
  file(WRITE "${CMAKE_BINARY_DIR}/bnb-configure.json"
       "{\"openmp\": {\"asked\": ${_asked}, \"found\": ${_found}}}\n")
endfunction()
if(CMAKE_CURRENT_SOURCE_DIR STREQUAL CMAKE_SOURCE_DIR)
  cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _bnb_pipeline_configure_report)
endif()
