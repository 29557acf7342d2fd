#!/bin/bash
# bench/exec_ab.sh QUERND_A QUERND_B [ROUNDS]: sandboxed `sh -c true` runs per second end to
# end through the API for two quernd binaries, alternating A and B in each round (a noisy
# machine moves both alike), each round after the raw fork+exec rate of /bin/true.  Each
# quernd is fresh (temp data dir, --fsync $FSYNC (default batch), default slots, warm pool
# python=2,node=2);
# the load is exec_bench api: N tasks (default 2000) posted 100 per POST /tasks/batch over
# 2 connections, completions counted on the SSE stream.  EXTRA_A / EXTRA_B (env): more
# quernd arguments, e.g. EXTRA_B="--slots 8" with the same binary twice.
# Needs root (the sandbox does) and build/bench/exec_bench (bench/exec_bench.sh builds it).
set -u
A=${1:?quernd A}; B=${2:?quernd B}; ROUNDS=${3:-3}
cd "$(dirname "$0")/.."
BIN=${BIN:-build/bench/exec_bench}
KEY=qk_bench_root_key_0123456789
one() {  # one QUERND EXTRA
    local d p url res
    d=$(mktemp -d /tmp/quern-ab.XXXX)
    # shellcheck disable=SC2086
    QUERN_BOOTSTRAP_KEY=$KEY QUERN_WARM=python=2,node=2 "$1" $2 --listen 127.0.0.1:0 \
        --data "$d" --fsync "${FSYNC:-batch}" >"$d/out" 2>"$d/err" &
    p=$!
    for _ in $(seq 200); do grep -q 'listening on' "$d/out" 2>/dev/null && break; sleep 0.05; done
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$d/out")
    res=$("$BIN" api -u "$url" -k "$KEY" -n "${N:-2000}" -c 2 -b 100 -o -l 0 -P "$p" 2>&1)
    kill "$p"; wait "$p" 2>/dev/null
    rm -rf "$d"
    printf '%s runs/s, %s ms CPU per run' \
        "$(echo "$res" | awk '/^API_SH_RUNS_PER_S / {print $2}')" \
        "$(echo "$res" | awk '/^API_CPU_MS_PER_RUN/ {print $2; exit}')"
}
for i in $(seq "$ROUNDS"); do
    raw=$("$BIN" raw -n 2000 -p 2 | awk '/^RAW_FORK_EXEC_PER_S/ {print $2}')
    echo "round $i: raw fork+exec $raw/s | A: $(one "$A" "${EXTRA_A:-}") | B: $(one "$B" "${EXTRA_B:-}")"
done
