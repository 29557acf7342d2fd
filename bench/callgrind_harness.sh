#!/bin/bash
# bench/callgrind_harness.sh MODE [N] [BUILD]: quernd's instructions per request or per job
# for harness-shaped work, under valgrind --tool=callgrind (--fsync off; instruction counts
# repeat on a noisy machine, wall time does not).  Counting starts after warm-up.
#   single: N single creates by the harness's C producer
#   e2e:    8 C workers waiting in their long-polls, then N single creates, until all reported
#   bulk:   N tasks by batch creates (the harness's batches)
#   drain:  N tasks by one bulk create (not counted), then 8 C workers drain them
# Prints the total, the per-unit figure, and quernd's own functions (inclusive, per unit).
# Note: valgrind counts each iteration of `rep movs/stos` as an instruction, so memcpy and
# memset of large blocks look more expensive here than they are.
set -eu
MODE=${1:?single|bulk|e2e|drain}; N=${2:-2000}; B=${3:-build}
cd "$(dirname "$0")/.."
D=$(mktemp -d /tmp/quern-cg.XXXX)
WS=
export QUERN_KEY=qk_cg_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
QUERN_BOOTSTRAP_KEY=$QUERN_KEY valgrind --tool=callgrind --callgrind-out-file="$D/cg.out" \
    "$B/quernd" --listen 127.0.0.1:0 --data "$D/data" --fsync off --slots -1 >"$D/out" 2>"$D/err" &
P=$!
for _ in $(seq 600); do grep -q 'listening on' "$D/out" 2>/dev/null && break; sleep 0.1; done
export QUERN_URL=$(sed -n 's/.*listening on //p' "$D/out")
export QUERN_DEF=$(python3 bench/peers/quern_client.py setup)
mkdir -p "$D/w"
workers() {
    for _ in $(seq 8); do setsid "$B/bench/quern_client" worker "$D/w" >/dev/null 2>&1 & WS="$WS $!"; done
}
wait_done() { while [ "$(cat "$D"/w/*.txt 2>/dev/null | wc -l)" -lt "$N" ]; do sleep 0.1; done; }
case $MODE in
single)
    "$B/bench/quern_client" producer single 200 0 "$D/o.txt"
    callgrind_control -z $P >/dev/null
    "$B/bench/quern_client" producer single "$N" 0 "$D/o.txt" ;;
e2e)
    workers
    while [ "$(ls "$D"/w/ready-* 2>/dev/null | wc -l)" -lt 8 ]; do sleep 0.1; done
    sleep 1
    callgrind_control -z $P >/dev/null
    "$B/bench/quern_client" producer single "$N" 0 "$D/o.txt"
    wait_done ;;
bulk)
    "$B/bench/quern_client" producer single 200 0 "$D/o.txt"
    callgrind_control -z $P >/dev/null
    "$B/bench/quern_client" producer bulk "$N" 0 "$D/o.txt" ;;
drain)
    "$B/bench/quern_client" producer bulk "$N" 0 "$D/o.txt"
    callgrind_control -z $P >/dev/null
    workers
    wait_done ;;
esac
callgrind_control -d $P >/dev/null
kill $WS 2>/dev/null || true
sleep 0.5
kill $P; wait $P 2>/dev/null || true
f=$(ls -t "$D"/cg.out.* | head -1)
callgrind_annotate --inclusive=yes --auto=no "$f" 2>/dev/null >"$D/annot.txt"
T=$(grep -m1 "PROGRAM TOTALS" "$D/annot.txt" | awk '{gsub(",","",$1); print $1}')
echo "$MODE: $T instructions, $((T / N)) per unit"
grep -E "src/[a-z_]+\.c:[a-z_].*\[" "$D/annot.txt" | \
    sed -E 's/^ *([0-9,]+) .*(src\/[a-z_]+\.c:[a-zA-Z_0-9.]+).*/\1 \2/' | \
    awk -v n="$N" '{gsub(",","",$1); printf "%9d %s\n", $1/n, $2}' | head -"${TOP:-40}"
echo "(callgrind output kept in $D)"
