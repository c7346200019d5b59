#!/usr/bin/env bash
# The whole test suite: install dependencies, build with warnings as errors and
# AddressSanitizer + UndefinedBehaviorSanitizer, run unit and integration tests
# (real redis-server, real Parse JS SDK) with ctest.
# BUILD_DIR and CMAKE_ARGS may be set to test another configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
build="${BUILD_DIR:-build-test}"
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLQ_WERROR=ON \
    ${CMAKE_ARGS:--DLQ_ASAN=ON -DLQ_UBSAN=ON} >/dev/null
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
# Bounded fuzzing of every parser (tests/fuzz): ~20 s per target after a clang build.
./scripts/fuzz.sh
