#!/usr/bin/env bash
# The test suite under AddressSanitizer and UndefinedBehaviorSanitizer: configures build-asan/ (the default
# compiler, -fsanitize=address,undefined, -O1 with line tables, ccache), builds spargo_tests and spargo, and runs
#   scripts/sanitize.sh                  every CTest test (slow: hours on 2 cores; not run in CI)
#   scripts/sanitize.sh 'Suite.*:Other.*' the GoogleTest filter given, directly through spargo_tests
# Any report (heap overflow, use after free, leak, undefined behaviour) fails the test that triggered it.
# $SPARGO_ASAN_BUILD_DIR overrides build-asan; ASAN_OPTIONS / UBSAN_OPTIONS add to the defaults below.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${SPARGO_ASAN_BUILD_DIR:-$ROOT/build-asan}"

export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/ccache}"
export CCACHE_BASEDIR="$ROOT"
export CCACHE_SLOPPINESS="pch_defines,time_macros,include_file_mtime,include_file_ctime"
export CCACHE_MAXSIZE="${CCACHE_MAXSIZE:-5G}"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
if [[ ! -f "$BUILD/build.ninja" ]]; then
  cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_FLAGS="$SAN" -DCMAKE_CXX_FLAGS="$SAN" \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -g1" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -g1" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
fi
cmake --build "$BUILD" --target spargo_tests spargo -- -j"$(nproc)"

# Reward plugins are dlopen()ed by the instrumented binaries: they must find the ASan runtime already loaded
# (it is, in the executable). Leaks are checked at exit of every process.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=0:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$ROOT/scripts/lsan.supp:${LSAN_OPTIONS:-}"  # third-party leaks only
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
if (($#)); then
  "$BUILD/tests/spargo_tests" --gtest_filter="$1"
else
  cd "$BUILD"
  ctest --output-on-failure -j"$(nproc)" --timeout 7200
fi
