/*
 * fuzz.h - the libFuzzer entry point every tests/fuzz/fuzz_*.c defines.
 *
 * Each target is linked twice: with libFuzzer (-DLQ_FUZZ=ON, clang) for
 * fuzzing, and with replay_main.c (any compiler) so that ctest runs the
 * seed corpus and every past crasher under the sanitizers of the normal test
 * build. A target must be deterministic, must not leak, and must only
 * abort() on a real bug (a broken contract of the code under test).
 */
#ifndef LIVEQUERY_TESTS_FUZZ_H
#define LIVEQUERY_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>

/* Runs one input; data[0..size) is borrowed (not NUL-terminated). Returns 0. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
