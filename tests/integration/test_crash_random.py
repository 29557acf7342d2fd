"""Randomized crash durability: a mixed load (task creates single, batch
and idempotent; worker leases, heartbeats, logs, checkpoints, artifacts,
reports, run PATCHes and cancels; code runs in sh and python; a webhook to
a local receiver; a cron task; dependencies) runs against quernd, which is
SIGKILLed at random moments (and while code runs are in their boxes),
restarted on the same data and checked after each restart against a
client-side ledger of every 2xx:

* every acknowledged task, run end, log line, checkpoint and artifact is
  there as answered; an Idempotency-Key replay gets the same answer, and
  an idempotent create the kill left unanswered is made at most once by
  its retry;
* each run's events are a legal path of the run state machine ending in
  the run's status, its log's `seq` has no gap, a task's status is its
  latest run's;
* nothing of the killed quernd's boxes survives (its cgroups are empty);
* once the load stops and the leases run out, no run is left `running`,
  every event of the ledger's runs reached the webhook receiver (at least
  once), a dependant of a completed task has run (blocked runs and
  dependants with no run alike), and the cron task fired each second once (runs plus
  `task.schedule_skipped` counts cover its instants exactly).

Each case has a fixed seed, printed on failure (QUERN_CRASH_SEED=N runs
one more).  SQLite with `--fsync always`, and PostgreSQL with
QUERN_TEST_STORE=pg."""
import base64
import glob
import hashlib
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import ROOT_KEY, Receiver, Server, expect, run_tests, wait_for  # noqa: E402
from qlib import RUN_MOVES as MOVES, RUN_TERMINAL as TERMINAL  # noqa: E402

P = "/api/projects/default"
LEASE_MS = 1000
ROUNDS = 3
OPS = 30          # operations of one loader in one round, at most
PG = os.environ.get("QUERN_TEST_STORE") == "pg"

# fields of a task that its runs do not change
KEPT = ("id", "name", "created_at", "input", "settings", "code", "runtime_id", "dependencies",
        "assigned_agent_id", "priority", "schedule")
# run events that carry no status change
NO_MOVE = {"task_run.log", "task_run.progress", "task_run.checkpoint", "task_run.output",
           "task_run.artifact", "task_run.unblocked"}


class Ledger:
    """What quernd acknowledged (2xx), kept client side."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tasks = {}        # task id -> name
        self.answers = {}      # task id -> the fields of its create's answer that stay
        self.runs = {}         # run id -> task id
        self.ends = {}         # run id -> status a 2xx ended it with
        self.logs = []         # (task, run, message)
        self.checkpoints = []  # (task, run, data)
        self.artifacts = []    # (task, run, name, sha256)
        self.idem = []         # (key, body, status, answer json)
        self.deps = []         # (dependency task, dependant task)
        self.unanswered = []   # (key, body) of idempotent creates cut by the kill
        self.chains = []       # (dependency, dependant without a run of its own)

    def add(self, name, item):
        with self.lock:
            getattr(self, name).append(item)

    def task(self, tid, name, rid=None, answer=None):
        with self.lock:
            self.tasks[tid] = name
            if answer is not None:
                self.answers[tid] = {k: answer.get(k) for k in KEPT}
            if rid:
                self.runs[rid] = tid


class Gone(Exception):
    """The server went away under a request."""


def call(s, method, path, body=None, headers=None, raw=None):
    try:
        return s.req(method, path, body, headers=headers, raw=raw)
    except Exception as e:   # connection refused or reset: the kill
        raise Gone(str(e))


def first_run(s, tid):
    r = call(s, "GET", P + "/tasks/%s/runs" % tid)
    if r.status != 200 or not r.json["data"]:
        raise Gone("runs of %s: %r" % (tid, r))
    return r.json["data"][0]["id"]


class Load:
    def __init__(self, s, L, rng, tag):
        self.s, self.L, self.rng, self.tag = s, L, rng, tag
        self.n = 0

    def name(self):
        self.n += 1
        return "%s-%d" % (self.tag, self.n)

    def op_create(self):
        nm = self.name()
        r = call(self.s, "POST", P + "/tasks", {"name": nm, "assigned_agent_id": "crash", "run": True,
                                                 "settings": {"max_retries": self.rng.choice([0, 1]),
                                                              "retry_delay_ms": 0}})
        if r.status == 201:
            self.L.task(r.json["id"], nm, answer=r.json)

    def op_batch(self):
        names = [self.name() for _ in range(self.rng.randint(2, 5))]
        r = call(self.s, "POST", P + "/tasks/batch",
                 {"tasks": [{"name": nm, "assigned_agent_id": "crash", "run": True} for nm in names]})
        if r.status == 201:
            data = r.json["data"] if isinstance(r.json, dict) else r.json
            assert [t["name"] for t in data] == names, r
            for t in data:
                self.L.task(t["id"], t["name"], answer=t)

    def op_idem(self):
        nm = self.name()
        key = "idem-" + nm
        body = {"name": nm, "assigned_agent_id": "crash-idem", "run": True}
        try:
            r = call(self.s, "POST", P + "/tasks", body, headers={"Idempotency-Key": key})
        except Gone:
            # no answer: the client retries it after the restart
            self.L.add("unanswered", (key, body))
            raise
        if r.status == 201:
            self.L.task(r.json["id"], nm, answer=r.json)
            self.L.add("idem", (key, body, r.status, r.json))

    def op_cancel(self):
        nm = self.name()
        r = call(self.s, "POST", P + "/tasks", {"name": nm, "assigned_agent_id": "nobody", "run": True})
        if r.status != 201:
            return
        tid = r.json["id"]
        self.L.task(tid, nm)
        rid = first_run(self.s, tid)
        self.L.task(tid, nm, rid)
        c = call(self.s, "POST", P + "/tasks/%s/runs/%s/cancel" % (tid, rid), {"message": "crash test"})
        if c.status == 200:
            assert c.json["status"] in ("canceled", "canceling"), c
            if c.json["status"] == "canceled":
                with self.L.lock:
                    self.L.ends[rid] = "canceled"

    def op_code(self):
        nm = self.name()
        rt = self.rng.choice(["sh", "python"])
        secs = self.rng.choice([0, 0.1, 0.1, 0.1, 2])
        if rt == "sh":
            code = "echo start %s; sleep %s; echo done" % (nm, secs)
        else:
            code = "import time\nprint('start %s', flush=True)\ntime.sleep(%s)\nprint('done')" % (nm, secs)
        r = call(self.s, "POST", P + "/tasks", {"name": nm, "runtime_id": rt, "code": code,
                                                 "settings": {"max_retries": self.rng.choice([0, 1]),
                                                              "retry_delay_ms": 0}})
        if r.status == 201:
            self.L.task(r.json["id"], nm)

    def op_deps(self):
        a, b = self.name(), self.name()
        ra = call(self.s, "POST", P + "/tasks", {"name": a, "runtime_id": "sh", "code": "echo a"})
        if ra.status != 201:
            return
        self.L.task(ra.json["id"], a)
        rb = call(self.s, "POST", P + "/tasks", {"name": b, "runtime_id": "sh", "code": "echo b",
                                                  "dependencies": [ra.json["id"]]})
        if rb.status == 201:
            self.L.task(rb.json["id"], b)
            self.L.add("deps", (ra.json["id"], rb.json["id"]))

    def op_chain(self):
        # a dependant with no run of its own: completing its dependency starts it
        a, b = self.name(), self.name()
        ra = call(self.s, "POST", P + "/tasks", {"name": a, "runtime_id": "sh", "code": "echo a", "run": False})
        if ra.status != 201:
            return
        self.L.task(ra.json["id"], a)
        rb = call(self.s, "POST", P + "/tasks", {"name": b, "runtime_id": "sh", "code": "echo b", "run": False,
                                                  "dependencies": [ra.json["id"]]})
        if rb.status != 201:
            return
        self.L.task(rb.json["id"], b)
        if call(self.s, "POST", P + "/tasks/%s/run" % ra.json["id"], {}).status == 201:
            self.L.add("chains", (ra.json["id"], rb.json["id"]))

    def op_work(self):
        r = call(self.s, "POST", P + "/workers/lease", {"agent_id": "crash", "max": 2, "wait_ms": 200})
        if r.status != 200:
            return
        for run in r.json["data"]:
            tid, rid, att = run["task_id"], run["id"], run["attempt"]
            base = P + "/tasks/%s/runs/%s" % (tid, rid)
            with self.L.lock:
                self.L.runs[rid] = tid
            if self.rng.random() < 0.5:
                call(self.s, "POST", base + "/heartbeat", {"progress": 0.5})
            if self.rng.random() < 0.6:
                msg = "log-%s-%d" % (rid, att)
                if call(self.s, "POST", base + "/append_log", {"entries": [{"message": msg}]}).status == 200:
                    self.L.add("logs", (tid, rid, msg))
            if self.rng.random() < 0.4:
                data = {"step": self.rng.randrange(1000), "att": att}
                if call(self.s, "POST", base + "/checkpoints", {"data": data}).status == 200:
                    self.L.add("checkpoints", (tid, rid, data))
            if self.rng.random() < 0.4:
                content = os.urandom(self.rng.randint(1, 4096))
                nm = "a-%d.bin" % att
                a = call(self.s, "POST", base + "/artifacts",
                         {"artifacts": [{"name": nm, "content_base64": base64.b64encode(content).decode()}]})
                if a.status == 200:
                    self.L.add("artifacts", (tid, rid, nm, hashlib.sha256(content).hexdigest()))
            how = self.rng.choice(["report", "report", "patch", "cancel", "leave"])
            if how == "report":
                st = self.rng.choice(["completed", "failed"])
                res = {"run_id": rid, "attempt": att, "status": st}
                if st == "failed":
                    res["error"] = {"code": "crash_test", "message": "failed on purpose"}
                rr = call(self.s, "POST", P + "/workers/report", {"results": [res]})
                if rr.status == 200 and rr.json["data"][0]["ok"]:
                    self.ends_if_final(rid, st)
            elif how == "patch":
                pr = call(self.s, "PATCH", base, {"status": "completed", "output": {"by": "patch"}})
                if pr.status == 200:
                    self.ends_if_final(rid, "completed")
            elif how == "cancel":
                cr = call(self.s, "POST", base + "/cancel", {})
                if cr.status == 200 and cr.json["status"] == "canceled":
                    self.ends_if_final(rid, "canceled")

    def ends_if_final(self, rid, st):
        # a failed attempt with a retry left goes back to the queue: only a
        # run's last word is an end
        r = call(self.s, "GET", P + "/task-runs/" + rid)
        if r.status == 200 and r.json["status"] in TERMINAL:
            assert r.json["status"] == st, (st, r)
            with self.L.lock:
                self.L.ends[rid] = st

    def step(self):
        op = self.rng.choice(["create", "create", "batch", "idem", "cancel", "code", "code", "deps",
                              "chain", "work", "work", "work"])
        getattr(self, "op_" + op)()


def loader(s, L, seed, stop, errors):
    rng = random.Random(seed)
    ld = Load(s, L, rng, "s%d" % seed)
    for _ in range(OPS):
        if stop.is_set():
            return
        try:
            ld.step()
        except Gone:
            return
        except AssertionError as e:
            errors.append("seed %d: %s" % (seed, e))
            return


# ---- the checks -------------------------------------------------------------

def box_cgroup_procs(pid):
    """cgroup.procs files of every box slot of quernd pid (its quern-PID-* dirs)."""
    out = []
    for root in glob.glob("/sys/fs/cgroup/*"):
        out += glob.glob(os.path.join(root, "quern-%d-*" % pid, "slot*", "cgroup.procs"))
        out += glob.glob(os.path.join(root, "**", "quern-%d-*" % pid, "slot*", "cgroup.procs"),
                         recursive=True)
    return sorted(set(out))


def box_pids(pid):
    pids = []
    for f in box_cgroup_procs(pid):
        try:
            with open(f) as fh:
                pids += [int(x) for x in fh.read().split()]
        except OSError:
            pass   # removed meanwhile
    return pids


def legal_path(events, run):
    """Checks the run's status events are a legal path ending in its status."""
    cur = None
    for e in events:
        if not e["type"].startswith("task_run.") or e["type"] in NO_MOVE:
            continue
        st = (e.get("data") or {}).get("status")
        if e["type"] == "task_run.retrying":
            st = "queued"   # a new attempt of the run, queued again
        if st is None:
            continue
        if cur is None:
            assert st in ("queued", "interaction_required", "paused", "failed"), (run["id"], events)
        elif st != cur:
            assert st in MOVES.get(cur, ()), "illegal %s -> %s in %s: %s" % (
                cur, st, run["id"], [(x["type"], (x.get("data") or {}).get("status")) for x in events])
        cur = st
    return cur


def check_run(s, tid, rid):
    run = expect(s.req("GET", P + "/task-runs/" + rid), 200)
    ev = s.req("GET", P + "/tasks/%s/runs/%s/session_logs?limit=10000" % (tid, rid))
    assert ev.status == 200, ev
    last = legal_path(ev.json, run)
    # the run may move between the two reads: read it again when they differ
    if last != run["status"]:
        run2 = expect(s.req("GET", P + "/task-runs/" + rid), 200)
        ev2 = expect(s.req("GET", P + "/tasks/%s/runs/%s/session_logs?limit=10000" % (tid, rid)), 200)
        last = legal_path(ev2, run2)
        assert last == run2["status"], ("events end in %s, run is %s" % (last, run2["status"]), rid,
                                        [(x["type"], (x.get("data") or {}).get("status")) for x in ev2])
    logs = s.req("GET", P + "/tasks/%s/runs/%s/logs" % (tid, rid))
    assert logs.status == 200, logs
    seqs = [json.loads(x)["seq"] for x in logs.text.split("\n") if x]
    assert seqs == list(range(1, len(seqs) + 1)), ("log seq gaps", rid, seqs)
    return run


def check_ledger(s, L):
    with L.lock:
        tasks = dict(L.tasks)
        ends = dict(L.ends)
        logs, cps, arts, idem = list(L.logs), list(L.checkpoints), list(L.artifacts), list(L.idem)
    with L.lock:
        answers = dict(L.answers)
    for tid, nm in tasks.items():
        t = expect(s.req("GET", P + "/tasks/" + tid), 200)
        assert t["name"] == nm, (tid, nm, t)
        if tid in answers:
            now = {k: t.get(k) for k in KEPT}
            assert now == answers[tid], ("task differs from its create's answer", tid, answers[tid], now)
        runs = expect(s.req("GET", P + "/tasks/%s/runs?limit=500" % tid), 200)["data"]
        for run in runs:
            check_run(s, tid, run["id"])
        # a task's status is its latest run's (read again when it moved meanwhile)
        if runs:
            t2 = expect(s.req("GET", P + "/tasks/" + tid), 200)
            runs2 = expect(s.req("GET", P + "/tasks/%s/runs?limit=1" % tid), 200)["data"]
            t3 = expect(s.req("GET", P + "/tasks/" + tid), 200)
            if t2["updated_at"] == t3["updated_at"] and runs2[0]["status"] in TERMINAL:
                assert t3["status"] == runs2[0]["status"], (tid, t3["status"], runs2[0])
    for rid, st in ends.items():
        r = expect(s.req("GET", P + "/task-runs/" + rid), 200)
        assert r["status"] == st, ("acknowledged end lost", rid, st, r)
    for tid, rid, msg in logs:
        text = s.req("GET", P + "/tasks/%s/runs/%s/logs" % (tid, rid)).text
        assert msg in text, ("acknowledged log line lost", rid, msg)
    for tid, rid, data in cps:
        got = expect(s.req("GET", P + "/tasks/%s/runs/%s/checkpoints?limit=500" % (tid, rid)), 200)["data"]
        assert data in [c["data"] for c in got], ("acknowledged checkpoint lost", rid, data, got)
    for tid, rid, nm, sha in arts:
        got = expect(s.req("GET", P + "/tasks/%s/runs/%s/artifacts?limit=500" % (tid, rid)), 200)["data"]
        names = {a["name"]: a["sha256"] for a in got}
        assert names.get(nm) == sha, ("acknowledged artifact lost", rid, nm, sha, got)
        c = s.conn()
        c.request("GET", P + "/tasks/%s/runs/%s/artifacts/content?name=%s" % (tid, rid, nm),
                  headers={"Authorization": "Bearer " + ROOT_KEY})
        resp = c.getresponse()
        body = resp.read()
        c.close()
        assert resp.status == 200 and hashlib.sha256(body).hexdigest() == sha, (
            "acknowledged artifact's bytes lost", rid, nm, resp.status, len(body))
    # a create cut by the kill, retried with its key: one task at most
    with L.lock:
        unanswered, L.unanswered = L.unanswered, []
    for key, body in unanswered:
        r = s.req("POST", P + "/tasks", body, headers={"Idempotency-Key": key})
        same = [t["id"] for t in expect(s.req("GET", P + "/tasks?limit=500&q=" + body["name"]), 200)["data"]
                if t["name"] == body["name"]]
        if r.status == 409:
            # its task was stored, its answer was not: not made again (API.md)
            assert r.json["error"]["code"] == "idempotency_outcome_unknown", r
            assert len(same) == 1, ("the create whose answer was lost", key, same)
            continue
        assert r.status == 201, r
        assert same == [r.json["id"]], ("a retried idempotent create made %d tasks" % len(same), key,
                                        same, r.header("Idempotent-Replayed"))
        L.task(r.json["id"], body["name"])
        L.add("idem", (key, body, r.status, r.json))
    for key, body, status, answer in idem:
        r = s.req("POST", P + "/tasks", body, headers={"Idempotency-Key": key})
        assert r.status == status and r.json == answer, ("idempotent replay differs", key, answer, r)
        assert r.header("Idempotent-Replayed") == "true", r


def settle(s, L):
    """After the load: once the leases and the code have run out, no run is
    running; dependants of completed tasks are not left waiting."""
    def quiet():
        r = expect(s.req("GET", P + "/runs?status=running&limit=500"), 200)
        c = expect(s.req("GET", P + "/runs?status=canceling&limit=500"), 200)
        return not r["data"] and not c["data"]
    try:
        wait_for(quiet, 60, "no run running or canceling")
    except AssertionError:
        left = expect(s.req("GET", P + "/runs?status=running&limit=500"), 200)["data"] + \
            expect(s.req("GET", P + "/runs?status=canceling&limit=500"), 200)["data"]
        raise AssertionError("runs left running or canceling once leases and code ran out: %s" % (
            [(r["id"], r["status"], r["runtime_id"], r["attempt"], r["lease_expires_at"], r["errors"])
             for r in left]))
    with L.lock:
        deps = list(L.deps)
    for a, b in deps:
        def dep_done():
            ta = expect(s.req("GET", P + "/tasks/" + a), 200)
            tb = expect(s.req("GET", P + "/tasks/" + b), 200)
            if ta["status"] == "completed":
                return tb["status"] in TERMINAL
            return ta["status"] not in TERMINAL or tb["status"] in ("failed",)
        wait_for(dep_done, 30, "dependant %s of %s decided" % (b, a))
    with L.lock:
        chains = list(L.chains)
    for a, b in chains:
        def chain_done():
            ta = expect(s.req("GET", P + "/tasks/" + a), 200)
            if ta["status"] != "completed":
                return ta["status"] in TERMINAL
            tb = expect(s.req("GET", P + "/tasks/" + b), 200)
            return tb["run_count"] >= 1 and tb["status"] in TERMINAL
        wait_for(chain_done, 30, "dependant %s started (and ended) after %s completed" % (b, a))


def check_webhook(s, L, rec):
    """Every event of the ledger's runs reached the receiver (at least once)."""
    with L.lock:
        tasks = list(L.tasks)
    want = {}
    for tid in tasks:
        for run in expect(s.req("GET", P + "/tasks/%s/runs?limit=500" % tid), 200)["data"]:
            for e in expect(s.req("GET", P + "/tasks/%s/runs/%s/session_logs?limit=10000" % (tid, run["id"])),
                            200):
                want[e["id"]] = e["type"]

    def all_there():
        got = {e["id"]: e for e in rec.delivered()}
        return [(k, v) for k, v in want.items() if k not in got] == []
    try:
        wait_for(all_there, 60, "every event delivered to the webhook")
    except AssertionError:
        got = {e["id"]: e for e in rec.delivered()}
        missing = [(k, v) for k, v in want.items() if k not in got]
        raise AssertionError("%d of %d events never delivered, e.g. %s" % (len(missing), len(want), missing[:5]))


def cron_covered(s, cron_tid, first_ms, rec):
    """The cron task's runs plus the instants recorded skipped cover every
    second from its first instant to its next one, each once."""
    from datetime import datetime

    def ms(ts):
        return int(datetime.strptime(ts.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)

    def count():
        t1 = expect(s.req("GET", P + "/tasks/" + cron_tid), 200)
        runs = expect(s.req("GET", P + "/tasks/%s/runs?limit=1" % cron_tid), 200)["total"]
        t2 = expect(s.req("GET", P + "/tasks/" + cron_tid), 200)
        if t1["next_run_at"] != t2["next_run_at"]:
            return None
        skipped = sum(e["data"]["skipped"] for e in rec.delivered()
                      if e["type"] == "task.schedule_skipped" and e["task_id"] == cron_tid)
        return runs, skipped, (ms(t2["next_run_at"]) - first_ms) // 1000
    last = [None]

    def exact():
        c = count()
        last[0] = c
        return c is not None and c[0] + c[1] == c[2]
    try:
        wait_for(exact, 30, "cron accounts")
    except AssertionError:
        raise AssertionError("cron: runs %s + skipped %s != instants %s" % tuple(last[0] or (None,) * 3))


def tick(what, t0):
    if os.environ.get("QUERN_CRASH_VERBOSE"):
        print("  %s: %.1fs" % (what, time.monotonic() - t0), flush=True)


def crash_case(seed):
    rng = random.Random(seed)
    extra = [] if PG else ["--fsync", "always"]
    env = {"QUERN_LEASE_MS": str(LEASE_MS), "QUERN_OUTBOUND_ALLOW_PRIVATE": "1",
           "QUERN_WEBHOOK_RETRY_BASE_MS": "100"}
    rec = Receiver()
    s = Server(extra_args=extra, env=env)
    L = Ledger()
    try:
        expect(s.req("POST", P + "/webhooks", {"url": rec.url, "events": ["*"]}), 201)
        cron = expect(s.req("POST", P + "/tasks", {"name": "cron", "schedule": "* * * * * *",
                                                   "assigned_agent_id": "cron-nobody"}), 201)
        from datetime import datetime
        first_ms = int(datetime.strptime(cron["next_run_at"].replace("Z", "+0000"),
                                         "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)
        boxes = []
        for round_ in range(ROUNDS):
            stop, errors = threading.Event(), []
            ths = [threading.Thread(target=loader, args=(s, L, seed * 1000 + round_ * 10 + n, stop, errors))
                   for n in range(3)]
            for t in ths:
                t.start()
            # a code run in its box at the kill, in one round of two
            if rng.random() < 0.5:
                r = s.req("POST", P + "/tasks", {"name": "box-%d" % round_, "runtime_id": "sh",
                                                 "code": "sleep 60 & sleep 60; wait",
                                                 "settings": {"max_retries": rng.choice([0, 1]),
                                                              "retry_delay_ms": 0}})
                if r.status == 201:
                    L.task(r.json["id"], "box-%d" % round_)
                    boxes.append(r.json["id"])
                    wait_for(lambda: box_pids(s.proc.pid), 30, "a box running")
            time.sleep(rng.uniform(0.1, 1.0))
            pid = s.proc.pid
            s.kill()
            stop.set()
            for t in ths:
                t.join(60)
            assert not errors, errors
            s.start()
            wait_for(lambda: s.req("GET", "/readyz", key=None).status == 200, 30, "/readyz")
            # nothing of the killed quernd's boxes lives on
            wait_for(lambda: box_pids(pid) == [], 30, "the killed quernd's boxes empty (%s)" % box_pids(pid))
            t0 = time.monotonic()
            check_ledger(s, L)
            tick("round %d checked %d tasks" % (round_, len(L.tasks)), t0)
            # a box's second attempt (retries left) would sleep on: cancel it
            for tid in boxes:
                for run in expect(s.req("GET", P + "/tasks/%s/runs" % tid), 200)["data"]:
                    if run["status"] not in TERMINAL:
                        s.req("POST", P + "/tasks/%s/runs/%s/cancel" % (tid, run["id"]), {})
        t0 = time.monotonic()
        settle(s, L)
        tick("settled", t0)
        check_ledger(s, L)
        tick("checked", t0)
        check_webhook(s, L, rec)
        tick("webhook", t0)
        cron_covered(s, cron["id"], first_ms, rec)
        tick("cron", t0)
    except BaseException:
        print("crash case seed %d failed (data %s, PG=%s)" % (seed, s.data, PG), flush=True)
        raise
    finally:
        s.stop()
        rec.close()


def test_random_crash_seed_1():
    crash_case(1)


def test_random_crash_seed_5():
    # found an idempotent create whose answer was lost to the kill made
    # again by its retry (test_crash.py has the fixed point)
    crash_case(5)


def test_random_crash_env_seed():
    if os.environ.get("QUERN_CRASH_SEED"):
        crash_case(int(os.environ["QUERN_CRASH_SEED"]))


if __name__ == "__main__":
    run_tests(dict(globals()))
