# Compiler flags shared by every dclcomms target: dclcomms_warnings is an
# INTERFACE target that each library links privately.
add_library(dclcomms_warnings INTERFACE)
target_compile_options(dclcomms_warnings INTERFACE -Wall -Wextra)
if(DCLCOMMS_WERROR)
  target_compile_options(dclcomms_warnings INTERFACE -Werror)
endif()
if(DCLCOMMS_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# The fuzz/sanitizer tree (scripts/fuzz, clang): every library and harness is
# instrumented for libFuzzer's coverage and checked by ASan + UBSan, so the
# fuzzer sees the code under test, not only its harness. Only the fuzz targets
# link libFuzzer itself (dclcomms_fuzz_target); the GoogleTest suites of the
# same tree run under the sanitizers.
if(DCLCOMMS_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "DCLCOMMS_FUZZ=ON needs clang (libFuzzer): CXX=clang++ CC=clang")
  endif()
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
                      -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
endif()

# The ThreadSanitizer tree (scripts/fuzz tsan, clang, build/tsan): every
# library and test instrumented for data races; system libraries (libnats,
# libprotobuf, secp256k1) stay uninstrumented (cpp/ws/tests/tsan.supp).
if(DCLCOMMS_TSAN)
  if(DCLCOMMS_SANITIZE OR DCLCOMMS_FUZZ)
    message(FATAL_ERROR "DCLCOMMS_TSAN=ON cannot be combined with ASan (DCLCOMMS_SANITIZE, DCLCOMMS_FUZZ)")
  endif()
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
endif()

# A libFuzzer target: dclcomms_fuzz_target(name source... LIBS lib...).
function(dclcomms_fuzz_target name)
  cmake_parse_arguments(F "" "" "LIBS" ${ARGN})
  add_executable(${name} ${F_UNPARSED_ARGUMENTS})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  target_link_libraries(${name} PRIVATE ${F_LIBS})
endfunction()
