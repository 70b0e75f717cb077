# Byte-identical builds: no absolute source or build path and no build id in the library.
include(CheckCXXCompilerFlag)
include(CheckLinkerFlag)

function(bnb_make_reproducible target)
  set(_maps "${PROJECT_SOURCE_DIR}=." "${PROJECT_BINARY_DIR}=build")
  check_cxx_compiler_flag("-ffile-prefix-map=${PROJECT_SOURCE_DIR}=." BNB_HAS_FILE_PREFIX_MAP)
  check_cxx_compiler_flag("-fmacro-prefix-map=${PROJECT_SOURCE_DIR}=." BNB_HAS_MACRO_PREFIX_MAP)
  set(_flags "")
  foreach(_map IN LISTS _maps)
    if(BNB_HAS_FILE_PREFIX_MAP)
      list(APPEND _flags "-ffile-prefix-map=${_map}")
    elseif(BNB_HAS_MACRO_PREFIX_MAP)
      list(APPEND _flags "-fmacro-prefix-map=${_map}" "-fdebug-prefix-map=${_map}")
    endif()
  endforeach()
  # Host compilers take the flags as they are (HIP is clang); nvcc forwards them to its host compiler.
  target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CXX,HIP>:${_flags}>")
  foreach(_flag IN LISTS _flags)
    target_compile_options(${target} PRIVATE "$<$<COMPILE_LANGUAGE:CUDA>:SHELL:-Xcompiler=${_flag}>")
  endforeach()

  check_linker_flag(CXX "LINKER:--build-id=none" BNB_HAS_BUILD_ID_NONE)
  if(BNB_HAS_BUILD_ID_NONE)
    target_link_options(${target} PRIVATE "LINKER:--build-id=none")
  endif()
  # The CPU library keeps its static symbol table (release builds compile no debug information), so
  # crash reports and the audit's ISA report name its functions. nvcc names its temporary files
  # after its process id (tmpxft_<pid>_...), and those names reach the symbol table: release builds
  # of the GPU libraries drop it (the exported symbols stay). A DLL has no static symbol table to
  # keep, and zig's COFF linker derives its timestamp from the debug records of an unstripped link,
  # which name the build folder: Windows libraries are always stripped whole.
  if(NOT COMPUTE_BACKEND STREQUAL "cpu" OR WIN32)
    check_linker_flag(CXX "LINKER:--strip-all" BNB_HAS_STRIP_ALL)
    if(BNB_HAS_STRIP_ALL)
      target_link_options(${target} PRIVATE "$<$<CONFIG:Release,MinSizeRel>:LINKER:--strip-all>")
    endif()
  endif()
endfunction()
