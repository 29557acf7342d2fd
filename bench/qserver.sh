#!/bin/bash
# Sourced helper: start_quernd FSYNC [extra args] starts build/quernd on a free loopback
# port in a fresh temp dir; sets QPID, QDATA, QUERN_URL, QUERN_KEY, QUERN_DEF.  stop_quernd.
BUILD=${QUERN_BUILD:-build}
start_quernd() {
  QDATA=$(mktemp -d /tmp/quern-bench.XXXX)
  export QUERN_KEY=${QUERN_KEY:-qk_bench_$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
  QUERN_BOOTSTRAP_KEY=$QUERN_KEY "$BUILD/quernd" --listen 127.0.0.1:0 --data "$QDATA" \
      --fsync "$1" "${@:2}" >"$QDATA/out" 2>"$QDATA/stderr.log" &
  QPID=$!
  for _ in $(seq 100); do grep -q 'listening on' "$QDATA/out" 2>/dev/null && break; sleep 0.05; done
  export QUERN_URL=$(sed -n 's/.*listening on //p' "$QDATA/out")
  [ -n "$QUERN_URL" ] || { echo "quernd did not start" >&2; cat "$QDATA/stderr.log" >&2; return 1; }
  export QUERN_DEF=$(/usr/bin/python3 bench/peers/quern_client.py setup)
}
stop_quernd() {
  if [ -n "${QPID:-}" ]; then kill "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; QPID=; fi
  [ -n "${QDATA:-}" ] && rm -rf "$QDATA"; QDATA=
}
