#!/usr/bin/python3
"""Dispatch through the API at several queue depths (issue 8: "dispatch
throughput within +-20 % from 0 to 1 000 000 queued").

usage: bench/dispatch_bench.py [--depths 20000,100000,1000000] [--drain N] [--reps K]
                               [--fsync batch] [--keep DIR] [--out FILE]

For each depth D: a store holding D queued runs (built as bench/startup_bench.py
builds its stores: one real run made through the API, cloned in the SQLite file;
kept under --keep and reused), quernd started on a copy of it, then 8 harness C
workers (bench/peers/quern_client.c: lease long-poll max 64, one report per
lease) drain N runs (default 20 000) out of the D.  The rate is the harness's:
(N - 1) / (last completion - first completion).  Reported with quernd's CPU
seconds and peak RSS over the drain, the median of K starts per depth, and the
spread (max / min - 1) of the medians across depths.

The smallest depth drains its queue almost empty (the "0 queued" end); the
largest keeps ~1 000 000 runs in the ready set the whole time.
"""
import argparse, glob, json, os, shutil, sqlite3, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import startup_bench as sb  # noqa: E402  (the store builder and the quernd runner)

ROOT = sb.ROOT
CLIENT = os.path.join(ROOT, sb.BUILD, "bench", "quern_client")


def log(*a):
    print("dispatch_bench:", *a, file=sys.stderr, flush=True)


def definition_of_queued(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    (d,) = c.execute("SELECT f_definition_id FROM runs WHERE f_status='queued' AND "
                     "f_definition_id IS NOT NULL LIMIT 1").fetchone()
    c.close()
    return d


def done_lines(d):
    return sum(os.path.getsize(f) // 29 for f in glob.glob(os.path.join(d, "*.txt")))


def one(pristine, work, key, drain, fsync, depth):
    if os.path.exists(work):
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    db = os.path.join(work, "quern.db")
    defn = definition_of_queued(db)
    q = sb.Quernd(work, key).start(["--fsync", fsync])
    workers = []
    try:
        ready_s = q.wait_ready()
        out = tempfile.mkdtemp(prefix="dispatch-", dir=work)
        wenv = dict(os.environ, QUERN_URL=q.url, QUERN_KEY=key, QUERN_DEF=defn)
        cpu0, _ = q.proc()
        workers = [subprocess.Popen([CLIENT, "worker", out], env=wenv, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for _ in range(8)]
        t0 = time.monotonic()
        while done_lines(out) < drain:
            if time.monotonic() - t0 > 600 or any(w.poll() is not None for w in workers):
                raise SystemExit("drain stalled at %d of %d" % (done_lines(out), drain))
            time.sleep(0.05)
        cpu1, hwm = q.proc()
        done = []
        for f in glob.glob(os.path.join(out, "*.txt")):
            with open(f) as fh:
                done += [float(l.split()[0]) for l in fh]
        done.sort()
        done = done[:drain]
        rate = (len(done) - 1) / (done[-1] - done[0])
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait()
        q.stop()
    return {"bench": "dispatch", "depth": depth, "drained": drain, "fsync": fsync,
            "ready_s": round(ready_s, 3), "runs_per_s": round(rate),
            "quernd_cpu_s": round(cpu1 - cpu0, 2),
            "cpu_us_per_run": round((cpu1 - cpu0) / drain * 1e6),
            "peak_rss_mb": round(hwm / 1024)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", default="20000,100000,1000000")
    ap.add_argument("--drain", type=int, default=20000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--fsync", default="batch")
    ap.add_argument("--keep", help="directory for the built stores (kept; reused when present)")
    ap.add_argument("--out", help="append the JSON lines to this file")
    a = ap.parse_args()
    if not os.path.exists(sb.QUERND) or not os.path.exists(CLIENT):
        raise SystemExit("build quernd and the harness clients first (make; sh bench/build-clients.sh)")
    top = a.keep or tempfile.mkdtemp(prefix="quern-dispatch-", dir="/var/tmp")
    key = "qk_bench_" + "5" * 32
    out = open(a.out, "a") if a.out else None
    medians = {}
    try:
        for depth in [int(x) for x in a.depths.split(",")]:
            if depth < a.drain:
                raise SystemExit("each depth must hold at least --drain runs")
            pristine = os.path.join(top, "queued-%d" % depth)
            if not os.path.exists(os.path.join(pristine, "quern.db")):
                if os.path.exists(pristine):
                    shutil.rmtree(pristine)
                sb.build_store(pristine, [("queued", depth)], key)
            rows = []
            for rep in range(a.reps):
                r = one(pristine, os.path.join(top, "work"), key, a.drain, a.fsync, depth)
                rows.append(r)
                line = json.dumps(r)
                print(line, flush=True)
                if out:
                    out.write(line + "\n")
            medians[depth] = {k: statistics.median(x[k] for x in rows)
                              for k in ("runs_per_s", "cpu_us_per_run", "peak_rss_mb", "ready_s")}
        rates = [m["runs_per_s"] for m in medians.values()]
        summary = {"bench": "dispatch-summary", "fsync": a.fsync, "drained": a.drain,
                   "medians": medians, "spread": round(max(rates) / min(rates) - 1, 3)}
        print(json.dumps(summary), flush=True)
        if out:
            out.write(json.dumps(summary) + "\n")
    finally:
        if not a.keep:
            shutil.rmtree(top, ignore_errors=True)
        elif os.path.exists(os.path.join(top, "work")):
            shutil.rmtree(os.path.join(top, "work"), ignore_errors=True)


if __name__ == "__main__":
    main()
