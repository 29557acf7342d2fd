"""One object, every representation: makes runs in every state the contract
names (and the tasks, events, keys, webhooks, triggers, definitions and
storage instances around them) and compares, field by field, what each route
answers about the same object — the create answer, a GET of one, the lists,
`include=`, the lease and report answers, session_logs, both SSE streams,
webhook bodies, the CLI's --json — with ../../shared/API.md: the same names,
types and values, timestamps in one format, ids with their prefixes, no
internal field, and every real answer valid against /openapi.json's schema
(checked by ajv, draft 2020-12).  Error bodies of every status, the HTTP
layer's 404/405/413/415/429 included, have the documented shape."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from qlib import BUILD, ROOT_KEY, Receiver, Server, expect, run_tests, sse, wait_for  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "..", "openapi")

S = Server(extra_args=[], env={"QUERN_OUTBOUND_ALLOW_PRIVATE": "1", "QUERN_WEBHOOK_RETRY_BASE_MS": "100",
                               "QUERN_LEASE_MS": "60000"})
P = "/api/projects/default"
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
PREFIX = {"task": "task_", "run": "run_", "def": "def_", "key": "key_", "evt": "evt_", "trg": "trg_",
          "whk": "whk_", "art": "art_", "sto": "sto_"}
RUN_STATUSES = {"queued", "running", "paused", "interaction_required", "review_required", "completed",
                "failed", "timed_out", "denied", "canceling", "canceled"}
TASK_STATUSES = RUN_STATUSES | {"pending"}
# the contract's run object (shared/API.md, "Runs")
RUN_FIELDS = ["id", "task_id", "project_id", "definition_id", "attempt", "status", "input", "output",
              "error", "errors", "exit_code", "runtime_id", "agent_id", "worker_id", "branch", "stage",
              "state", "progress", "iterations", "parent_run_id", "execution_name", "tokens_used", "cost",
              "checkpoints_count", "artifacts", "created_at", "queued_at", "started_at", "completed_at",
              "updated_at", "duration_ms", "lease_expires_at"]
TASK_FIELDS = ["id", "name", "description", "type", "code", "runtime_id", "definition_id", "input",
               "metadata", "priority", "settings", "deadline", "dependencies", "parent_id",
               "assigned_agent_id", "assigned_agents", "schedule", "timezone", "output_schema",
               "account_id", "client_id", "storage", "secrets", "secrets_env", "status", "progress",
               "last_run_at", "next_run_at", "run_count", "created_at", "updated_at"]
# what else a run or task may carry, each documented (docs/API.md, RUNTIME.md,
# MULTINODE.md): anything beyond is an internal field leaking
RUN_EXTRA = ["priority", "node_id", "cpu_ms", "peak_memory_kb", "wall_ms", "blocked_by", "interaction",
             "pending_interactions", "storage_access", "logs", "checkpoints", "checkpoint", "retry_of",
             "cancel_message", "interaction_response", "review"]
# of those, the ones on every run whatever its state (null until set)
RUN_ALWAYS = ["priority", "storage_access", "retry_of", "cancel_message", "interaction", "interaction_response",
              "review"]
TASK_EXTRA = ["project_id", "paused", "run", "run_id"]
EVENT_FIELDS = ["id", "type", "created_at", "project_id", "task_id", "run_id", "data"]
# names that must never reach a client: stored hashes, sealed secrets, lease
# fencing tokens, internal counters and row versions
LEAKS = re.compile(r"(^|_)(hash|hashed|sealed|nonce|lease_token|fence|fencing|rowid|version|seq_no|"
                   r"secret_enc|key_hash|password)$")

# every answer seen, for the OpenAPI check: (method, path, status, body)
SEEN = []


def req(method, path, body=None, key=ROOT_KEY, headers=None, raw=None):
    r = S.req(method, path, body, key=key, headers=headers, raw=raw)
    if r.json is not None:
        SEEN.append((method, path.split("?")[0], r.status, r.json))
    return r


def ok(method, path, body=None, status=200, **kw):
    return expect(req(method, path, body, **kw), status)


def walk(obj, where=""):
    """Yields (path, key, value) for every member of every object inside obj."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield where + "." + k, k, v
            yield from walk(v, where + "." + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from walk(v, "%s[%d]" % (where, i))


def check_common(what, obj, allow_secret=False):
    """Timestamps in one format, ids with their prefixes, no internal field."""
    bad = []
    for path, k, v in walk(obj):
        if k.endswith("_at") and v is not None and not (isinstance(v, str) and TS.match(v)):
            if not path.startswith(".data.") and ".input" not in path and ".output" not in path:
                bad.append("%s %s: timestamp %r" % (what, path, v))
        if LEAKS.search(k) and not (allow_secret and k == "secret"):
            bad.append("%s %s: internal field %r" % (what, path, k))
    return bad


def same(what, a, b, ignore=()):
    """Field-by-field: the same names, types and values."""
    bad = []
    for k in sorted(set(a) | set(b)):
        if k in ignore:
            continue
        if k not in a:
            bad.append("%s: %r only in the second" % (what, k))
        elif k not in b:
            bad.append("%s: %r only in the first" % (what, k))
        elif a[k] != b[k] or type(a[k]) is not type(b[k]):
            bad.append("%s: %r differs: %r vs %r" % (what, k, a[k], b[k]))
    return bad


RECV = Receiver()
HOOK = ok("POST", P + "/webhooks", {"url": RECV.url, "events": ["*"]}, 201)


# ---- the objects: a run in every state ----

def agent_task(**kw):
    body = {"name": "shape", "assigned_agent_id": "shape-agent", "input": {"n": 1, "x": 0.5},
            "metadata": {"m": "v"}, "run": True}
    body.update(kw)
    return ok("POST", P + "/tasks", body, 201)


def lease(agent="shape-agent", worker="w1"):
    return ok("POST", P + "/workers/lease", {"worker_id": worker, "agent_id": agent, "max": 1,
                                              "wait_ms": 0})["data"]


def run_path(t, r):
    return P + "/tasks/%s/runs/%s" % (t, r)


def latest_run(t):
    return ok("GET", P + "/tasks/%s/runs" % t)["data"][0]


def wait_run(t, statuses):
    return wait_for(lambda: (lambda r: r if r["status"] in statuses else None)(latest_run(t)),
                    60, "run of %s in %s" % (t, statuses))


STATE = {}      # status -> (task id, run id, [answers that carried the run])


def make_objects():
    if STATE:
        return STATE
    # queued (an agent no worker leases)
    t = agent_task(assigned_agent_id="nobody")
    STATE["queued"] = (t["id"], latest_run(t["id"])["id"], [])
    # running through a worker
    t = agent_task(assigned_agent_id="ag-run")
    got = lease("ag-run")
    r = got[0]
    STATE["running"] = (t["id"], r["id"], [("lease", r)])
    hb = ok("POST", run_path(t["id"], r["id"]) + "/heartbeat", {"progress": 0.25})
    STATE["running"][2].append(("heartbeat", hb))
    # completed with output, through a report
    t = agent_task(assigned_agent_id="ag-done", output_schema={"type": "object"})
    r = lease("ag-done")[0]
    rep = ok("POST", P + "/workers/report", {"results": [{"run_id": r["id"], "attempt": r["attempt"],
                                                            "status": "completed",
                                                            "output": {"ok": True, "v": 0.3},
                                                            "logs": [{"message": "done"}]}]})
    assert rep["data"][0]["ok"], rep
    STATE["completed"] = (t["id"], r["id"], [])
    # failed with an error, through a PATCH
    t = agent_task(assigned_agent_id="ag-fail")
    r = lease("ag-fail")[0]
    pr = ok("PATCH", run_path(t["id"], r["id"]), {"status": "failed", "error_message": "it broke",
                                                   "exit_code": 3})
    STATE["failed"] = (t["id"], r["id"], [("patch", pr)])
    # retried: a new run of the failed task
    rt = req("POST", P + "/tasks/%s/retry" % t["id"])
    assert rt.status in (200, 201), rt
    STATE["retried"] = (t["id"], latest_run(t["id"])["id"], [("retry", rt.json.get("run") or rt.json)])
    # canceled
    t = agent_task(assigned_agent_id="nobody2")
    r = latest_run(t["id"])
    cr = ok("POST", run_path(t["id"], r["id"]) + "/cancel", {"message": "stop"})
    STATE["canceled"] = (t["id"], r["id"], [("cancel", cr)])
    # paused
    t = agent_task(assigned_agent_id="nobody3")
    ok("POST", P + "/tasks/%s/pause" % t["id"])
    STATE["paused"] = (t["id"], latest_run(t["id"])["id"], [])
    # interaction_required (approval), and denied by answering no
    t = agent_task(assigned_agent_id="nobody4", settings={"require_approval": True})
    STATE["interaction_required"] = (t["id"], latest_run(t["id"])["id"], [])
    t = agent_task(assigned_agent_id="nobody5", settings={"require_approval": True})
    r = latest_run(t["id"])
    ir = ok("POST", run_path(t["id"], r["id"]) + "/interaction", {"response": {"approved": False}})
    STATE["denied"] = (t["id"], r["id"], [("interaction", ir)])
    # review_required
    t = agent_task(assigned_agent_id="ag-rev", settings={"require_review": True})
    r = lease("ag-rev")[0]
    pr = ok("PATCH", run_path(t["id"], r["id"]), {"status": "completed", "output": {"a": 1}})
    STATE["review_required"] = (t["id"], r["id"], [("patch", pr)])
    # completed by an approved review
    t = agent_task(assigned_agent_id="ag-rev2", settings={"require_review": True})
    r = lease("ag-rev2")[0]
    ok("PATCH", run_path(t["id"], r["id"]), {"status": "completed", "output": {"a": 2}})
    rv = ok("POST", run_path(t["id"], r["id"]) + "/review", {"decision": "approve", "comment": "fine"})
    STATE["reviewed"] = (t["id"], r["id"], [("review", rv)])
    # code runs: completed with output, failed, timed out
    t = ok("POST", P + "/tasks", {"code": "printf '{\"o\": [1, 2.5]}' > \"$QUERN_OUTPUT\"; echo hello",
                                  "runtime_id": "sh", "wait_for_result": True}, 201)
    assert t["run"]["status"] == "completed", t
    STATE["code_completed"] = (t["id"], t["run"]["id"], [("create.run", t["run"])])
    t = ok("POST", P + "/tasks", {"code": "echo bad >&2; exit 7", "runtime_id": "sh",
                                  "wait_for_result": True}, 201)
    STATE["code_failed"] = (t["id"], t["run"]["id"], [("create.run", t["run"])])
    t = ok("POST", P + "/tasks", {"code": "sleep 30", "runtime_id": "sh", "wait_for_result": True,
                                  "settings": {"timeout_ms": 300, "kill_grace_ms": 100}}, 201)
    STATE["timed_out"] = (t["id"], t["run"]["id"], [("create.run", t["run"])])
    return STATE


# ---- runs ----

def run_views(t, r):
    """Every GET representation of one run: name -> object."""
    v = {}
    v["get"] = ok("GET", run_path(t, r))
    v["get?include=input"] = ok("GET", run_path(t, r) + "?include=input")
    v["get?include=all"] = ok("GET", run_path(t, r) + "?include=input,storage,logs,checkpoints")
    v["task-runs"] = ok("GET", P + "/task-runs/" + r)
    v["task-runs?include=input"] = ok("GET", P + "/task-runs/%s?include=input" % r)
    lst = ok("GET", P + "/tasks/%s/runs" % t)["data"]
    v["list"] = [x for x in lst if x["id"] == r][0]
    plst = ok("GET", P + "/runs?task_id=" + t)["data"]
    v["project list"] = [x for x in plst if x["id"] == r][0]
    return v


def test_run_representations_agree():
    st = make_objects()
    bad = []
    for name, (t, r, answers) in st.items():
        v = run_views(t, r)
        base = v["get?include=input"]
        for f in RUN_FIELDS:
            if f not in base:
                bad.append("%s: run lacks %r" % (name, f))
        if base["status"] not in RUN_STATUSES:
            bad.append("%s: status %r" % (name, base["status"]))
        if not base["id"].startswith("run_") or not base["task_id"].startswith("task_"):
            bad.append("%s: ids %r %r" % (name, base["id"], base["task_id"]))
        for vn, obj in list(v.items()) + [(an, o) for an, o in answers if o is not None]:
            bad += check_common("%s %s" % (name, vn), obj)
            extra = set(obj) - set(RUN_FIELDS) - set(RUN_EXTRA)
            if extra:
                bad.append("%s %s: undocumented fields %s" % (name, vn, sorted(extra)))
            if not isinstance(obj.get("storage_access"), list):
                bad.append("%s %s: storage_access %r" % (name, vn, obj.get("storage_access")))
            for f in RUN_ALWAYS:
                if f not in obj:
                    bad.append("%s %s: lacks %r" % (name, vn, f))
        bad += same("%s get vs get?include=input" % name, v["get"], base, ignore=("input",))
        if "input" in v["get"]:
            bad.append("%s: GET of one run has input without include" % name)
        bad += same("%s task-runs vs get" % name, v["task-runs"], v["get"])
        bad += same("%s task-runs?include=input vs get?include=input" % name, v["task-runs?include=input"],
                    base)
        bad += same("%s list vs get?include=input" % name, v["list"], base)
        bad += same("%s project list vs get?include=input" % name, v["project list"], base)
        full = v["get?include=all"]
        bad += same("%s include=all vs include=input" % name, full, base,
                    ignore=("storage_access", "logs", "checkpoints"))
        for part in ("storage_access", "logs", "checkpoints"):
            if not isinstance(full.get(part), list):
                bad.append("%s: include=all lacks %s: %r" % (name, part, full.get(part)))
        # answers that carried the run when it was made or moved: same names and
        # types (values may have moved on since)
        for an, obj in answers:
            if obj is None:
                bad.append("%s: %s carried no run" % (name, an))
                continue
            bad += check_common("%s %s" % (name, an), obj)
            extra = set(obj) - set(base) - {"checkpoint"}
            missing = set(base) - set(obj)
            if extra or missing:
                bad.append("%s: %s answer fields differ from GET: extra %s missing %s" %
                           (name, an, sorted(extra), sorted(missing)))
    assert not bad, "\n".join(bad)


def test_run_values_follow_the_contract():
    st = make_objects()
    bad = []
    for name, (t, r, _) in st.items():
        run = ok("GET", run_path(t, r) + "?include=input")
        err = run["error"]
        if run["status"] in ("failed", "timed_out", "denied", "canceled") and name != "canceled":
            if not (isinstance(err, dict) and set(err) >= {"type", "code", "message"}):
                bad.append("%s: error %r" % (name, err))
        if err is not None and not isinstance(err, dict):
            bad.append("%s: error is not an object: %r" % (name, err))
        for e in run["errors"]:
            if set(e) != {"type", "code", "message"}:
                bad.append("%s: errors entry %r" % (name, e))
        if run["status"] in ("completed", "failed", "timed_out", "denied", "canceled"):
            if run["completed_at"] is None:
                bad.append("%s: terminal without completed_at" % name)
            if run["lease_expires_at"] is not None:
                bad.append("%s: terminal with lease_expires_at %r" % (name, run["lease_expires_at"]))
        else:
            if run["completed_at"] is not None:
                bad.append("%s: active with completed_at" % name)
        for k in ("attempt", "iterations", "tokens_used", "checkpoints_count"):
            if not isinstance(run[k], int) or isinstance(run[k], bool):
                bad.append("%s: %s %r" % (name, k, run[k]))
        if run["exit_code"] is not None and not isinstance(run["exit_code"], int):
            bad.append("%s: exit_code %r" % (name, run["exit_code"]))
        if run["duration_ms"] is not None and not isinstance(run["duration_ms"], int):
            bad.append("%s: duration_ms %r" % (name, run["duration_ms"]))
        if not isinstance(run["progress"], (int, float)) or not 0 <= run["progress"] <= 1:
            bad.append("%s: progress %r" % (name, run["progress"]))
        task = ok("GET", P + "/tasks/" + t)
        if task["status"] != run["status"] and name != "failed":    # "retried" is its latest
            bad.append("%s: task status %r, its latest run's %r" % (name, task["status"], run["status"]))
    want = {"queued": "queued", "running": "running", "completed": "completed", "failed": "failed",
            "retried": "queued", "canceled": "canceled", "paused": "paused",
            "interaction_required": "interaction_required", "denied": "denied",
            "review_required": "review_required", "reviewed": "completed", "code_completed": "completed",
            "code_failed": "failed", "timed_out": "timed_out"}
    for name, s in want.items():
        got = ok("GET", run_path(st[name][0], st[name][1]))["status"]
        if got != s:
            bad.append("%s: status %r, expected %r" % (name, got, s))
    assert not bad, "\n".join(bad)


# ---- tasks ----

def test_task_representations_agree():
    bad = []
    t = ok("POST", P + "/tasks", {"name": "tshape", "assigned_agent_id": "tnobody", "input": {"a": 1},
                                  "metadata": {"k": "v"}, "priority": "high"}, 201)
    for f in TASK_FIELDS:
        if f not in t:
            bad.append("task create lacks %r" % f)
    got = ok("GET", P + "/tasks/" + t["id"])
    bad += same("task create vs get", t, got, ignore=("run", "updated_at", "status", "run_count",
                                                       "last_run_at"))
    lst = [x for x in ok("GET", P + "/tasks?priority=high")["data"] if x["id"] == t["id"]][0]
    bad += same("task list vs get", lst, got)
    upd = ok("PATCH", P + "/tasks/" + t["id"], {"description": "d"})
    got = ok("GET", P + "/tasks/" + t["id"])
    bad += same("task patch vs get", upd, got)
    for action in ("pause", "resume", "cancel"):
        a = req("POST", P + "/tasks/%s/%s" % (t["id"], action))
        assert a.status == 200, a
        got = ok("GET", P + "/tasks/" + t["id"])
        ans = a.json.get("task", a.json) if isinstance(a.json, dict) else a.json
        bad += same("task %s answer vs get" % action, ans, got, ignore=("updated_at",))
    for vn, obj in (("create", t), ("get", got), ("list", lst)):
        bad += check_common("task " + vn, obj)
        extra = set(obj) - set(TASK_FIELDS) - set(TASK_EXTRA)
        if extra:
            bad.append("task %s: undocumented fields %s" % (vn, sorted(extra)))
        if obj["status"] not in TASK_STATUSES:
            bad.append("task %s status %r" % (vn, obj["status"]))
    # a definition's trigger answers the task with its run
    d = ok("POST", P + "/definitions", {"title": "shape def", "code": "true", "runtime_id": "sh"}, 201)
    tr = ok("POST", P + "/definitions/%s/trigger" % d["id"], {"input": {}}, 201)
    if not isinstance(tr.get("run"), dict):
        bad.append("definition trigger answer lacks run: %r" % sorted(tr))
    extra = set(tr) - set(TASK_FIELDS) - set(TASK_EXTRA)
    if extra:
        bad.append("definition trigger task: undocumented fields %s" % sorted(extra))
    got = ok("GET", P + "/tasks/" + tr["id"])
    bad += same("trigger task vs get", tr, got, ignore=("run", "updated_at", "status", "run_count",
                                                         "last_run_at", "progress"))
    # a batch answers each task as a create does
    b = ok("POST", P + "/tasks/batch", {"tasks": [{"name": "b1", "assigned_agent_id": "bn"}]}, 201)["data"][0]
    one = ok("POST", P + "/tasks", {"name": "b1", "assigned_agent_id": "bn"}, 201)
    if set(b) != set(one):
        bad.append("batch task fields %s vs create %s" % (sorted(set(b) ^ set(one)), ""))
    assert not bad, "\n".join(bad)


# ---- events: session_logs, both streams, webhook bodies ----

def test_event_representations_agree():
    st = make_objects()
    bad = []
    t, r, _ = st["completed"]
    sl = req("GET", run_path(t, r) + "/session_logs")
    assert sl.status == 200, sl
    events = sl.json
    status, streamed = sse(S, run_path(t, r) + "/stream")
    assert status == 200, streamed
    if [e[2] for e in streamed] != events:
        bad.append("run stream vs session_logs: %s vs %s" % ([e[2] for e in streamed][:3], events[:3]))
    for eid, etype, data in streamed:
        if eid != data["id"] or etype != data["type"]:
            bad.append("stream frame id/event %r %r vs data %r %r" % (eid, etype, data["id"], data["type"]))
    last = events[-1]["id"]
    # the project stream from just before this run's first event
    status, proj = sse(S, P + "/events/stream", headers={"Last-Event-ID": "evt_0000000000000000"},
                       stop=lambda e: e[0] == last)
    assert status == 200, proj
    byid = {e[2]["id"]: e[2] for e in proj}
    hooks = {}
    wait_for(lambda: all(e["id"] in {b["id"] for b in RECV.delivered()} for e in events), 30,
             "webhook bodies of the run's events")
    for b in RECV.delivered():
        hooks[b["id"]] = b
    dl = ok("GET", P + "/webhooks/%s/deliveries?limit=500" % HOOK["id"])["data"]
    payloads = {d["event_id"]: d["payload"] for d in dl}
    for e in events:
        for f in EVENT_FIELDS:
            if f not in e:
                bad.append("event %s lacks %r" % (e["type"], f))
        if not e["id"].startswith("evt_"):
            bad.append("event id %r" % e["id"])
        bad += check_common("event " + e["type"], e)
        bad += same("project stream vs session_logs " + e["type"], byid.get(e["id"], {}), e)
        bad += same("webhook body vs session_logs " + e["type"], hooks.get(e["id"], {}), e)
        if e["id"] in payloads:
            bad += same("delivery payload vs session_logs " + e["type"], payloads[e["id"]], e)
    assert not bad, "\n".join(bad)


def test_report_refusals_are_error_objects():
    """A refused result's error is shaped as an error body's error (type, code, message)."""
    agent_task(assigned_agent_id="ag-rep")
    r = lease("ag-rep")[0]
    rep = ok("POST", P + "/workers/report", {"results": [
        {"run_id": "run_nope", "status": "completed"},
        {"run_id": r["id"], "attempt": r["attempt"] + 1, "status": "completed"},
        {"run_id": r["id"], "status": "bogus"},
        {"status": "completed"},
        {"run_id": r["id"], "attempt": r["attempt"], "status": "completed", "output": {"a": 1}}]})["data"]
    want = [("not_found", "not_found"), ("conflict", "stale_attempt"), ("invalid_request", "invalid_result"),
            ("invalid_request", "invalid_result")]
    bad = []
    for res, (typ, code) in zip(rep, want):
        e = res["error"]
        if res["ok"] or not isinstance(e, dict) or e.get("type") != typ or e.get("code") != code or \
                not isinstance(e.get("message"), str):
            bad.append("refused result %r, expected type %s code %s" % (res, typ, code))
    if not (rep[4]["ok"] and rep[4]["error"] is None):
        bad.append("accepted result %r" % rep[4])
    done = ok("POST", P + "/workers/report", {"results": [{"run_id": r["id"], "status": "failed"}]})["data"][0]
    if done["ok"] or (done["error"] or {}).get("type") != "conflict":
        bad.append("report on an ended run %r" % done)
    assert not bad, "\n".join(bad)


# ---- the CLI's --json ----

def test_cli_json_is_the_api_answer():
    st = make_objects()
    t, r, _ = st["completed"]
    env = dict(os.environ, QUERN_URL="http://%s:%d" % (S.host, S.port), QUERN_KEY=ROOT_KEY)
    p = subprocess.run([os.path.join(BUILD, "quern"), "--json", "runs", "get", r], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    bad = same("cli runs get --json vs GET", got, ok("GET", P + "/task-runs/" + r))
    p = subprocess.run([os.path.join(BUILD, "quern"), "--json", "tasks", "get", t], capture_output=True,
                       text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    bad += same("cli tasks get --json vs GET", json.loads(p.stdout), ok("GET", P + "/tasks/" + t))
    assert not bad, "\n".join(bad)


# ---- the other objects ----

def test_keys_webhooks_triggers_definitions_storage():
    bad = []
    k = ok("POST", P + "/api_keys", {"name": "shape key", "scopes": ["task:read"]}, 201)
    if not k["id"].startswith("key_") or not k["key"].startswith("qk_"):
        bad.append("key ids %r" % k)
    lk = [x for x in ok("GET", P + "/api_keys")["data"] if x["id"] == k["id"]][0]
    if "key" in lk and lk["key"] is not None:
        bad.append("key list shows the key")
    bad += same("key create vs list", k, lk, ignore=("key",))
    bad += check_common("key list", lk)
    dk = ok("DELETE", P + "/api_keys/" + k["id"])
    lk = [x for x in ok("GET", P + "/api_keys")["data"] if x["id"] == k["id"]][0]
    bad += same("key revoke vs list", dk, lk)
    w = HOOK
    if not w["id"].startswith("whk_"):
        bad.append("webhook id %r" % w["id"])
    gw = ok("GET", P + "/webhooks/" + w["id"])
    lw = [x for x in ok("GET", P + "/webhooks")["data"] if x["id"] == w["id"]][0]
    bad += same("webhook create vs get", w, gw, ignore=("secret",))
    bad += same("webhook list vs get", lw, gw)
    if "secret" in gw or "secret" in lw:
        bad.append("webhook get/list shows the secret")
    bad += check_common("webhook create", w, allow_secret=True) + check_common("webhook get", gw)
    t = ok("POST", P + "/tasks", {"name": "trg", "assigned_agent_id": "trgn", "run": False}, 201)
    tr = ok("POST", P + "/triggers", {"task_id": t["id"]}, 201)
    if not tr["id"].startswith("trg_"):
        bad.append("trigger id %r" % tr["id"])
    lt = [x for x in ok("GET", P + "/triggers")["data"] if x["id"] == tr["id"]][0]
    bad += same("trigger create vs list", tr, lt, ignore=("secret",))
    if "secret" in lt:
        bad.append("trigger list shows the secret")
    bad += check_common("trigger create", tr, allow_secret=True) + check_common("trigger list", lt)
    d = ok("POST", P + "/definitions", {"title": "d2", "runtime_id": "sh", "code": "true",
                                        "input_schema": {"type": "object"}}, 201)
    if not d["id"].startswith("def_"):
        bad.append("definition id %r" % d["id"])
    for f in ("id", "title", "description", "runtime_id", "code", "input_schema", "output_schema",
              "settings"):
        if f not in d:
            bad.append("definition lacks %r" % f)
    gd = ok("GET", P + "/definitions/" + d["id"])
    ld = [x for x in ok("GET", P + "/definitions")["data"] if x["id"] == d["id"]][0]
    bad += same("definition create vs get", d, gd) + same("definition list vs get", ld, gd)
    pd = ok("PATCH", P + "/definitions/" + d["id"], {"description": "x"})
    gd = ok("GET", P + "/definitions/" + d["id"])
    bad += same("definition patch vs get", pd, gd)
    bad += check_common("definition", gd)
    s = ok("POST", P + "/storage", {"scope": "project", "name": "shape-sto"}, 201)
    if not s["id"].startswith("sto_"):
        bad.append("storage id %r" % s["id"])
    ls = [x for x in ok("GET", P + "/storage")["data"] if x["id"] == s["id"]][0]
    bad += same("storage create vs list", s, ls)
    bad += check_common("storage", ls)
    pr = ok("GET", "/api/projects")["data"]
    for p in pr:
        bad += check_common("project", p)
    pc = ok("POST", "/api/projects", {"name": "shape project"}, 201)
    if not pc["id"].startswith("prj_"):
        bad.append("project id %r" % pc["id"])
    bad += same("project create vs list", pc,
                [x for x in ok("GET", "/api/projects")["data"] if x["id"] == pc["id"]][0])
    assert not bad, "\n".join(bad)


# ---- errors ----

def raw_request(method, path, headers, body=b""):
    c = S.conn()
    c.putrequest(method, path, skip_accept_encoding=True)
    for k, v in headers.items():
        c.putheader(k, v)
    c.endheaders()
    if body:
        try:
            c.send(body)
        except OSError:
            pass
    r = c.getresponse()
    text = r.read().decode(errors="replace")
    c.close()
    return r.status, r.getheader("Content-Type"), text


def error_shape(what, status, ctype, text, want_type):
    bad = []
    try:
        js = json.loads(text)
    except ValueError:
        return ["%s: %d not JSON: %r (%s)" % (what, status, text[:200], ctype)]
    if not (ctype or "").startswith("application/json"):
        bad.append("%s: Content-Type %r" % (what, ctype))
    e = js.get("error") if isinstance(js, dict) else None
    if not isinstance(e, dict) or set(js) != {"error"}:
        return bad + ["%s: body %r" % (what, js)]
    if e.get("type") != want_type:
        bad.append("%s: type %r, expected %r" % (what, e.get("type"), want_type))
    for f in ("code", "message"):
        if not isinstance(e.get(f), str) or not e.get(f):
            bad.append("%s: %s %r" % (what, f, e.get(f)))
    if "param" in e and not isinstance(e["param"], str):
        bad.append("%s: param %r" % (what, e["param"]))
    if set(e) - {"type", "code", "message", "param"}:
        bad.append("%s: extra members %s" % (what, sorted(set(e) - {"type", "code", "message", "param"})))
    return bad


def test_error_bodies_have_the_documented_shape():
    bad = []
    auth = {"Authorization": "Bearer " + ROOT_KEY}
    ro = ok("POST", P + "/api_keys", {"name": "ro", "scopes": ["task:read"]}, 201)["key"]
    cases = [
        ("404 route", "GET", "/nope", auth, b"", 404, "not_found"),
        ("404 api route", "GET", P + "/nope", auth, b"", 404, "not_found"),
        ("404 object", "GET", P + "/tasks/task_nope", auth, b"", 404, "not_found"),
        ("404 project", "GET", "/api/projects/nope/tasks", auth, b"", 404, "not_found"),
        ("405", "PUT", P + "/tasks", auth, b"", 405, "invalid_request"),
        ("405 public", "POST", "/healthz", {}, b"", 405, "invalid_request"),
        ("401 none", "GET", P + "/tasks", {}, b"", 401, "unauthorized"),
        ("401 bad", "GET", P + "/tasks", {"Authorization": "Bearer qk_nope"}, b"", 401, "unauthorized"),
        ("403", "POST", P + "/tasks", {"Authorization": "Bearer " + ro, "Content-Type": "application/json"},
         b"{}", 403, "forbidden"),
        ("400 json", "POST", P + "/tasks", dict(auth, **{"Content-Type": "application/json"}), b"{",
         400, "invalid_request"),
        # no 415: a JSON body is read as JSON whatever its Content-Type says
        # (docs/API.md, "Content-Type"), and one that is not JSON is 400
        ("text/plain JSON", "POST", P + "/tasks", dict(auth, **{"Content-Type": "text/plain"}), b"{}",
         400, "invalid_request"),
        ("form body", "POST", P + "/tasks",
         dict(auth, **{"Content-Type": "application/x-www-form-urlencoded"}), b"name=x", 400,
         "invalid_request"),
        ("409", "POST", P + "/tasks/%s/retry" % make_objects()["completed"][0],
         dict(auth, **{"Content-Type": "application/json"}), b"{}", 409, "conflict"),
        ("413", "POST", P + "/tasks", dict(auth, **{"Content-Type": "application/json",
                                                     "Content-Length": str(17 << 20),
                                                     "Expect": "100-continue"}), b"", 413,
         "payload_too_large"),
    ]
    for what, m, path, h, body, status, typ in cases:
        if body and "Content-Length" not in h:
            h = dict(h, **{"Content-Length": str(len(body))})
        st, ct, text = raw_request(m, path, h, body)
        if st != status:
            bad.append("%s: status %d, expected %d: %s" % (what, st, status, text[:200]))
            continue
        bad += error_shape(what, st, ct, text, typ)
        try:
            SEEN.append((m, path, st, json.loads(text)))
        except ValueError:
            pass
    # 429 from a rate-limited server
    s2 = Server(env={"QUERN_RATE_LIMIT": "1", "QUERN_RATE_BURST": "1"})
    try:
        for _ in range(5):
            r = s2.req("GET", P + "/tasks")
            if r.status == 429:
                break
        if r.status != 429:
            bad.append("429: never limited")
        else:
            bad += error_shape("429", r.status, r.header("Content-Type"), r.text, "rate_limited")
    finally:
        s2.stop()
    assert not bad, "\n".join(bad)


# ---- OpenAPI: every real answer against the document's schema ----

def doc_path(doc, path):
    best = None
    for tmpl in doc["paths"]:
        rx = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(tmpl)) + "$"
        if re.match(rx, path):
            lit = len(re.sub(r"\{[^}]+\}", "", tmpl))
            if best is None or lit > best[0]:
                best = (lit, tmpl)
    return best and best[1]


def test_zz_real_answers_match_the_openapi_document():
    make_objects()
    doc = expect(S.req("GET", "/openapi.json", key=None), 200)
    cases = []
    for m, path, st, body in SEEN:
        dp = doc_path(doc, path)
        if dp is None:
            continue
        cases.append({"method": m, "path": dp, "status": st, "body": body})
    # a few answers no other test here has read
    for st in ("queued", "completed"):
        t, r, _ = make_objects()[st]
        for path in (run_path(t, r), run_path(t, r) + "?include=input,storage,logs,checkpoints",
                     P + "/tasks/%s/runs" % t, P + "/runs", P + "/task-runs/" + r, P + "/tasks/" + t,
                     P + "/tasks", P + "/definitions", "/api/projects", P + "/api_keys", P + "/storage",
                     run_path(t, r) + "/session_logs"):
            resp = S.req("GET", path)
            cases.append({"method": "GET", "path": doc_path(doc, path.split("?")[0]), "status": resp.status,
                          "body": resp.json})
    if not os.path.isdir(os.path.join(CHECKER, "node_modules", "ajv")):
        subprocess.run(["npm", "ci", "--prefix", CHECKER, "--no-audit", "--no-fund"], check=True,
                       capture_output=True)
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "doc.json"), "w") as f:
            json.dump(doc, f)
        with open(os.path.join(d, "cases.json"), "w") as f:
            json.dump(cases, f)
        p = subprocess.run([shutil.which("node") or "node", os.path.join(CHECKER, "validate_responses.mjs"),
                            os.path.join(d, "doc.json"), os.path.join(d, "cases.json")],
                           capture_output=True, text=True, timeout=120)
    lines = sorted(set(p.stdout.splitlines()))
    assert p.returncode == 0 and not lines, "\n".join(lines) + p.stderr


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
