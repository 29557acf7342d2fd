#!/bin/sh
# Builds the benchmark clients into BUILD/bench (default build/): the C harness
# client (bench/peers/quern_client.c) and the micro-benchmark driver (bench/qbench.c),
# with the project's warning flags.  Called by bench/run.sh and bench/run-quern.sh.
set -eu
cd "$(dirname "$0")/.."
B=${1:-build}/bench
mkdir -p "$B"
CC=${CC:-cc}
FLAGS="-std=c11 -D_GNU_SOURCE -O2 -g -pthread -Wall -Wextra -Werror -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes -Wvla -Wshadow"
J="$(pkg-config --cflags --libs jansson)"
$CC $FLAGS -o "$B/quern_client" bench/peers/quern_client.c bench/qhttp.c $J
if [ -f bench/qbench.c ]; then
  $CC $FLAGS -o "$B/qbench" bench/qbench.c bench/qhttp.c $J -lm
fi
# the dispatcher benchmark links quern's own library (make builds it first)
if [ -f "${1:-build}/libquern.a" ]; then
  L="${1:-build}/libquern.a"
  $CC $FLAGS -iquote src -o "$B/sched_bench" bench/sched_bench.c "$L" \
      $(pkg-config --cflags --libs libmicrohttpd jansson sqlite3 libcrypto libcurl libseccomp libpq) -lm
  $CC $FLAGS -iquote src -o "$B/sched_keys_bench" bench/sched_keys_bench.c "$L" \
      $(pkg-config --cflags --libs libmicrohttpd jansson sqlite3 libcrypto libcurl libseccomp libpq) -lm
fi
# what the disk allows for one-at-a-time durable commits (no quern code)
$CC $FLAGS -o "$B/fsync_floor" bench/fsync_floor.c
# what the host allows for namespaced spawns and loopback round trips (no quern code)
$CC $FLAGS -o "$B/host_floor" bench/host_floor.c
