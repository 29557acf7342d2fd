#!/bin/sh
# `make bench`: the host's own floors (bench/fsync_floor.c, bench/host_floor.c), quern's
# micro benchmarks (bench/run.py), then quern in the peers' harness with both clients and
# both durability settings (bench/run-quern.sh), then the table beside the peers
# (bench/compare.py); start-up and recovery with 1 000 000 runs in the store
# (bench/startup_bench.py); dispatch at 20 000 / 100 000 / 1 000 000 queued
# (bench/dispatch_bench.py).  Raw JSON lines go to bench/results/.
# env: RUNS (harness runs per setting, default 1; BENCHMARKS.md uses 3), QUICK=1 (smoke test)
set -eu
cd "$(dirname "$0")/.."
BUILD=${QUERN_BUILD:-build}
sh bench/build-clients.sh "$BUILD"
mkdir -p bench/results
STAMP=$(date +%Y%m%d-%H%M%S)
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "== the disk's floor for one-at-a-time durable commits (build/bench/fsync_floor, in bench/results)"
"$BUILD/bench/fsync_floor" bench/results $([ -n "${QUICK:-}" ] && echo 200)
echo "== what the host allows: namespaced spawns, loopback round trips (build/bench/host_floor)"
"$BUILD/bench/host_floor" $([ -n "${QUICK:-}" ] && echo 200)
echo "== dispatcher and cron (build/bench/sched_bench: no HTTP, no store)"
/usr/bin/time -f '{"bench":"sched_bench_time","peak_rss_kb":%M,"cpu_s":%U}' "$BUILD/bench/sched_bench" \
    $([ -n "${QUICK:-}" ] && echo 100000)
echo "== sandboxed code runs (bench/exec_bench.sh)"
sh bench/exec_bench.sh $([ -n "${QUICK:-}" ] && echo quick)
echo "== SSE fan-out (bench/sse_bench.py)"
/usr/bin/python3 bench/sse_bench.py $([ -n "${QUICK:-}" ] && echo --subs 100 --events 200 --idle 1000)
echo "== memory under endless output, and reading that log back (bench/output_mem.py)"
/usr/bin/python3 bench/output_mem.py
echo "== start-up and recovery with a large store (bench/startup_bench.py)"
if [ -n "${QUICK:-}" ]; then /usr/bin/python3 bench/startup_bench.py --runs 100000 --reps 1
else /usr/bin/python3 bench/startup_bench.py --runs 1000000 --reps 3 --cold --out "bench/results/startup-$STAMP.jsonl"; fi
echo "== dispatch through the API at several queue depths (bench/dispatch_bench.py)"
if [ -n "${QUICK:-}" ]; then /usr/bin/python3 bench/dispatch_bench.py --depths 10000,40000 --drain 5000 --reps 1
else /usr/bin/python3 bench/dispatch_bench.py --out "bench/results/dispatch-$STAMP.jsonl"; fi
echo "== micro benchmarks (one fresh quernd each)"
if [ -n "${QUICK:-}" ]; then /usr/bin/python3 bench/run.py --quick
else /usr/bin/python3 bench/run.py --out "bench/results/micro-$STAMP.jsonl"; fi
echo "== peers' harness (noop-20k), RUNS=${RUNS:-1}"
if [ -n "${QUICK:-}" ]; then
  echo "(skipped with QUICK=1)"
else
  bash bench/run-quern.sh "${RUNS:-1}" | tee "bench/results/harness-$STAMP.jsonl"
  /usr/bin/python3 bench/compare.py "bench/results/harness-$STAMP.jsonl"
fi
