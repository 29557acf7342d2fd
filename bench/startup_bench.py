#!/usr/bin/python3
"""Start-up and recovery of quernd with a large store (SQLite, the default).

usage: bench/startup_bench.py [--runs N] [--reps K] [--cold] [--keep DIR] [--out FILE]

Builds two stores, then starts build/quernd on each K times (median reported):

  history  N runs: 99 % finished (completed / failed), 1 % queued, and 1 000
           code runs left "running" by a quernd that was killed (SIGKILL while
           they ran), so start-up must recover them (node_restarted);
  queued   N runs, every one queued (the scheduler holds each in memory).

The loader does not go through the API (about 4 000 tasks/s there): it starts
quernd once, makes one real task and run of each kind through the API (a
completed and a failed run of a definition without code, a queued one, and a
`sleep` code run that is running when quernd is SIGKILLed), then clones those
rows in the SQLite file with SQL (new ids, ids replaced inside the JSON
documents, queued_ms spread), so every row is a document the server wrote.

Each start measures: wall time from exec to `quernd listening` and to
GET /readyz 200; the server's own phase timings (its "startup" log line);
peak RSS (VmHWM) and CPU seconds (utime+stime) when ready; the runs left
running resolved (all node_restarted); and dispatch right after: a new task
created and leased (create -> lease ms), then 1 000 queued runs leased and
reported.  --cold drops the page cache (echo 3 > /proc/sys/vm/drop_caches,
root) before each start as well; warm starts follow one untimed start.
One JSON line per start and one summary line (median) per store and mode.
"""
import argparse, http.client, json, os, shutil, signal, sqlite3, statistics, subprocess, sys
import tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("QUERN_BUILD", "build")
QUERND = os.path.join(ROOT, BUILD, "quernd")
CLK = os.sysconf("SC_CLK_TCK")
P = "/api/projects/default"
RUNNING = 1000


def log(*a):
    print("startup_bench:", *a, file=sys.stderr, flush=True)


class Http:
    def __init__(self, url, key):
        host, port = url.split("//", 1)[1].rsplit(":", 1)
        self.c = http.client.HTTPConnection(host, int(port), timeout=120)
        self.h = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}

    def req(self, method, path, body=None):
        self.c.request(method, path, json.dumps(body) if body is not None else None, self.h)
        r = self.c.getresponse()
        data = r.read()
        return r.status, (json.loads(data) if data else None)

    def ok(self, method, path, body=None):
        st, doc = self.req(method, path, body)
        if st >= 300:
            raise SystemExit("%s %s: %d %s" % (method, path, st, doc))
        return doc


class Quernd:
    """One quernd process on a data dir; start() returns when it prints its address."""

    def __init__(self, data, key):
        self.data, self.key = data, key

    def start(self, args=()):
        env = dict(os.environ, QUERN_BOOTSTRAP_KEY=self.key)
        self.err = open(os.path.join(self.data, "stderr.log"), "ab")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([QUERND, "--listen", "127.0.0.1:0", "--data", self.data] + list(args),
                                  stdout=subprocess.PIPE, stderr=self.err, env=env)
        line = self.p.stdout.readline().decode()
        self.t_listen = time.monotonic() - self.t0
        if "listening on" not in line:
            raise SystemExit("quernd did not start: %r (see %s/stderr.log)" % (line, self.data))
        self.url = line.split("listening on ", 1)[1].strip()
        self.http = Http(self.url, self.key)
        return self

    def wait_ready(self):
        c = Http(self.url, self.key)
        while True:
            try:
                st, _ = c.req("GET", "/readyz")
                if st == 200:
                    return time.monotonic() - self.t0
            except (ConnectionError, http.client.HTTPException):
                c = Http(self.url, self.key)
            time.sleep(0.002)

    def proc(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        cpu = (int(v[11]) + int(v[12])) / CLK
        hwm = 0
        with open("/proc/%d/status" % self.p.pid) as f:
            for l in f:
                if l.startswith("VmHWM:"):
                    hwm = int(l.split()[1])
        return cpu, hwm

    def stop(self, sig=signal.SIGTERM):
        self.p.send_signal(sig)
        try:
            self.p.wait(120)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.err.close()


def startup_log(data):
    """The last 'startup' line quernd logged (its phase timings), or {}."""
    last = {}
    with open(os.path.join(data, "stderr.log"), errors="replace") as f:
        for l in f:
            if '"startup' in l:
                try:
                    last = json.loads(l)
                except ValueError:
                    pass
    return last


# ---- the loader ----

def make_templates(data, key):
    """Runs quernd once: one row of each kind, the code run SIGKILLed while running."""
    q = Quernd(data, key).start()
    try:
        return templates_on(q)
    finally:
        if q.p.poll() is None:
            q.stop(signal.SIGKILL)


def templates_on(q):
    h = q.http
    d = h.ok("POST", P + "/definitions", {"title": "startup-bench", "description": "no code"})["id"]
    ids = {}
    for kind in ("completed", "failed", "queued"):
        t = h.ok("POST", P + "/tasks", {"definition_id": d, "run": True, "name": "bench " + kind,
                                         "input": {"kind": kind, "n": 1}})
        ids[kind] = t["id"]
    for kind in ("completed", "failed"):
        lease = h.ok("POST", P + "/workers/lease",
                     {"worker_id": "loader", "definitions": [d], "max": 1, "wait_ms": 1000})["data"]
        r = lease[0]
        if r["task_id"] != ids[kind]:
            raise SystemExit("leased an unexpected run")
        res = {"run_id": r["id"], "attempt": r["attempt"], "status": kind}
        if kind == "completed":
            res["output"] = {"ok": True, "items": 3}
        else:
            res["error"] = {"code": "worker_error", "message": "the bench worker failed it"}
        h.ok("POST", P + "/workers/report", {"results": [res]})
    t = h.ok("POST", P + "/tasks", {"code": "sleep 600", "runtime_id": "sh", "name": "bench running"})
    ids["running"] = t["id"]
    for _ in range(600):
        runs = h.ok("GET", P + "/tasks/%s/runs" % t["id"])["data"]
        if runs and runs[0]["status"] == "running":
            break
        time.sleep(0.05)
    else:
        raise SystemExit("the code run never started (is code execution available?)")
    q.stop(signal.SIGKILL)
    return ids


def clone(db, ids, plan):
    """plan: [(kind, count)]; clones the template task and run of each kind."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=OFF")
    tcols = [r[1] for r in c.execute("PRAGMA table_info(tasks)") if r[1] != "seq"]
    rcols = [r[1] for r in c.execute("PRAGMA table_info(runs)") if r[1] != "seq"]
    serial = 0
    for kind, count in plan:
        tid = ids[kind]
        (rid,) = c.execute("SELECT id FROM runs WHERE f_task_id=?", (tid,)).fetchone()
        # every text column that holds the template's ids gets the clone's (doc, and
        # columns copied out of it such as the task's latest run id)
        def with_ids(table, cols, key):
            row = c.execute("SELECT %s FROM %s WHERE id=?" % (", ".join(cols), table), (key,)).fetchone()
            return [col for col, v in zip(cols, row) if isinstance(v, str) and (tid in v or rid in v)]
        tfix = set(with_ids("tasks", tcols, tid)) - {"id"}
        rfix = set(with_ids("runs", rcols, rid)) - {"id"}
        done = 0
        while done < count:
            n = min(100000, count - done)
            base = serial
            # ids: the template's prefix and a 22-hex-digit serial (hex is valid Crockford base32)
            cte = ("WITH RECURSIVE cnt(k) AS (SELECT 0 UNION ALL SELECT k+1 FROM cnt WHERE k<%d) " % (n - 1))
            newt = "'task_' || printf('%%022x', k + %d)" % base
            newr = "'run_' || printf('%%022x', k + %d)" % base
            def fix(col):
                return "replace(replace(%s, ?1, %s), ?2, %s)" % (col, newt, newr)
            tsel = ", ".join(newt if col == "id" else fix(col) if col in tfix else col for col in tcols)
            c.execute(cte + "INSERT INTO tasks(%s) SELECT %s FROM tasks, cnt WHERE id=?1"
                      % (", ".join(tcols), tsel), (tid, rid))
            rdoc = fix("doc")
            if kind == "queued":   # FIFO order of the clones
                rdoc = "json_set(%s, '$.queued_ms', json_extract(doc, '$.queued_ms') + k)" % rdoc
            rsel = ", ".join(newr if col == "id" else rdoc if col == "doc" else fix(col) if col in rfix
                             else col for col in rcols)
            c.execute(cte + "INSERT INTO runs(%s) SELECT %s FROM runs, cnt WHERE id=?2"
                      % (", ".join(rcols), rsel), (tid, rid))
            c.commit()
            done += n
            serial += n
        # the template itself stays (one extra row of its kind)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def build_store(path, plan, key):
    os.makedirs(path)
    t0 = time.monotonic()
    ids = make_templates(path, key)
    clone(os.path.join(path, "quern.db"), ids, plan)
    size = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.startswith("quern.db"))
    log("built %s: %s in %.1f s, %.0f MiB" % (os.path.basename(path), plan, time.monotonic() - t0,
                                               size / 2**20))
    return size


# ---- the measurement ----

def counts(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    r = dict(c.execute("SELECT f_status, count(*) FROM runs GROUP BY f_status").fetchall())
    fails = c.execute("SELECT count(*) FROM runs WHERE f_status='failed' AND "
                      "json_extract(doc, '$.error.code')='node_restarted'").fetchone()[0]
    c.close()
    return r, fails


def dispatch(q, queued):
    """A new task created and leased right after start (None: not leased within 5 s);
    then up to 1 000 of the queued runs leased and reported."""
    h = q.http
    d = h.ok("POST", P + "/definitions", {"title": "after-start", "description": "no code"})["id"]
    t0 = time.monotonic()
    h.ok("POST", P + "/tasks", {"definition_id": d, "run": True})
    got = h.ok("POST", P + "/workers/lease", {"worker_id": "after", "definitions": [d], "max": 1,
                                               "wait_ms": 5000})["data"]
    first_ms = (time.monotonic() - t0) * 1000
    if len(got) != 1:
        log("dispatch after start: the new task's run was not leased within 5 s")
        first_ms = None
    else:
        h.ok("POST", P + "/workers/report",
             {"results": [{"run_id": got[0]["id"], "attempt": got[0]["attempt"], "status": "completed"}]})
    want = min(1000, queued)
    t0 = time.monotonic()
    n = 0
    while n < want:
        runs = h.ok("POST", P + "/workers/lease", {"worker_id": "after", "max": min(100, want - n),
                                                    "wait_ms": 1000})["data"]
        if not runs:
            break
        h.ok("POST", P + "/workers/report", {"results": [{"run_id": r["id"], "attempt": r["attempt"],
                                                          "status": "completed"} for r in runs]})
        n += len(runs)
    return first_ms, n, n / (time.monotonic() - t0) if n else 0.0


def one_start(pristine, work, key, cold, store):
    if os.path.exists(work):
        shutil.rmtree(work)
    shutil.copytree(pristine, work)
    os.unlink(os.path.join(work, "stderr.log"))   # the loader's log: phases are this start's
    db = os.path.join(work, "quern.db")
    before, _ = counts(db)
    if cold:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    q = Quernd(work, key).start()
    try:
        ready = q.wait_ready()
        cpu, hwm = q.proc()
        phases = startup_log(work)
        first_ms, drained, drain_rate = dispatch(q, before.get("queued", 0))
    finally:
        q.stop()
    after, restarted = counts(db)
    res = {"bench": "startup", "store": store, "cache": "cold" if cold else "warm",
           "runs": sum(before.values()), "before": before,
           "listen_s": round(q.t_listen, 3), "ready_s": round(ready, 3),
           "cpu_s_at_ready": round(cpu, 2), "peak_rss_kb_at_ready": hwm,
           "phases_ms": {k: v for k, v in phases.items() if k.endswith("_ms")},
           "left_running": before.get("running", 0), "recovered_node_restarted": restarted,
           "still_running_after": after.get("running", 0),
           "dispatch_first_ms": first_ms and round(first_ms, 1), "drained": drained, "drain_runs_per_s": round(drain_rate)}
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also cold starts (drop_caches, root)")
    ap.add_argument("--stores", default="history,queued")
    ap.add_argument("--keep", help="directory for the built stores (kept; reused when present)")
    ap.add_argument("--out", help="append the JSON lines to this file")
    a = ap.parse_args()
    if not os.path.exists(QUERND):
        raise SystemExit("build quernd first (make)")
    if a.cold and (os.geteuid() != 0 or not os.access("/proc/sys/vm/drop_caches", os.W_OK)):
        log("cold starts need root (/proc/sys/vm/drop_caches): warm starts only")
        a.cold = False
    top = a.keep or tempfile.mkdtemp(prefix="quern-startup-", dir="/var/tmp")
    key = "qk_bench_" + "5" * 32
    n = a.runs
    plans = {
        "history": [("completed", n * 9 // 10 - RUNNING), ("failed", n * 9 // 100),
                    ("queued", n // 100), ("running", RUNNING)],
        "queued": [("queued", n)],
    }
    out = open(a.out, "a") if a.out else None
    summary = []
    try:
        for store in a.stores.split(","):
            pristine = os.path.join(top, "%s-%d" % (store, n))
            if not os.path.exists(os.path.join(pristine, "quern.db")):
                if os.path.exists(pristine):
                    shutil.rmtree(pristine)
                build_store(pristine, plans[store], key)
            work = os.path.join(top, "work")
            modes = [False] + ([True] if a.cold else [])
            for cold in modes:
                if not cold:
                    one_start(pristine, work, key, False, store)   # warms the page cache, untimed
                rows = []
                for _ in range(a.reps):
                    r = one_start(pristine, work, key, cold, store)
                    r["loadavg"] = os.getloadavg()[0]
                    rows.append(r)
                    line = json.dumps(r)
                    print(line, flush=True)
                    if out:
                        out.write(line + "\n")
                        out.flush()
                med = {k: statistics.median(x[k] if x[k] is not None else float("inf") for x in rows)
                       for k in ("listen_s", "ready_s", "cpu_s_at_ready", "peak_rss_kb_at_ready",
                                 "dispatch_first_ms", "drain_runs_per_s")}
                med.update(store=store, cache=rows[0]["cache"], runs=rows[0]["runs"],
                           left_running=rows[0]["left_running"],
                           recovered=min(x["recovered_node_restarted"] for x in rows),
                           phases_ms=rows[len(rows) // 2]["phases_ms"], reps=a.reps)
                summary.append(med)
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if not a.keep:
            shutil.rmtree(top, ignore_errors=True)
    print("\n| store | runs | cache | to listening s | to /readyz s | CPU s | peak RSS MiB | "
          "left running -> recovered | create->lease ms after start | drain runs/s | phases ms |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|---|---|---|---|", file=sys.stderr)
    for m in summary:
        print("| %s | %d | %s | %.2f | %.2f | %.2f | %.0f | %d -> %d | %.1f | %.0f | %s |" % (
            m["store"], m["runs"], m["cache"], m["listen_s"], m["ready_s"], m["cpu_s_at_ready"],
            m["peak_rss_kb_at_ready"] / 1024, m["left_running"], m["recovered"], m["dispatch_first_ms"],
            m["drain_runs_per_s"], " ".join("%s %s" % (k[:-3], v) for k, v in m["phases_ms"].items())),
            file=sys.stderr)


if __name__ == "__main__":
    main()
