# Flags every backend shares: export nothing but the C ABI, keep floating point IEEE-exact.
include(CheckLinkerFlag)

function(bnb_configure_compiler_flags target)
  # A version script also hides what static archives (e.g. the static CUDA runtime) would export.
  set(_exports "${PROJECT_SOURCE_DIR}/cmake/exports.map")
  check_linker_flag(CXX "LINKER:--version-script=${_exports}" BNB_HAS_VERSION_SCRIPT)
  if(BNB_HAS_VERSION_SCRIPT)
    target_link_options(${target} PRIVATE "LINKER:--version-script=${_exports}")
    set_property(TARGET ${target} APPEND PROPERTY LINK_DEPENDS "${_exports}")
  endif()

  # docs/quantization.md: no fused multiply-add contraction and no fast math.
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang|IntelLLVM")
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -ffp-contract=off>)
  elseif(MSVC)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:/W3 /fp:precise>)
  endif()
endfunction()
