# Shared build rules so every target gets the same warnings and include root.

set(VPCI_WARNINGS -Wall -Wextra -Werror -Wshadow -Wnon-virtual-dtor -Wimplicit-fallthrough)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 reports -Wrestrict on plain std::string concatenation at -O2/-O3 (GCC bug
  # 105651, fixed in 13); it is a false positive in libstdc++ itself.
  list(APPEND VPCI_WARNINGS -Wno-restrict)
endif()
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # Checks the annotations of base/thread_annotations.h (state shared between threads is
  # touched only under its lock).
  list(APPEND VPCI_WARNINGS -Wthread-safety)
endif()

function(vpci_apply_defaults target)
  target_compile_options(${target} PRIVATE ${VPCI_WARNINGS})
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# vpci_library(NAME SOURCES ... DEPS ...)
function(vpci_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  vpci_apply_defaults(${name})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# vpci_test(NAME SOURCES ... DEPS ...): a GoogleTest binary registered with CTest.
# GoogleTest tests form the fast tier (`ctest --preset fast`): they need no root, no
# network and no guest. Tests that do carry the label "guest" or "root" instead.
function(vpci_test name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  vpci_apply_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_definitions(${name} PRIVATE
    VPCI_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    VPCI_CORPUS_DIR="${PROJECT_SOURCE_DIR}/tests/data/corpus"
    VPCI_CLI_PATH="$<TARGET_FILE:vpci>")
  # VPCI_PCI_NAMES=pci.ids: vpci's own name lookups ignore udev's hwdb, like the tests'
  # lspci (tests/support/lspci.h), so names do not depend on the machine.
  gtest_discover_tests(${name} PROPERTIES LABELS "${ARG_LABELS}" ENVIRONMENT "VPCI_PCI_NAMES=pci.ids"
    DISCOVERY_TIMEOUT 60)
endfunction()

# vpci_fuzzer(NAME SOURCE DEPS ...): with VPCI_FUZZ a libFuzzer binary; otherwise the
# same entry point linked to a small driver that replays the seed corpus, so GCC builds
# compile every target and CTest runs each one over its corpus.
function(vpci_fuzzer name)
  cmake_parse_arguments(ARG "" "SOURCE" "DEPS" ${ARGN})
  set(corpus ${PROJECT_SOURCE_DIR}/fuzz/corpus/${name})
  if(VPCI_FUZZ)
    add_executable(${name} ${ARG_SOURCE})
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  else()
    add_executable(${name} ${ARG_SOURCE} ${PROJECT_SOURCE_DIR}/fuzz/replay_main.cc)
    if(VPCI_BUILD_TESTS)
      add_test(NAME ${name}.replay COMMAND ${name} ${corpus})
      set_tests_properties(${name}.replay PROPERTIES LABELS fuzz-replay)
    endif()
  endif()
  vpci_apply_defaults(${name})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
