#!/usr/bin/python3
"""Task list pages with `metadata.KEY=VALUE` and `q` filters on PostgreSQL,
one quernd before and one after (the same database, migrated by the second).

usage: bench/list_filter_pg.py OLD_BUILD NEW_BUILD [--tasks N] [--reps K]

A private cluster (tests/integration/pgcluster.py, fsync off); OLD_BUILD's
quernd makes the schema and one task through the API, whose row is cloned
with SQL into N tasks (default 300 000; new ids, metadata {"team":
"t<i % 100>", "n": <i % 7>}), then ANALYZE.  Each quernd in turn starts on
the database (NEW_BUILD's start runs its migrations, timed) and each request
is made K times (default 5); median and range in ms, page size and total.
"""
import argparse, http.client, json, os, shutil, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import pgcluster  # noqa: E402

KEY = "qk_pgbench_" + "7" * 32
P = "/api/projects/default/tasks"


def start(build, url, data):
    env = dict(os.environ, QUERN_BOOTSTRAP_KEY=KEY)
    t0 = time.monotonic()
    p = subprocess.Popen([os.path.join(ROOT, build, "quernd"), "--listen", "127.0.0.1:0", "--data",
                          data, "--store", url], stdout=subprocess.PIPE,
                         stderr=open(os.path.join(data, "stderr.log"), "ab"), env=env)
    line = p.stdout.readline().decode()
    if "listening on" not in line:
        raise SystemExit("quernd did not start: %r (see %s/stderr.log)" % (line, data))
    host, port = line.split("//", 1)[1].strip().rsplit(":", 1)
    return p, http.client.HTTPConnection(host, int(port), timeout=600), time.monotonic() - t0


def req(c, method, path, body=None):
    h = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
    c.request(method, path, json.dumps(body) if body is not None else None, h)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit("%s %s: %d %s" % (method, path, r.status, data[:200]))
    return json.loads(data)


def measure(c, reps, after):
    reqs = [("metadata.team=t42&limit=50", "1 % of the tasks match"),
            ("metadata.team=t42&limit=50&starting_after=" + after, "cursor 2 500 deep"),
            ("metadata.team=t42&metadata.n=3&limit=50", "two metadata filters"),
            ("metadata.team=t42&priority=high&limit=50", "with an indexed filter, no match"),
            ("metadata.team=nobody&limit=50", "no task matches"),
            ("q=zzz&limit=50", "q, no match (a scan)"),
            ("limit=50", "unfiltered (reference)")]
    rows = []
    for qs, what in reqs:
        ts = []
        for _ in range(reps):
            t = time.monotonic()
            doc = req(c, "GET", P + "?" + qs)
            ts.append((time.monotonic() - t) * 1000)
        rows.append((qs.split("&starting_after")[0] + ("&starting_after=<2 500th>"
                                                         if "starting_after" in qs else ""),
                     what, statistics.median(ts), min(ts), max(ts), len(doc["data"]), doc["total"]))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--tasks", type=int, default=300000)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    url = pgcluster.new_database()
    db = url.rsplit("/", 1)[1]
    psql = lambda sql: pgcluster.cluster().psql(sql, db=db)
    data = tempfile.mkdtemp(prefix="quern-pglist-", dir="/var/tmp")
    p, c, _ = start(a.old, url, data)
    t = req(c, "POST", "/api/projects/default/tasks", {"name": "bench pg", "assigned_agent_id": "b"})
    p.terminate()
    p.wait()
    cols = psql("SELECT string_agg(column_name, ', ') FROM information_schema.columns WHERE"
                " table_name='tasks' AND column_name LIKE 'f\\_%'").strip()
    t0 = time.monotonic()
    psql("INSERT INTO tasks(project_id, id, doc, %s) SELECT project_id, 'task_b' || g,"
         " jsonb_set(jsonb_set(doc::jsonb, '{id}', to_jsonb('task_b' || g)), '{metadata}',"
         " jsonb_build_object('team', 't' || (g %% 100), 'n', g %% 7))::text, %s"
         " FROM tasks, generate_series(1, %d) g WHERE id = '%s'" % (cols, cols, a.tasks, t["id"]))
    psql("ANALYZE")
    after = psql("SELECT id FROM tasks WHERE doc::json->'metadata'->>'team' = 't42'"
                 " ORDER BY seq DESC LIMIT 1 OFFSET 2500").strip()
    print("%d tasks loaded in %.1f s" % (a.tasks + 1, time.monotonic() - t0))
    try:
        for name, build in (("old", a.old), ("new", a.new)):
            p, c, st = start(build, url, data)
            if name == "new":
                psql("ANALYZE")
            rows = measure(c, a.reps, after)
            p.terminate()
            p.wait()
            print("\n%s: %s, listening after %.2f s (migrations included)" % (name, build, st))
            print("| request | what | median ms | range ms | page / total |")
            print("|---|---|---|---|---|")
            for r in rows:
                print("| `%s` | %s | %.1f | %.1f-%.1f | %d / %d |" % r)
    finally:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
