#!/bin/sh
# exec_bench.sh — code execution figures (issue 3, point 6).
#
#   bench/exec_bench.sh [quick | ratio]      (ratio: section 4 alone)
#
# Builds build/quernd (make), bench/host_floor and bench/exec_bench (cc, linked with
# build/libquern.a), then prints:
#   1. the raw fork/exec rate of /bin/true (the physical limit);
#   2. exec.c driven directly (no server): sandboxed `true` runs/s and the
#      latency exec_start -> the code's first line, warm pool off and on;
#   3. end to end through the HTTP API (quernd on a free port in a temp dir,
#      QUERN_BOOTSTRAP_KEY): sandboxed `true` runs/s with the default slots,
#      for --fsync always and --fsync batch, and the latency POST -> the code
#      running for sh, python and node with the warm pool off and on;
#   4. the end-to-end rate beside a raw rate measured just before it, in
#      ROUNDS rounds (default 5) per fsync setting, and the median ratio; the
#      raw rate twice: fork+exec from exec_bench's two threads (the figure
#      since session 1) and from two small single-threaded processes
#      (build/bench/host_floor raw: about twice as fast on this VM; exec_bench
#      is a larger process with two threads), so both ratios;
# each with CPU seconds and peak RSS.  Needs root (the sandbox does).
# Environment: BUILD (default build), N (runs, default 3000), LAT_N (default 30),
# ROUNDS (default 5).
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
N=${N:-3000}
LAT_N=${LAT_N:-30}
if [ "${1:-}" = quick ]; then N=500; LAT_N=10; fi
ALL=true
if [ "${1:-}" = ratio ]; then ALL=false; fi
RTS=${RTS:-sh,python,node,ts}

make -s BUILD="$BUILD" all >/dev/null
PKGS="libmicrohttpd jansson sqlite3 libcrypto libcurl libseccomp libpq"
BIN="$BUILD/bench/exec_bench"
mkdir -p "$BUILD/bench"
if [ ! -x "$BIN" ] || [ bench/exec_bench.c -nt "$BIN" ] || [ bench/bench.h -nt "$BIN" ] ||
   [ "$BUILD/libquern.a" -nt "$BIN" ]; then
    # shellcheck disable=SC2046
    cc -std=c11 -D_GNU_SOURCE -O2 -g -pthread -Wall -Wextra -Wno-unused-parameter \
        -iquote src $(pkg-config --cflags $PKGS) -o "$BIN" bench/exec_bench.c \
        "$BUILD/libquern.a" $(pkg-config --libs $PKGS) -lm -pthread
fi
HOSTBIN="$BUILD/bench/host_floor"
if [ ! -x "$HOSTBIN" ] || [ bench/host_floor.c -nt "$HOSTBIN" ] || [ bench/bench.h -nt "$HOSTBIN" ]; then
    cc -std=c11 -D_GNU_SOURCE -O2 -g -Wall -Wextra -o "$HOSTBIN" bench/host_floor.c
fi
# quern-init as make builds it (without libc: see src/quern_init.c); exec.c
# finds it beside the binary, the bench program links exec.c from elsewhere
export QUERN_INIT="$PWD/$BUILD/quern-init"

echo "== machine: $(nproc) CPUs, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg)"
if $ALL; then
echo "== 1. raw spawn (physical limit)"
"$BIN" raw -n "$N" -p 2 | tee /tmp/exec_bench_raw.$$
RAW=$(awk '/^RAW_FORK_EXEC_PER_S/ {print $2}' /tmp/exec_bench_raw.$$)
RAWCPU=$(awk '/^RAW_FORK_EXEC_CPU_MS/ {print $2}' /tmp/exec_bench_raw.$$)
# The same ratio by CPU: on two cores that both kinds of spawn fill, runs/s go
# as 1 / (CPU per run), and CPU per run moves far less with the neighbours'
# load than a rate does.
cpu_ratio() {
    awk -v a="$RAWCPU" -v b="$1" 'BEGIN{ if (b > 0) printf "%.0f%%", 100*a/b; else printf "?" }'
}
rm -f /tmp/exec_bench_raw.$$

echo "== 2. exec.c directly (no server)"
"$BIN" direct -n "$N" -l "$LAT_N" -r "$RTS" | tee /tmp/exec_bench_direct.$$
DIRECT=$(awk '/^DIRECT_SH_RUNS_PER_S/ {print $2}' /tmp/exec_bench_direct.$$)
DIRECTCPU=$(awk '/^DIRECT_CPU_MS_PER_RUN/ {print $2}' /tmp/exec_bench_direct.$$)
rm -f /tmp/exec_bench_direct.$$
echo "   direct / raw fork+exec: $(awk -v a="$DIRECT" -v b="$RAW" 'BEGIN{printf "%.0f%%", 100*a/b}')" \
     "(by CPU per run: $(cpu_ratio "$DIRECTCPU"))"
fi

KEY=qk_bench_root_key_0123456789
TMP=$(mktemp -d /tmp/quern-bench-XXXXXX)
QPID=
stop() {
    if [ -n "$QPID" ]; then kill -TERM "$QPID" 2>/dev/null || true; wait "$QPID" 2>/dev/null || true; fi
    QPID=
}
trap 'stop; rm -rf "$TMP"' EXIT INT TERM

# start_quernd NAME FSYNC WARM: starts quernd in $TMP/NAME; sets URL and QPID.
start_quernd() {
    mkdir -p "$TMP/$1"
    QUERN_BOOTSTRAP_KEY=$KEY QUERN_WARM=$3 "$BUILD/quernd" --listen 127.0.0.1:0 \
        --data "$TMP/$1" --fsync "$2" >"$TMP/$1.out" 2>"$TMP/$1.err" &
    QPID=$!
    i=0
    while ! grep -q "listening on" "$TMP/$1.out" 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 200 ]; then echo "quernd did not start:"; cat "$TMP/$1.err"; exit 1; fi
        sleep 0.05
    done
    URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$TMP/$1.out")
}

if $ALL; then
echo "== 3. end to end through the API"
for FS in always batch; do
    echo "-- quernd --fsync $FS, warm pool on"
    start_quernd "api-$FS" "$FS" "python=2,node=2,ts=1"
    sleep 1
    "$BIN" api -u "$URL" -k "$KEY" -n "$N" -c 2 -b 100 -l "$LAT_N" -r "$RTS" -P "$QPID" -L warm \
        | tee "$TMP/api-$FS.txt"
    API=$(awk '/^API_SH_RUNS_PER_S / {print $2}' "$TMP/api-$FS.txt")
    API1=$(awk '/^API_SH_RUNS_PER_S_SINGLE_POSTS/ {print $2}' "$TMP/api-$FS.txt")
    APICPU=$(awk '/^API_CPU_MS_PER_RUN/ {print $2; exit}' "$TMP/api-$FS.txt")
    APICPU1=$(awk '/^API_CPU_MS_PER_RUN/ {v = $2} END {print v}' "$TMP/api-$FS.txt")
    echo "   end to end / raw fork+exec: $(awk -v a="$API" -v b="$RAW" 'BEGIN{printf "%.0f%%", 100*a/b}')" \
         "(batch creates), $(awk -v a="$API1" -v b="$RAW" 'BEGIN{printf "%.0f%%", 100*a/b}') (one POST each);" \
         "by CPU per run: $(cpu_ratio "$APICPU") / $(cpu_ratio "$APICPU1")"
    stop
    echo "-- quernd --fsync $FS, warm pool off"
    start_quernd "api-$FS-cold" "$FS" "python=0,node=0,ts=0"
    sleep 0.5
    "$BIN" api -u "$URL" -k "$KEY" -n 0 -l "$LAT_N" -r "$RTS" -P "$QPID" -L cold
    stop
done
fi

# The ratio above divides by a raw rate measured minutes earlier; on a shared
# machine the host's speed drifts by tens of per cent in that time.  Here each
# round measures the raw rate right before its end-to-end run, and the median
# of the rounds' ratios is printed.
ROUNDS=${ROUNDS:-5}
echo "== 4. end to end beside the raw rate, interleaved ($ROUNDS rounds, batch creates)"
for FS in always batch; do
    RATIOS=
    HRATIOS=
    for round in $(seq "$ROUNDS"); do
        # the kernel tears the last quernd's namespaces down for a while after
        # it exits (kworkers): a raw rate measured meanwhile reads low
        sleep 3
        R=$("$BIN" raw -n "$N" -p 2 | awk '/^RAW_FORK_EXEC_PER_S/ {print $2}')
        H=$("$HOSTBIN" raw "$N" | awk '/^HOST_RAW_SPAWN_PER_S/ {print $2}')
        start_quernd "ratio-$FS-$round" "$FS" "python=2,node=2"
        sleep 1
        A=$("$BIN" api -u "$URL" -k "$KEY" -n "$N" -c 2 -b 100 -o -l 0 -P "$QPID" |
            awk '/^API_SH_RUNS_PER_S / {print $2}')
        stop
        P=$(awk -v a="$A" -v b="$R" 'BEGIN{ if (b > 0) printf "%.1f", 100*a/b; else print 0 }')
        PH=$(awk -v a="$A" -v b="$H" 'BEGIN{ if (b > 0) printf "%.1f", 100*a/b; else print 0 }')
        echo "  --fsync $FS round $round: raw fork+exec $R/s, end to end $A runs/s: $P%" \
             "(small single-threaded spawners: $H/s, $PH%)"
        RATIOS="$RATIOS $P"
        HRATIOS="$HRATIOS $PH"
    done
    MED=$(echo "$RATIOS" | tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    echo "  --fsync $FS: median end to end / raw fork+exec $MED% (rounds:$RATIOS)"
    echo "API_RAW_RATIO_MEDIAN_$FS $MED"
    HMED=$(echo "$HRATIOS" | tr ' ' '\n' | grep . | sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}')
    echo "  --fsync $FS: median against small single-threaded spawners (build/bench/host_floor raw)" \
         "$HMED% (rounds:$HRATIOS)"
    echo "API_HOST_RAW_RATIO_MEDIAN_$FS $HMED"
done
