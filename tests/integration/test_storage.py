"""Storage instances: create/list with validation, default instances
created on first use, data persisting across runs at project scope, an
account's instance not given to another account, and worker-reported
accesses (RUNTIME.md storage scopes)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import CodeTasks, Server, expect, run_tests  # noqa: E402

S = Server()
P = "/api/projects/default"
C = CodeTasks(S)


def code(c, **kw):
    body = {"code": c, "wait_for_result": True}
    body.update(kw)
    t = expect(S.req("POST", P + "/tasks", body), 201)
    return t, t["run"]


def logs(t, run):
    return [l for l in S.req("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], run["id"])).text.splitlines()]


def test_create_and_validate():
    d = expect(S.req("POST", P + "/storage", {"scope": "project", "name": "cache"}), 201)
    assert d["id"].startswith("sto_") and d["size_bytes"] == 0
    assert S.req("POST", P + "/storage", {"scope": "project", "name": "cache"}).status == 409
    for body, param in [({"scope": "disk", "name": "x"}, "scope"), ({"scope": "project"}, "name"),
                        ({"scope": "account", "name": "x"}, "account_id")]:
        r = S.req("POST", P + "/storage", body)
        assert r.status == 400 and r.json["error"]["param"] == param, (body, r)
    assert any(x["id"] == d["id"] for x in expect(S.req("GET", P + "/storage"), 200)["data"])


def test_project_storage_persists_across_runs():
    t1, r1 = code('echo hello > "$QUERN_STORAGE_PROJECT/greeting"')
    assert r1["status"] == "completed", logs(t1, r1)
    t2, r2 = code('cat "$QUERN_STORAGE_PROJECT/greeting"')
    assert r2["status"] == "completed" and any("hello" in l for l in logs(t2, r2))
    full = expect(S.req("GET", P + "/tasks/%s/runs/%s?include=storage" % (t1["id"], r1["id"])), 200)
    kinds = {(a["scope"], a["access_type"]) for a in full["storage_access"]}
    assert ("project", "provided") in kinds and ("project", "accessed") in kinds
    sizes = {x["name"]: x["size_bytes"] for x in expect(S.req("GET", P + "/storage"), 200)["data"]
             if x["scope"] == "project"}
    assert sizes.get("default", 0) >= 6


def inotify_instances(pid):
    d = "/proc/%d/fd" % pid
    n = 0
    for fd in os.listdir(d):
        try:
            n += os.readlink(os.path.join(d, fd)) == "anon_inode:inotify"
        except OSError:
            pass    # closed meanwhile
    return n


def test_concurrent_runs_share_one_watch_instance():
    # inotify instances are limited per host user (fs.inotify.max_user_instances,
    # 128 by default) and several quernd may share a host: however many runs
    # watch their storage at once, quernd holds one instance, and each run
    # still records only what it used
    tasks = [expect(S.req("POST", P + "/tasks", {"code": 'sleep 0.3; %s' % (
        'ls "$QUERN_STORAGE_PROJECT" >/dev/null' if i % 2 else 'true')}), 201) for i in range(8)]
    done = [C.wait_status(t, ("completed",)) for t in tasks]
    assert inotify_instances(S.proc.pid) == 1
    for i, r in enumerate(done):
        full = expect(S.req("GET", P + "/tasks/%s/runs/%s?include=storage" % (r["task_id"], r["id"])), 200)
        kinds = {(a["scope"], a["access_type"]) for a in full["storage_access"]}
        assert ("project", "provided") in kinds, full["storage_access"]
        if i % 2:
            assert ("project", "accessed") in kinds, full["storage_access"]


def test_accounts_are_isolated():
    t1, r1 = code('echo secret-a > "$QUERN_STORAGE_ACCOUNT/f"', account_id="acct-a")
    assert r1["status"] == "completed"
    t2, r2 = code('cat "$QUERN_STORAGE_ACCOUNT/f" || echo missing', account_id="acct-b")
    assert not any("secret-a" in l for l in logs(t2, r2)) and any("missing" in l for l in logs(t2, r2))
    # and an explicit instance must match the task's account
    a_inst = [x for x in expect(S.req("GET", P + "/storage?limit=500"), 200)["data"]
              if x["account_id"] == "acct-a"][0]
    r = S.req("POST", P + "/tasks", {"code": "true", "account_id": "acct-b",
                                     "storage": {"account": a_inst["id"]}})
    assert r.status == 400 and r.json["error"]["param"] == "storage"


def test_worker_reports_access():
    inst = expect(S.req("POST", P + "/storage", {"scope": "organization", "name": "shared"}), 201)
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "sto", "run": True}), 201)
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "sto"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    r = S.req("POST", base + "/storage_access", {"instance_id": inst["id"], "scope": "organization",
                                                "access_type": "opened"})
    assert r.status == 200 and r.json["storage_access"][0]["access_type"] == "opened"
    assert S.req("POST", base + "/storage_access", {"instance_id": inst["id"], "scope": "project",
                                                    "access_type": "opened"}).status == 400
    assert S.req("POST", base + "/storage_access", {"instance_id": inst["id"], "scope": "organization",
                                                    "access_type": "peeked"}).status == 400


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
