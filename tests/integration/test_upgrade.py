"""Upgrading in place: a store written by the previous release's quernd
(QUERN_OLD_BUILD: its build directory, e.g. a worktree of ccec6f5 built with
'make all') is opened by this quernd (QUERN_BUILD, default build), on the
same data directory (SQLite) or database (QUERN_TEST_STORE=pg), and every
object reads back the same and goes on working: keys, tasks, runs in every
state, leases, waiting runs, schedules, idempotency records, secrets,
storage files, webhook deliveries, presigned URLs, SSE resumption.  The old
quernd on the upgraded store is refused, and 'quern store copy' takes an
old SQLite store into PostgreSQL.

Builds nothing: without QUERN_OLD_BUILD every test is skipped (it says
why), so it is run by hand, not in CI:
    QUERN_OLD_BUILD=/tmp/old-upgrade/build python3 tests/integration/test_upgrade.py
    QUERN_TEST_STORE=pg QUERN_OLD_BUILD=... python3 tests/integration/test_upgrade.py
"""
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import qlib  # noqa: E402
from qlib import ROOT_KEY, Receiver, expect, run_tests, sse, wait_for  # noqa: E402

OLD = os.environ.get("QUERN_OLD_BUILD")
PG = os.environ.get("QUERN_TEST_STORE") == "pg"
P = "/api/projects/default"
OTHER = "/api/projects/other"
ENV = {"QUERN_OUTBOUND_ALLOW_PRIVATE": "1", "QUERN_WEBHOOK_RETRY_BASE_MS": "200",
       "QUERN_LEASE_MS": "600000"}


class Server(qlib.Server):
    """qlib's Server with the build directory chosen per start."""

    def __init__(self, build, data=None, env=None, extra=()):
        self.build = build
        super().__init__(data=data, extra_args=extra, env=dict(ENV, **(env or {})))

    def _spawn(self):
        saved = qlib.BUILD
        qlib.BUILD = self.build
        try:
            return super()._spawn()
        finally:
            qlib.BUILD = saved


def skip(why):
    print("skipped: " + why)
    return True


def runs_of(S, task_id, project=P):
    return expect(S.req("GET", project + "/tasks/%s/runs" % task_id), 200)["data"]


def populate(S, rec):
    """Every kind of data an installation holds, made by the old quernd.
    Returns what the checks need."""
    o = {}
    expect(S.req("POST", "/api/projects", {"id": "other", "name": "Other"}), 201)
    keys = {}
    for name, scopes in (("adm", ["admin"]), ("rd", ["task:read"]), ("wr", ["task:write"]),
                         ("wk", ["worker"]), ("gone", ["task:read"])):
        keys[name] = expect(S.req("POST", P + "/api_keys", {"name": name, "scopes": scopes}), 201)
    expect(S.req("DELETE", P + "/api_keys/" + keys["gone"]["id"]), 200)
    o["keys"] = keys
    expect(S.req("POST", P + "/definitions", {
        "id": "def-up", "title": "Up", "runtime_id": "sh", "code": "echo def",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
        "output_schema": {"type": "object"}}), 201)
    expect(S.req("POST", P + "/secrets", {"name": "UPSEC", "value": "s3cr3t-value"}), 201)
    inst = expect(S.req("POST", P + "/storage", {"scope": "project", "name": "named"}), 201)
    o["inst"] = inst
    # code runs: output, artifact, storage (named and default), a secret, logs
    sh = expect(S.req("POST", P + "/tasks", {
        "name": "sh-done", "runtime_id": "sh", "secrets": ["UPSEC"], "storage": {"project": inst["id"]},
        "code": 'echo hello-log; cat /run/secrets/UPSEC > "$QUERN_STORAGE_PROJECT/named.txt"; '
                'printf art > "$QUERN_ARTIFACTS/a.txt"; echo \'{"ok": true}\' > "$QUERN_OUTPUT"',
        "wait_for_result": True}), 201)
    assert sh["run"]["status"] == "completed", sh
    dflt = expect(S.req("POST", P + "/tasks", {
        "name": "sh-default-storage", "runtime_id": "sh",
        "code": 'echo default-file > "$QUERN_STORAGE_PROJECT/default.txt"', "wait_for_result": True}), 201)
    assert dflt["run"]["status"] == "completed", dflt
    py = expect(S.req("POST", P + "/tasks", {
        "name": "py-done", "runtime_id": "python", "code": "print('py-log')", "wait_for_result": True}), 201)
    assert py["run"]["status"] == "completed", py
    o["code"] = [sh["id"], dflt["id"], py["id"]]
    fail = expect(S.req("POST", P + "/tasks", {
        "name": "sh-fail", "runtime_id": "sh", "code": "exit 3", "settings": {"max_retries": 1,
                                                                              "retry_delay_ms": 100}}), 201)
    o["fail"] = fail["id"]
    wait_for(lambda: [r for r in runs_of(S, fail["id"]) if r["status"] == "failed" and r["attempt"] == 2],
             60, "the failed run's second attempt")
    expect(S.req("POST", P + "/tasks/%s/retry" % fail["id"]), 201)
    wait_for(lambda: len(runs_of(S, fail["id"])) == 2
             and all(r["status"] == "failed" for r in runs_of(S, fail["id"])), 60, "the retried run")
    # agent runs in every state
    def agent(name, **kw):
        body = {"name": name, "assigned_agent_id": "ag-" + name, "run": True}
        body.update(kw)
        return expect(S.req("POST", P + "/tasks", body), 201)

    def lease(agent_id, worker="w1"):
        got = expect(S.req("POST", P + "/workers/lease", {"agent_id": agent_id, "worker_id": worker},
                           key=keys["wk"]["key"]), 200)["data"]
        assert len(got) == 1, got
        return got[0]

    leased = agent("leased")
    run = lease("ag-leased")
    base = P + "/tasks/%s/runs/%s" % (leased["id"], run["id"])
    expect(S.req("POST", base + "/checkpoints", {"data": {"step": 1}}, key=keys["wk"]["key"]), 200)
    expect(S.req("POST", base + "/append_log", {"entries": [{"message": "worker-log"}]}, key=keys["wk"]["key"]), 200)
    o["leased"] = (leased["id"], run["id"])
    inter = agent("inter")
    run = lease("ag-inter")
    expect(S.req("PATCH", P + "/tasks/%s/runs/%s" % (inter["id"], run["id"]),
                 {"status": "interaction_required"}), 200)
    o["inter"] = (inter["id"], run["id"])
    rev = agent("rev")
    run = lease("ag-rev")
    expect(S.req("PATCH", P + "/tasks/%s/runs/%s" % (rev["id"], run["id"]), {"status": "review_required"}), 200)
    o["rev"] = (rev["id"], run["id"])
    canc = agent("canc")
    expect(S.req("POST", P + "/tasks/%s/cancel" % canc["id"]), 200)
    paused = agent("paused")
    expect(S.req("POST", P + "/tasks/%s/pause" % paused["id"]), 200)
    o["paused"] = paused["id"]
    # a queue: five runs of one agent, one key, oldest first
    o["queue"] = [agent("q%d" % i, assigned_agent_id="ag-queue",
                        settings={"concurrency_key": "ck", "max_concurrency": 1})["id"] for i in range(5)]
    dep_a = agent("dep-a", run=False)
    dep_b = agent("dep-b", dependencies=[dep_a["id"]])
    o["deps"] = (dep_a["id"], dep_b["id"])
    cron = expect(S.req("POST", P + "/tasks", {"name": "cron", "schedule": "0 3 * * *",
                                               "timezone": "Europe/Paris",
                                               "assigned_agent_id": "ag-cron"}), 201)
    o["cron"] = cron["id"]
    # webhooks: one delivered while the receiver says yes, one pending
    wh = expect(S.req("POST", P + "/webhooks", {"url": rec.url, "events": ["task.created"]}), 201)
    o["webhook"] = wh["id"]
    rec.status = 200
    expect(S.req("POST", P + "/tasks", {"name": "wh-delivered", "assigned_agent_id": "nobody"}), 201)
    wait_for(lambda: any("wh-delivered" in json.dumps(e) for e in rec.delivered()), 30, "the first delivery")
    rec.status = 503
    expect(S.req("POST", P + "/tasks", {"name": "wh-pending", "assigned_agent_id": "nobody"}), 201)
    wait_for(lambda: any(d["status"] != "delivered" and len(d.get("attempts") or []) >= 1 for d in expect(
        S.req("GET", P + "/webhooks/%s/deliveries" % wh["id"]), 200)["data"]), 30, "a failed attempt")
    trig_task = agent("trig", run=False)
    trig = expect(S.req("POST", P + "/triggers", {"task_id": trig_task["id"], "secret": "trigsec"}), 201)
    o["trigger"] = (trig["id"], trig_task["id"])
    # a task with metadata (the new store indexes it, and copies its name)
    o["md"] = expect(S.req("POST", P + "/tasks", {"name": "md-upgrade", "assigned_agent_id": "nobody",
                                                  "metadata": {"tier": "gold", "n": 2}}), 201)
    # an idempotent POST
    r = S.req("POST", P + "/tasks", {"name": "idem", "assigned_agent_id": "nobody"},
              headers={"Idempotency-Key": "upgrade-idem-1"})
    o["idem"] = expect(r, 201)
    # a presigned URL
    sh_run = runs_of(S, sh["id"])[0]
    art = sh_run["artifacts"][0]
    ps = expect(S.req("POST", P + "/tasks/%s/runs/%s/artifacts/presign" % (sh["id"], sh_run["id"]),
                      {"storage_path": art["storage_path"], "expires_in": 3600}), 200)
    o["presigned"] = ps["url"]
    return o


def events_after(S, last_id, upto_name):
    """The project's events after last_id until one names upto_name."""
    st, evs = sse(S, P + "/events/stream", headers={"Last-Event-ID": str(last_id)},
                  stop=lambda e: upto_name in json.dumps(e[2]))
    assert st == 200, (st, evs)
    return evs


def snapshot(S, o):
    """What every object reads back as, for comparing across the upgrade."""
    snap = {}
    for path in ("/api/projects", P + "/api_keys", P + "/definitions", P + "/tasks?limit=500",
                 P + "/runs?limit=500", P + "/storage?limit=500", P + "/webhooks", P + "/triggers",
                 P + "/secrets"):
        snap[path] = expect(S.req("GET", path), 200)
    for tid in o["code"] + [o["leased"][0], o["inter"][0], o["rev"][0], o["fail"]]:
        for r in runs_of(S, tid):
            base = P + "/tasks/%s/runs/%s" % (tid, r["id"])
            snap[base + "/logs"] = S.req("GET", base + "/logs").text
            snap[base + "/checkpoints"] = expect(S.req("GET", base + "/checkpoints"), 200)
            snap[base + "/artifacts"] = expect(S.req("GET", base + "/artifacts"), 200)
    return snap


VOLATILE = {"updated_at", "last_used_at", "lease_expires_at", "size_bytes", "size_bytes_partial",
            "attempts", "next_attempt_at", "last_attempt_at"}


def same(old, new, where):
    """None when new says all that old said (fields this release added to
    the answers aside, and the VOLATILE ones), else where it differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k, v in old.items():
            if k in VOLATILE:
                continue
            if k not in new:
                return "%s.%s: gone" % (where, k)
            d = same(v, new[k], "%s.%s" % (where, k))
            if d:
                return d
        return None
    if isinstance(old, list) and isinstance(new, list):
        if len(old) != len(new):
            return "%s: %d items, then %d" % (where, len(old), len(new))
        for i, (a, b) in enumerate(zip(old, new)):
            d = same(a, b, "%s[%d]" % (where, i))
            if d:
                return d
        return None
    return None if old == new else "%s: %r, then %r" % (where, old, new)


def upgrade_round(kill):
    if not OLD:
        return skip("QUERN_OLD_BUILD is not set (the previous release's build directory)")
    rec = Receiver(status=503)   # says no until populate says yes
    old = Server(OLD)
    new = None
    try:
        o = populate(old, rec)
        # the point to resume SSE from: the newest event so far
        st, evs = sse(old, P + "/events/stream", headers={"Last-Event-ID": "0"},
                      stop=lambda e: "idem" in json.dumps(e[2]) and e[1] == "task.created")
        assert st == 200 and evs, (st, evs)
        mark = evs[-1][0]
        # events made after the mark, before the upgrade
        expect(old.req("POST", P + "/tasks", {"name": "after-mark", "assigned_agent_id": "nobody"}), 201)
        before = snapshot(old, o)
        box = None
        if kill:
            # mid-work: a code run in its box at the kill (in the project
            # "other": the snapshots are of "default")
            box = expect(old.req("POST", OTHER + "/tasks", {"name": "box", "runtime_id": "sh",
                                                            "code": "sleep 60"}), 201)
            wait_for(lambda: runs_of(old, box["id"], OTHER)[0]["status"] == "running", 30, "the box running")
            old.kill()
        else:
            old.stop()
        new = Server(qlib.BUILD, data=old.data)
        if box:
            # RUNTIME.md "A crash of quernd": failed node_restarted at the start
            run = runs_of(new, box["id"], OTHER)[0]
            assert run["status"] == "failed" and run["error"]["code"] == "node_restarted", run
        after = snapshot(new, o)
        for k in before:
            d = same(before[k], after[k], k)
            assert not d, d
        check(new, o, rec, mark)
        after = snapshot(new, o)
        new.stop()
        # the old quernd on the upgraded store is refused, and the store is
        # left as it was: this quernd opens it again
        refused_by_old(old)
        new = Server(qlib.BUILD, data=old.data)
        again = snapshot(new, o)
        d = same(after, again, "after the refused downgrade")
        assert d is None, d
        new.stop()
        return o
    finally:
        for s in (old, new):
            if s and s.proc and s.proc.poll() is None:
                s.kill()
        rec.close()


def report(S, run_id, key=ROOT_KEY, attempt=1, **kw):
    body = {"run_id": run_id, "attempt": attempt, "status": "completed"}
    body.update(kw)
    return expect(S.req("POST", P + "/workers/report", {"results": [body]}, key=key), 200)["data"][0]


def check_search(S, o):
    """The old tasks' metadata and names are found through the new store's
    metadata index and name column, filled by the migration or the copy."""
    for q in ("metadata.tier=gold", "metadata.n=2", "metadata.tier=gold&metadata.n=2", "q=MD-UPGR"):
        got = expect(S.req("GET", P + "/tasks?" + q), 200)
        assert [t["id"] for t in got["data"]] == [o["md"]["id"]] and got["total"] == 1, (q, got)


def check(S, o, rec, mark):
    check_search(S, o)
    keys = o["keys"]
    # keys: each old one still authenticates, the revoked one does not
    assert S.req("GET", P + "/tasks", key=keys["rd"]["key"]).status == 200
    assert S.req("GET", P + "/api_keys", key=keys["adm"]["key"]).status == 200
    assert S.req("GET", P + "/tasks", key=keys["gone"]["key"]).status == 401
    assert S.req("GET", P + "/api_keys", key=keys["wr"]["key"]).status == 403
    # an idempotent POST replayed answers the first answer
    r = S.req("POST", P + "/tasks", {"name": "idem", "assigned_agent_id": "nobody"},
              headers={"Idempotency-Key": "upgrade-idem-1"})
    assert r.status == 201 and r.json["id"] == o["idem"]["id"], r
    # SSE from the mark: the event made after it comes, nothing before it
    evs = events_after(S, mark, "after-mark")
    assert evs and all(e[0] > mark for e in evs) and "after-mark" in json.dumps(evs[-1][2]), evs
    # the leased run: its worker reports it
    tid, rid = o["leased"]
    res = report(S, rid, key=keys["wk"]["key"], output={"x": 1})
    assert res["ok"] is True, res
    assert runs_of(S, tid)[0]["status"] == "completed"
    # the waiting runs are answered and reviewed
    tid, rid = o["inter"]
    back = expect(S.req("POST", P + "/tasks/%s/runs/%s/interaction" % (tid, rid), {"response": {"a": 1}}), 200)
    assert back["status"] == "running", back
    tid, rid = o["rev"]
    done = expect(S.req("POST", P + "/tasks/%s/runs/%s/review" % (tid, rid), {"decision": "approve"}), 200)
    assert done["status"] == "completed", done
    # the queue dispatches oldest first, one at a time for its key
    order = []
    for _ in o["queue"]:
        got = expect(S.req("POST", P + "/workers/lease", {"agent_id": "ag-queue"}), 200)["data"]
        assert len(got) == 1, got
        order.append(got[0]["task_id"])
        assert report(S, got[0]["id"])["ok"]
    assert order == o["queue"], (order, o["queue"])
    # the paused task stays paused, and runs once resumed
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "ag-paused"}), 200)["data"] == []
    expect(S.req("POST", P + "/tasks/%s/resume" % o["paused"]), 200)
    assert len(expect(S.req("POST", P + "/workers/lease", {"agent_id": "ag-paused"}), 200)["data"]) == 1
    # the dependency: dep-b runs once dep-a completes
    a, b = o["deps"]
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "ag-dep-b"}), 200)["data"] == []
    expect(S.req("POST", P + "/tasks/%s/run" % a, {}), 201)
    got = expect(S.req("POST", P + "/workers/lease", {"agent_id": "ag-dep-a"}), 200)["data"]
    assert report(S, got[0]["id"])["ok"]
    wait_for(lambda: expect(S.req("POST", P + "/workers/lease", {"agent_id": "ag-dep-b"}), 200)["data"],
             30, "the dependant's run")
    # the schedule: same next fire, no fire at the upgrade
    t = expect(S.req("GET", P + "/tasks/" + o["cron"]), 200)
    assert t["run_count"] == 0 and t["next_run_at"], t
    sched = expect(S.req("GET", P + "/tasks/%s/schedule?count=2" % o["cron"]), 200)
    assert sched["data"][0]["at"] == t["next_run_at"], (sched, t)
    # secrets readable by code; storage files there for the next run
    sec = expect(S.req("POST", P + "/tasks", {
        "runtime_id": "sh", "secrets": ["UPSEC"], "storage": {"project": o["inst"]["id"]},
        "code": '[ "$(cat /run/secrets/UPSEC)" = s3cr3t-value ] && echo secret-ok; '
                '[ "$(cat "$QUERN_STORAGE_PROJECT/named.txt")" = s3cr3t-value ] && echo file-ok',
        "wait_for_result": True}), 201)
    assert sec["run"]["status"] == "completed", sec
    logs = S.req("GET", P + "/tasks/%s/runs/%s/logs" % (sec["id"], sec["run"]["id"])).text
    assert "secret-ok" in logs and "file-ok" in logs, logs
    dflt = expect(S.req("POST", P + "/tasks", {
        "runtime_id": "sh", "code": 'cat "$QUERN_STORAGE_PROJECT/default.txt"', "wait_for_result": True}), 201)
    logs = S.req("GET", P + "/tasks/%s/runs/%s/logs" % (dflt["id"], dflt["run"]["id"])).text
    assert "default-file" in logs, logs
    # the storage listing counts the files written before the upgrade
    insts = {i["id"]: i for i in expect(S.req("GET", P + "/storage?limit=500"), 200)["data"]}
    assert insts[o["inst"]["id"]]["size_bytes"] > 0, insts
    # the pending delivery is delivered
    rec.status = 200
    wait_for(lambda: any("wh-pending" in json.dumps(e) for e in rec.delivered()), 30, "the pending delivery")
    # the trigger fires
    trig_id, trig_task = o["trigger"]
    body = b"{}"
    ts = int(time.time())
    mac = hmac.new(b"trigsec", b"%d." % ts + body, hashlib.sha256).hexdigest()
    c = S.conn()
    c.request("POST", "/hooks/" + trig_id, body=body,
              headers={"X-Quern-Signature": "t=%d,sha256=%s" % (ts, mac), "Content-Type": "application/json"})
    resp = c.getresponse()
    resp.read()
    c.close()
    assert resp.status in (200, 201, 202), resp.status
    assert runs_of(S, trig_task), "the trigger made no run"
    # the presigned URL made before still works
    c = S.conn()
    c.request("GET", o["presigned"])
    resp = c.getresponse()
    data = resp.read()
    c.close()
    assert resp.status == 200 and data == b"art", (resp.status, data)
    # a new write works, and a code run
    again = expect(S.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo ok",
                                                "wait_for_result": True}), 201)
    assert again["run"]["status"] == "completed", again


def refused_by_old(S):
    """The previous release's quernd started on S's store exits 1 saying
    the store is newer, before it listens."""
    env = dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY, **ENV)
    err = os.path.join(S.data, "old-stderr.log")
    p = subprocess.Popen([os.path.join(OLD, "quernd"), "--listen", "127.0.0.1:0", "--data", S.data]
                         + S.extra, stdout=subprocess.PIPE, stderr=open(err, "wb"), env=env)
    line = p.stdout.readline().decode()   # "quernd listening on ...", or EOF at its exit
    if p.poll() is None and "listening" in line:
        p.kill()
    rc = p.wait(60)
    with open(err, "rb") as f:
        text = f.read().decode(errors="replace")
    assert "listening" not in line and rc == 1, "the old quernd opened the upgraded store: %r" % line
    assert "is newer than this quernd" in text, text[-2000:]


def test_store_copy_of_an_old_sqlite_store():
    """'quern store copy' (this release) takes an SQLite store the previous
    release wrote into PostgreSQL, and the copy reads back the same."""
    if not OLD:
        return skip("QUERN_OLD_BUILD is not set (the previous release's build directory)")
    if PG:
        return skip("copies from SQLite: run it without QUERN_TEST_STORE=pg")
    import pgcluster
    if not os.path.exists(os.path.join(pgcluster.PGBIN, "initdb")):
        return skip("no PostgreSQL server in " + pgcluster.PGBIN)
    rec = Receiver(status=503)   # says no until populate says yes
    old = Server(OLD)
    try:
        o = populate(old, rec)
        before = snapshot(old, o)
        old.stop()
    finally:
        if old.proc.poll() is None:
            old.kill()
        rec.close()
    url = pgcluster.new_database()
    p = subprocess.run([os.path.join(qlib.BUILD, "quern"), "store", "copy", "--data", old.data,
                        "sqlite:" + os.path.join(old.data, "quern.db"), url],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p.returncode == 0, p.stdout.decode()
    pg = Server(qlib.BUILD, data=old.data, extra=["--store", url])
    try:
        after = snapshot(pg, o)
        for k in before:
            d = same(before[k], after[k], k)
            assert not d, d
        r = pg.req("POST", P + "/tasks", {"name": "idem", "assigned_agent_id": "nobody"},
                   headers={"Idempotency-Key": "upgrade-idem-1"})
        assert r.status == 201 and r.json["id"] == o["idem"]["id"], r
        assert pg.req("GET", P + "/tasks", key=o["keys"]["gone"]["key"]).status == 401
        assert pg.req("GET", P + "/tasks", key=o["keys"]["rd"]["key"]).status == 200
        check_search(pg, o)
        pg.stop()
    finally:
        if pg.proc and pg.proc.poll() is None:
            pg.kill()


def test_upgrade_after_sigterm():
    upgrade_round(kill=False)


def test_upgrade_after_sigkill():
    upgrade_round(kill=True)


if __name__ == "__main__":
    run_tests(globals())
