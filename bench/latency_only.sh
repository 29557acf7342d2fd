#!/bin/bash
# bench/latency_only.sh FSYNC [ROUNDS] [BUILD]: a fresh quernd (--fsync FSYNC, a temp data
# directory, the no-code definition of the harness), then bench/latency_only.py: the harness's
# latency phase alone, ROUNDS (default 3) rounds of 1 000 jobs at 200/s, with the send times of
# the slowest jobs.  Needs the C clients (sh bench/build-clients.sh BUILD) and
# ../shared/bench/peers (QUERN_PEERS).
set -eu
cd "$(dirname "$0")/.."
FS=${1:?always|batch|off}; ROUNDS=${2:-3}; B=${3:-build}
D=$(mktemp -d /tmp/quern-lat.XXXX)
export QUERN_KEY=qk_lat_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
QUERN_BOOTSTRAP_KEY=$QUERN_KEY "$B/quernd" --listen 127.0.0.1:0 --data "$D/data" --fsync "$FS" \
    >"$D/out" 2>"$D/err" &
P=$!
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$D"' EXIT
for _ in $(seq 100); do grep -q 'listening on' "$D/out" 2>/dev/null && break; sleep 0.05; done
export QUERN_URL=$(sed -n 's/.*listening on //p' "$D/out")
export QUERN_DEF=$(python3 bench/peers/quern_client.py setup)
sleep 2   # warm boxes settle, as run-quern.sh waits
python3 bench/latency_only.py "$B/bench/quern_client" "$ROUNDS" 1000 200
