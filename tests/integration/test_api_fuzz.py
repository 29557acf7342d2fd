"""Every route of the API under mutated input: bodies with fields of the wrong
type, out of range, huge, deeply nested, missing or unknown; bodies that are
not JSON, not UTF-8 or cut short; path ids and query values that are junk.

The property, for each request: no 5xx, an error answer is JSON naming a code,
and the server stays up.  Afterwards every list still renders (nothing stored
that cannot be read back) and a normal task still runs through.  Deterministic:
the mutations come from one seeded generator (QUERN_FUZZ_SEED, QUERN_FUZZ_N),
and a failure prints the request that caused it."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import ROOT_KEY, Server, expect, run_tests  # noqa: E402

S = Server(extra_args=["--slots", "-1"])
P = "/api/projects/fz"
SEED = int(os.environ.get("QUERN_FUZZ_SEED", "20261123"))
N = int(os.environ.get("QUERN_FUZZ_N", "2500"))

NASTY = [None, True, False, 0, -1, 1.5, -0.0, 2 ** 31, 2 ** 53 + 1, 2 ** 63 - 1, -2 ** 63, 2 ** 64, 1e308,
         -1e308, 1e-320, "", " ", "x" * 70000, "\u00e9\u4e2d\U0001F600", "\u2028", "../../etc/passwd",
         "%00", "a/b", "2026-13-45T99:99:99Z", "1969-12-31T23:59:59Z", "9999-12-31T23:59:59.999Z",
         "* * * * * * *", "@yearly", "Europe/Nowhere", "task:write", "null", "0x10", [], {}, [None],
         {"": ""}, {"a": {"b": {"c": [1, [2, [3]]]}}}]
IDS = ["", "x", "%2e%2e", "..", "a%2Fb", "t" * 300, "%00", "%C3%A9", "0", "-1", "%FF%FE"]
QUERY = ["q=%FF%FE", "status=%C3", "task=%80", "%FF=1", "limit=-1", "limit=0", "limit=99999999999999999999", "offset=-5", "offset=1e9", "limit=abc",
         "status=bogus", "after=%00", "after=-1", "level=nope", "since=yesterday", "tail=-3",
         "project_id=other", "limit=1&limit=2", "q=%FF", "cursor=zzz"]
RAW = [b"", b"{", b"[1,2", b"null", b"[]", b"42", b'"s"', b"\xff\xfe{}", b'{"a":1,"a":2}',
       b'{"x":1e999999}', b'{"x":"\\ud800"}', b'{"x":"\\u0000"}', b"{}" + b" " * 10 + b"{}",
       b"[" * 5000 + b"]" * 5000, b'{"code":"' + b"\xc0\x80" + b'"}']


def deep(n):
    v = 1
    for _ in range(n):
        v = [v]
    return v


def mutate(rnd, v):
    """Returns a copy of v with one random change somewhere inside it."""
    if isinstance(v, dict) and v and rnd.random() < 0.7:
        k = rnd.choice(list(v))
        w = dict(v)
        op = rnd.random()
        if op < 0.15:
            del w[k]
        elif op < 0.25:
            w["unknown_" + str(rnd.randrange(100))] = rnd.choice(NASTY)
        else:
            w[k] = mutate(rnd, v[k])
        return w
    if isinstance(v, list) and v and rnd.random() < 0.6:
        w = list(v)
        i = rnd.randrange(len(w))
        w[i] = mutate(rnd, w[i])
        if rnd.random() < 0.2:
            w = w * rnd.choice([2, 50])
        return w
    r = rnd.random()
    if r < 0.05:
        return deep(rnd.choice([30, 70, 200]))
    if r < 0.1 and isinstance(v, str):
        return v + rnd.choice(NASTY[15:30]) if isinstance(rnd.choice(NASTY[15:30]), str) else v * 3
    return rnd.choice(NASTY)


class World:
    """Real ids for the path parameters: a task with a leased run, and one of
    each other resource."""

    def __init__(self):
        expect(S.req("POST", "/api/projects", {"id": "fz", "name": "fuzz"}), 201)
        self.task = expect(S.req("POST", P + "/tasks", {"name": "agent work", "assigned_agent_id": "w1",
                                                        "run": True}), 201)
        runs = expect(S.req("POST", P + "/workers/lease", {"agent_id": "w1", "max": 1}), 200)["data"]
        assert runs, lease
        self.run = runs[0]
        self.done = expect(S.req("POST", P + "/tasks", {"name": "done", "code": "true", "runtime_id": "sh"}), 201)
        self.defn = expect(S.req("POST", P + "/definitions", {"id": "def-fz", "code": "echo a",
                                                                "runtime_id": "sh"}), 201)
        self.hook = expect(S.req("POST", P + "/webhooks", {"url": "https://example.com/h", "secret": "s"}), 201)
        self.trig = expect(S.req("POST", P + "/triggers", {"task_id": self.task["id"], "secret": "k"}), 201)
        self.key = expect(S.req("POST", P + "/api_keys", {"name": "r", "scopes": ["task:read"]}), 201)
        expect(S.req("POST", P + "/secrets", {"name": "API_TOKEN", "value": "tok-12345"}), 201)

    def ops(self):
        t, r = self.task["id"], self.run["id"]
        run = P + "/tasks/%s/runs/%s" % (t, r)
        task_body = {"name": "n", "code": "echo hi", "runtime_id": "sh", "priority": 5,
                     "timeout_seconds": 30, "max_retries": 2, "metadata": {"k": "v"},
                     "settings": {"network": False, "limits": {"memory_mb": 64}},
                     "schedule": "*/5 * * * *", "timezone": "Europe/Berlin",
                     "deadline": "2030-01-01T00:00:00Z", "depends_on": [self.done["id"]],
                     "output_schema": {"type": "object", "properties": {"n": {"type": "integer"}}},
                     "input": {"a": 1}, "tags": ["x"]}
        return [
            ("POST", "/api/projects", {"id": "p1", "name": "p"}),
            ("POST", P + "/api_keys", {"name": "k", "scopes": ["task:read", "task:write"]}),
            ("DELETE", P + "/api_keys/{id}", None),
            ("POST", P + "/definitions", {"id": "d1", "code": "echo a", "runtime_id": "sh",
                                          "input_schema": {"type": "object"}, "settings": {"timeout_ms": 100}}),
            ("PATCH", P + "/definitions/def-fz", {"code": "echo b", "description": "d"}),
            ("POST", P + "/definitions/def-fz/trigger", {"input": {"a": 1}, "priority": 1}),
            ("POST", P + "/tasks", task_body),
            ("POST", P + "/tasks/batch", {"tasks": [task_body, {"name": "b"}]}),
            ("PATCH", P + "/tasks/" + t, {"priority": 3, "metadata": {"a": 1}, "schedule": "@daily"}),
            ("POST", P + "/tasks/" + t + "/run", {"input": {}}),
            ("POST", P + "/tasks/{id}/cancel", {"reason": "r"}),
            ("POST", P + "/tasks/{id}/retry", {}),
            ("POST", P + "/tasks/{id}/pause", {}),
            ("POST", P + "/tasks/{id}/resume", {}),
            ("POST", P + "/tasks/" + t + "/runs", {"input": {"a": 1}}),
            ("PATCH", run, {"status": "running", "progress": 0.5, "tokens_used": 10, "cost": 0.01}),
            ("POST", run + "/append_log", {"entries": [{"level": "info", "message": "m", "data": {"a": 1}}]}),
            ("PATCH", run + "/set_output", {"output": {"n": 1}}),
            ("POST", run + "/interaction", {"response": {"answer": 42}}),
            ("POST", run + "/review", {"decision": "approve", "comment": "ok"}),
            ("POST", run + "/checkpoints", {"data": {"step": 1}, "name": "c"}),
            ("POST", run + "/heartbeat", {"progress": 0.5}),
            ("POST", run + "/command", {"jsonrpc": "2.0", "method": "user_message", "params": {"text": "x"},
                                        "id": 1}),
            ("POST", run + "/artifacts/presign", {"storage_path": "out/a.txt", "expires_in": 60}),
            ("POST", run + "/artifacts", {"name": "a.txt", "content_base64": "aGk=", "content_type": "text/plain"}),
            ("POST", run + "/storage_access", {"scope": "project", "name": "cache", "access_type": "read"}),
            ("POST", run + "/relay_message", {"text": "x"}),
            ("POST", run + "/cancel", {"reason": "r"}),
            ("POST", P + "/storage", {"scope": "project", "name": "cache"}),
            ("POST", P + "/tasks", {"name": "a", "assigned_agent_id": "w2", "run": True}),
            ("POST", P + "/workers/lease", {"agent_id": "w2", "max": 3, "wait_ms": 0, "tags": ["x"]}),
            ("POST", P + "/workers/report", {"results": [{"run_id": r, "status": "completed", "output": {}}]}),
            ("POST", P + "/triggers", {"task_id": t, "secret": "k2"}),
            ("POST", "/hooks/" + self.trig["id"], {"payload": 1}),
            ("POST", P + "/webhooks", {"url": "https://example.com/x", "secret": "s", "events": ["task_run.*"]}),
            ("PUT", P + "/policy", {"allowed_runtimes": ["python", "sh"], "max_timeout_ms": 1000,
                                    "require_approval": False}),
            ("POST", P + "/secrets", {"name": "S1", "value": "v"}),
            ("DELETE", P + "/secrets/{id}", None),
            ("DELETE", P + "/triggers/{id}", None),
            ("DELETE", P + "/webhooks/{id}", None),
            ("GET", P + "/tasks", None),
            ("GET", P + "/runs", None),
            ("GET", P + "/logs", None),
            ("GET", P + "/tasks/queued_ids", None),
            ("GET", P + "/tasks/{id}", None),
            ("GET", P + "/tasks/" + t + "/schedule", None),
            ("GET", P + "/tasks/" + t + "/runs", None),
            ("GET", run + "/logs", None),
            ("GET", run + "/session_logs", None),
            ("GET", run + "/checkpoints", None),
            ("GET", run + "/artifacts", None),
            ("GET", run + "/artifacts/content", None),
            ("GET", run + "/connection_token", None),
            ("GET", P + "/task-runs/{id}", None),
            ("GET", P + "/webhooks/" + self.hook["id"] + "/deliveries", None),
            ("GET", P + "/definitions/{id}", None),
            ("GET", "/artifacts/fz/" + r, None),
        ]


HEADERS = [{"Idempotency-Key": "k" * 300}, {"Idempotency-Key": ""}, {"Idempotency-Key": "same-key"},
           {"Idempotency-Key": "\xff\xfe"}, {"X-Worker-Id": "\xe9t\xe9"},
           {"Content-Type": "text/plain"}, {"Content-Type": "application/json; charset=latin1"},
           {"Prefer": "return=minimal"}, {"Prefer": "wait=999999999"}, {"Accept": "text/event-stream"},
           {"X-Quern-Signature": "t=1,sha256=00"}, {"Last-Event-ID": "-5"}]
AUTH = ["", "Bearer", "Bearer ", "Bearer qk_nope", "Basic Zm9vOmJhcg==", "Bearer " + "q" * 5000,
        "bearer qk_root_test_key_0123456789"]


def request(rnd, method, path, body):
    """One mutated request; returns (method, path, raw bytes or None)."""
    if "{id}" in path:
        path = path.replace("{id}", rnd.choice(IDS) if rnd.random() < 0.8 else "x")
    if rnd.random() < 0.3:
        path += "?" + "&".join(rnd.sample(QUERY, rnd.randint(1, 3)))
    if body is None:
        return method, path, None
    r = rnd.random()
    if r < 0.12:
        return method, path, rnd.choice(RAW)
    if r < 0.2:
        text = json.dumps(body).encode()
        return method, path, text[:rnd.randrange(len(text))]
    for _ in range(rnd.choice([1, 1, 2, 3])):
        body = mutate(rnd, body)
    return method, path, json.dumps(body).encode()


W = []


def test_no_route_answers_5xx_to_mutated_input():
    w = World()
    W.append(w)
    ops = w.ops()
    rnd = random.Random(SEED)
    bad = []
    codes = {}
    for i in range(N):
        method, path, body = ops[rnd.randrange(len(ops))]
        m, p, raw = request(rnd, method, path, body)
        headers, key = None, ROOT_KEY
        if rnd.random() < 0.1:
            headers = dict(rnd.choice(HEADERS))
        if rnd.random() < 0.04:
            headers, key = {"Authorization": rnd.choice(AUTH)}, None
        try:
            resp = S.req(m, p, raw=raw, headers=headers, key=key)
        except Exception as e:  # the server closed on us: as bad as a 500
            bad.append((i, m, p, raw, "no answer: %r" % e))
            if S.proc.poll() is not None:
                break
            continue
        codes[resp.status] = codes.get(resp.status, 0) + 1
        if resp.status >= 500:
            bad.append((i, m, p, raw, resp))
        elif resp.status >= 400 and not (isinstance(resp.json, dict) and
                                         isinstance((resp.json.get("error") or {}).get("code"), str)):
            bad.append((i, m, p, raw, "error without a code: %r" % resp))
    print("  %d requests, seed %d, statuses %s" % (N, SEED, dict(sorted(codes.items()))))
    for i, m, p, raw, what in bad[:10]:
        print("  #%d %s %s %r -> %r" % (i, m, p[:200], (raw or b"")[:300], what))
    assert S.proc.poll() is None, "quernd died"
    assert not bad, "%d requests went wrong (first shown above)" % len(bad)
    # the property held for a spread of answers, not just one refusal
    assert sum(v for k, v in codes.items() if k < 300) > N // 20, codes
    assert sum(v for k, v in codes.items() if 400 <= k < 500) > N // 5, codes


def test_what_was_stored_reads_back_and_work_still_runs():
    for path in ["/api/projects", P + "/tasks?limit=500", P + "/runs?limit=500", P + "/definitions",
                 P + "/webhooks", P + "/triggers", P + "/secrets", P + "/api_keys", P + "/storage",
                 P + "/policy", P + "/logs?task=" + W[0].run["id"] if W else P + "/policy"]:
        r = S.req("GET", path)
        assert r.status == 200, (path, r)
    tasks = expect(S.req("GET", P + "/tasks?limit=500"), 200)["data"]
    for t in tasks[:200]:
        expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
        expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)
    # a fresh project (the fuzzed policy may forbid code in fz) still works end to end
    expect(S.req("POST", "/api/projects", {"id": "after", "name": "after"}), 201)
    t = expect(S.req("POST", "/api/projects/after/tasks", {"name": "w", "assigned_agent_id": "z", "run": True}),
               201)
    runs = expect(S.req("POST", "/api/projects/after/workers/lease", {"agent_id": "z", "max": 1}), 200)["data"]
    assert runs and runs[0]["task_id"] == t["id"], runs


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
