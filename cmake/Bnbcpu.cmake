# CPU backend: C++17 with std::thread (no OpenMP, so no libgomp dependency).
find_package(Threads REQUIRED)

function(bnb_configure_backend target)
  target_sources(${target} PRIVATE "${PROJECT_SOURCE_DIR}/csrc/cpu/backend.cpp")
  target_link_libraries(${target} PRIVATE Threads::Threads)
  set(BNB_LIBRARY_SUFFIX "cpu" PARENT_SCOPE)
endfunction()
