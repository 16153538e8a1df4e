# Helpers shared by the per-folder CMakeLists.

set(SPARGO_WARNINGS -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers)

# libtorch installs from pip ship their own google/protobuf headers; generated .pb.h files must see the protobuf
# that protoc came with, so its include directory goes first in every target that may include both.
function(spargo_protobuf_headers_first target)
  target_include_directories(${target} BEFORE PRIVATE ${Protobuf_INCLUDE_DIRS})
endfunction()

# A static library that uses libtorch. Reuses one precompiled <torch/torch.h> across all such targets.
function(spargo_torch_library name)
  add_library(${name} STATIC ${ARGN})
  target_compile_options(${name} PRIVATE ${SPARGO_WARNINGS})
  spargo_protobuf_headers_first(${name})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${TORCH_LIBRARIES})
  spargo_use_torch_pch(${name})
endfunction()

# Makes `target` reuse the precompiled torch header (built once by spargo_torch_pch).
function(spargo_use_torch_pch target)
  if(NOT SPARGO_USE_PCH)
    return()
  endif()
  if(NOT TARGET spargo_torch_pch)
    file(WRITE ${CMAKE_BINARY_DIR}/torch_pch_anchor.cc "// anchor for the precompiled torch header\n")
    add_library(spargo_torch_pch STATIC ${CMAKE_BINARY_DIR}/torch_pch_anchor.cc)
    target_link_libraries(spargo_torch_pch PUBLIC ${TORCH_LIBRARIES})
    target_compile_options(spargo_torch_pch PRIVATE ${SPARGO_WARNINGS})
    # -pthread defines _REENTRANT, which the torch headers see: the header and its users must agree on it.
    target_compile_options(spargo_torch_pch PRIVATE -pthread)
    target_precompile_headers(spargo_torch_pch PRIVATE <torch/torch.h>)
  endif()
  target_compile_options(${target} PRIVATE -pthread)
  target_precompile_headers(${target} REUSE_FROM spargo_torch_pch)
endfunction()
