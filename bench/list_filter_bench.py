#!/usr/bin/python3
"""Task list pages with `metadata.KEY=VALUE` and `q` filters on a large store.

usage: bench/list_filter_bench.py STORE_DIR [--reps K] [--out FILE]

STORE_DIR is a data directory of a quernd store (SQLite), such as the one
`bench/startup_bench.py --runs 300000 --reps 1 --stores history --keep DIR`
leaves in DIR/history-300000.  It is copied (never changed); in the copy
every task gets metadata {"team": "t<seq % 100>", "n": <seq % 7>} (one task
in 100 per team: 3 000 of 300 000), written with SQL as a store of the
schema the copy has (an older quernd's store gets its index from the
migration at start, which is timed).  Then $QUERN_BUILD/quernd (default
build) starts on the copy with --fsync off and each request below is made
K times (default 5) on one keep-alive connection; the median and the range
are printed, in milliseconds, with the page's size and total.
"""
import argparse, http.client, json, os, shutil, sqlite3, statistics, subprocess, sys
import tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("QUERN_BUILD", "build")
QUERND = os.path.join(ROOT, BUILD, "quernd")   # an absolute BUILD stays as it is
KEY = "qk_bench_" + "5" * 32   # the key bench/startup_bench.py gives its stores
P = "/api/projects/default/tasks"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="quern-listbench-", dir="/var/tmp")
    data = os.path.join(tmp, "data")
    p = None
    try:
        shutil.copytree(a.store, data, ignore=shutil.ignore_patterns("quern.lock", "stderr.log"))
        db = sqlite3.connect(os.path.join(data, "quern.db"))
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute("UPDATE tasks SET doc = json_set(doc, '$.metadata', json_object("
                   "'team', 't' || (seq % 100), 'n', seq % 7))")
        # a store already past v11 keeps its index in step, as quernd would
        if db.execute("SELECT count(*) FROM sqlite_schema WHERE name='task_meta'").fetchone()[0]:
            db.execute("DELETE FROM task_meta")
            db.execute("INSERT INTO task_meta SELECT project_id, 'team', 't' || (seq % 100), seq"
                       " FROM tasks")
            db.execute("INSERT INTO task_meta SELECT project_id, 'n', seq % 7, seq FROM tasks")
        db.commit()
        ntasks = db.execute("SELECT count(*) FROM tasks").fetchone()[0]
        after = db.execute("SELECT id FROM tasks WHERE json_extract(doc, '$.metadata.team')='t42'"
                           " ORDER BY seq DESC LIMIT 1 OFFSET 2500").fetchone()[0]
        db.close()
        env = dict(os.environ, QUERN_BOOTSTRAP_KEY=KEY)
        t0 = time.monotonic()
        err = open(os.path.join(tmp, "stderr.log"), "wb")
        p = subprocess.Popen([QUERND, "--listen", "127.0.0.1:0", "--data", data, "--fsync", "off"],
                             stdout=subprocess.PIPE, stderr=err, env=env)
        line = p.stdout.readline().decode()
        if "listening on" not in line:
            raise SystemExit("quernd did not start: %r (see %s/stderr.log)" % (line, tmp))
        start_s = time.monotonic() - t0
        host, port = line.split("//", 1)[1].strip().rsplit(":", 1)
        c = http.client.HTTPConnection(host, int(port), timeout=600)
        h = {"Authorization": "Bearer " + KEY}
        reqs = [
            ("metadata.team=t42&limit=50", "1 % of the tasks match"),
            ("metadata.team=t42&limit=50&starting_after=" + after, "cursor 2 500 deep"),
            ("metadata.team=t42&metadata.n=3&limit=50", "two metadata filters"),
            ("metadata.team=t42&priority=high&limit=50", "with an indexed filter, no match"),
            ("metadata.team=nobody&limit=50", "no task matches"),
            ("metadata.x=1&limit=50", "a key no task has"),
            ("q=zzz&limit=50", "q, no match (a scan)"),
            ("q=bench&limit=50", "q, every task matches"),
            ("limit=50", "unfiltered (reference)"),
        ]
        rows = []
        for qs, what in reqs:
            ts, doc = [], None
            for _ in range(a.reps):
                t = time.monotonic()
                c.request("GET", P + "?" + qs, headers=h)
                r = c.getresponse()
                body = r.read()
                ts.append((time.monotonic() - t) * 1000)
                if r.status != 200:
                    raise SystemExit("GET %s: %d %s" % (qs, r.status, body[:200]))
                doc = json.loads(body)
            rows.append({"query": qs.split("&starting_after")[0] +
                         ("&starting_after=<2 500th>" if "starting_after" in qs else ""),
                         "what": what, "ms_median": round(statistics.median(ts), 2),
                         "ms_min": round(min(ts), 2), "ms_max": round(max(ts), 2),
                         "page": len(doc["data"]), "total": doc["total"]})
        out = {"quernd": QUERND, "tasks": ntasks, "schema_before": version,
               "start_to_listening_s": round(start_s, 2), "reps": a.reps, "rows": rows}
        print("quernd %s, %d tasks, store schema %d, listening after %.2f s (migration included)"
              % (QUERND, ntasks, version, start_s))
        print("| request | what | median ms | range ms | page / total |")
        print("|---|---|---|---|---|")
        for r in rows:
            print("| `%s` | %s | %.1f | %.1f-%.1f | %d / %d |" % (
                r["query"], r["what"], r["ms_median"], r["ms_min"], r["ms_max"], r["page"],
                r["total"]))
        if a.out:
            with open(a.out, "a") as f:
                f.write(json.dumps(out) + "\n")
    finally:
        if p:
            p.terminate()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
