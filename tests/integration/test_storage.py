"""Storage instances: create/list with validation, default instances
created on first use, data persisting across runs at project scope, an
account's instance not given to another account, and worker-reported
accesses (RUNTIME.md storage scopes)."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import CodeTasks, Server, expect, run_tests, wait_for  # noqa: E402

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
    # the account_id rule's code names the problem (it was "invalid_request", the type)
    for body, code in [({"scope": "account", "name": "x"}, "missing_field"),
                       ({"scope": "project", "name": "x", "account_id": "a"}, "conflicting_fields")]:
        r = S.req("POST", P + "/storage", body)
        assert r.status == 400 and r.json["error"]["code"] == code, (body, r)
    assert any(x["id"] == d["id"] for x in expect(S.req("GET", P + "/storage"), 200)["data"])


def test_one_name_sent_at_once_on_one_node_is_made_once():
    """One node's writes are serialised (SQLite: one writer; PostgreSQL: one
    writer connection per node), so the name check and the insert of
    concurrent creates never interleave: one 201, the others 409."""
    import threading
    got, mu = [], threading.Lock()
    go = threading.Barrier(8)

    def create():
        go.wait()
        r = S.req("POST", P + "/storage", {"scope": "project", "name": "at-once"})
        with mu:
            got.append((r.status, (r.json or {}).get("error", {}).get("code")))

    ths = [threading.Thread(target=create) for _ in range(8)]
    [t.start() for t in ths]
    [t.join() for t in ths]
    assert sorted(got) == [(201, None)] + [(409, "already_exists")] * 7, got
    listed = expect(S.req("GET", P + "/storage?limit=500"), 200)["data"]
    assert len([x for x in listed if x["name"] == "at-once"]) == 1, listed


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


def test_size_of_a_huge_instance_is_a_bounded_walk():
    # the listing walks each instance on the HTTP thread: 300 000 files took
    # 2 s a listing; the walk now stops after 100 000 entries and says so
    big = expect(S.req("POST", P + "/storage", {"scope": "project", "name": "huge"}), 201)
    t, r = code('cd "$QUERN_STORAGE_PROJECT" && mkdir d && cd d && '
                'seq 1 100100 | xargs touch && echo made', storage={"project": big["id"]},
                settings={"timeout_ms": 120000})
    assert r["status"] == "completed", logs(t, r)
    listed = {x["id"]: x for x in expect(S.req("GET", P + "/storage"), 200)["data"]}
    assert listed[big["id"]].get("size_bytes_partial") is True, listed[big["id"]]
    assert all("size_bytes_partial" not in x for k, x in listed.items() if k != big["id"]), listed


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



def watch_masks(pid):
    """quernd's inotify watches, as {directory inode: event mask} (its fdinfo)."""
    out = {}
    d = "/proc/%d/fd" % pid
    for fd in os.listdir(d):
        try:
            if os.readlink(os.path.join(d, fd)) != "anon_inode:inotify":
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, fd)) as f:
                for line in f:
                    if line.startswith("inotify "):
                        kv = dict(x.split(":", 1) for x in line.split()[1:])
                        out[int(kv["ino"], 16)] = int(kv["mask"], 16)
        except OSError:
            pass    # closed meanwhile
    return out


def test_a_storage_read_loop_neither_floods_quernd_nor_marks_other_projects():
    # A box that reads a file at the top of its storage in a loop made an
    # inotify event per read: quernd spent a CPU reading them, and a few such
    # boxes overflowed the queue every run shares, which counts as every use
    # of every run: a run of another project that never touched its storage
    # was recorded as having opened and accessed it.  Once every run holding
    # a watch has seen both kinds of use, the watch asks for nothing more.
    expect(S.req("POST", "/api/projects", {"name": "flood-b", "id": "flood-b"}), 201)
    flood = expect(S.req("POST", P + "/tasks", {"settings": {"timeout_ms": 120000}, "code": r"""
cd "$QUERN_STORAGE_PROJECT" && echo x > a && echo y > b
python3 -c '
import os, time
fa, fb = os.open("a", os.O_RDONLY), os.open("b", os.O_RDONLY)
os.pread(fa, 1, 0)
print("reading", flush=True)
end = time.monotonic() + 100
while time.monotonic() < end:
    for i in range(10000):
        os.pread(fa, 1, 0)
        os.pread(fb, 1, 0)
'"""}), 201)
    run = C.wait_status(flood, ("running",))
    wait_for(lambda: any("reading" in l for l in logs(flood, run)), 60, "the loop started")
    inst = [x for x in expect(S.req("GET", P + "/storage?limit=500"), 200)["data"]
            if x["scope"] == "project" and x["name"] == "default"][0]
    ino = os.stat(os.path.join(S.data, "storage", "default", inst["id"])).st_ino
    IN_DELETE_SELF = 0x400
    wait_for(lambda: watch_masks(S.proc.pid).get(ino) == IN_DELETE_SELF, 30,
             "the watch of the storage being read to ask for nothing more")
    quiet = expect(S.req("POST", "/api/projects/flood-b/tasks",
                         {"code": "sleep 1", "wait_for_result": True}), 201)["run"]
    full = expect(S.req("GET", "/api/projects/flood-b/task-runs/%s?include=storage" % quiet["id"]), 200)
    assert quiet["status"] == "completed", quiet
    assert {a["access_type"] for a in full["storage_access"]} == {"provided"}, full["storage_access"]
    expect(S.req("POST", P + "/tasks/%s/runs/%s/cancel" % (flood["id"], run["id"])), 200)
    C.wait_status(flood, ("canceled",))

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


def test_worker_access_follows_the_storage_rules():
    # a worker's report was checked for project and scope only: a run of
    # account B (or of no account) recorded account A's instance, and a run
    # that had ended took new entries
    a_inst = expect(S.req("POST", P + "/storage", {"scope": "account", "name": "wa",
                                                   "account_id": "acct-wa"}), 201)
    b_inst = expect(S.req("POST", P + "/storage", {"scope": "account", "name": "wb",
                                                   "account_id": "acct-wb"}), 201)
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "sto-b", "run": True,
                                            "account_id": "acct-wb"}), 201)
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "sto-b"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    r = S.req("POST", base + "/storage_access", {"instance_id": a_inst["id"], "scope": "account",
                                                "access_type": "accessed"})
    assert r.status == 400 and r.json["error"]["code"] == "unknown_storage", r
    assert r.json["error"]["param"] == "instance_id", r
    expect(S.req("POST", base + "/storage_access", {"instance_id": b_inst["id"], "scope": "account",
                                                   "access_type": "accessed"}), 200)
    t2 = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "sto-none", "run": True}), 201)
    run2 = expect(S.req("POST", P + "/workers/lease", {"agent_id": "sto-none"}), 200)["data"][0]
    base2 = P + "/tasks/%s/runs/%s" % (t2["id"], run2["id"])
    r = S.req("POST", base2 + "/storage_access", {"instance_id": b_inst["id"], "scope": "account",
                                                 "access_type": "opened"})
    assert r.status == 400 and r.json["error"]["code"] == "unknown_storage", r
    full = expect(S.req("GET", base + "?include=storage"), 200)
    assert [a["instance_id"] for a in full["storage_access"]] == [b_inst["id"]], full["storage_access"]
    expect(S.req("POST", base + "/cancel", {}), 200)
    C.wait_status(t, ("canceled",))
    r = S.req("POST", base + "/storage_access", {"instance_id": b_inst["id"], "scope": "account",
                                                "access_type": "opened"})
    assert r.status == 409 and r.json["error"]["code"] == "run_finished", r
    full = expect(S.req("GET", base + "?include=storage"), 200)
    assert len(full["storage_access"]) == 1, full["storage_access"]


def test_an_empty_account_id_is_refused():
    # "" was an account of its own: every task sending it shared one account's files
    r = S.req("POST", P + "/tasks", {"assigned_agent_id": "acc", "account_id": ""})
    assert r.status == 400 and r.json["error"]["param"] == "account_id", r.json
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"assigned_agent_id": "acc", "account_id": ""}]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[0].account_id", r.json
    r = S.req("POST", P + "/storage", {"scope": "account", "name": "x", "account_id": ""})
    assert r.status == 400 and r.json["error"]["param"] == "account_id", r.json


def test_a_listing_walks_its_instances_within_one_budget():
    # each walk stops after 100 000 entries, and a page's walks together
    # after 200 000: a page of 500 large instances walked 50 million entries
    # on the HTTP thread
    expect(S.req("POST", "/api/projects", {"id": "stobudget", "name": "stobudget"}), 201)
    Q = "/api/projects/stobudget"
    small = expect(S.req("POST", Q + "/storage", {"scope": "project", "name": "small"}), 201)
    for name in ("big-a", "big-b"):
        big = expect(S.req("POST", Q + "/storage", {"scope": "project", "name": name}), 201)
        t = expect(S.req("POST", Q + "/tasks", {
            "code": 'cd "$QUERN_STORAGE_PROJECT" && mkdir d && cd d && seq 1 100100 | xargs touch',
            "storage": {"project": big["id"]}, "wait_for_result": True,
            "settings": {"timeout_ms": 120000}}), 201)
        assert t["run"]["status"] == "completed", t["run"]
    listed = [x for x in expect(S.req("GET", Q + "/storage"), 200)["data"] if x["scope"] == "project"]
    assert [x["name"] for x in listed] == ["big-b", "big-a", "small"], listed
    if os.environ.get("QUERN_TEST_STORE") == "pg":
        # the store keeps the sizes (docs/MULTINODE.md): nothing is walked; an
        # instance past the write-back limits is marked, the small one is exact
        assert [x.get("size_bytes_partial") for x in listed] == [True, True, None], listed
    else:
        assert all(x.get("size_bytes_partial") is True for x in listed), listed
    assert listed[2]["id"] == small["id"] and listed[2]["size_bytes"] == 0, listed
    # alone on its page, the small one is walked whole
    one = expect(S.req("GET", Q + "/storage?offset=3"), 200)["data"]
    assert one[0]["id"] == small["id"] and "size_bytes_partial" not in one[0], one


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
