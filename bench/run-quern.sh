#!/bin/bash
# quern in the peers' noop-20k harness (../shared/bench/peers/harness.py, used in place).
# For each durability setting and client: start build/quernd on a free loopback port in
# a temp dir (fresh store per run, as the peers restart their servers), create the
# no-code definition, run the harness, print its JSON line, stop quernd by its PID.
#
# usage: bench/run-quern.sh [runs]
# env:   FSYNCS="always batch"  (always = durable default: fsync per commit, group-committed;
#                                batch = survives a crash of quernd, fsync at most every 1 s)
#        CLIENTS="py c"          (py = bench/peers/quern_client.py, c = quern_client.c)
#        QUERN_LEASE_MAX=64      (runs per lease)   QUERN_PEERS=<dir of harness.py>
#        QUERN_SETTLE_S=2        (seconds between quernd's start and the harness: warm boxes)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUNS=${1:-1}; FSYNCS=${FSYNCS:-always batch}; CLIENTS=${CLIENTS:-py c}
BUILD=${QUERN_BUILD:-build}
PEERS=${QUERN_PEERS:-}
for d in "$PEERS" ../shared/bench/peers ../../shared/bench/peers; do
  if [ -n "$d" ] && [ -f "$d/harness.py" ]; then PEERS=$(cd "$d" && pwd); break; fi
done
[ -f "$PEERS/harness.py" ] || { echo "run-quern.sh: no ../shared/bench/peers/harness.py (set QUERN_PEERS)" >&2; exit 1; }
export QUERN_PEERS=$PEERS
[ -x "$BUILD/quernd" ] || { echo "run-quern.sh: build $BUILD/quernd first (make)" >&2; exit 1; }
case " $CLIENTS " in *" c "*) sh bench/build-clients.sh "$BUILD" >&2 ;; esac

export QUERN_KEY=qk_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
TMP=$(mktemp -d /tmp/quern-bench.XXXX)
QPID=
stop_quernd() {
  if [ -n "$QPID" ]; then kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; QPID=; fi
}
trap 'stop_quernd; [ -n "${KEEP_LOG:-}" ] && cp "$TMP/data/stderr.log" "$KEEP_LOG" 2>/dev/null; rm -rf "$TMP"' EXIT

start_quernd() {  # $1 = fsync setting; sets QPID and QUERN_URL
  rm -rf "$TMP/data"; mkdir -p "$TMP/data"
  QUERN_BOOTSTRAP_KEY=$QUERN_KEY "$BUILD/quernd" --listen 127.0.0.1:0 --data "$TMP/data" \
      --fsync "$1" >"$TMP/out" 2>"$TMP/data/stderr.log" &
  QPID=$!
  for _ in $(seq 100); do grep -q 'listening on' "$TMP/out" 2>/dev/null && break; sleep 0.05; done
  export QUERN_URL=$(sed -n 's/.*listening on //p' "$TMP/out")
  [ -n "$QUERN_URL" ] || { echo "quernd did not start" >&2; cat "$TMP/data/stderr.log" >&2; exit 1; }
  # quernd starts its warm boxes for code runs (python, node, ts) as it comes up: let
  # them settle before the first phase, as the peers' servers are up before theirs
  sleep "${QUERN_SETTLE_S:-2}"
}

VER=$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)
for fs in $FSYNCS; do
  case $fs in
    always) DUR="quern --fsync always: fsync per commit (group commit), sqlite WAL";;
    batch)  DUR="quern --fsync batch: WAL written per commit, fsync at most every 1 s";;
    *)      DUR="quern --fsync $fs";;
  esac
  for cl in $CLIENTS; do
    case $cl in
      py) P="/usr/bin/python3 $ROOT/bench/peers/quern_client.py"; CDESC="python stdlib http.client, 8 procs";;
      c)  P="$ROOT/$BUILD/bench/quern_client"; CDESC="C plain sockets, 8 procs";;
      *)  echo "unknown client $cl" >&2; exit 2;;
    esac
    for r in $(seq "$RUNS"); do
      start_quernd "$fs"
      export QUERN_DEF=$(/usr/bin/python3 bench/peers/quern_client.py setup)
      /usr/bin/python3 "$PEERS/harness.py" --peer quern --producer "$P producer" \
        --worker "$P worker" --procs 8 --durability "$DUR" \
        --extra "{\"version\":\"$VER\",\"client\":\"$CDESC; lease max ${QUERN_LEASE_MAX:-64}; bulk=tasks/batch(1000)\",\"fsync\":\"$fs\",\"lang\":\"$cl\"}"
      stop_quernd
    done
  done
done
