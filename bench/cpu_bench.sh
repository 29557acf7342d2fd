#!/bin/bash
# bench/cpu_bench.sh MODE FSYNC N [BUILD]: quernd's CPU per request or per job, read from
# /proc (utime+stime) around a fixed amount of harness-shaped work, with context switches.
#   MODE single: the harness's C producer makes N single creates, one at a time (no workers)
#   MODE e2e:    8 harness C workers wait in their lease long-polls, then the producer makes
#                N single creates; ends when every job's report has been answered
# FSYNC: always | batch | off.  BUILD: build dir with quernd and bench/quern_client
# (sh bench/build-clients.sh BUILD).  QUERND_ARGS (env): more arguments for quernd, e.g.
# "--threads 2".  Prints one line: rate, wall, quernd CPU per unit, context switches per
# unit (all quernd threads).
set -eu
MODE=${1:?single|e2e}; FS=${2:-batch}; N=${3:-20000}; B=${4:-build}
cd "$(dirname "$0")/.."
D=$(mktemp -d /tmp/quern-cpu.XXXX)
trap 'kill $WS 2>/dev/null || true; kill $P 2>/dev/null || true; wait 2>/dev/null; rm -rf "$D"' EXIT
WS=
export QUERN_KEY=qk_cpu_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
QUERN_BOOTSTRAP_KEY=$QUERN_KEY "$B/quernd" --listen 127.0.0.1:0 --data "$D/data" --fsync "$FS" ${QUERND_ARGS:-} \
    >"$D/out" 2>"$D/err" &
P=$!
for _ in $(seq 200); do grep -q 'listening on' "$D/out" 2>/dev/null && break; sleep 0.05; done
export QUERN_URL=$(sed -n 's/.*listening on //p' "$D/out")
export QUERN_DEF=$(python3 bench/peers/quern_client.py setup)
switches() { cat /proc/$P/task/*/status | awk '/ctxt_switches/{s+=$2} END{print s}'; }
cpu() { awk '{print $14+$15}' /proc/$P/stat; }
mkdir -p "$D/w"
if [ "$MODE" = e2e ]; then
    for _ in $(seq 8); do "$B/bench/quern_client" worker "$D/w" >/dev/null 2>&1 & WS="$WS $!"; done
    while [ "$(ls "$D"/w/ready-* 2>/dev/null | wc -l)" -lt 8 ]; do sleep 0.05; done
    sleep 0.3
fi
s0=$(switches); c0=$(cpu); t0=$(date +%s.%N)
"$B/bench/quern_client" producer single "$N" 0 "$D/o.txt"
if [ "$MODE" = e2e ]; then
    while [ "$(cat "$D"/w/*.txt 2>/dev/null | wc -l)" -lt "$N" ]; do sleep 0.05; done
fi
t1=$(date +%s.%N); c1=$(cpu); s1=$(switches)
python3 -c "
n=$N; w=$t1-$t0; c=($c1-$c0)/100
print(f'$MODE --fsync $FS ($B): {n/w:.0f}/s, wall {w:.2f} s, quernd CPU {c/n*1e6:.0f} us per unit, {($s1-$s0)/n:.1f} context switches per unit')"
