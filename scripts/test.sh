#!/usr/bin/env bash
# The whole test suite: install dependencies, build with warnings as errors,
# run unit and integration tests (real redis-server, real Parse JS SDK) with ctest.
# BUILD_DIR and CMAKE_ARGS may be set to test another configuration.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
build="${BUILD_DIR:-build-test}"
# shellcheck disable=SC2086
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DLQ_WERROR=ON ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j2 --timeout 300
