#!/usr/bin/env bash
# Bounded libFuzzer run of every target in tests/fuzz (or only the one named):
# builds build-fuzz with clang and -DLQ_FUZZ=ON, then fuzzes each target for
# LQ_FUZZ_SECONDS (default 20) on a temporary copy of its seed corpus and
# regressions, with its dictionary. Nothing is written into the repository.
# On a crash, leak, sanitizer report or timeout it prints the input (path and
# hex dump) and exits non-zero; add the minimised input to
# tests/fuzz/regressions/<target>/ with the fix.
# LQ_FUZZ_BUILD_DIR overrides the build directory.
# usage: scripts/fuzz.sh [frame|query|bus|bson|config]
set -euo pipefail
cd "$(dirname "$0")/.."

all=(frame query bus bson config)
targets=("${all[@]}")
if [ $# -gt 0 ]; then
    case " ${all[*]} " in
    *" $1 "*) targets=("$1") ;;
    *) echo "fuzz.sh: unknown target '$1' (one of: ${all[*]})" >&2; exit 2 ;;
    esac
fi
seconds="${LQ_FUZZ_SECONDS:-20}"
build="${LQ_FUZZ_BUILD_DIR:-build-fuzz}"

CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLQ_FUZZ=ON >/dev/null
cmake --build "$build" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

work="$(mktemp -d "${TMPDIR:-/tmp}/lq-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

failed=0
for t in "${targets[@]}"; do
    corpus="$work/$t/corpus" artifacts="$work/$t/artifacts"
    mkdir -p "$corpus" "$artifacts"
    cp tests/fuzz/corpus/"$t"/* "$corpus"/
    find tests/fuzz/regressions/"$t" -maxdepth 1 -type f ! -name '.*' ! -name 'README*' \
        -exec cp {} "$corpus"/ \;
    dict=()
    [ -f tests/fuzz/"$t".dict ] && dict=(-dict=tests/fuzz/"$t".dict)
    echo "fuzz.sh: fuzz_$t for ${seconds}s ($(ls "$corpus" | wc -l) seeds)"
    if ! "$build/tests/fuzz/fuzz_$t" "${dict[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 \
        -timeout=10 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$corpus" >"$work/$t/log" 2>&1; then
        failed=1
        tail -n 60 "$work/$t/log"
        for a in "$artifacts"/*; do
            [ -f "$a" ] || continue
            keep="${TMPDIR:-/tmp}/lq-fuzz-$t-$(basename "$a")"
            cp "$a" "$keep"
            echo "fuzz.sh: fuzz_$t failed; input kept as $keep:"
            od -A x -t x1z -v "$keep" | head -n 64
        done
        echo "fuzz.sh: reproduce: $build/tests/fuzz/fuzz_$t <input>"
    else
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec)|DONE +cov:' "$work/$t/log" | tr '\n' ' '
        echo
    fi
done
exit "$failed"
