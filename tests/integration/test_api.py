"""Black-box tests of the foundation API against a real quernd."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import ROOT_KEY, Server, expect, run_tests, sse, wait_for  # noqa: E402

S = Server()
P = "/api/projects/default"


def new_key(scopes, project="default"):
    return expect(S.req("POST", "/api/projects/%s/api_keys" % project,
                        {"name": "k", "scopes": scopes}), 201)["key"]


def agent_task(**kw):
    body = {"name": "t", "assigned_agent_id": "ag", "run": True}
    body.update(kw)
    return expect(S.req("POST", P + "/tasks", body), 201)


def test_health_and_ops():
    assert expect(S.req("GET", "/healthz", key=None), 200)["status"] == "ok"
    assert expect(S.req("GET", "/readyz", key=None), 200)["status"] == "ready"
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "metrics", "run": True}), 201)
    expect(S.req("POST", P + "/workers/lease", {"agent_id": "metrics"}), 200)
    m = S.req("GET", "/metrics", key=None)
    assert m.status == 200 and "quern_queue_depth" in m.text
    lines = dict(l.rsplit(" ", 1) for l in m.text.splitlines() if l and not l.startswith("#"))
    assert int(lines['quern_runs{status="running"}']) >= 1
    assert int(lines["quern_dispatch_latency_ms_count"]) >= 1
    assert any(k.startswith("quern_http_requests_total{") for k in lines)
    assert "quern_schedules" in lines and "quern_http_connections" in lines
    # the executor's: a code run counts as a warm or a cold start
    started = lambda ls: sum(int(ls['quern_code_runs_started_total{start="%s"}' % k])
                             for k in ("warm", "cold"))
    before = started(lines)
    done = expect(S.req("POST", P + "/tasks", {"code": "true", "runtime_id": "sh",
                                                "wait_for_result": True}), 201)
    assert done["run"]["status"] == "completed", done
    m = S.req("GET", "/metrics", key=None)
    lines = dict(l.rsplit(" ", 1) for l in m.text.splitlines() if l and not l.startswith("#"))
    assert started(lines) == before + 1, m.text
    assert int(lines["quern_exec_slots"]) >= 1 and int(lines["quern_warm_boxes_ready"]) >= 0
    del t
    doc = expect(S.req("GET", "/openapi.json", key=None), 200)
    assert doc["openapi"].startswith("3.1")
    assert "/api/projects/{project_id}/tasks" in doc["paths"]


def prometheus(text):
    """A strict reading of the Prometheus text format (0.0.4): HELP/TYPE
    once per family and before its samples, families not split, label
    values escaped, no duplicate series, no NaN, histogram buckets sorted,
    cumulative, ending in +Inf that equals _count, with _sum.  Returns
    {(name, ((label, value), ...)): float}."""
    import math
    import re
    name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
    sample = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)$" % name_re)
    label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)')
    assert text.endswith("\n"), text[-50:]
    types, series, done, cur = {}, {}, set(), None
    for line in text.split("\n")[:-1]:
        if line.startswith("#"):
            m = re.match(r"^# (HELP|TYPE) (%s) (.+)$" % name_re, line)
            assert m, line
            kind, fam, rest = m.groups()
            if kind == "TYPE":
                assert fam not in types and rest in ("counter", "gauge", "histogram", "summary",
                                                     "untyped"), line
                types[fam] = rest
        else:
            m = sample.match(line)
            assert m, line
            name, labels, value = m.groups()
            fam = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
                    fam = name[:-len(suffix)]
            pairs, pos = [], 0
            while labels and pos < len(labels):
                lm = label.match(labels, pos)
                assert lm, line
                pairs.append(lm.groups())
                pos = lm.end()
            assert len({k for k, _ in pairs}) == len(pairs), line
            assert re.match(r"^([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]Inf)$", value), line
            key = (name, tuple(sorted(pairs)))
            assert key not in series, "duplicate " + line
            series[key] = float(value.replace("Inf", "inf"))
        if fam != cur:
            assert fam not in done, "family %s split" % fam
            done.add(fam)
            cur = fam
    for fam in (f for f, t in types.items() if t == "histogram"):
        buckets = [(float(dict(l)["le"].replace("Inf", "inf")), v) for (n, l), v in series.items()
                   if n == fam + "_bucket"]
        assert buckets == sorted(buckets) and buckets[-1][0] == math.inf, buckets
        assert series[(fam + "_count", ())] == buckets[-1][1] and (fam + "_sum", ()) in series
    return series


def test_metrics_format_and_numbers():
    """/metrics after a known workload: strictly valid exposition text, and
    runs by status equal to the API's list totals, queue depth by priority,
    requests by route and code as sent; quern_store_up 1."""
    s = Server()
    try:
        for pr in ("urgent", "high", "medium", "low", "low", "medium"):
            expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "mx", "run": True, "priority": pr}), 201)
        runs = expect(s.req("POST", P + "/workers/lease", {"agent_id": "mx", "max": 3}), 200)["data"]
        assert len(runs) == 3, runs
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": runs[0]["id"], "attempt": runs[0]["attempt"], "status": "completed"},
            {"run_id": runs[1]["id"], "attempt": runs[1]["attempt"], "status": "failed",
             "error": {"message": "no"}}]}), 200)
        expect(s.req("GET", P + "/tasks/task_none"), 404)

        def http_of(series, route, method, code):
            return series.get(("quern_http_requests_total",
                               (("code", code), ("method", method), ("route", route))))

        def scrape():
            # a request is counted once its answer is sent: a client may ask
            # /metrics before the last one is (an ASan run under load did)
            m = s.req("GET", "/metrics", key=None)
            assert m.status == 200 and m.header("Content-Type").startswith("text/plain; version=0.0.4")
            series = prometheus(m.text)
            return series if http_of(series, "/api/projects/:project_id/tasks/:task_id", "GET",
                                     "404") else None
        series = wait_for(scrape, 30, "the last request counted")
        assert series[("quern_store_up", ())] == 1
        for st in ("queued", "running", "completed", "failed", "canceled"):
            total = expect(s.req("GET", P + "/runs?status=%s&limit=1" % st), 200)["total"]
            assert series[("quern_runs", (("status", st),))] == total, (st, total)
        depth = {dict(l)["priority"]: v for (n, l), v in series.items() if n == "quern_queue_depth"}
        assert depth == {"urgent": 0, "high": 0, "medium": 1, "low": 2}, depth

        def http(route, method, code):
            return http_of(series, route, method, code)
        assert http("/api/projects/:project_id/tasks", "POST", "201") == 6
        assert http("/api/projects/:project_id/workers/lease", "POST", "200") == 1
        assert http("/api/projects/:project_id/tasks/:task_id", "GET", "404") == 1
        assert series[("quern_dispatch_latency_ms_count", ())] == 3
    finally:
        s.stop()


def test_head_and_405_allow():
    # HEAD (a load balancer's health check, curl -I) was 405 everywhere, and
    # a 405 had no Allow header (RFC 9110 requires one)
    for path, key in (("/healthz", None), ("/metrics", None), (P + "/tasks", ROOT_KEY)):
        get, head = S.req("GET", path, key=key), S.req("HEAD", path, key=key)
        assert head.status == 200 and head.text == "", (path, head)
        assert head.header("Content-Type") == get.header("Content-Type"), path
    assert S.req("HEAD", P + "/tasks", key=None).status == 401
    t = agent_task()
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    for suffix in ("/stream", "/logs"):   # streamed answers end at once too
        r = S.req("HEAD", P + "/tasks/%s/runs/%s%s" % (t["id"], run["id"], suffix))
        assert r.status == 200 and r.text == "", (suffix, r)
    r = S.req("DELETE", "/healthz")
    assert r.status == 405 and r.header("Allow") == "GET, HEAD", r
    r = S.req("PUT", P + "/tasks/" + t["id"])
    assert r.status == 405 and r.json["error"]["type"] == "invalid_request", r
    assert set(r.header("Allow").split(", ")) == {"GET", "HEAD", "PATCH", "DELETE"}, r.header("Allow")


def test_routes_by_their_segments():
    # route_find skips routes whose number of segments differs from the
    # url's (a trailing '/' tolerated): the answers stay those of a full scan
    t = agent_task()
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    for path in (P + "/tasks/", P + "/tasks/" + t["id"], P + "/tasks/%s/" % t["id"],
                 P + "/tasks/%s/runs/%s/" % (t["id"], run["id"]), P + "/runs/", "/api/projects/"):
        assert S.req("GET", path).status == 200, path
    assert S.req("GET", "/healthz/", key=None).status == 200
    lease = S.req("POST", P + "/workers/lease/", {"agent_id": "nobody", "wait_ms": 0})
    assert lease.status == 200, lease
    for path in (P + "/tasks//runs", P + "/tasks/%s/runs/%s/x/y" % (t["id"], run["id"]),
                 P + "/tasks/%s//" % t["id"], "/healthz//", P):
        r = S.req("GET", path)
        assert r.status == 404 and r.json["error"]["code"] == "route_not_found", (path, r)
    r = S.req("DELETE", P + "/workers/lease/")
    assert r.status == 405 and r.header("Allow") == "POST", r


def test_default_settings_in_their_order():
    # a task that gives no settings gets the defaults (built field by field
    # since json_pack was dropped from the create path): values and order
    t = agent_task()
    want = [("max_retries", 0), ("timeout_ms", 30000), ("retry_delay_ms", 1000),
            ("retry_backoff", "fixed"), ("inactivity_timeout_ms", 1800000),
            ("kill_grace_ms", 5000), ("require_review", False), ("require_approval", False),
            ("enable_memory", False), ("max_iterations", 500), ("memory_limit_mb", 256),
            ("max_output_bytes", 10485760), ("network", False), ("concurrency_key", None),
            ("max_concurrency", None)]
    for doc in (t, expect(S.req("GET", P + "/tasks/" + t["id"]), 200)):
        assert list(doc["settings"].items()) == want, doc["settings"]
    # given settings replace the defaults in place
    t = agent_task(settings={"max_retries": 2, "concurrency_key": "k"})
    got = list(t["settings"].items())
    assert [k for k, _ in got] == [k for k, _ in want], got
    assert t["settings"]["max_retries"] == 2 and t["settings"]["concurrency_key"] == "k", got


def test_a_nul_in_a_path_or_query_is_refused():
    # %00 decoded into the path ended the C string there: task_x%00junk read task_x
    t = agent_task()
    assert S.req("GET", P + "/tasks/" + t["id"]).status == 200
    r = S.req("GET", P + "/tasks/%s%%00junk" % t["id"])
    assert r.status == 404 and r.json["error"]["code"], r
    assert S.req("DELETE", P + "/tasks/%s%%00" % t["id"]).status == 404
    assert S.req("GET", P + "/tasks/" + t["id"]).status == 200   # not deleted
    r = S.req("GET", P + "/tasks?limit=5%00")
    assert r.status == 400 and r.json["error"]["param"] == "limit", r
    assert "NUL" in r.json["error"]["message"], r


def test_an_encoded_slash_in_a_path_is_not_a_separator():
    # libmicrohttpd decoded %2F before routing: default%2Ftasks listed the
    # tasks and an id ending in %2Fcancel canceled the task
    t = agent_task()
    for method, path in (("GET", P + "%2Ftasks"), ("GET", P + "%2ftasks"),
                         ("POST", P + "/tasks/%s%%2Fcancel" % t["id"]),
                         ("GET", P + "/tasks/%s%%2Fruns" % t["id"])):
        r = S.req(method, path)
        assert r.status == 404 and r.json["error"]["code"] == "route_not_found", (path, r)
        assert "%2F" in r.json["error"]["message"], r
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["status"] != "canceled"
    # other escapes in a path id still decode (a space, non-ASCII): no such task
    for enc in ("task%20x", "t%C3%A9", "a%FEb"):
        r = S.req("GET", P + "/tasks/" + enc)
        assert r.status == 404 and r.json["error"]["code"] == "resource_missing", (enc, r)
    # and %2F in a query value is data as before
    assert S.req("GET", P + "/tasks?metadata.x=a%2Fb").status == 200


def test_too_many_query_parameters_are_answered():
    # some 250 parameters filled libmicrohttpd's per-connection pool and it
    # closed the connection with no answer
    q = "&".join("a%d=1" % i for i in range(500))
    r = S.req("GET", P + "/tasks?" + q)
    assert r.status == 414 and r.json["error"]["code"] == "too_many_parameters", r
    assert r.json["error"]["type"] == "invalid_request", r
    q = "&".join("a%d=1" % i for i in range(128))
    assert S.req("GET", P + "/tasks?" + q).status == 200


def test_reals_come_back_as_sent():
    # jansson wrote 17 digits: 0.3 came back as 0.29999999999999999
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "reals", "run": True,
                                             "metadata": {"x": 0.3}, "input": {"price": 9.99}}), 201)
    got = S.req("GET", P + "/tasks/" + t["id"])
    assert '"x":0.3' in got.text and '"price":9.99' in got.text, got.text
    found = expect(S.req("GET", P + "/tasks?metadata.x=0.3"), 200)["data"]
    assert [x["id"] for x in found] == [t["id"]], found
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "reals"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("POST", base + "/heartbeat", {"progress": 0.3}), 200)
    expect(S.req("PATCH", base, {"status": "completed", "output": {"v": 0.1, "w": 0.1 + 0.2}}), 200)
    got = S.req("GET", base)
    assert '"progress":0.3' in got.text or '"progress":1.0' in got.text, got.text
    assert '"v":0.1,' in got.text and '"w":0.30000000000000004' in got.text, got.text
    assert got.json["output"] == {"v": 0.1, "w": 0.1 + 0.2}
    ev = S.req("GET", base + "/session_logs?event_types=task_run.progress")
    assert '"progress":0.3' in ev.text, ev.text


def test_client_ids():
    # "a client may also give its own id on create"
    k = expect(S.req("POST", P + "/api_keys", {"id": "ci-key", "scopes": ["task:read"]}), 201)
    assert k["id"] == "ci-key" and k["key"].startswith("qk_")
    assert S.req("POST", P + "/api_keys", {"id": "ci-key", "scopes": ["task:read"]}).status == 409
    w = expect(S.req("POST", P + "/webhooks", {"id": "ci-hook", "url": "https://example.com/h"}), 201)
    assert w["id"] == "ci-hook"
    assert expect(S.req("GET", P + "/webhooks/ci-hook"), 200)["url"] == "https://example.com/h"
    assert S.req("POST", P + "/webhooks", {"id": "ci-hook", "url": "https://example.com/x"}).status == 409
    expect(S.req("DELETE", P + "/webhooks/ci-hook"), 200)
    for bad in (".", "..", "a/b", "x" * 65):
        r = S.req("POST", P + "/definitions", {"id": bad, "title": "t"})
        assert r.status == 400 and r.json["error"]["code"] in ("invalid_id", "too_long"), (bad, r)
    t = agent_task()
    for path, body in ((P + "/triggers", {"id": "mine", "task_id": t["id"]}),
                       (P + "/tasks/%s/runs" % t["id"], {"id": "mine"}),
                       (P + "/tasks/%s/run" % t["id"], {"id": "mine"}),
                       (P + "/storage", {"id": "mine", "scope": "project", "name": "n"})):
        r = S.req("POST", path, body)
        assert r.status == 400 and r.json["error"]["code"] == "id_not_accepted", (path, r)
        assert r.json["error"]["param"] == "id"


def test_long_client_ids_are_kept_whole():
    # ids of up to 64 bytes were cut to 47 where they were copied: a project's
    # key then belonged to the project named by the first 47 bytes
    long_id = "p" * 60
    expect(S.req("POST", "/api/projects", {"id": long_id, "name": "long"}), 201)
    expect(S.req("POST", "/api/projects", {"id": long_id[:47], "name": "short"}), 201)
    key = expect(S.req("POST", "/api/projects/%s/api_keys" % long_id, {"scopes": ["admin"]}), 201)["key"]
    assert expect(S.req("GET", "/api/projects/%s/tasks" % long_id, key=key), 200)["data"] == []
    assert S.req("GET", "/api/projects/%s/tasks" % long_id[:47], key=key).status == 404
    tid = "t" * 64
    t = expect(S.req("POST", "/api/projects/%s/tasks" % long_id, {"id": tid, "assigned_agent_id": "a"},
                     key=key), 201)
    assert t["id"] == tid
    assert expect(S.req("GET", "/api/projects/%s/tasks/%s" % (long_id, tid), key=key), 200)["id"] == tid


def test_auth_errors():
    r = S.req("GET", P + "/tasks", key=None)
    assert r.status == 401 and r.json["error"]["type"] == "unauthorized"
    assert S.req("GET", P + "/tasks", key="qk_nope").status == 401
    ro = new_key(["task:read"])
    assert S.req("GET", P + "/tasks", key=ro).status == 200
    r = S.req("POST", P + "/tasks", {"code": "true"}, key=ro)
    assert r.status == 403 and r.json["error"]["type"] == "forbidden"
    assert S.req("POST", "/api/projects", {"name": "x"}, key=ro).status == 403


# Every route of the API with a body it would take: (method, path, body,
# scopes that may use it).  {p} is the project, {t} {r} {d} {key} {whk} {trg}
# {sto} objects of it (docs/API.md "Scopes imply": task:write includes
# task:read, admin every scope, a worker key also reads runs).
MATRIX_ROUTES = [
    ("GET", "/api_keys", None, "A"),
    ("POST", "/api_keys", {"name": "x", "scopes": ["task:read"]}, "A"),
    ("DELETE", "/api_keys/{key}", None, "A"),
    ("GET", "/definitions", None, "R"),
    ("POST", "/definitions", {"title": "x", "code": "true"}, "W"),
    ("GET", "/definitions/{d}", None, "R"),
    ("PATCH", "/definitions/{d}", {"title": "y"}, "W"),
    ("POST", "/definitions/{d}/trigger", {"input": {}}, "W"),
    ("DELETE", "/definitions/{d}", None, "W"),
    ("GET", "/tasks", None, "R"),
    ("POST", "/tasks", {"name": "x", "code": "true", "run": False}, "W"),
    ("POST", "/tasks/batch", {"tasks": [{"name": "x", "code": "true", "run": False}]}, "W"),
    ("GET", "/tasks/queued_ids", None, "RK"),
    ("GET", "/tasks/{t}", None, "R"),
    ("PATCH", "/tasks/{t}", {"name": "z"}, "W"),
    ("POST", "/tasks/{t}/run", {"input": {}}, "W"),
    ("POST", "/tasks/{t}/cancel", None, "W"),
    ("POST", "/tasks/{t}/retry", None, "W"),
    ("POST", "/tasks/{t}/pause", None, "W"),
    ("POST", "/tasks/{t}/resume", None, "W"),
    ("GET", "/tasks/{t}/schedule", None, "R"),
    ("GET", "/tasks/{t}/runs", None, "RK"),
    ("POST", "/tasks/{t}/runs", {"input": {}}, "W"),
    ("GET", "/tasks/{t}/runs/{r}", None, "RK"),
    ("PATCH", "/tasks/{t}/runs/{r}", {"stage": "s"}, "WK"),
    ("POST", "/tasks/{t}/runs/{r}/append_log", {"entries": [{"message": "m"}]}, "WK"),
    ("GET", "/tasks/{t}/runs/{r}/logs", None, "RK"),
    ("GET", "/tasks/{t}/runs/{r}/session_logs", None, "RK"),
    ("GET", "/tasks/{t}/runs/{r}/stream", None, "RK"),
    ("PATCH", "/tasks/{t}/runs/{r}/set_output", {"output": {}}, "WK"),
    ("GET", "/tasks/{t}/runs/{r}/artifacts", None, "RK"),
    ("GET", "/tasks/{t}/runs/{r}/artifacts/content?name=f.txt", None, "RK"),
    ("POST", "/tasks/{t}/runs/{r}/artifacts", {"artifacts": [{"name": "a", "content": "x"}]}, "WK"),
    ("POST", "/tasks/{t}/runs/{r}/artifacts/presign", {"storage_path": "x"}, "RK"),
    ("POST", "/tasks/{t}/runs/{r}/command", {"jsonrpc": "2.0", "method": "user_message",
                                             "params": {}, "id": 1}, "W"),
    ("GET", "/tasks/{t}/runs/{r}/connection_token", None, "RK"),
    ("POST", "/tasks/{t}/runs/{r}/relay_message", {"text": "x"}, "W"),
    ("POST", "/tasks/{t}/runs/{r}/cancel", {"message": "m"}, "W"),
    ("POST", "/tasks/{t}/runs/{r}/interaction", {"response": {"approved": True}}, "W"),
    ("POST", "/tasks/{t}/runs/{r}/review", {"decision": "approve"}, "W"),
    ("POST", "/tasks/{t}/runs/{r}/checkpoints", {"data": {}}, "WK"),
    ("GET", "/tasks/{t}/runs/{r}/checkpoints", None, "RK"),
    ("POST", "/tasks/{t}/runs/{r}/heartbeat", {"progress": 0.5}, "WK"),
    ("POST", "/tasks/{t}/runs/{r}/storage_access",
     {"instance_id": "{sto}", "scope": "project", "access_type": "accessed"}, "WK"),
    ("GET", "/runs", None, "RK"),
    ("GET", "/logs?task={r}", None, "RK"),
    ("GET", "/task-runs/{r}", None, "RK"),
    ("GET", "/storage", None, "R"),
    ("POST", "/storage", {"scope": "project", "name": "zz"}, "W"),
    ("POST", "/workers/lease", {"worker_id": "w", "wait_ms": 0}, "K"),
    ("POST", "/workers/report", {"results": []}, "K"),
    ("GET", "/policy", None, "R"),
    ("PUT", "/policy", {}, "A"),
    ("GET", "/secrets", None, "A"),
    ("POST", "/secrets", {"name": "S2", "value": "v"}, "A"),
    ("DELETE", "/secrets/SEC", None, "A"),
    ("GET", "/triggers", None, "A"),
    ("POST", "/triggers", {"task_id": "{t}", "secret": "s"}, "A"),
    ("GET", "/triggers/{trg}", None, "A"),
    ("DELETE", "/triggers/{trg}", None, "A"),
    ("GET", "/webhooks", None, "A"),
    ("POST", "/webhooks", {"url": "http://127.0.0.1:9/", "events": ["task.created"]}, "A"),
    ("GET", "/webhooks/{whk}", None, "A"),
    ("GET", "/webhooks/{whk}/deliveries", None, "A"),
    ("DELETE", "/webhooks/{whk}", None, "A"),
    ("GET", "/events/stream", None, "R"),
    ("DELETE", "/tasks/{t}", None, "W"),
]


def matrix_objects(project, key):
    """One object of each kind in project, made with key: {name: id}."""
    def mk(path, body):
        r = S.req("POST", "/api/projects/%s%s" % (project, path), body, key=key)
        assert r.status in (200, 201), (path, r)
        return r.json
    t = mk("/tasks", {"name": "m", "code": 'echo hi > "$QUERN_ARTIFACTS/f.txt"', "wait_for_result": True})
    assert t["run"]["status"] == "completed", t
    mk("/secrets", {"name": "SEC", "value": "v"})
    return {"t": t["id"], "r": t["run"]["id"],
            "d": mk("/definitions", {"title": "m", "code": "true"})["id"],
            "key": mk("/api_keys", {"name": "m", "scopes": ["task:read"]})["id"],
            "whk": mk("/webhooks", {"url": "http://127.0.0.1:9/", "events": ["task.created"]})["id"],
            "trg": mk("/triggers", {"task_id": t["id"], "secret": "s"})["id"],
            "sto": mk("/storage", {"scope": "project", "name": "m"})["id"]}


def matrix_fill(x, project, objs):
    if isinstance(x, dict):
        return {k: matrix_fill(v, project, objs) for k, v in x.items()}
    if isinstance(x, list):
        return [matrix_fill(v, project, objs) for v in x]
    if isinstance(x, str):
        for k, v in objs.items():
            x = x.replace("{%s}" % k, v)
    return x


def test_every_route_refuses_no_key_a_missing_scope_and_another_projects_objects():
    # API.md: missing/bad key 401, missing scope 403, an object of another
    # project 404 -- on every route, with the error shape, and nothing done
    pa = expect(S.req("POST", "/api/projects", {"name": "matrix-a"}), 201)["id"]
    pb = expect(S.req("POST", "/api/projects", {"name": "matrix-b"}), 201)["id"]
    ka = new_key(["task:read", "task:write", "worker", "admin"], pa)
    kb = new_key(["task:read", "task:write", "worker", "admin"], pb)
    oa, ob = matrix_objects(pa, ka), matrix_objects(pb, kb)
    single = {"task:read": "R", "task:write": "RWK", "worker": "K"}
    keys = {sc: new_key([sc], pa) for sc in single}

    def check(r, status, what):
        assert r.status == status, (what, status, r)
        e = r.json["error"]
        assert e["type"] == {401: "unauthorized", 403: "forbidden", 404: "not_found"}[status], (what, r)
        assert e["code"] and e["message"], (what, r)

    for method, path, body, allowed in MATRIX_ROUTES:
        what = "%s %s" % (method, path)
        url = matrix_fill("/api/projects/%s%s" % (pa, path), pa, oa)
        b = matrix_fill(body, pa, oa)
        check(S.req(method, url, b, key=None), 401, what)
        check(S.req(method, url, b, key="qk_not_a_key_at_all_0000"), 401, what)
        for sc, has in single.items():
            # a worker key reads runs ("K" on a GET means the read is allowed)
            if not set(has) & set(allowed):
                check(S.req(method, url, b, key=keys[sc]), 403, what + " as " + sc)
        # project b's objects through project a (ids in the path or body); an
        # id in a body names nothing in this project (400 unknown_task)
        if any("{%s}" % k in path + json.dumps(body) for k in oa):
            r = S.req(method, matrix_fill("/api/projects/%s%s" % (pa, path), pa, ob),
                      matrix_fill(body, pa, ob), key=ka)
            if (method, path) == ("POST", "/triggers"):
                assert r.status == 400 and r.json["error"]["code"] == "unknown_task", r
            else:
                check(r, 404, what + " with another project's object")
        # and project b's path with project a's key
        check(S.req(method, matrix_fill("/api/projects/%s%s" % (pb, path), pb, ob),
                    matrix_fill(body, pb, ob), key=ka), 404, what + " other project")
    # nothing of project b was touched
    pbp = "/api/projects/" + pb
    assert expect(S.req("GET", pbp + "/tasks/" + ob["t"], key=kb), 200)["name"] == "m"
    assert expect(S.req("GET", pbp + "/tasks/%s/runs/%s" % (ob["t"], ob["r"]), key=kb), 200)["stage"] is None
    assert expect(S.req("GET", pbp + "/definitions/" + ob["d"], key=kb), 200)["title"] == "m"
    assert [w["id"] for w in expect(S.req("GET", pbp + "/webhooks", key=kb), 200)["data"]] == [ob["whk"]]
    assert [t["id"] for t in expect(S.req("GET", pbp + "/triggers", key=kb), 200)["data"]] == [ob["trg"]]
    assert [k["revoked"] for k in expect(S.req("GET", pbp + "/api_keys", key=kb), 200)["data"]
            if k["id"] == ob["key"]] == [False]
    assert expect(S.req("GET", pbp + "/tasks", key=kb), 200)["total"] == 1
    # nothing of project a either (every request above was refused)
    assert expect(S.req("GET", "/api/projects/%s/tasks" % pa, key=ka), 200)["total"] == 1
    # the matrix covers every project route the OpenAPI document lists
    import re
    doc = expect(S.req("GET", "/openapi.json", key=None), 200)
    norm = lambda p: re.sub(r"\{[^}]+\}", "{}", p.split("?")[0])
    have = {(m, norm(p)) for m, p, _, _ in MATRIX_ROUTES}
    for p, ops in doc["paths"].items():
        if p.startswith("/api/projects/{project_id}/"):
            for m in ops:
                if m in ("get", "post", "put", "patch", "delete"):
                    pp = norm(p[len("/api/projects/{project_id}"):]).replace("/secrets/{}", "/secrets/SEC")
                    assert (m.upper(), pp) in have, "route not in the matrix: %s %s" % (m.upper(), p)


def test_projects_isolated():
    other = expect(S.req("POST", "/api/projects", {"name": "other"}), 201)["id"]
    okey = new_key(["task:read", "task:write"], other)
    t = agent_task()
    # a key of another project never sees this project's objects
    assert S.req("GET", P + "/tasks/" + t["id"], key=okey).status == 404
    assert S.req("GET", P + "/tasks", key=okey).status == 404
    lst = expect(S.req("GET", "/api/projects", key=okey), 200)
    assert [p["id"] for p in lst["data"]] == [other]


def test_key_revoke_takes_effect():
    k = expect(S.req("POST", P + "/api_keys", {"name": "r", "scopes": ["task:read"]}), 201)
    assert "key" in k and "hash" not in k
    assert S.req("GET", P + "/tasks", key=k["key"]).status == 200
    first = expect(S.req("DELETE", P + "/api_keys/" + k["id"]), 200)
    assert S.req("GET", P + "/tasks", key=k["key"]).status == 401
    # revoking again changes nothing: revoked_at stays the first revocation's
    again = expect(S.req("DELETE", P + "/api_keys/" + k["id"]), 200)
    assert again["revoked"] is True and again["revoked_at"] == first["revoked_at"], (first, again)
    listed = [x for x in expect(S.req("GET", P + "/api_keys?limit=500"), 200)["data"] if x["id"] == k["id"]]
    assert listed[0]["revoked_at"] == first["revoked_at"], listed
    listed = expect(S.req("GET", P + "/api_keys"), 200)["data"]
    assert all("key" not in x and "hash" not in x for x in listed)


def test_bad_input_is_400_naming_field():
    cases = [
        ({"name": 5, "code": "x"}, "name"),
        ({"code": "x", "priority": "huge"}, "priority"),
        ({"code": "x", "runtime_id": "cobol"}, "runtime_id"),
        ({"code": "x", "settings": {"max_retries": -1}}, "settings.max_retries"),
        ({"code": "x", "settings": {"bogus": 1}}, "settings.bogus"),
        ({"code": "x", "deadline": "tomorrow"}, "deadline"),
        ({"code": "x", "name": "n" * 257}, "name"),
        ({"code": "x", "input": [1]}, "input"),
        ({"code": "x", "dependencies": ["task_missing"]}, "dependencies"),
        ({"code": "x", "unknown_field": 1}, "unknown_field"),
        ({"assigned_agent_id": ""}, "assigned_agent_id"),
    ]
    for body, param in cases:
        r = S.req("POST", P + "/tasks", body)
        assert r.status == 400, (body, r)
        assert r.json["error"]["param"] == param, (body, r.json)
        assert r.json["error"]["type"] == "invalid_request"
    r = S.req("POST", P + "/tasks", {"name": "nothing to do"})
    assert r.status == 400
    r = S.req("POST", P + "/tasks", raw="{not json")
    assert r.status == 400 and r.json["error"]["code"] == "invalid_json"
    # what JSON allows but quern cannot take is said in the API's words, not jansson's
    r = S.req("POST", P + "/tasks", raw='{"code": "x", "settings": {"timeout_ms": 100000000000000000000}}')
    assert r.status == 400 and "integer out of range" in r.json["error"]["message"], r.json
    r = S.req("POST", P + "/tasks", raw='{"code": "x\\u0000y"}')
    assert r.status == 400 and "(NUL) is not allowed" in r.json["error"]["message"], r.json
    assert "JSON_ALLOW_NUL" not in r.json["error"]["message"], r.json
    r = S.req("GET", P + "/tasks?limit=-1")
    assert r.status == 400 and r.json["error"]["param"] == "limit"
    r = S.req("GET", P + "/tasks?limit=501")
    assert r.status == 400
    r = S.req("GET", P + "/tasks?status=bogus")
    assert r.status == 400 and r.json["error"]["param"] == "status"
    r = S.req("POST", P + "/tasks", raw="x" * (17 << 20))
    assert r.status == 413 and r.json["error"]["type"] == "payload_too_large"
    # batch: its own unknown fields too; an item that is not an object is named as such
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"code": "true", "run": False}], "x": 1})
    assert r.status == 400 and r.json["error"]["param"] == "x", r.json
    r = S.req("POST", P + "/tasks/batch", {"tasks": [1]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[0]", r.json
    # blank names; a scope given twice is kept once
    r = S.req("POST", "/api/projects", {"name": "   "})
    assert r.status == 400 and r.json["error"]["param"] == "name", r.json
    r = S.req("POST", P + "/api_keys", {"name": "", "scopes": ["worker"]})
    assert r.status == 400 and r.json["error"]["param"] == "name", r.json
    k = expect(S.req("POST", P + "/api_keys", {"scopes": ["worker", "worker", "task:read"]}), 201)
    assert k["scopes"] == ["worker", "task:read"], k


def test_task_crud_and_filters():
    t = agent_task(name="crud", metadata={"team": "sales"}, priority="high")
    assert t["status"] == "queued" and t["run_count"] == 1
    got = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
    assert got["name"] == "crud" and got["metadata"] == {"team": "sales"}
    up = expect(S.req("PATCH", P + "/tasks/" + t["id"], {"name": "crud2", "priority": "low"}), 200)
    assert up["name"] == "crud2" and up["priority"] == "low"
    lst = expect(S.req("GET", P + "/tasks?metadata.team=sales"), 200)
    assert t["id"] in [x["id"] for x in lst["data"]]
    lst = expect(S.req("GET", P + "/tasks?metadata.team=nobody"), 200)
    assert lst["data"] == [] and lst["total"] == 0
    lst = expect(S.req("GET", P + "/tasks?priority=low&assigned_agent_id=ag"), 200)
    assert t["id"] in [x["id"] for x in lst["data"]]
    expect(S.req("DELETE", P + "/tasks/" + t["id"]), 200)
    assert S.req("GET", P + "/tasks/" + t["id"]).status == 404


def test_metadata_filter_matches_numbers_and_booleans():
    # metadata.<key>=<value> compares the value's JSON text: on SQLite a number
    # or boolean never matched (PostgreSQL's ->> matched it)
    t = agent_task(name="mdnum", metadata={"mdn": 3, "mdf": True, "mdx": 1.5, "mds": "3"})
    for q in ("metadata.mdn=3", "metadata.mdf=true", "metadata.mdx=1.5", "metadata.mds=3",
              "metadata.mdn=3&metadata.mdf=true"):
        got = expect(S.req("GET", P + "/tasks?" + q), 200)
        assert [x["id"] for x in got["data"]] == [t["id"]], (q, got)
    for q in ("metadata.mdn=4", "metadata.mdf=false", "metadata.mdf=1", "metadata.mdn=%223%22"):
        assert expect(S.req("GET", P + "/tasks?" + q), 200)["total"] == 0, q


def test_metadata_filters_read_an_index_and_answer_as_the_scan():
    # metadata.KEY=VALUE reads the task_meta index (SQLite v11, PostgreSQL v8)
    # instead of every task of the project: what it answers must be what the
    # scan answered, with other filters, paging, PATCHed metadata and deletes
    from urllib.parse import quote
    long = "L" * 600                      # over STORE_META_VALUE_MAX: not indexed, scanned
    specs = [({"mit": "a", "min": 3}, "high"), ({"mit": "b", "min": "3"}, "medium"),
             ({"mit": "a", "mib": True}, "medium"), ({}, "high"), (None, "medium"),
             ({"mit": "a", "min": 3, "mi.dot": "x y"}, "high"), ({"mit": None}, "medium"),
             ({"mit": "a", "mil": long}, "low"), ({"mit": "a"}, "high"), ({"mit": "ab"}, "medium"),
             ({"mio": {"a": [1, "x"]}, "mir": 2.5, "mit": "b"}, "low"),
             ({"mie": "\u00e9\U0001F600 \\ \"q\"", "mit": "a"}, "medium")]
    model = {}                            # id -> (metadata, priority, name); creation order
    for i, (md, prio) in enumerate(specs):
        body = {"name": "mi-%d%s" % (i, "-odd" if i % 2 else ""), "priority": prio}
        if md is not None:
            body["metadata"] = md
        t = agent_task(**body)
        model[t["id"]] = (md or {}, prio, body["name"])

    def text(v):
        return None if v is None else ("true" if v is True else "false" if v is False
                                       else v if isinstance(v, str)
                                       else json.dumps(v, separators=(",", ":")))

    def want(filters, prio=None, q=None):
        out = [tid for tid, (md, p, name) in model.items()
               if all(k in md and text(md[k]) == v for k, v in filters)
               and (prio is None or p == prio) and (q is None or q in name)]
        return out[::-1]                  # newest first

    def check(filters, prio=None, q=None, limit=3):
        qs = "&".join("metadata.%s=%s" % (quote(k), quote(v)) for k, v in filters)
        qs += ("&priority=" + prio if prio else "") + ("&q=" + q if q else "")
        exp = want(filters, prio, q)
        got = expect(S.req("GET", P + "/tasks?%s&limit=100" % qs), 200)
        assert [x["id"] for x in got["data"]] == exp and got["total"] == len(exp), (qs, got, exp)
        seen, after = [], None            # cursor pages
        while True:
            page = expect(S.req("GET", P + "/tasks?%s&limit=%d%s" % (
                qs, limit, "&starting_after=" + after if after else "")), 200)
            assert page["total"] == len(exp), (qs, page)
            seen += [x["id"] for x in page["data"]]
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        assert seen == exp, (qs, seen, exp)
        if len(exp) > 1:                  # offset pages
            page = expect(S.req("GET", P + "/tasks?%s&limit=1&offset=1" % qs), 200)
            assert [x["id"] for x in page["data"]] == exp[1:2], (qs, page)

    def check_all():
        for f in ([("mit", "a")], [("mit", "b")], [("min", "3")], [("mib", "true")],
                  [("mit", "a"), ("min", "3")], [("min", "3"), ("mit", "a")],
                  [("mi.dot", "x y")], [("mil", long)], [("mit", "a"), ("mil", long)],
                  [("mit", "null")], [("mit", "")], [("mit", "zz")],
                  [("mio", '{"a":[1,"x"]}')], [("mir", "2.5")], [("mit", "b"), ("mir", "2.5")],
                  [("mie", "\u00e9\U0001F600 \\ \"q\"")], [("mie", "\u00e9")]):
            check(f)
        check([("mit", "a")], prio="high")
        check([("mit", "a")], prio="medium")
        check([("mit", "a")], q="odd")
        check([("mit", "a")], prio="high", q="mi-")

    check_all()
    ids = list(model)
    # PATCH: metadata replaced, another field changed (the rows stay), a key removed
    expect(S.req("PATCH", P + "/tasks/" + ids[0], {"metadata": {"mit": "b", "min": 4}}), 200)
    model[ids[0]] = ({"mit": "b", "min": 4}, "high", model[ids[0]][2])
    expect(S.req("PATCH", P + "/tasks/" + ids[2], {"name": "mi-2-renamed-odd"}), 200)
    model[ids[2]] = (model[ids[2]][0], "medium", "mi-2-renamed-odd")
    expect(S.req("PATCH", P + "/tasks/" + ids[4], {"metadata": {"mit": "a"}}), 200)
    model[ids[4]] = ({"mit": "a"}, "medium", model[ids[4]][2])
    expect(S.req("PATCH", P + "/tasks/" + ids[5], {"metadata": {}}), 200)
    model[ids[5]] = ({}, "high", model[ids[5]][2])
    # deleted tasks leave the lists
    for tid in (ids[8], ids[3]):
        expect(S.req("DELETE", P + "/tasks/" + tid), 200)
        del model[tid]
    check_all()
    check([("min", "4")])
    if os.environ.get("QUERN_TEST_STORE") == "pg":
        # the list's query can read task_meta's key in seq order (no sort);
        # the planner picks it by cost, so the small table is read as a big one
        import pgcluster
        db = S.extra[S.extra.index("--store") + 1].rsplit("/", 1)[1]
        plan = pgcluster.cluster().psql(
            "SET enable_seqscan = off; SET enable_bitmapscan = off; EXPLAIN SELECT doc FROM"
            " task_meta CROSS JOIN LATERAL (SELECT doc FROM tasks WHERE true AND"
            " project_id='default' AND (doc::json->'metadata'->>'mit') = 'a' AND seq=m_seq"
            " OFFSET 0) t WHERE m_project='default' AND m_key='mit' AND m_value='a'"
            " ORDER BY m_seq DESC LIMIT 50", db=db)
        # each task is read by its key (no plan reading an index per task_meta row)
        assert "task_meta_pkey" in plan and "Sort" not in plan, plan
        assert any("Index Cond" in l and "seq = task_meta.m_seq" in l
                   for l in plan.splitlines()), plan
        rows = pgcluster.cluster().psql(
            "SELECT count(*) FROM task_meta WHERE m_seq NOT IN (SELECT seq FROM tasks)", db=db)
        assert rows.strip() == "0", rows
    else:
        # the index holds exactly the live tasks' indexable values: nothing
        # left of the deleted tasks and the replaced metadata
        import sqlite3
        db = sqlite3.connect(os.path.join(S.data, "quern.db"))
        rows = db.execute("SELECT t.id, m.m_key, m.m_value FROM task_meta m JOIN tasks t"
                          " ON t.seq = m.m_seq WHERE m.m_key LIKE 'mi%'").fetchall()
        orphans = db.execute("SELECT count(*) FROM task_meta WHERE m_seq NOT IN"
                             " (SELECT seq FROM tasks)").fetchone()[0]
        db.close()
        exp = sorted((tid, k, text(v)) for tid, (md, _, _) in model.items() for k, v in md.items()
                     if v is not None and len(text(v)) <= 512)
        assert sorted(rows) == exp and orphans == 0, (sorted(rows), exp, orphans)


def test_metadata_filter_beside_a_rarer_filter():
    # SQLite weighs the metadata index against another filter's index (no
    # statistics): a value 1 200 tasks share beside a priority one of them has,
    # and a rare value beside a common one; either way the same answers
    tasks = [{"name": "mw-%d" % i, "assigned_agent_id": "mw", "metadata": {"mw": "all"},
              "priority": "high" if i == 700 else "low"} for i in range(1200)]
    tasks[3]["metadata"]["mw2"] = "rare"
    ids = []
    for i in range(0, 1200, 600):
        got = expect(S.req("POST", P + "/tasks/batch", {"tasks": tasks[i:i + 600]}), 201)
        ids += [t["id"] for t in got["data"]]
    got = expect(S.req("GET", P + "/tasks?metadata.mw=all&priority=high"), 200)
    assert [t["id"] for t in got["data"]] == [ids[700]] and got["total"] == 1, got
    got = expect(S.req("GET", P + "/tasks?metadata.mw=all&priority=low&limit=3"), 200)
    assert [t["id"] for t in got["data"]] == ids[::-1][:3] and got["total"] == 1199, got
    got = expect(S.req("GET", P + "/tasks?priority=low&metadata.mw=all&metadata.mw2=rare"), 200)
    assert [t["id"] for t in got["data"]] == [ids[3]] and got["total"] == 1, got
    got = expect(S.req("GET", P + "/tasks?metadata.mw=all&limit=2&starting_after=" + ids[5]), 200)
    assert [t["id"] for t in got["data"]] == [ids[4], ids[3]] and got["total"] == 1200, got


def test_task_name_search():
    a = agent_task(name="Nightly Report 50%")
    agent_task(name="other thing")
    got = expect(S.req("GET", P + "/tasks?q=nightly%20report"), 200)
    assert a["id"] in [t["id"] for t in got["data"]]
    assert all("nightly report" in (t["name"] or "").lower() or "nightly" in t["id"] for t in got["data"])
    got = expect(S.req("GET", P + "/tasks?q=50%25"), 200)      # a literal % matches itself only
    assert [t["id"] for t in got["data"]] == [a["id"]]
    assert expect(S.req("GET", P + "/tasks?q=zz_no_such_name"), 200)["total"] == 0
    assert S.req("GET", P + "/tasks?q=" + "x" * 300).status == 400
    # q reads a copy of the name (a column): a renamed task is found by its
    # new name only, a task whose name is cleared by its id only
    expect(S.req("PATCH", P + "/tasks/" + a["id"], {"name": "Weekly Digest"}), 200)
    assert expect(S.req("GET", P + "/tasks?q=nightly%20report"), 200)["total"] == 0
    got = expect(S.req("GET", P + "/tasks?q=weekly%20DIGEST"), 200)["data"]
    assert [t["id"] for t in got] == [a["id"]], got
    expect(S.req("PATCH", P + "/tasks/" + a["id"], {"name": None}), 200)
    assert expect(S.req("GET", P + "/tasks?q=weekly"), 200)["total"] == 0
    got = expect(S.req("GET", P + "/tasks?q=" + a["id"][5:].upper()), 200)["data"]
    assert [t["id"] for t in got] == [a["id"]], got


def test_metadata_is_bounded():
    # a 100 KB key or value was taken (up to the 16 MiB body): over-long strings are 4xx
    for md, code in (({"k" * 257: 1}, "too_long"), ({"": 1}, "invalid_value"),
                     ({"k": "v" * 20000}, "too_long"), ({"k%d" % i: i for i in range(101)}, "too_many_keys")):
        r = S.req("POST", P + "/tasks", {"assigned_agent_id": "md", "metadata": md})
        assert r.status == 400 and r.json["error"]["code"] == code and r.json["error"]["param"] == "metadata", r.json
        r = S.req("POST", P + "/tasks/batch", {"tasks": [{"assigned_agent_id": "md", "metadata": md}]})
        assert r.status == 400 and r.json["error"]["param"] == "tasks[0].metadata", r.json
    t = agent_task(metadata={"k" * 256: "v" * 4000, "n": 1})
    r = S.req("PATCH", P + "/tasks/" + t["id"], {"metadata": {"x": "v" * 20000}})
    assert r.status == 400 and r.json["error"]["param"] == "metadata", r.json
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["metadata"]["n"] == 1


def test_list_paging():
    ids = [agent_task(name="page%d" % i, metadata={"pg": "1"})["id"] for i in range(5)]
    a = expect(S.req("GET", P + "/tasks?metadata.pg=1&limit=2"), 200)
    assert a["total"] == 5 and a["has_more"] is True and len(a["data"]) == 2
    assert [x["id"] for x in a["data"]] == ids[::-1][:2]   # newest first
    b = expect(S.req("GET", P + "/tasks?metadata.pg=1&limit=2&offset=4"), 200)
    assert b["has_more"] is False and [x["id"] for x in b["data"]] == [ids[0]]


def test_list_cursor_pages_neither_repeat_nor_skip():
    ids = [agent_task(name="cur%d" % i, metadata={"cur": "1"})["id"] for i in range(7)]
    seen, after, pages = [], None, 0
    while True:
        q = P + "/tasks?metadata.cur=1&limit=3" + ("&starting_after=" + after if after else "")
        page = expect(S.req("GET", q), 200)
        assert page["total"] >= 7, page
        seen += [x["id"] for x in page["data"]]
        pages += 1
        if pages == 1:
            # new tasks while a client pages: offsets would shift the rest by one
            # and show a task twice; a cursor goes on where it was
            agent_task(name="cur-new", metadata={"cur": "1"})
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == ids[::-1], (seen, ids)
    assert pages == 3
    # the cursor with an offset: skips within what follows the cursor
    page = expect(S.req("GET", P + "/tasks?metadata.cur=1&limit=2&offset=1&starting_after=" + ids[5]), 200)
    assert [x["id"] for x in page["data"]] == [ids[3], ids[2]] and page["has_more"] is True, page
    # a cursor that names nothing of this project, or cannot be an id
    r = S.req("GET", P + "/tasks?starting_after=task_nosuch")
    assert r.status == 400 and r.json["error"]["param"] == "starting_after", r.json
    r = S.req("GET", P + "/tasks?starting_after=a%20b")
    assert r.status == 400 and r.json["error"]["param"] == "starting_after", r.json
    # runs: of a task, and of the project
    t = agent_task(name="cur-runs", run=False)
    runs = [expect(S.req("POST", P + "/tasks/%s/runs" % t["id"], {}), 201)["id"] for _ in range(3)]
    page = expect(S.req("GET", P + "/tasks/%s/runs?limit=1&starting_after=%s" % (t["id"], runs[2])), 200)
    assert [x["id"] for x in page["data"]] == [runs[1]] and page["has_more"] is True, page
    page = expect(S.req("GET", P + "/runs?task_id=%s&starting_after=%s" % (t["id"], runs[1])), 200)
    assert [x["id"] for x in page["data"]] == [runs[0]] and page["has_more"] is False, page
    r = S.req("GET", P + "/runs?starting_after=" + ids[0])   # a task's id is no run
    assert r.status == 400 and "no run" in r.json["error"]["message"], r.json


def test_client_id_and_conflict():
    expect(S.req("POST", P + "/tasks", {"id": "my-task-1", "assigned_agent_id": "a"}), 201)
    r = S.req("POST", P + "/tasks", {"id": "my-task-1", "assigned_agent_id": "a"})
    assert r.status == 409 and r.json["error"]["type"] == "conflict"
    # with a run: the task and its first run are written together; a second
    # create of the same id leaves the first task, its run and its events alone
    t = expect(S.req("POST", P + "/tasks", {"id": "my-task-2", "assigned_agent_id": "a2", "run": True}), 201)
    assert t["status"] == "queued" and t["run_count"] == 1, t
    first = expect(S.req("GET", P + "/tasks/my-task-2/runs"), 200)["data"]
    assert len(first) == 1, first
    r = S.req("POST", P + "/tasks", {"id": "my-task-2", "assigned_agent_id": "a2", "run": True})
    assert r.status == 409 and r.json["error"]["param"] == "id", r.json
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"name": "fresh", "assigned_agent_id": "a2", "run": True},
                                                      {"id": "my-task-2", "assigned_agent_id": "a2", "run": True}]})
    assert r.status == 409 and r.json["error"]["param"] == "tasks[1].id", r.json
    assert expect(S.req("GET", P + "/tasks?q=fresh"), 200)["total"] == 0
    again = expect(S.req("GET", P + "/tasks/my-task-2"), 200)
    assert again["run_count"] == 1 and again["status"] == "queued", again
    runs = expect(S.req("GET", P + "/tasks/my-task-2/runs"), 200)["data"]
    assert [x["id"] for x in runs] == [first[0]["id"]], runs
    # its events: task.created once, before its run's queued event
    st, evs = sse(S, P + "/events/stream", stop=lambda e: e[2].get("task_id") == "my-task-2"
                  and e[1] == "task_run.queued")
    mine = [e[1] for e in evs if e[2].get("task_id") == "my-task-2"]
    assert mine == ["task.created", "task_run.queued"], mine


def test_deleted_task_id_not_given_out_again():
    # a client id of a deleted task was accepted again: the new task took
    # over the old one's runs (its run list, a retry of the old failed run
    # on a task that never ran) and was fired by the old task's triggers
    t = expect(S.req("POST", P + "/tasks", {"id": "gone-task", "assigned_agent_id": "gone", "run": True}), 201)
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "gone"}), 200)["data"][0]
    expect(S.req("PATCH", P + "/tasks/gone-task/runs/" + run["id"], {"status": "failed"}), 200)
    expect(S.req("DELETE", P + "/tasks/gone-task"), 200)
    for path, body in ((P + "/tasks", {"id": "gone-task", "assigned_agent_id": "gone"}),
                       (P + "/tasks/batch", {"tasks": [{"assigned_agent_id": "gone"},
                                                       {"id": "gone-task", "assigned_agent_id": "gone"}]})):
        r = S.req("POST", path, body)
        assert r.status == 409 and r.json["error"]["code"] == "id_of_deleted_task", r
        assert r.json["error"]["param"] in ("id", "tasks[1].id") and "runs" in r.json["error"]["message"], r
    assert S.req("GET", P + "/tasks/gone-task").status == 404
    # the old run is still the project's history, under its old task id
    assert expect(S.req("GET", P + "/task-runs/" + run["id"]), 200)["task_id"] == t["id"]
    # a task that never ran but has a trigger: the trigger keeps the id
    expect(S.req("POST", P + "/tasks", {"id": "gone-trig", "assigned_agent_id": "gone"}), 201)
    trg = expect(S.req("POST", P + "/triggers", {"task_id": "gone-trig", "secret": "s"}), 201)
    expect(S.req("DELETE", P + "/tasks/gone-trig"), 200)
    r = S.req("POST", P + "/tasks", {"id": "gone-trig", "assigned_agent_id": "gone"})
    assert r.status == 409 and "triggers" in r.json["error"]["message"], r
    # once nothing names it, the id is free again
    expect(S.req("DELETE", P + "/triggers/" + trg["id"]), 200)
    expect(S.req("POST", P + "/tasks", {"id": "gone-trig", "assigned_agent_id": "gone"}), 201)


def test_prefer_return_minimal():
    h = {"Prefer": "return=minimal"}
    r = S.req("POST", P + "/tasks", {"name": "min", "assigned_agent_id": "mn", "run": True}, headers=h)
    assert r.status == 201 and set(r.json) == {"id", "status", "run_id"}, r.json
    assert r.header("Preference-Applied") == "return=minimal"
    runs = expect(S.req("GET", P + "/tasks/%s/runs" % r.json["id"]), 200)["data"]
    assert r.json["status"] == "queued" and [x["id"] for x in runs] == [r.json["run_id"]], (r.json, runs)
    r = S.req("POST", P + "/tasks", {"name": "min2", "assigned_agent_id": "mn"}, headers=h)
    assert r.status == 201 and r.json["run_id"] is None, r.json
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"name": "m%d" % i, "assigned_agent_id": "mn",
                                                      "run": True} for i in range(3)]}, headers=h)
    assert r.status == 201 and all(set(t) == {"id", "status", "run_id"} and t["run_id"]
                                   for t in r.json["data"]), r.json
    full = expect(S.req("GET", P + "/tasks/" + r.json["data"][2]["id"]), 200)
    assert full["name"] == "m2" and full["status"] == "queued", full
    # without the header: the whole task, no Preference-Applied
    r = S.req("POST", P + "/tasks", {"name": "full", "assigned_agent_id": "mn"})
    assert r.status == 201 and r.json["name"] == "full" and "settings" in r.json
    assert r.header("Preference-Applied") is None


def test_lease_prefer_minimal():
    """A lease with Prefer: return=minimal answers each run with what working
    on it takes; without the header, the whole run."""
    mini = {"Prefer": "return=minimal"}
    keys = {"id", "task_id", "project_id", "attempt", "status", "input", "definition_id",
            "agent_id", "worker_id", "lease_expires_at"}
    t = agent_task(assigned_agent_id="lm", input={"k": [1, 2]})
    keys_leased = keys | {"checkpoint"}   # what the attempt resumes from (null: nothing)
    r = S.req("POST", P + "/workers/lease", {"agent_id": "lm", "worker_id": "wm"}, headers=mini)
    run = expect(r, 200)["data"][0]
    assert r.header("Preference-Applied") == "return=minimal"
    assert set(run) == keys_leased and run["checkpoint"] is None, run
    assert (run["task_id"], run["attempt"], run["status"], run["input"], run["worker_id"]) == \
        (t["id"], 1, "running", {"k": [1, 2]}, "wm"), run
    full = expect(S.req("GET", P + "/task-runs/" + run["id"] + "?include=input"), 200)
    assert all(full[k] == run[k] for k in keys), (full, run)
    report(run)
    agent_task(assigned_agent_id="lm")
    r = S.req("POST", P + "/workers/lease", {"agent_id": "lm"})
    whole = expect(r, 200)["data"][0]
    assert r.header("Preference-Applied") is None and keys < set(whole), whole
    report(whole)


def test_a_leased_retry_starts_with_the_latest_checkpoint():
    # API.md: "a retry starts with the latest" checkpoint.  Code gets it as
    # QUERN_CHECKPOINT; a worker leasing a retry (a new run, its own
    # checkpoints list empty) got nothing of it
    t = agent_task(assigned_agent_id="ckr")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "ckr"}), 200)["data"][0]
    assert run["checkpoint"] is None, run
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    for step in (1, 2):
        expect(S.req("POST", base + "/checkpoints", {"data": {"step": step}}), 200)
    expect(S.req("PATCH", base, {"status": "failed", "error_message": "boom"}), 200)
    expect(S.req("POST", P + "/tasks/%s/retry" % t["id"]), 201)
    for mini in ({}, {"Prefer": "return=minimal"}):
        again = expect(S.req("POST", P + "/workers/lease", {"agent_id": "ckr"}, headers=mini), 200)["data"]
        assert len(again) == 1 and again[0]["id"] != run["id"], again
        assert again[0]["attempt"] == 2 and again[0]["checkpoint"] == {"step": 2}, again
        # handed back, so the other form leases the same retry again
        expect(S.req("PATCH", P + "/tasks/%s/runs/%s" % (t["id"], again[0]["id"]), {"status": "queued"}), 200)


def test_batch_all_or_nothing():
    good = [{"name": "b%d" % i, "assigned_agent_id": "bat"} for i in range(3)]
    out = expect(S.req("POST", P + "/tasks/batch", {"tasks": good}), 201)
    assert [t["name"] for t in out["data"]] == ["b0", "b1", "b2"]
    bad = good + [{"name": "x", "assigned_agent_id": "bat", "priority": "nope"}]
    before = expect(S.req("GET", P + "/tasks?assigned_agent_id=bat"), 200)["total"]
    r = S.req("POST", P + "/tasks/batch", {"tasks": bad})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[3].priority"
    after = expect(S.req("GET", P + "/tasks?assigned_agent_id=bat"), 200)["total"]
    assert before == after
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"assigned_agent_id": "x"}] * 1001})
    assert r.status == 400
    # an id twice in the batch is the batch's fault (400), one already stored a conflict (409)
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"id": "bd-1", "assigned_agent_id": "bat"},
                                                      {"id": "bd-2", "assigned_agent_id": "bat"},
                                                      {"id": "bd-1", "assigned_agent_id": "bat"}]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[2].id", r
    assert S.req("GET", P + "/tasks/bd-1").status == 404
    expect(S.req("POST", P + "/tasks", {"id": "bd-1", "assigned_agent_id": "bat"}), 201)
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"id": "bd-2", "assigned_agent_id": "bat"},
                                                      {"id": "bd-1", "assigned_agent_id": "bat"}]})
    assert r.status == 409 and r.json["error"]["code"] == "already_exists", r
    assert S.req("GET", P + "/tasks/bd-2").status == 404


def test_batch_tasks_of_definitions():
    """A batch reads each definition once: tasks naming the same or another
    definition each get their own definition's code and runtime, and an
    unknown one refuses the batch at its index."""
    expect(S.req("POST", P + "/definitions", {"id": "def-bsh", "code": "echo a", "runtime_id": "sh"}), 201)
    expect(S.req("POST", P + "/definitions", {"id": "def-bpy", "code": "print(1)",
                                              "runtime_id": "python"}), 201)
    names = ["def-bsh", "def-bpy", "def-bsh", "def-bsh", "def-bpy"]
    out = expect(S.req("POST", P + "/tasks/batch", {"tasks": [
        {"definition_id": d, "name": "bd%d" % i} for i, d in enumerate(names)]}), 201)["data"]
    assert [t["definition_id"] for t in out] == names, out
    assert [t["runtime_id"] for t in out] == [{"def-bsh": "sh", "def-bpy": "python"}[d] for d in names]
    for t in out:
        stored = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
        assert stored["runtime_id"] == t["runtime_id"] and stored["code"] == t["code"], (stored, t)
    r = S.req("POST", P + "/tasks/batch", {"tasks": [
        {"definition_id": "def-bsh"}, {"definition_id": "def-bsh"}, {"definition_id": "def-none"}]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[2].definition_id", r


def test_lease_report_and_fencing():
    wk = new_key(["worker"])
    t = agent_task(assigned_agent_id="fence")
    got = expect(S.req("POST", P + "/workers/lease",
                       {"worker_id": "w1", "agent_id": "fence", "max": 10}, key=wk), 200)["data"]
    assert [r["task_id"] for r in got] == [t["id"]]
    run = got[0]
    assert run["status"] == "running" and run["lease_expires_at"] and run["attempt"] == 1
    # nothing more to lease
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "fence"}, key=wk), 200)["data"] == []
    res = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "attempt": 2, "status": "completed"},
        {"run_id": "run_missing", "attempt": 1, "status": "completed"},
    ]}, key=wk), 200)["data"]
    assert [x["ok"] for x in res] == [False, False]
    assert res[0]["error"]["code"] == "stale_attempt"
    res = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "attempt": 1, "status": "completed", "output": {"ok": 1},
         "logs": [{"message": "done"}]}]}, key=wk), 200)["data"]
    assert res[0]["ok"] is True
    final = expect(S.req("GET", P + "/task-runs/" + run["id"]), 200)
    assert final["status"] == "completed" and final["output"] == {"ok": 1}
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["status"] == "completed"


def test_a_reports_logs_error_and_exit_code_are_checked_as_a_patchs_are():
    # a report's logs went into the run's log as sent: level "loud", an
    # object message, a ts "garbage", an iteration "abc", a 2 MiB message;
    # one that was no object was dropped without a word.  Such a result is
    # refused (invalid_result, the entry named) and nothing of it is stored.
    agent_task(assigned_agent_id="rlogs")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "rlogs"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (run["task_id"], run["id"])
    for bad, named in (({"message": "m", "level": "loud"}, "level"), ({"message": {"o": 1}}, "message"),
                       ({"type": 5, "message": "t"}, "type"), ({"message": "x", "iteration": "abc"}, "iteration"),
                       ({"message": "x" * (1024 * 1024 + 1)}, "message"), (5, "object")):
        res = expect(S.req("POST", P + "/workers/report", {"results": [
            {"run_id": run["id"], "attempt": 1, "status": "completed", "output": {"o": 1},
             "logs": [{"message": "fine"}, bad]}]}), 200)["data"][0]
        assert not res["ok"] and res["error"]["code"] == "invalid_result", (bad, res)
        assert "logs[1]" in res["error"]["message"] and named in res["error"]["message"], (bad, res)
    # error and exit_code are bounded as a PATCH's error_code, error_message
    # and exit_code are (a wrong type was dropped, a 100 KB code kept)
    for bad, named in (({"error": 5}, "error"), ({"error": {"code": "c" * 65, "message": "m"}}, "error.code"),
                       ({"error": "e" * 4097}, "error"), ({"error": {"message": ["x"]}}, "error.message"),
                       ({"exit_code": "1"}, "exit_code"), ({"exit_code": 100000}, "exit_code")):
        res = expect(S.req("POST", P + "/workers/report", {"results": [
            dict({"run_id": run["id"], "attempt": 1, "status": "failed"}, **bad)]}), 200)["data"][0]
        assert not res["ok"] and res["error"]["code"] == "invalid_result", (bad, res)
        assert res["error"]["message"].startswith(named), (bad, res)
    got = expect(S.req("GET", base), 200)
    assert got["status"] == "running" and got["output"] is None, got
    assert S.req("GET", base + "/logs").text == ""
    res = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "attempt": 1, "status": "completed",
         "logs": [{"message": "done", "level": "warn", "data": {"k": 1}, "ts": "ignored"}]}]}), 200)["data"][0]
    assert res["ok"], res
    lines = [json.loads(x) for x in S.req("GET", base + "/logs").text.split("\n") if x]
    assert [(x["message"], x["level"], x["type"], x["data"]) for x in lines] == [("done", "warn", "log", {"k": 1})]
    assert lines[0]["ts"] != "ignored" and isinstance(lines[0]["iteration"], int), lines


def test_lease_filter_ids_are_bounded():
    # a runtime or definition id is at most 64 characters: a longer one in a
    # lease's filters was taken and matched nothing (API.md: over-long
    # strings are a 4xx naming the field)
    for field in ("runtimes", "definitions"):
        r = S.req("POST", P + "/workers/lease", {"worker_id": "w", field: ["sh", "x" * 65]})
        assert r.status == 400 and r.json["error"]["code"] == "too_long", r
        assert r.json["error"]["param"] == field and "%s[1]" % field in r.json["error"]["message"], r
        expect(S.req("POST", P + "/workers/lease", {"worker_id": "w", field: ["x" * 64]}), 200)


def test_lease_long_poll_wakes_on_new_run():
    import threading
    out = {}

    def poll():
        out["r"] = S.req("POST", P + "/workers/lease", {"agent_id": "lp", "wait_ms": 20000})
    th = threading.Thread(target=poll)
    th.start()
    wait_for(lambda: True)
    t = agent_task(assigned_agent_id="lp")
    th.join(30)
    data = expect(out["r"], 200)["data"]
    assert [r["task_id"] for r in data] == [t["id"]]


def test_new_run_is_handed_to_a_waiting_long_poll():
    """A create finding a worker's long-poll waiting leases the run to it in
    its own transaction: the create answers with the task running, the
    long-poll with the run, and the run's events say queued then running."""
    import threading
    import time
    for attempt in range(40):
        out = {}

        def poll():
            out["r"] = S.req("POST", P + "/workers/lease", {"agent_id": "ho", "worker_id": "hw",
                                                              "max": 5, "wait_ms": 20000})
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.02 * (attempt + 1))   # let it reach its wait (not an assertion)
        t = agent_task(assigned_agent_id="ho")
        th.join(30)
        data = expect(out["r"], 200)["data"]
        assert [r["task_id"] for r in data] == [t["id"]], data
        if t["status"] != "running":
            report(data[0])   # it arrived before the long-poll waited: the usual path
            continue
        run = data[0]
        assert run["status"] == "running" and run["worker_id"] == "hw" and run["attempt"] == 1, run
        evs = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (t["id"], run["id"])), 200)
        types = [e["type"] for e in evs if e["type"].startswith("task_run.")]
        assert types[:2] == ["task_run.queued", "task_run.started"], types
        # the create's answer is the stored task, not read back but patched
        # in memory the way the lease patched the stored one
        stored = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
        assert stored == t, (stored, t)
        report(run)
        done = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
        assert done["status"] == "completed", done
        # a run that may not start at once (a deadline) is never handed off
        out = {}
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.02 * (attempt + 1))
        later = agent_task(assigned_agent_id="ho", deadline="2999-01-01T00:00:00.000Z")
        th.join(30)
        assert later["status"] == "queued", later
        got = expect(out["r"], 200)["data"]
        assert [r["task_id"] for r in got] == [later["id"]], got
        report(got[0])
        return
    raise AssertionError("no create found the long-poll waiting in 40 tries")


def report(run, status="completed"):
    out = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "attempt": run["attempt"], "status": status}]}), 200)["data"][0]
    assert out["ok"], out


def test_lease_expiry_requeues_with_new_attempt():
    s2 = Server(env={"QUERN_LEASE_MS": "300"})
    try:
        t = expect(s2.req("POST", P + "/tasks", {"assigned_agent_id": "exp", "run": True,
                                                 "settings": {"max_retries": 1, "retry_delay_ms": 0}}), 201)
        r1 = expect(s2.req("POST", P + "/workers/lease", {"agent_id": "exp"}), 200)["data"][0]
        r2 = expect(s2.req("POST", P + "/workers/lease", {"agent_id": "exp", "wait_ms": 20000}), 200)["data"]
        assert len(r2) == 1 and r2[0]["id"] == r1["id"] and r2[0]["attempt"] == 2
        late = expect(s2.req("POST", P + "/workers/report", {"results": [
            {"run_id": r1["id"], "attempt": 1, "status": "completed"}]}), 200)["data"][0]
        assert late["ok"] is False
        # the second lease expires too: no retries left -> failed lease_expired
        run = wait_for(lambda: (lambda x: x if x["status"] == "failed" else None)(
            expect(s2.req("GET", P + "/task-runs/" + r1["id"]), 200)), what="lease expiry")
        assert run["error"]["code"] == "lease_expired"
        del t
    finally:
        s2.stop()


def test_a_run_started_by_patch_is_leased_and_heartbeats_are_fenced():
    s2 = Server(env={"QUERN_LEASE_MS": "300"})
    try:
        t = expect(s2.req("POST", P + "/tasks", {"assigned_agent_id": "pl", "run": True,
                                                 "settings": {"max_retries": 1, "retry_delay_ms": 0}}), 201)
        run = expect(s2.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        # a worker that starts its run by PATCH holds a lease like a leased run's
        started = expect(s2.req("PATCH", base, {"status": "running"}), 200)
        assert isinstance(started["lease_expires_at"], str), started
        # its worker dies: the lease runs out into a new attempt (it stayed running for good)
        again = expect(s2.req("POST", P + "/workers/lease", {"agent_id": "pl", "worker_id": "w2",
                                                              "wait_ms": 20000}), 200)["data"]
        assert len(again) == 1 and again[0]["id"] == run["id"] and again[0]["attempt"] == 2, again
        # the first worker's heartbeat, naming its attempt or itself, cannot extend
        # the new holder's lease
        r = s2.req("POST", base + "/heartbeat", {"attempt": 1})
        assert r.status == 409 and r.json["error"]["code"] == "stale_attempt", r.json
        r = s2.req("POST", base + "/heartbeat", {"worker_id": "w1"})
        assert r.status == 409 and r.json["error"]["code"] == "lease_not_held", r.json
        r = s2.req("POST", base + "/heartbeat", {"progres": 0.5})
        assert r.status == 400 and r.json["error"]["code"] == "unknown_field", r.json
        expect(s2.req("POST", base + "/heartbeat", {"attempt": 2, "worker_id": "w2", "progress": 0.5}), 200)
    finally:
        s2.stop()


def test_handed_off_run_lease_expires_like_any_other():
    """A run handed to a waiting long-poll at its creation is stored running
    in that one write; the scheduler still holds its lease, which expires
    into a new attempt when the worker never reports."""
    import threading
    import time
    s2 = Server(env={"QUERN_LEASE_MS": "300"})
    try:
        for attempt in range(40):
            out = {}
            # an agent of its own per try: a run leased the usual way in an
            # earlier try comes back (attempt 2) when its lease expires
            agent = "hx%d" % attempt

            def poll():
                out["r"] = s2.req("POST", P + "/workers/lease", {"agent_id": agent, "wait_ms": 20000})
            th = threading.Thread(target=poll)
            th.start()
            time.sleep(0.02 * (attempt + 1))   # let it reach its wait (not an assertion)
            t = expect(s2.req("POST", P + "/tasks", {
                "assigned_agent_id": agent, "run": True,
                "settings": {"max_retries": 1, "retry_delay_ms": 0}}), 201)
            th.join(30)
            r1 = expect(out["r"], 200)["data"][0]
            if t["status"] != "running":
                continue   # leased the usual way: try again
            assert r1["status"] == "running" and r1["attempt"] == 1, r1
            r2 = expect(s2.req("POST", P + "/workers/lease", {"agent_id": agent, "wait_ms": 20000}),
                        200)["data"]
            assert len(r2) == 1 and r2[0]["id"] == r1["id"] and r2[0]["attempt"] == 2, r2
            evs = expect(s2.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (t["id"], r1["id"])),
                         200)
            types = [e["type"] for e in evs]
            assert types[:4] == ["task_run.queued", "task_run.started", "task_run.retrying",
                                 "task_run.started"], types
            return
        raise AssertionError("no create found the long-poll waiting in 40 tries")
    finally:
        s2.stop()


def test_run_state_machine_409():
    t = agent_task(assigned_agent_id="sm")
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    r = S.req("PATCH", base, {"status": "bogus"})
    assert r.status == 400 and r.json["error"]["param"] == "status"
    expect(S.req("PATCH", base, {"status": "running", "stage": "s1"}), 200)
    assert S.req("PATCH", base, {"status": "running"}).status == 409
    done = expect(S.req("PATCH", base, {"status": "failed", "error_message": "boom", "exit_code": 3}), 200)
    assert done["status"] == "failed" and done["exit_code"] == 3 and done["completed_at"]
    for st in ("running", "completed", "failed", "queued"):
        assert S.req("PATCH", base, {"status": st}).status == 409
    assert S.req("POST", base + "/cancel", {}).status == 409
    # retry of a failed task makes a new attempt
    rr = expect(S.req("POST", P + "/tasks/%s/retry" % t["id"]), 201)
    assert rr["attempt"] == 2 and rr["status"] == "queued"
    assert S.req("POST", P + "/tasks/%s/retry" % t["id"]).status == 409


def test_logs_and_session_logs():
    t = agent_task(assigned_agent_id="logs")
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("POST", base + "/append_log", {"entries": [
        {"message": "one", "level": "info"}, {"message": "two", "type": "stdout"}]}), 200)
    r = S.req("POST", base + "/append_log", {"entries": [{"level": "loud"}]})
    assert r.status == 400 and r.json["error"]["param"] == "entries[0].level"
    lg = S.req("GET", base + "/logs")
    assert lg.status == 200 and lg.header("Content-Type").startswith("application/jsonl")
    lines = [json.loads(x) for x in lg.text.splitlines()]
    assert [x["message"] for x in lines] == ["one", "two"] and [x["seq"] for x in lines] == [1, 2]
    sl = S.req("GET", base + "/session_logs?event_types=task_run.log&limit=1")
    assert sl.status == 200 and len(sl.json) == 1
    assert sl.header("X-Filtered-Count") == "2" and sl.header("X-Has-More") == "true"
    assert int(sl.header("X-Total-Count")) >= 3
    ex = S.req("GET", base + "/session_logs?exclude_types=task_run.log")
    assert all(e["type"] != "task_run.log" for e in ex.json)
    # an unknown type is refused like any unknown enum value (it matched nothing)
    for q, param in [("event_types=task_run.bogus", "event_types"),
                     ("exclude_types=task_run.log,nope", "exclude_types")]:
        bad = S.req("GET", base + "/session_logs?" + q)
        assert bad.status == 400 and bad.json["error"]["code"] == "invalid_enum", bad
        assert bad.json["error"]["param"] == param, bad
    after = S.req("GET", base + "/session_logs?after=" + sl.json[0]["id"])
    assert sl.json[0]["id"] not in [e["id"] for e in after.json]
    since = S.req("GET", base + "/session_logs?after=2000-01-01T00:00:00Z")
    assert since.status == 200 and len(since.json) >= 3, since
    # a bare number (a Unix time?) was read as an event sequence number and
    # matched nothing, silently: refused, as any value that is neither
    for v in ("1700000000", "0", "evt_", "evt_x", "yesterday"):
        bad = S.req("GET", base + "/session_logs?after=" + v)
        assert bad.status == 400 and bad.json["error"]["code"] == "invalid_parameter", (v, bad)
        assert bad.json["error"]["param"] == "after", bad
    grouped = expect(S.req("GET", P + "/logs?task=" + run["id"]), 200)["data"]
    assert len(grouped) == 1 and len(grouped[0]["items"]) == 2
    # a list like the others: limit and offset page the groups (they were
    # not read: limit=-1 answered every group) and has_more/total come back
    page = expect(S.req("GET", P + "/logs?task=%s&offset=1" % run["id"]), 200)
    assert page["data"] == [] and page["total"] == 1 and page["has_more"] is False, page
    page = expect(S.req("GET", P + "/logs?task=%s&limit=1" % run["id"]), 200)
    assert page["data"] == grouped and page["has_more"] is False, page
    for q in ("limit=-1", "limit=0", "limit=501", "offset=-1", "limit=x"):
        bad = S.req("GET", P + "/logs?task=%s&%s" % (run["id"], q))
        assert bad.status == 400 and bad.json["error"]["param"] == q.split("=")[0], (q, bad)
    # the run id is required: absent or empty alike (empty was 404 "run  not found")
    for q in ("", "?task="):
        bad = S.req("GET", P + "/logs" + q)
        assert bad.status == 400 and bad.json["error"]["code"] == "missing_parameter", bad
        assert bad.json["error"]["param"] == "task", bad


def test_logs_jsonl_survives_unicode_line_breaks():
    """Messages holding U+2028, U+2029 or U+0085 come back one JSONL line
    per entry, even for a reader splitting on Unicode line boundaries."""
    t = agent_task(assigned_agent_id="logs-u")
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    msgs = ["a\u2028b", "c\u2029d\u0085e", "plain é €"]
    expect(S.req("POST", base + "/append_log", {"entries": [{"message": m} for m in msgs]}), 200)
    lg = S.req("GET", base + "/logs")
    lines = lg.text.splitlines()
    assert len(lines) == 3, lines
    assert [json.loads(x)["message"] for x in lines] == msgs


def test_set_output_schema():
    t = agent_task(assigned_agent_id="out", output_schema={
        "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}})
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("PATCH", base, {"status": "running"}), 200)
    r = S.req("PATCH", base + "/set_output", {"output": {"n": "x"}})
    assert r.status == 400 and "$.n" in r.json["error"]["param"]
    done = expect(S.req("PATCH", base + "/set_output", {"output": {"n": 4}}), 200)
    assert done["status"] == "completed" and done["output"] == {"n": 4}
    assert S.req("PATCH", base + "/set_output", {"output": {"n": 5}}).status == 409


def test_a_worker_completes_a_run_only_with_an_output_its_schema_takes():
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    t = agent_task(assigned_agent_id="outw", output_schema=schema, settings={"max_retries": 0})
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "outw"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])

    def report(**kw):
        res = {"run_id": run["id"], "attempt": run["attempt"], "status": "completed"}
        res.update(kw)
        return expect(S.req("POST", P + "/workers/report", {"results": [res]}), 200)["data"][0]
    # no output, or one the schema refuses: refused, the run still running
    for bad in ({}, {"output": {"n": "x"}}):
        out = report(**bad)
        assert out["ok"] is False and out["error"]["code"] == "output_invalid", out
    r = S.req("PATCH", base, {"status": "completed"})
    assert r.status == 400 and r.json["error"]["code"] == "output_invalid", r.json
    assert expect(S.req("GET", base), 200)["status"] == "running"
    out = report(output={"n": 3})
    assert out["ok"] is True, out
    got = expect(S.req("GET", base), 200)
    assert got["status"] == "completed" and got["output"] == {"n": 3}, got
    # failing needs no output
    t2 = agent_task(assigned_agent_id="outw", output_schema=schema, settings={"max_retries": 0})
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "outw"}), 200)["data"][0]
    assert report(status="failed")["ok"] is True
    del t2
    # a queued run still waiting for its dependencies is not completed by an output
    dep = agent_task(assigned_agent_id="outdep")
    t3 = agent_task(assigned_agent_id="outw3", output_schema=schema, dependencies=[dep["id"]])
    r3 = expect(S.req("GET", P + "/tasks/%s/runs" % t3["id"]), 200)["data"][0]
    assert r3["blocked_by"], r3
    r = S.req("PATCH", P + "/tasks/%s/runs/%s/set_output" % (t3["id"], r3["id"]), {"output": {"n": 1}})
    assert r.status == 409 and r.json["error"]["code"] == "dependencies_pending", r.json
    assert expect(S.req("GET", P + "/tasks/%s/runs/%s" % (t3["id"], r3["id"])), 200)["status"] == "queued"


def test_unusable_output_schema_is_refused_at_create():
    bad = {"type": "object", "properties": {"n": {"type": "nope"}}}
    r = S.req("POST", P + "/tasks", {"code": "true", "runtime_id": "sh", "output_schema": bad})
    assert r.status == 400 and r.json["error"]["code"] == "invalid_schema", r
    assert r.json["error"]["param"] == "output_schema"
    assert "properties.n.type" in r.json["error"]["message"], r
    r = S.req("POST", P + "/tasks/batch", {"tasks": [
        {"assigned_agent_id": "a"}, {"assigned_agent_id": "a", "output_schema": {"minimum": "x"}}]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[1].output_schema", r
    # nothing of the refused batch was stored
    listed = expect(S.req("GET", P + "/tasks?limit=500"), 200)["data"]
    assert not [t for t in listed if t.get("output_schema") == {"minimum": "x"}]


def test_schema_keywords_outside_subset_refused_and_patterns_read_as_ecma():
    # uniqueItems, prefixItems, not ... were ignored, so the schema accepted
    # everything there; now the create is refused naming the keyword's path
    r = S.req("POST", P + "/definitions", {"id": "def-sub", "title": "S", "input_schema": {
        "type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}})
    assert r.status == 400 and r.json["error"]["code"] == "invalid_schema", r
    assert r.json["error"]["param"] == "input_schema", r
    assert "input_schema: properties.tags.uniqueItems: is not supported" in r.json["error"]["message"], r
    r = S.req("POST", P + "/tasks", {"assigned_agent_id": "a", "output_schema": {
        "items": {"not": {"type": "null"}}}})
    assert r.status == 400 and "output_schema: items.not" in r.json["error"]["message"], r
    # a pattern counts code points ("été" is 3, not 5 bytes) and its ^ does
    # not match after a newline, as in ECMA-262
    t = agent_task(assigned_agent_id="pat", output_schema={
        "type": "object", "properties": {"name": {"type": "string", "pattern": "^.{1,3}$"},
                                         "tag": {"pattern": "^ok"}}})
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("PATCH", base, {"status": "running"}), 200)
    r = S.req("PATCH", base + "/set_output", {"output": {"name": "été", "tag": "no\nok"}})
    assert r.status == 400 and r.json["error"]["param"] == "$.tag", r
    r = S.req("PATCH", base + "/set_output", {"output": {"name": "a\nb"}})
    assert r.status == 400 and r.json["error"]["param"] == "$.name", r
    done = expect(S.req("PATCH", base + "/set_output", {"output": {"name": "été", "tag": "ok"}}), 200)
    assert done["status"] == "completed", done


def test_checkpoints_heartbeat_include():
    t = agent_task(assigned_agent_id="cp")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "cp"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("POST", base + "/checkpoints", {"data": {"step": 1}}), 200)
    cps = expect(S.req("GET", base + "/checkpoints"), 200)["data"]
    assert [c["data"] for c in cps] == [{"step": 1}]
    # a list like every list: newest first, paged, with has_more and total
    for i in (2, 3):
        expect(S.req("POST", base + "/checkpoints", {"data": {"step": i}}), 200)
    page = expect(S.req("GET", base + "/checkpoints?limit=2"), 200)
    assert [c["data"]["step"] for c in page["data"]] == [3, 2], page
    assert page["has_more"] is True and page["total"] == 3, page
    page = expect(S.req("GET", base + "/checkpoints?limit=2&offset=2"), 200)
    assert [c["data"]["step"] for c in page["data"]] == [1] and page["has_more"] is False, page
    assert S.req("GET", base + "/checkpoints?limit=0").status == 400
    hb = expect(S.req("POST", base + "/heartbeat", {"progress": 0.5}), 200)
    assert hb["progress"] == 0.5
    # the task's progress follows its latest run's (it stayed 0 while running)
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["progress"] == 0.5
    expect(S.req("PATCH", base, {"progress": 0.75}), 200)
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["progress"] == 0.75
    assert S.req("POST", base + "/heartbeat", {"progress": 2}).json["error"]["code"] == "out_of_range"
    assert S.req("POST", base + "/heartbeat", {"progress": "x"}).json["error"]["code"] == "invalid_type"
    full = expect(S.req("GET", base + "?include=input,checkpoints,logs"), 200)
    assert "input" in full and len(full["checkpoints"]) == 3 and "logs" in full
    assert "input" not in expect(S.req("GET", base), 200)
    assert S.req("GET", base + "?include=nope").status == 400


def test_definitions_and_trigger():
    d = expect(S.req("POST", P + "/definitions", {"id": "def-echo", "title": "Echo",
               "input_schema": {"type": "object", "required": ["x"]}}), 201)
    assert d["id"] == "def-echo"
    assert S.req("POST", P + "/definitions", {"input_schema": {"type": 5}}).status == 400
    assert S.req("POST", P + "/definitions/def-echo/trigger", {"input": {}}).status == 400
    t = expect(S.req("POST", P + "/definitions/def-echo/trigger", {"input": {"x": 1}}), 201)
    assert t["run"]["status"] == "queued" and t["definition_id"] == "def-echo"
    got = expect(S.req("POST", P + "/workers/lease", {"definitions": ["def-echo"]}), 200)["data"]
    assert [r["id"] for r in got] == [t["run"]["id"]]
    expect(S.req("PATCH", P + "/definitions/def-echo", {"title": "Echo 2"}), 200)
    assert expect(S.req("GET", P + "/definitions/def-echo"), 200)["title"] == "Echo 2"
    expect(S.req("DELETE", P + "/definitions/def-echo"), 200)
    assert S.req("GET", P + "/definitions/def-echo").status == 404


def test_definition_input_schema_holds_for_every_run():
    # only trigger checked it: a task (or batch, run, runs) of the definition
    # with input it refuses was created and run
    expect(S.req("POST", P + "/definitions", {"id": "def-in", "title": "In", "input_schema": {
        "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}), 201)
    n0 = expect(S.req("GET", P + "/tasks?definition_id=def-in"), 200)["total"]
    r = S.req("POST", P + "/tasks", {"definition_id": "def-in", "input": {"n": "x"}, "run": True})
    assert r.status == 400 and r.json["error"]["code"] == "input_invalid", r
    assert r.json["error"]["param"] == "input" and "$.n" in r.json["error"]["message"], r
    r = S.req("POST", P + "/tasks", {"definition_id": "def-in"})
    assert r.status == 400 and r.json["error"]["param"] == "input", r
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"definition_id": "def-in", "input": {"n": 1}},
                                                     {"definition_id": "def-in", "input": {}}]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[1].input", r
    r = S.req("POST", P + "/definitions/def-in/trigger", {"input": {"n": 1.5}})
    assert r.status == 400 and r.json["error"]["code"] == "input_invalid", r
    assert expect(S.req("GET", P + "/tasks?definition_id=def-in"), 200)["total"] == n0
    t = expect(S.req("POST", P + "/tasks", {"definition_id": "def-in", "input": {"n": 1},
                                            "run": False}), 201)
    # a run's input is the task's with the request's merged over it
    for path in ("/tasks/%s/run", "/tasks/%s/runs"):
        r = S.req("POST", P + path % t["id"], {"input": {"n": "two"}})
        assert r.status == 400 and r.json["error"]["param"] == "input", (path, r)
    assert expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["total"] == 0
    run = expect(S.req("POST", P + "/tasks/%s/run" % t["id"], {"input": {"n": 2}}), 201)
    assert run["input"] == {"n": 2}, run
    expect(S.req("DELETE", P + "/tasks/" + t["id"]), 200)   # no worker of a later test leases it


def test_deadline_is_stored_in_utc_with_milliseconds():
    # API.md: timestamps are RFC 3339 in UTC with milliseconds (it was
    # echoed as written)
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "dl", "run": False,
                                            "deadline": "2030-01-01T02:00:00+02:00"}), 201)
    assert t["deadline"] == "2030-01-01T00:00:00.000Z", t
    t = expect(S.req("PATCH", P + "/tasks/" + t["id"], {"deadline": "2030-01-01t00:00:00.5-05:00"}), 200)
    assert t["deadline"] == "2030-01-01T05:00:00.500Z", t
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["deadline"] == "2030-01-01T05:00:00.500Z"
    t = expect(S.req("PATCH", P + "/tasks/" + t["id"], {"deadline": None}), 200)
    assert t["deadline"] is None, t


def test_definition_settings_are_checked_and_given_to_its_tasks():
    # they were stored unchecked and never applied
    for bad, param in (({"timeout_ms": -1}, "settings.timeout_ms"), ({"bogus": 1}, "settings.bogus"),
                       ({"retry_backoff": "zzz"}, "settings.retry_backoff"),
                       ({"max_retries": 1000000}, "settings.max_retries")):
        r = S.req("POST", P + "/definitions", {"title": "bad", "code": "true", "settings": bad})
        assert r.status == 400 and r.json["error"]["param"] == param, (bad, r.json)
    expect(S.req("POST", P + "/definitions", {"id": "def-set", "title": "s", "code": "true"}), 201)
    r = S.req("PATCH", P + "/definitions/def-set", {"settings": {"timeout_ms": "abc"}})
    assert r.status == 400 and r.json["error"]["param"] == "settings.timeout_ms", r.json
    expect(S.req("PATCH", P + "/definitions/def-set",
                 {"settings": {"timeout_ms": 5000, "max_retries": 2}}), 200)
    t = expect(S.req("POST", P + "/tasks", {"definition_id": "def-set", "run": False}), 201)
    assert t["settings"]["timeout_ms"] == 5000 and t["settings"]["max_retries"] == 2, t
    # the task's own settings win over its definition's
    t = expect(S.req("POST", P + "/tasks", {"definition_id": "def-set", "run": False,
                                            "settings": {"max_retries": 0}}), 201)
    assert t["settings"]["timeout_ms"] == 5000 and t["settings"]["max_retries"] == 0, t
    t = expect(S.req("POST", P + "/definitions/def-set/trigger", {}), 201)
    assert t["settings"]["timeout_ms"] == 5000, t


def test_assigned_agents_fan_out_once_per_agent():
    # API.md: "assigned_agents fans out: one run per agent".  An agent listed
    # twice got two runs, and assigned_agent_id beside assigned_agents was
    # kept on the task but silently given no run.
    t = agent_task(assigned_agent_id=None, assigned_agents=["fan-1", "fan-2", "fan-1"])
    assert t["assigned_agents"] == ["fan-1", "fan-2"], t
    runs = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]
    assert sorted(r["agent_id"] for r in runs) == ["fan-1", "fan-2"], runs
    r = S.req("POST", P + "/tasks", {"assigned_agent_id": "fan-0", "assigned_agents": ["fan-3"]})
    assert r.status == 400 and r.json["error"]["code"] == "conflicting_fields", r
    assert r.json["error"]["param"] == "assigned_agents", r
    for agent in ("fan-1", "fan-2"):   # no worker of a later test leases them
        got = expect(S.req("POST", P + "/workers/lease", {"agent_id": agent}), 200)["data"]
        expect(S.req("POST", P + "/workers/report", {"results": [
            {"run_id": got[0]["id"], "attempt": 1, "status": "completed"}]}), 200)


def test_dependencies_block_and_fail():
    a = agent_task(assigned_agent_id="dep-a")
    b = agent_task(assigned_agent_id="dep-b", dependencies=[a["id"], a["id"]])
    assert b["dependencies"] == [a["id"]], b    # listed twice, kept once
    brun = expect(S.req("GET", P + "/tasks/%s/runs" % b["id"]), 200)["data"][0]
    assert brun["blocked_by"] == [a["id"]]
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "dep-b"}), 200)["data"] == []
    arun = expect(S.req("POST", P + "/workers/lease", {"agent_id": "dep-a"}), 200)["data"][0]
    expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": arun["id"], "attempt": 1, "status": "completed"}]}), 200)
    got = expect(S.req("POST", P + "/workers/lease", {"agent_id": "dep-b", "wait_ms": 20000}), 200)["data"]
    assert [r["id"] for r in got] == [brun["id"]]
    # failure propagates
    c = agent_task(assigned_agent_id="dep-c")
    d = agent_task(assigned_agent_id="dep-d", dependencies=[c["id"]])
    crun = expect(S.req("POST", P + "/workers/lease", {"agent_id": "dep-c"}), 200)["data"][0]
    expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": crun["id"], "attempt": 1, "status": "failed", "error": "x"}]}), 200)
    drun = wait_for(lambda: (lambda r: r if r["status"] == "failed" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % d["id"]), 200)["data"][0]), what="dependency failure")
    assert drun["error"]["code"] == "dependency_failed"
    r = S.req("PATCH", P + "/tasks/" + c["id"], {"dependencies": [d["id"]]})
    assert r.status == 400 and r.json["error"]["code"] == "dependency_cycle"
    # a dependency deleted before it ever ran fails its dependants (they
    # waited for good)
    e = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "dep-e", "run": False}), 201)
    f = agent_task(assigned_agent_id="dep-f", dependencies=[e["id"]])
    expect(S.req("DELETE", P + "/tasks/" + e["id"]), 200)
    frun = wait_for(lambda: (lambda r: r if r["status"] == "failed" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % f["id"]), 200)["data"][0]), what="deleted dependency")
    assert frun["error"]["code"] == "dependency_failed" and e["id"] in frun["error"]["message"], frun


def test_pause_resume_cancel():
    t = agent_task(assigned_agent_id="pr")
    expect(S.req("POST", P + "/tasks/%s/pause" % t["id"]), 200)
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    assert run["status"] == "paused"
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "pr"}), 200)["data"] == []
    expect(S.req("POST", P + "/tasks/%s/resume" % t["id"]), 200)
    assert expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]["status"] == "queued"
    expect(S.req("POST", P + "/tasks/%s/cancel" % t["id"]), 200)
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    assert run["status"] == "canceled"
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["status"] == "canceled"


def test_queued_ids_oldest_first():
    a = agent_task(assigned_agent_id="qid", metadata={"q": "1"})
    b = agent_task(assigned_agent_id="qid", metadata={"q": "1"})
    ids = expect(S.req("GET", P + "/tasks/queued_ids?limit=500"), 200)["data"]
    assert ids.index(a["id"]) < ids.index(b["id"])
    assert S.req("GET", P + "/tasks/queued_ids?limit=0").status == 400


def test_interaction_and_review():
    t = agent_task(assigned_agent_id="hitl")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "hitl"}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    assert S.req("POST", base + "/review", {"decision": "approve"}).status == 409
    expect(S.req("PATCH", base, {"status": "interaction_required"}), 200)
    assert S.req("POST", base + "/interaction", {}).status == 400
    # null is no answer: it resumed the run as if the question had been answered
    r = S.req("POST", base + "/interaction", {"response": None})
    assert r.status == 400 and r.json["error"]["code"] == "missing_field", r
    assert expect(S.req("GET", base), 200)["status"] == "interaction_required"
    back = expect(S.req("POST", base + "/interaction", {"response": {"answer": 42}}), 200)
    assert back["status"] == "running"
    expect(S.req("PATCH", base, {"status": "review_required"}), 200)
    assert S.req("POST", base + "/review", {"decision": "maybe"}).status == 400
    done = expect(S.req("POST", base + "/review", {"decision": "approve", "comment": "ok"}), 200)
    assert done["status"] == "completed"


def test_a_patch_out_of_an_approval_hold_clears_the_question():
    # a run PATCHed out of interaction_required has no question left: the
    # approval's stayed on the running run ("interaction": {kind: approval})
    t = agent_task(assigned_agent_id="hold-patch", settings={"require_approval": True}, run=True)
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    assert run["status"] == "interaction_required" and run["interaction"]["kind"] == "approval", run
    run = expect(S.req("PATCH", P + "/tasks/%s/runs/%s" % (t["id"], run["id"]), {"status": "running"}), 200)
    assert run["status"] == "running" and run["interaction"] is None, run


def test_a_worker_key_reports_work_but_holds_no_gate():
    # run PATCH is a worker's report: queued -> running -> an end.  A worker
    # key moved runs out of interaction_required, review_required and paused
    # with it, past the gates whose own routes need task:write.
    wk = expect(S.req("POST", P + "/api_keys", {"name": "w", "scopes": ["worker"]}), 201)["key"]
    t = agent_task(assigned_agent_id="gate")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "gate"}, key=wk), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("PATCH", base, {"status": "interaction_required"}, key=wk), 200)
    for to in ("running", "queued", "completed"):
        r = S.req("PATCH", base, {"status": to}, key=wk)
        assert r.status == 403 and r.json["error"]["code"] == "insufficient_scope", (to, r)
    r = S.req("POST", base + "/interaction", {"response": 1}, key=wk)
    # the refusal names the scope the endpoint needs
    assert r.status == 403 and r.json["error"]["message"].endswith("(task:write)"), r
    r = S.req("GET", P + "/webhooks", key=wk)
    assert r.status == 403 and r.json["error"]["message"].endswith("(admin)"), r
    expect(S.req("POST", base + "/interaction", {"response": 1}), 200)
    expect(S.req("PATCH", base, {"status": "review_required"}, key=wk), 200)
    r = S.req("PATCH", base, {"status": "completed"}, key=wk)
    assert r.status == 403 and r.json["error"]["code"] == "insufficient_scope", r
    expect(S.req("POST", base + "/review", {"decision": "approve"}), 200)
    # the code quernd runs itself is not a worker's to end
    c = expect(S.req("POST", P + "/tasks", {"code": "sleep 30", "runtime_id": "sh"}), 201)
    crun = wait_for(lambda: (lambda r: r if r["status"] == "running" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % c["id"]), 200)["data"][0]), what="code running")
    cbase = P + "/tasks/%s/runs/%s" % (c["id"], crun["id"])
    r = S.req("PATCH", cbase, {"status": "completed"}, key=wk)
    assert r.status == 403 and r.json["error"]["code"] == "insufficient_scope", r
    # nor is it by a report, which finishes leased runs (it was ok: true, the
    # run completed with the worker's output while its code went on)
    for k in (wk, None):
        out = expect(S.req("POST", P + "/workers/report", {"results": [
            {"run_id": crun["id"], "attempt": 1, "status": "completed", "output": {"w": 1}}]},
            **({"key": k} if k else {})), 200)["data"][0]
        assert not out["ok"] and out["error"]["code"] == "code_running", out
        assert out["error"]["type"] == "conflict", out
    assert expect(S.req("GET", cbase), 200)["status"] == "running"
    expect(S.req("POST", cbase + "/cancel", {}), 200)
    # task:write may lease and report too (docs/API.md says so)
    tw = expect(S.req("POST", P + "/api_keys", {"name": "tw", "scopes": ["task:write"]}), 201)["key"]
    agent_task(assigned_agent_id="gate-tw")
    got = expect(S.req("POST", P + "/workers/lease", {"agent_id": "gate-tw"}, key=tw), 200)["data"]
    assert len(got) == 1
    out = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": got[0]["id"], "attempt": 1, "status": "completed"}]}, key=tw), 200)["data"][0]
    assert out["ok"], out


def test_set_output_is_no_way_around_the_code_or_the_dependencies():
    # set_output with an output_schema completes an active run: a worker key
    # completed a run whose code quernd was running (the code went on, its
    # end lost), and a run blocked on dependencies went queued -> completed
    # past them; a PATCH to running started a blocked run the same way
    sch = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}
    wk = expect(S.req("POST", P + "/api_keys", {"name": "w", "scopes": ["worker"]}), 201)["key"]
    c = expect(S.req("POST", P + "/tasks", {"code": "echo go; sleep 1; echo end", "runtime_id": "sh",
                                            "output_schema": sch}), 201)
    crun = wait_for(lambda: (lambda r: r if r["status"] == "running" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % c["id"]), 200)["data"][0]), what="code running")
    r = S.req("PATCH", P + "/tasks/%s/runs/%s/set_output" % (c["id"], crun["id"]), {"output": {"a": 1}}, key=wk)
    assert r.status == 403 and r.json["error"]["code"] == "insufficient_scope", r
    crun = wait_for(lambda: (lambda r: r if r["status"] not in ("queued", "running") else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % c["id"]), 200)["data"][0]), what="code ended")
    assert crun["status"] == "failed" and crun["error"]["code"] == "invalid_output", crun   # no output
    dep = agent_task(assigned_agent_id="so-dep")
    t = agent_task(assigned_agent_id="so-blocked", dependencies=[dep["id"]], output_schema=sch)
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    for k in (wk, None):
        r = S.req("PATCH", base + "/set_output", {"output": {"a": 1}}, **({"key": k} if k else {}))
        assert r.status == 409 and r.json["error"]["code"] == "dependencies_pending", r
        r = S.req("PATCH", base, {"status": "running"}, **({"key": k} if k else {}))
        assert r.status == 409 and r.json["error"]["code"] == "dependencies_pending", r
    run = expect(S.req("GET", base), 200)
    assert run["status"] == "queued" and run["output"] is None and run["blocked_by"] == [dep["id"]], run


def test_a_worker_key_reads_every_get_route_of_its_runs():
    # docs/API.md: "the GET routes of runs accept it"; connection_token and
    # the grouped logs were 403 to a worker key.  Its token reads, never commands.
    wk = expect(S.req("POST", P + "/api_keys", {"name": "w", "scopes": ["worker"]}), 201)["key"]
    t = agent_task(assigned_agent_id="wread")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "wread"}, key=wk), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("POST", base + "/append_log", {"entries": [{"message": "w-line"}]}, key=wk), 200)
    grouped = expect(S.req("GET", P + "/logs?task=" + run["id"], key=wk), 200)
    assert any(i["message"] == "w-line" for g in grouped["data"] for i in g["items"]), grouped
    tok = expect(S.req("GET", base + "/connection_token", key=wk), 200)["token"]
    assert "w-line" in S.req("GET", base + "/logs", key=tok).text
    r = S.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "cancel", "id": 1}, key=tok)
    assert r.status == 403 and r.json["error"]["code"] == "token_scope", r


def test_reserved_project_ids_and_unknown_task_runs():
    # "_root" holds the root keys: a project made with that id made every key
    # created in it a root key
    for pid in ("_root", "_x"):
        r = S.req("POST", "/api/projects", {"id": pid, "name": "n"})
        assert r.status == 400 and r.json["error"]["code"] == "reserved_id", r
    r = S.req("GET", P + "/tasks/task_nope/runs")
    assert r.status == 404 and r.json["error"]["code"] == "resource_missing", r


def test_wait_for_result():
    import threading
    box = {}

    def create():
        box["r"] = S.req("POST", P + "/tasks", {"assigned_agent_id": "wfr", "run": True,
                                                "wait_for_result": 20000})
    th = threading.Thread(target=create)
    th.start()
    run = wait_for(lambda: expect(S.req("POST", P + "/workers/lease", {"agent_id": "wfr"}), 200)["data"],
                   what="the waited-for run")[0]
    expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "status": "completed", "output": {"v": 7}}]}), 200)
    th.join(30)
    body = expect(box["r"], 201)
    assert body["run"]["status"] == "completed" and body["run"]["output"] == {"v": 7}
    # the task as it is once the run ended, not as it was created
    now = expect(S.req("GET", P + "/tasks/" + body["id"]), 200)
    assert body["status"] == "completed" and body["last_run_at"] is not None, body
    assert body["last_run_at"] == now["last_run_at"] and body["progress"] == now["progress"], (body, now)


def test_start_up_errors_exit_cleanly():
    import socket
    import subprocess
    import tempfile
    from qlib import BUILD
    quernd = os.path.join(BUILD, "quernd")
    data = tempfile.mkdtemp(prefix="startup-", dir=os.environ.get("QUERN_TEST_TMP"))

    def start(args, env=None):
        r = subprocess.run([quernd, "--data", data] + args, capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, **(env or {})))
        return r.returncode, r.stderr
    # a port already taken: exit 1, never a crash (the executor's threads
    # outlived main's frame and died on it, in about a third of the starts)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = "127.0.0.1:%d" % s.getsockname()[1]
        for _ in range(6):
            rc, err = start(["--listen", taken, "--fsync", "off"])
            assert rc == 1 and "cannot listen on " + taken in err, (rc, err[-2000:])
    rc, err = start(["--bogus"])
    assert rc == 2 and "unknown option: --bogus" in err, (rc, err)
    # QUERN_DRAIN_GRACE_MS: a wrong one was ignored (10 s drain instead)
    for name, value in (("QUERN_LEASE_MS", "-5"), ("DEFAULT_TASK_TIMEOUT_MS", "abc"),
                        ("QUERN_LOG_FORMAT", "xml"), ("QUERN_DRAIN_GRACE_MS", "abc"),
                        ("QUERN_DRAIN_GRACE_MS", "-5"),
                        # read by their modules, which took their default on
                        # a bad value instead of stopping as docs/API.md says
                        ("QUERN_WEBHOOK_TIMEOUT_MS", "15s"), ("QUERN_WEBHOOK_RETRY_BASE_MS", "0"),
                        ("QUERN_WEBHOOK_RETRY_WINDOW_MS", "-1"), ("QUERN_PG_POLL_MS", "x"),
                        ("QUERN_REMOTE_GRACE_MS", "-5"), ("QUERN_SANDBOX_UID", "0"),
                        ("QUERN_OUTBOUND_ALLOW_PRIVATE", "yes")):
        rc, err = start(["--listen", "127.0.0.1:0"], {name: value})
        assert rc == 2 and "%s=%s" % (name, value) in err, (name, rc, err)


def test_restart_keeps_everything():
    s2 = Server()
    t = expect(s2.req("POST", P + "/tasks", {"assigned_agent_id": "rs", "run": True}), 201)
    s2.stop()
    s2.start()
    try:
        assert expect(s2.req("GET", P + "/tasks/" + t["id"]), 200)["status"] == "queued"
        got = expect(s2.req("POST", P + "/workers/lease", {"agent_id": "rs"}), 200)["data"]
        assert [r["task_id"] for r in got] == [t["id"]]
    finally:
        s2.stop()


def test_idempotency_key_while_the_first_request_runs():
    # a retry sent while the first request still ran found no stored answer
    # and ran too (two tasks); it is now 409 idempotency_key_in_flight
    import threading
    h = {"Idempotency-Key": "slow-1"}
    body = {"code": "sleep 2; echo done", "wait_for_result": True, "metadata": {"idem": "slow"}}
    first = []
    th = threading.Thread(target=lambda: first.append(S.req("POST", P + "/tasks", body, headers=h)))
    th.start()
    # the first is being processed once its task exists (its run sleeps 2 s)
    wait_for(lambda: expect(S.req("GET", P + "/tasks?metadata.idem=slow"), 200)["total"] == 1,
             timeout=60, what="the first request's task")
    r = S.req("POST", P + "/tasks", body, headers=h)
    th.join(60)
    if r.status == 409:   # (else the first had already answered: r is its replay)
        assert r.json["error"]["code"] == "idempotency_key_in_flight" and r.header("Retry-After"), r
    else:
        assert r.header("Idempotent-Replayed") == "true", r
    a = first[0]
    assert a.status == 201 and a.json["run"]["status"] == "completed", a
    b2 = S.req("POST", P + "/tasks", body, headers=h)   # after it: the stored answer
    assert b2.status == 201 and b2.json["id"] == a.json["id"] and b2.header("Idempotent-Replayed") == "true"
    assert expect(S.req("GET", P + "/tasks?metadata.idem=slow"), 200)["total"] == 1


def test_idempotency_key_on_a_lease_long_poll_that_waited():
    # a long-poll that waits, then leases (woken, or handed the run): its
    # answer is replayed to a retry with its key, which leases nothing more
    import threading
    body = {"agent_id": "lpi", "worker_id": "wi", "max": 5, "wait_ms": 20000}
    for attempt in range(20):
        h = {"Idempotency-Key": "lp-idem-%d" % attempt}
        first = []
        th = threading.Thread(target=lambda h=h: first.append(S.req("POST", P + "/workers/lease", body,
                                                                headers=h)))
        th.start()
        # while it waits it holds its key; a bad request that came first
        # took the key instead (400), and the long-poll was refused
        # (the long-poll still waiting: it holds the key, not the probe)
        if S.req("POST", P + "/workers/lease", {"not_a_field": 1}, headers=h).status == 409 and th.is_alive():
            break
        th.join(30)
    t1 = agent_task(assigned_agent_id="lpi")
    th.join(30)
    runs = expect(first[0], 200)["data"]
    assert [r["task_id"] for r in runs] == [t1["id"]], runs
    agent_task(assigned_agent_id="lpi")   # a run a second lease would take
    again = S.req("POST", P + "/workers/lease", body, headers=h)
    assert again.status == 200 and again.header("Idempotent-Replayed") == "true", again
    assert again.json == first[0].json, (again.json, first[0].json)
    for r in expect(S.req("POST", P + "/workers/lease", dict(body, wait_ms=0)), 200)["data"]:
        report(r)
    report(runs[0])


def test_an_undelivered_lease_is_not_replayed_to_a_retry_with_its_key():
    # A lease whose answer did not reach its worker gives its runs back
    # (queued, same attempt), but the answer recorded for its
    # Idempotency-Key stayed: the worker's retry was answered those runs
    # (replayed) while another worker leased the same attempt, and both
    # reports were taken.  The record goes with the lease: the retry leases
    # as a new request.  QUERN_TEST_ANSWER_HOLD (test-only) holds the answer
    # while the client resets its connection.
    import socket
    import struct
    import tempfile
    hold = os.path.join(tempfile.mkdtemp(prefix="quern-hold-", dir=os.environ.get("QUERN_TEST_TMP")), "hold")
    open(hold, "w").close()
    s = Server(env={"QUERN_TEST_ANSWER_HOLD": hold})
    try:
        t = expect(s.req("POST", P + "/tasks", {"name": "ud", "assigned_agent_id": "ud", "run": True}), 201)
        body = {"agent_id": "ud", "worker_id": "w1"}
        raw = json.dumps(body).encode()
        c = socket.create_connection((s.host, s.port))
        c.sendall(b"POST %s/workers/lease HTTP/1.1\r\nHost: q\r\nAuthorization: Bearer %s\r\n"
                  b"Idempotency-Key: ud-1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (P.encode(), ROOT_KEY.encode(), len(raw), raw))
        wait_for(lambda: os.path.exists(hold + ".reached"), 30, "the lease's answer held")
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()   # a reset: the answer cannot reach it
        os.unlink(hold)
        wait_for(lambda: expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]["status"]
                 == "queued", 30, "the undelivered lease given back")
        r = s.req("POST", P + "/workers/lease", body, headers={"Idempotency-Key": "ud-1"})
        assert r.status == 200 and r.header("Idempotent-Replayed") is None, r
        assert [x["task_id"] for x in r.json["data"]] == [t["id"]], r.json
        assert expect(s.req("POST", P + "/workers/lease", {"agent_id": "ud", "worker_id": "w2"}), 200)["data"] == []
        run = expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
        assert run["status"] == "running" and run["worker_id"] == "w1", run
    finally:
        s.stop()


def test_idempotency_key():
    h = {"Idempotency-Key": "abc-123"}
    body = {"name": "idem", "assigned_agent_id": "idem", "run": True}
    a = S.req("POST", P + "/tasks", body, headers=h)
    b = S.req("POST", P + "/tasks", body, headers=h)
    assert a.status == b.status == 201 and a.json["id"] == b.json["id"]
    assert b.header("Idempotent-Replayed") == "true"
    assert expect(S.req("GET", P + "/tasks?assigned_agent_id=idem"), 200)["total"] == 1
    c = S.req("POST", P + "/tasks", dict(body, name="other"), headers=h)
    assert c.status == 409 and c.json["error"]["code"] == "idempotency_key_reused"
    # another key, or another API key, is another request
    d = S.req("POST", P + "/tasks", body, headers={"Idempotency-Key": "abc-124"})
    assert d.status == 201 and d.json["id"] != a.json["id"]
    # errors are remembered too (4xx), so a retried bad request stays bad
    e1 = S.req("POST", P + "/tasks", {"name": 5}, headers={"Idempotency-Key": "bad-1"})
    e2 = S.req("POST", P + "/tasks", {"name": 5}, headers={"Idempotency-Key": "bad-1"})
    assert e1.status == e2.status == 400
    assert S.req("POST", P + "/tasks", body, headers={"Idempotency-Key": "x" * 256}).status == 400
    # a key that is not printable UTF-8 text is refused, not stored: PostgreSQL
    # could not look up bytes 0xFF 0xFE, and the request went on as new
    for bad in ("\xff\xfe", "a\x01b"):
        r = S.req("POST", P + "/tasks", body, headers={"Idempotency-Key": bad})
        assert r.status == 400 and r.json["error"]["code"] == "invalid_idempotency_key", r
    r = S.req("POST", P + "/tasks", body, headers={"Idempotency-Key": "caf\u00e9-1".encode().decode("latin-1")})
    assert r.status == 201, r
    # a new API key is shown once: a replay answers the same key without it,
    # and the replay record does not keep it (only its hash is stored)
    kb = {"name": "idem-key", "scopes": ["worker"]}
    k1 = S.req("POST", P + "/api_keys", kb, headers={"Idempotency-Key": "key-1"})
    k2 = S.req("POST", P + "/api_keys", kb, headers={"Idempotency-Key": "key-1"})
    assert k1.status == k2.status == 201 and k1.json["id"] == k2.json["id"], (k1.json, k2.json)
    assert k1.json["key"].startswith("qk_") and k2.json["key"] is None, k2.json
    for fn in ("quern.db", "quern.db-wal"):
        path = os.path.join(S.data, fn)
        if os.path.exists(path):
            with open(path, "rb") as f:
                assert k1.json["key"].encode() not in f.read(), fn


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
