"""Triggers, outgoing webhooks, policy, secrets and relay_message against a
real quernd.  Webhook receivers are local http.servers (qlib.Receiver) on
127.0.0.1; the server under test runs with QUERN_OUTBOUND_ALLOW_PRIVATE=1
so it may reach them, and a second server without it shows that a loopback
URL is refused."""
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Receiver, Server, expect, run_tests, wait_for  # noqa: E402

S = Server(env={"QUERN_OUTBOUND_ALLOW_PRIVATE": "1", "QUERN_WEBHOOK_RETRY_BASE_MS": "100"})
P = "/api/projects/default"


def sign(secret, body, t=None):
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), ("%d." % t).encode() + body, hashlib.sha256).hexdigest()
    return "t=%d,sha256=%s" % (t, mac)


def verify(secret, header, body):
    parts = dict(p.split("=", 1) for p in header.split(","))
    t = int(parts["t"])
    want = hmac.new(secret.encode(), ("%d." % t).encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(want, parts["sha256"]) and abs(time.time() - t) <= 300


def agent_task(**kw):
    body = {"name": "t", "assigned_agent_id": "ag", "run": False, "input": {"a": 1, "b": 2}}
    body.update(kw)
    return expect(S.req("POST", P + "/tasks", body), 201)


# ---- triggers ----

def test_trigger_good_bad_missing_stale_signatures():
    t = agent_task()
    trg = expect(S.req("POST", P + "/triggers", {"task_id": t["id"], "secret": "s3cret-trigger"}), 201)
    assert trg["id"].startswith("trg_") and trg["url"] == "/hooks/" + trg["id"]
    assert trg["task_id"] == t["id"] and "created_at" in trg
    assert "secret" not in trg and "secret_sealed" not in trg
    url = trg["url"]
    body = json.dumps({"b": 20, "c": 30}).encode()

    # good: 202 and a run whose input is the body merged over the task's input
    r = S.req("POST", url, raw=body, key=None, headers={"X-Quern-Signature": sign("s3cret-trigger", body)})
    js = expect(r, 202)
    run = expect(S.req("GET", P + "/tasks/%s/runs/%s?include=input" % (t["id"], js["run_id"])), 200)
    assert run["input"] == {"a": 1, "b": 20, "c": 30}, run["input"]

    # bad: another secret, or a body changed after signing
    r = S.req("POST", url, raw=body, key=None, headers={"X-Quern-Signature": sign("other", body)})
    assert r.status == 401 and r.json["error"]["code"] == "invalid_signature", r
    r = S.req("POST", url, raw=body + b" ", key=None,
              headers={"X-Quern-Signature": sign("s3cret-trigger", body)})
    assert r.status == 401, r
    r = S.req("POST", url, raw=body, key=None, headers={"X-Quern-Signature": "garbage"})
    assert r.status == 401, r
    # missing
    r = S.req("POST", url, raw=body, key=None)
    assert r.status == 401 and r.json["error"]["code"] == "missing_signature", r
    # stale: right MAC, timestamp 10 minutes old (and one from the future)
    for dt in (-600, 600):
        r = S.req("POST", url, raw=body, key=None,
                  headers={"X-Quern-Signature": sign("s3cret-trigger", body, int(time.time()) + dt)})
        assert r.status == 401 and r.json["error"]["code"] == "stale_signature", r
    # only the good call made a run
    runs = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)
    assert runs["total"] == 1


def test_trigger_body_must_be_object_and_replay_is_deduplicated():
    t = agent_task()
    trg = expect(S.req("POST", P + "/triggers", {"task_id": t["id"], "secret": "k"}), 201)
    for raw in (b"[1,2]", b"not json", b"42"):
        r = S.req("POST", trg["url"], raw=raw, key=None, headers={"X-Quern-Signature": sign("k", raw)})
        assert r.status == 400, (raw, r)
    body = b'{"x": 1}'
    h = {"X-Quern-Signature": sign("k", body)}
    a = expect(S.req("POST", trg["url"], raw=body, key=None, headers=h), 202)
    b = expect(S.req("POST", trg["url"], raw=body, key=None, headers=h), 202)
    assert a["run_id"] == b["run_id"]   # the same signed request is one run
    assert expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["total"] == 1



def test_trigger_body_holds_to_the_definitions_input_schema():
    # the body merged over the task's input is checked against the task's
    # definition's input_schema, as POST .../run checks its input: a hook
    # started runs with an input the schema refused
    d = expect(S.req("POST", P + "/definitions", {"title": "typed", "input_schema": {
        "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}), 201)
    t = expect(S.req("POST", P + "/tasks", {"definition_id": d["id"], "input": {"n": 1}}), 201)
    trg = expect(S.req("POST", P + "/triggers", {"task_id": t["id"], "secret": "k"}), 201)
    bad = b'{"n": "seven"}'
    r = S.req("POST", trg["url"], raw=bad, key=None, headers={"X-Quern-Signature": sign("k", bad)})
    assert r.status == 400 and r.json["error"]["code"] == "input_invalid", r
    assert "$.n" in r.json["error"]["message"], r
    assert expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["total"] == 0
    assert expect(S.req("GET", P + "/triggers?task_id=" + t["id"]), 200)["data"][0]["fire_count"] == 0
    good = b'{"n": 7}'
    js = expect(S.req("POST", trg["url"], raw=good, key=None, headers={"X-Quern-Signature": sign("k", good)}), 202)
    run = expect(S.req("GET", P + "/tasks/%s/runs/%s?include=input" % (t["id"], js["run_id"])), 200)
    assert run["input"] == {"n": 7}, run


def test_trigger_replay_with_a_respelled_header_is_one_run():
    # A captured request replayed with its signature header spelled another
    # way (spaces, order, upper-case hex, an added entry, "+t") still carries
    # the same signed message "<t>.<body>": one run, the first answer.
    t = agent_task()
    trg = expect(S.req("POST", P + "/triggers", {"task_id": t["id"], "secret": "k"}), 201)
    body = b'{"replayed": true}'
    now = int(time.time())
    mac = sign("k", body, now).split("sha256=")[1]
    first = expect(S.req("POST", trg["url"], raw=body, key=None,
                         headers={"X-Quern-Signature": "t=%d,sha256=%s" % (now, mac)}), 202)
    for h in (" t=%d , sha256=%s " % (now, mac), "sha256=%s,t=%d" % (mac, now),
              "t=%d,sha256=%s" % (now, mac.upper()), "t=%d,sha256=%s,v1=x" % (now, mac),
              "t=%d,sha256=%s,sha256=%s" % (now, "0" * 64, mac), "t=+%d,sha256=%s" % (now, mac),
              "t=%d,sha256=%s," % (now, mac)):
        r = expect(S.req("POST", trg["url"], raw=body, key=None, headers={"X-Quern-Signature": h}), 202)
        assert r["run_id"] == first["run_id"], (h, r)
    assert expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["total"] == 1


def test_trigger_unknown_or_unsigned_is_answered_before_a_large_body():
    # No key is needed on /hooks/:id, so a large body is read only for a
    # trigger that exists and a request that carries a signature: anyone could
    # otherwise make quernd hold 16 MiB per connection (20 slow senders to an
    # unknown trigger took it from 18 to 359 MB).
    t = agent_task()
    trg = expect(S.req("POST", P + "/triggers", {"task_id": t["id"], "secret": "k"}), 201)
    for path, sig, status, code in (("/hooks/trg_nope", "t=1,sha256=00", 404, "resource_missing"),
                                    (trg["url"], None, 401, "missing_signature")):
        c = socket.create_connection((S.host, S.port), timeout=20)
        try:
            head = "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % (path, 8 << 20)
            if sig:
                head += "X-Quern-Signature: %s\r\n" % sig
            c.sendall((head + "\r\n").encode())   # and no body
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                more = c.recv(65536)
                if not more:
                    break
                data += more
            status_line, _, rest = data.partition(b"\r\n")
            assert status_line.split()[1] == str(status).encode(), data
            assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == code, data
        finally:
            c.close()
    # a signed one is still read and checked as before
    body = b'{"big": "' + b"x" * (1 << 20) + b'"}'
    expect(S.req("POST", trg["url"], raw=body, key=None, headers={"X-Quern-Signature": sign("k", body)}), 202)

def test_trigger_generated_secret_list_delete_and_gone():
    t = agent_task()
    trg = expect(S.req("POST", P + "/triggers", {"task_id": t["id"]}), 201)
    secret = trg["secret"]
    assert secret.startswith("whsec_")
    lst = expect(S.req("GET", P + "/triggers"), 200)
    mine = [x for x in lst["data"] if x["id"] == trg["id"]]
    assert mine and "secret" not in mine[0] and "secret_sealed" not in mine[0]
    # one trigger by id, as a webhook is (it was 405: only DELETE took an id);
    # another project's key, or another project's path, does not see it
    one = expect(S.req("GET", P + "/triggers/" + trg["id"]), 200)
    assert one == mine[0], (one, mine)
    other = expect(S.req("POST", "/api/projects", {"name": "trg-other"}), 201)["id"]
    ok = expect(S.req("POST", "/api/projects/%s/api_keys" % other, {"scopes": ["admin"]}), 201)["key"]
    assert S.req("GET", "/api/projects/%s/triggers/%s" % (other, trg["id"])).status == 404
    assert S.req("GET", "/api/projects/%s/triggers/%s" % (other, trg["id"]), key=ok).status == 404
    assert S.req("GET", P + "/triggers/" + trg["id"], key=ok).status == 404
    assert S.req("GET", P + "/triggers/trg_nope").status == 404
    # unknown task at create
    r = S.req("POST", P + "/triggers", {"task_id": "task_nope", "secret": "x"})
    assert r.status == 400 and r.json["error"]["param"] == "task_id"
    # the task is deleted: 404
    expect(S.req("DELETE", P + "/tasks/" + t["id"]), 200)
    body = b"{}"
    r = S.req("POST", trg["url"], raw=body, key=None, headers={"X-Quern-Signature": sign(secret, body)})
    assert r.status == 404, r
    expect(S.req("DELETE", P + "/triggers/" + trg["id"]), 200)
    r = S.req("POST", trg["url"], raw=body, key=None, headers={"X-Quern-Signature": sign(secret, body)})
    assert r.status == 404, r
    assert S.req("DELETE", P + "/triggers/" + trg["id"]).status == 404
    assert S.req("GET", P + "/triggers/" + trg["id"]).status == 404


def test_trigger_needs_admin():
    k = expect(S.req("POST", P + "/api_keys", {"name": "w", "scopes": ["task:write"]}), 201)["key"]
    assert S.req("GET", P + "/triggers", key=k).status == 403
    assert S.req("GET", P + "/triggers/trg_any", key=k).status == 403
    assert S.req("GET", P + "/webhooks", key=k).status == 403
    assert S.req("GET", P + "/secrets", key=k).status == 403
    assert S.req("GET", P + "/policy", key=k).status == 403


# ---- webhooks ----

def test_webhook_validation():
    bad = [
        ({"events": ["*"]}, "url"),
        ({"url": "ftp://x/y", "events": ["*"]}, "url"),
        ({"url": "not a url", "events": ["*"]}, "url"),
        ({"url": "http://example.com/h", "events": ["nope.thing"]}, "events"),
        ({"url": "http://example.com/h", "events": []}, "events"),
        ({"url": "http://example.com/h", "events": "task.created"}, "events"),
        ({"url": "http://example.com/h", "events": ["*"], "extra": 1}, "extra"),
    ]
    for body, param in bad:
        r = S.req("POST", P + "/webhooks", body)
        assert r.status == 400 and r.json["error"]["param"] == param, (body, r)
    w = expect(S.req("POST", P + "/webhooks", {"url": "https://example.com/h",
                                               "events": ["task_run.*", "task.created"]}), 201)
    assert w["id"].startswith("whk_") and w["secret"].startswith("whsec_")
    got = expect(S.req("GET", P + "/webhooks/" + w["id"]), 200)
    assert "secret" not in got and "secret_sealed" not in got
    w2 = expect(S.req("POST", P + "/webhooks", {"url": "https://example.com/h", "secret": "mine"}), 201)
    assert "secret" not in w2 and w2["events"] == ["*"]
    lst = expect(S.req("GET", P + "/webhooks"), 200)
    assert {w["id"], w2["id"]} <= {x["id"] for x in lst["data"]}
    # every type quern emits can be subscribed to by name (task.schedule_skipped was refused)
    w3 = expect(S.req("POST", P + "/webhooks", {"url": "https://example.com/h", "events": [
        "task.schedule_skipped", "task_run.unblocked", "task_run.paused", "task_run.resumed"]}), 201)
    for x in (w, w2, w3):
        expect(S.req("DELETE", P + "/webhooks/" + x["id"]), 200)
    assert S.req("GET", P + "/webhooks/" + w["id"]).status == 404
    assert S.req("GET", P + "/webhooks/%s/deliveries" % w["id"]).status == 404



def test_webhook_id_relay_is_reserved():
    # "relay" is the webhook_id of relay_message deliveries: a webhook by that
    # name had its events sent unsigned, listed with the relay's deliveries,
    # and deleting it deleted those.
    r = S.req("POST", P + "/webhooks", {"id": "relay", "url": "https://example.com/h", "events": ["*"]})
    assert r.status == 400 and r.json["error"]["code"] == "reserved_id" and r.json["error"]["param"] == "id", r
    assert S.req("GET", P + "/webhooks/relay").status == 404

def test_webhook_receives_signed_events():
    rec = Receiver()
    try:
        w = expect(S.req("POST", P + "/webhooks", {"url": rec.url, "events": ["task.created"]}), 201)
        t = agent_task(name="hooked")
        reqs = wait_for(lambda: [x for x in rec.got()
                                 if json.loads(x[1]).get("task_id") == t["id"]], what="delivery")
        headers, body = reqs[0]
        hdr = {k.lower(): v for k, v in headers.items()}
        assert verify(w["secret"], hdr["x-quern-signature"], body), hdr
        assert hdr["content-type"] == "application/json"
        ev = json.loads(body)
        assert ev["type"] == "task.created" and ev["id"].startswith("evt_")
        assert ev["project_id"] == "default" and "data" in ev and "created_at" in ev
        assert hdr["x-quern-event"] == "task.created"
        # only matching types were sent (no task_run.* for this filter)
        assert all(json.loads(b)["type"] == "task.created" for _, b in rec.got())
        d = wait_for(lambda: [x for x in expect(S.req("GET", P + "/webhooks/%s/deliveries" % w["id"]), 200)["data"]
                              if x["status"] == "succeeded" and x["event_id"] == ev["id"]], what="recorded")
        assert d[0]["attempts"][0]["status_code"] == 200 and d[0]["payload"]["id"] == ev["id"]
        expect(S.req("DELETE", P + "/webhooks/" + w["id"]), 200)
    finally:
        rec.close()


def test_webhook_retries_until_success():
    rec = Receiver(fail_first=2)
    try:
        w = expect(S.req("POST", P + "/webhooks", {"url": rec.url, "events": ["task.created"],
                                                   "secret": "retry-secret"}), 201)
        t = agent_task(name="retried")

        def done():
            ds = expect(S.req("GET", P + "/webhooks/%s/deliveries" % w["id"]), 200)["data"]
            ds = [d for d in ds if d["payload"]["task_id"] == t["id"]]
            return ds if ds and ds[0]["status"] == "succeeded" else None
        d = wait_for(done, what="delivery to succeed")[0]
        codes = [a["status_code"] for a in d["attempts"]]
        assert codes == [500, 500, 200], d["attempts"]
        assert d["attempt_count"] == 3
        assert d["attempts"][0]["error"] and d["attempts"][2]["error"] is None
        for a in d["attempts"]:
            assert a["started_at"] and a["completed_at"] and a["duration_ms"] >= 0
        assert len(rec.got()) == 3
        # every attempt was signed with the webhook's secret, each with a fresh t
        for headers, body in rec.got():
            hdr = {k.lower(): v for k, v in headers.items()}
            assert verify("retry-secret", hdr["x-quern-signature"], body)
            assert hdr["x-quern-delivery"] == d["id"]
        expect(S.req("DELETE", P + "/webhooks/" + w["id"]), 200)
    finally:
        rec.close()


def test_loopback_refused_without_allow_private():
    s2 = Server()   # no QUERN_OUTBOUND_ALLOW_PRIVATE
    rec = Receiver()
    try:
        w = expect(s2.req("POST", P + "/webhooks", {"url": rec.url, "events": ["task.created"]}), 201)
        expect(s2.req("POST", P + "/tasks", {"name": "x", "assigned_agent_id": "a", "run": False}), 201)

        def failed():
            ds = expect(s2.req("GET", P + "/webhooks/%s/deliveries" % w["id"]), 200)["data"]
            return ds if ds and ds[0]["status"] == "failed" else None
        d = wait_for(failed, what="refused delivery")[0]
        err = d["attempts"][0]["error"]
        assert "loopback" in err and "127.0.0.1" in err and "refused" in err, err
        assert d["attempts"][0]["status_code"] is None
        assert rec.got() == []   # nothing reached the receiver
        # the project's policy may allow it
        expect(s2.req("PUT", P + "/policy", {"outbound_allow_private": True}), 200)
        expect(s2.req("POST", P + "/tasks", {"name": "y", "assigned_agent_id": "a", "run": False}), 201)
        wait_for(lambda: rec.got(), what="delivery once allowed")
    finally:
        rec.close()
        s2.stop()



def test_hanging_receiver_does_not_hold_back_other_webhooks():
    # A receiver that accepts and never answers holds at most 2 attempts at
    # once (WEBHOOK_PER_HOOK); the other senders keep delivering to a healthy
    # webhook.  The request timeout is far longer than the wait here, so the
    # healthy deliveries cannot be waiting for the hanging ones to time out.
    s4 = Server(env={"QUERN_OUTBOUND_ALLOW_PRIVATE": "1", "QUERN_WEBHOOK_TIMEOUT_MS": "600000"})
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)
    held = []

    def accept():
        while True:
            try:
                c, _ = hang.accept()
            except OSError:
                return
            held.append(c)
    threading.Thread(target=accept, daemon=True).start()
    good = Receiver()
    try:
        expect(s4.req("POST", P + "/webhooks", {"url": "http://127.0.0.1:%d/" % hang.getsockname()[1],
                                                "events": ["task.created"]}), 201)
        expect(s4.req("POST", P + "/webhooks", {"url": good.url, "events": ["task.created"]}), 201)
        n = 12
        for i in range(n):
            expect(s4.req("POST", P + "/tasks", {"name": "h%d" % i, "assigned_agent_id": "a", "run": False}), 201)
        wait_for(lambda: len(good.got()) >= n, what="healthy webhook served beside a hanging one")
        wait_for(lambda: len(held) >= 2, what="hanging receiver reached")
        assert len(held) == 2, len(held)   # no more of its deliveries were started
    finally:
        good.close()
        s4.stop()
        hang.close()
        for c in held:
            c.close()


def test_endless_response_body_is_cut_after_the_kept_kib():
    # A receiver answers 200 and then streams a body without end: quern keeps
    # the first 1 KiB, stops reading and records the answer; it does not read
    # on until the (here very long) request timeout.
    s5 = Server(env={"QUERN_OUTBOUND_ALLOW_PRIVATE": "1", "QUERN_WEBHOOK_TIMEOUT_MS": "600000"})
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)

    def stream():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += c.recv(65536)
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                while True:
                    c.sendall(b"1000\r\n" + b"\x00z" * 2048 + b"\r\n")
            except OSError:
                c.close()
    threading.Thread(target=stream, daemon=True).start()
    try:
        w = expect(s5.req("POST", P + "/webhooks", {"url": "http://127.0.0.1:%d/" % srv.getsockname()[1],
                                                    "events": ["task.created"]}), 201)
        expect(s5.req("POST", P + "/tasks", {"name": "e", "assigned_agent_id": "a", "run": False}), 201)

        def done():
            ds = expect(s5.req("GET", P + "/webhooks/%s/deliveries" % w["id"]), 200)["data"]
            return ds if ds and ds[0]["status"] != "pending" else None
        d = wait_for(done, what="delivery to an endless body recorded")[0]
        assert d["status"] == "succeeded" and d["last_status_code"] == 200, d
        assert d["attempts"][0]["response_body"] == "?z" * 512, d["attempts"][0]
    finally:
        s5.stop()
        srv.close()

def test_pending_delivery_survives_sigkill():
    s3 = Server(env={"QUERN_OUTBOUND_ALLOW_PRIVATE": "1", "QUERN_WEBHOOK_RETRY_BASE_MS": "100"})
    rec = Receiver(fail_first=10**9)   # down until we say so
    try:
        w = expect(s3.req("POST", P + "/webhooks", {"url": rec.url, "events": ["task.created"]}), 201)
        t = expect(s3.req("POST", P + "/tasks", {"name": "k", "assigned_agent_id": "a", "run": False}), 201)
        wait_for(lambda: len(rec.got()) >= 2, what="failing attempts")
        s3.kill()
        n_before = len(rec.got())
        rec.fail_first = 0   # the receiver recovers while quernd is down
        s3.start()

        def ok():
            ds = expect(s3.req("GET", P + "/webhooks/%s/deliveries" % w["id"]), 200)["data"]
            return ds if ds and ds[0]["status"] == "succeeded" else None
        d = wait_for(ok, what="delivery after restart")
        assert len(d) == 1 and d[0]["payload"]["task_id"] == t["id"]   # one delivery, not two
        assert d[0]["attempts"][-1]["status_code"] == 200
        assert len(rec.got()) > n_before
    finally:
        rec.close()
        s3.stop()


# ---- policy ----

def test_policy_get_put_validation():
    p = expect(S.req("GET", P + "/policy"), 200)
    assert p["allowed_runtimes"] is None and p["network_allowed"] is True
    assert p["require_approval"] is False and p["relay_webhook_url"] is None
    bad = [
        {"allowed_runtimes": "python"},
        {"allowed_runtimes": ["cobol"]},
        {"max_timeout_ms": -1},
        {"max_timeout_ms": "10"},
        {"max_memory_mb": 0},
        {"max_code_bytes": 10**12},
        {"network_allowed": "yes"},
        {"relay_webhook_url": "gopher://x"},
        {"nope": 1},
    ]
    for body in bad:
        r = S.req("PUT", P + "/policy", body)
        assert r.status == 400 and r.json["error"]["param"] == list(body)[0], (body, r)
    good = {"allowed_runtimes": ["python", "sh"], "max_timeout_ms": 60000, "max_memory_mb": 512,
            "max_code_bytes": 4096, "network_allowed": False, "require_approval": True,
            "relay_webhook_url": "https://hooks.example.com/x", "outbound_allow_private": False}
    got = expect(S.req("PUT", P + "/policy", good), 200)
    for k, v in good.items():
        assert got[k] == v, (k, got)
    again = expect(S.req("GET", P + "/policy"), 200)
    assert {k: again[k] for k in good} == good
    # PUT replaces: absent fields go back to their defaults
    expect(S.req("PUT", P + "/policy", {}), 200)
    p = expect(S.req("GET", P + "/policy"), 200)
    assert p["allowed_runtimes"] is None and p["relay_webhook_url"] is None


# ---- secrets ----

def test_secrets():
    v1 = "hunter2-value-one"
    s = expect(S.req("POST", P + "/secrets", {"name": "API_TOKEN", "value": v1}), 201)
    assert s["name"] == "API_TOKEN" and "value" not in s
    lst = S.req("GET", P + "/secrets")
    assert lst.status == 200 and v1 not in lst.text and "value" not in lst.text
    assert [x["name"] for x in lst.json["data"]].count("API_TOKEN") == 1
    # replaced by a second POST with the same name
    s2 = expect(S.req("POST", P + "/secrets", {"name": "API_TOKEN", "value": "v2-other"}), 200)
    assert s2["created_at"] == s["created_at"]
    lst = expect(S.req("GET", P + "/secrets"), 200)
    assert [x["name"] for x in lst["data"]].count("API_TOKEN") == 1
    for name in ("lower", "1ABC", "A-B", "", "A" * 65):
        r = S.req("POST", P + "/secrets", {"name": name, "value": "x"})
        assert r.status == 400 and r.json["error"]["param"] == "name", (name, r)
    assert S.req("POST", P + "/secrets", {"name": "OK_NAME"}).status == 400
    assert S.req("POST", P + "/secrets", {"name": "OK_NAME", "value": 5}).status == 400
    # a task may name it; the value is never in the task either
    t = expect(S.req("POST", P + "/tasks", {"name": "s", "assigned_agent_id": "a", "run": False,
                                           "secrets": ["API_TOKEN"]}), 201)
    assert "v2-other" not in json.dumps(t)
    # the value is sealed at rest: not in the database file in clear
    for f in os.listdir(S.data):
        if f.startswith("quern.db"):
            assert b"v2-other" not in open(os.path.join(S.data, f), "rb").read()
    key = os.path.join(S.data, "secret.key")
    assert os.stat(key).st_mode & 0o777 == 0o600 and os.path.getsize(key) == 32
    expect(S.req("DELETE", P + "/secrets/API_TOKEN"), 200)
    assert S.req("DELETE", P + "/secrets/API_TOKEN").status == 404


def test_secrets_key_missing_or_other_is_said_never_replaced():
    """The store remembers which key its secrets are sealed with (a
    fingerprint).  Restarted without that key file, quernd used to make a new
    one in silence: every secret became unreadable, runs failed as if the
    secret were deleted, and new secrets were sealed under the new key.  Now
    no key is made, quernd's log says why, a run fails with
    secret_key_unavailable and a POST is refused; the right file back, all
    works again."""
    s = Server()
    try:
        p = "/api/projects/default"
        expect(s.req("POST", p + "/secrets", {"name": "KEPT", "value": "kept-value-1234"}), 201)
        key = os.path.join(s.data, "secret.key")
        good = open(key, "rb").read()
        for case in ("missing", "other", "short"):
            s.stop()
            if os.path.exists(key):
                os.unlink(key)
            if case != "missing":
                with open(key, "wb") as f:
                    f.write(os.urandom(32) if case == "other" else b"short")
                os.chmod(key, 0o600)
            s.start()
            t = expect(s.req("POST", p + "/tasks", {"code": "cat /run/secrets/KEPT", "runtime_id": "sh",
                                                   "secrets": ["KEPT"], "wait_for_result": True}), 201)
            run = t["run"]
            if run["status"] not in ("failed", "completed"):
                run = wait_for(lambda: (lambda r: r if r["status"] in ("failed", "completed") else None)(
                    expect(s.req("GET", p + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 30, "run end")
            assert run["status"] == "failed" and run["error"]["code"] == "secret_key_unavailable", (case, run)
            r = s.req("POST", p + "/secrets", {"name": "NEW", "value": "new-value-1234"})
            assert r.status == 500 and r.json["error"]["code"] == "secret_key_unavailable", (case, r)
            assert case != "missing" or not os.path.exists(key), "a new key was made"
            log = open(os.path.join(s.data, "stderr.log")).read()
            assert log.count("secrets key file") >= 1, log[-2000:]
        s.stop()
        if os.path.exists(key):
            os.unlink(key)
        with open(key, "wb") as f:
            f.write(good)
        os.chmod(key, 0o644)
        s.start()
        t = expect(s.req("POST", p + "/tasks", {"code": "cat /run/secrets/KEPT", "runtime_id": "sh",
                                               "secrets": ["KEPT"], "wait_for_result": True}), 201)
        run = t["run"]
        if run["status"] not in ("failed", "completed"):
            run = wait_for(lambda: (lambda r: r if r["status"] in ("failed", "completed") else None)(
                expect(s.req("GET", p + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 30, "run end")
        assert run["status"] == "completed", run
        expect(s.req("POST", p + "/secrets", {"name": "NEW", "value": "new-value-1234"}), 201)
        # a key file others may read is said in the log (it keeps working)
        assert "make it 0600" in open(os.path.join(s.data, "stderr.log")).read()
    finally:
        s.stop()


def test_secrets_key_file_from_quern_conf():
    """quern.conf's [secrets] key_file names the key file (made there at
    first use), in place of DATA_DIR/secret.key: several nodes may name one
    file.  A relative path stops quernd at start."""
    import tempfile
    d = tempfile.mkdtemp(prefix="quern-keyconf-", dir=os.environ.get("QUERN_TEST_TMP"))
    keyf = os.path.join(d, "keys", "quern-secrets.key")
    os.mkdir(os.path.dirname(keyf), 0o700)
    cfg = os.path.join(d, "quern.conf")
    with open(cfg, "w") as f:
        f.write("[secrets]\nkey_file = %s\n" % keyf)
    s = Server(extra_args=["--config", cfg])
    try:
        p = "/api/projects/default"
        expect(s.req("POST", p + "/secrets", {"name": "CONF_KEYED", "value": "conf-keyed-value"}), 201)
        assert os.path.getsize(keyf) == 32 and os.stat(keyf).st_mode & 0o777 == 0o600
        assert not os.path.exists(os.path.join(s.data, "secret.key"))
        s.stop()
        s.start()
        t = expect(s.req("POST", p + "/tasks", {"code": "cat /run/secrets/CONF_KEYED", "runtime_id": "sh",
                                               "secrets": ["CONF_KEYED"], "wait_for_result": True}), 201)
        run = t["run"]
        if run["status"] not in ("failed", "completed"):
            run = wait_for(lambda: (lambda r: r if r["status"] in ("failed", "completed") else None)(
                expect(s.req("GET", p + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 30, "run end")
        assert run["status"] == "completed", run
    finally:
        s.stop()
    with open(cfg, "w") as f:
        f.write("[secrets]\nkey_file = relative.key\n")
    import subprocess
    from qlib import BUILD
    out = subprocess.run([os.path.join(BUILD, "quernd"), "--config", cfg, "--listen", "127.0.0.1:0",
                          "--data", os.path.join(d, "data2")], capture_output=True, timeout=60)
    assert out.returncode != 0 and b"key_file must be an absolute path" in out.stderr, out


# ---- relay_message ----

def test_relay_message():
    t = agent_task(run=True)
    run_id = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]["id"]
    path = P + "/tasks/%s/runs/%s/relay_message" % (t["id"], run_id)
    expect(S.req("PUT", P + "/policy", {}), 200)
    r = S.req("POST", path, {"text": "hello"})
    assert r.status == 409 and r.json["error"]["code"] == "relay_not_configured", r
    assert S.req("POST", P + "/tasks/%s/runs/run_nope/relay_message" % t["id"], {"text": "x"}).status == 404
    rec = Receiver(fail_first=1)
    try:
        expect(S.req("PUT", P + "/policy", {"relay_webhook_url": rec.url}), 200)
        assert S.req("POST", path, {}).status == 400
        q = expect(S.req("POST", path, {"text": "build *done*"}), 200)
        assert q["delivery_id"].startswith("dlv_")
        wait_for(lambda: len(rec.got()) >= 2, what="relay delivery")
        assert json.loads(rec.got()[-1][1]) == {"text": "build *done*"}

        def ok():
            ds = expect(S.req("GET", P + "/webhooks/relay/deliveries"), 200)["data"]
            d = [x for x in ds if x["id"] == q["delivery_id"]]
            return d if d and d[0]["status"] == "succeeded" else None
        d = wait_for(ok, what="relay recorded")[0]
        assert [a["status_code"] for a in d["attempts"]] == [500, 200]
        assert d["run_id"] == run_id
    finally:
        rec.close()
        expect(S.req("PUT", P + "/policy", {}), 200)


def test_a_project_has_at_most_100_webhooks():
    expect(S.req("POST", "/api/projects", {"id": "whcap", "name": "whcap"}), 201)
    Q = "/api/projects/whcap"
    for i in range(100):
        expect(S.req("POST", Q + "/webhooks", {"url": "https://example.com/h%d" % i, "secret": "s" * 16}), 201)
    r = S.req("POST", Q + "/webhooks", {"url": "https://example.com/one-more", "secret": "s" * 16})
    assert r.status == 400 and r.json["error"]["code"] == "too_many_webhooks", r.json
    assert expect(S.req("GET", Q + "/webhooks?limit=500"), 200)["total"] == 100
    # one deleted, one may come
    w = expect(S.req("GET", Q + "/webhooks?limit=1"), 200)["data"][0]
    expect(S.req("DELETE", Q + "/webhooks/" + w["id"]), 200)
    expect(S.req("POST", Q + "/webhooks", {"url": "https://example.com/again", "secret": "s" * 16}), 201)


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
