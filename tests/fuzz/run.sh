#!/bin/sh
# tests/fuzz/run.sh runs N BIN...   each target over N inputs, seed 1, from its
#                                   seed corpus (tests/fuzz/corpus/NAME); new
#                                   inputs go to a temporary directory.
# tests/fuzz/run.sh time S BIN...   each target for S seconds; new inputs are
#                                   kept in build-fuzz/corpus/NAME.
# A crash, a leak, a sanitizer report or a failed check stops the run: the
# input that did it is left in build-fuzz/crashes/ and the script fails.
set -u
MODE=$1 AMOUNT=$2
shift 2
HERE=$(dirname "$0")
mkdir -p build-fuzz/crashes
failed=0
for bin in "$@"; do
    name=$(basename "$bin")
    seeds="$HERE/corpus/$name"
    work=$(mktemp -d /tmp/quern-fuzz.XXXXXX)
    if [ "$MODE" = time ]; then
        limit="-max_total_time=$AMOUNT"
        mkdir -p "build-fuzz/corpus/$name"
        dirs="build-fuzz/corpus/$name $seeds"
    else
        limit="-runs=$AMOUNT -seed=1"
        dirs="$work $seeds"
    fi
    # shellcheck disable=SC2086
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$bin" $limit -max_len=4096 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=build-fuzz/crashes/"$name"- $dirs >"$work/log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log")
    cov=$(grep -E '^#[0-9]+' "$work/log" | tail -1 | sed -E 's/.*cov: ([0-9]+).*/\1/')
    if [ $rc -eq 0 ]; then
        echo "fuzz $name: ok, ${execs:-?} inputs, coverage ${cov:-?} edges"
    else
        failed=1
        echo "fuzz $name: FAILED (exit $rc); its log ends:"
        tail -40 "$work/log"
    fi
    rm -rf "$work"
done
exit $failed
