"""SSE streams: order and completeness under a concurrent writer, resume with
Last-Event-ID without loss or repeat, start=latest, the end after the
terminal event, connection tokens (scope, tamper), and the project stream."""
import http.client
import json
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests, wait_for  # noqa: E402
import qlib  # noqa: E402


def sse(path, **kw):
    return qlib.sse(S, path, **kw)


S = Server()
P = "/api/projects/default"


def agent_run(agent):
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": agent, "run": True}), 201)
    run = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
    return t, run, P + "/tasks/%s/runs/%s" % (t["id"], run["id"])


def test_stream_complete_in_order_under_concurrent_writer():
    t, run, base = agent_run("st1")
    expect(S.req("PATCH", base, {"status": "running"}), 200)
    box = {}
    th = threading.Thread(target=lambda: box.update(r=sse(base + "/stream")))
    th.start()
    for i in range(200):
        expect(S.req("POST", base + "/append_log", {"entries": [{"message": "l%d" % i}]}), 200)
    expect(S.req("PATCH", base, {"status": "completed"}), 200)
    th.join(60)
    status, evs = box["r"]
    assert status == 200
    logs = [e[2]["data"]["message"] for e in evs if e[1] == "task_run.log"]
    assert logs == ["l%d" % i for i in range(200)]
    ids = [e[0] for e in evs]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert evs[-1][1] == "task_run.completed"    # the stream ended after the terminal event
    assert [e[1] for e in evs][:2] == ["task_run.queued", "task_run.started"]


def test_resume_loses_and_repeats_nothing():
    t, run, base = agent_run("st2")
    for i in range(50):
        expect(S.req("POST", base + "/append_log", {"entries": [{"message": "m%d" % i}]}), 200)
    expect(S.req("PATCH", base, {"status": "running"}), 200)
    expect(S.req("PATCH", base, {"status": "failed", "error_message": "x"}), 200)
    _, full = sse(base + "/stream")
    for cut in (1, 7, 23, len(full) - 1):
        _, first = sse(base + "/stream", max_events=cut)
        _, rest = sse(base + "/stream", headers={"Last-Event-ID": first[-1][0]})
        assert [e[0] for e in first + rest] == [e[0] for e in full], (cut, len(first), len(rest), len(full))
    # resuming after the end returns nothing and ends
    _, after = sse(base + "/stream", headers={"Last-Event-ID": full[-1][0]})
    assert after == []
    st, body = sse(base + "/stream", headers={"Last-Event-ID": "garbage"})
    assert st == 400


def test_start_latest_skips_history():
    t, run, base = agent_run("st3")
    expect(S.req("POST", base + "/append_log", {"entries": [{"message": "old"}]}), 200)
    box = {}
    th = threading.Thread(target=lambda: box.update(r=sse(base + "/stream?start=latest")))
    th.start()
    # the stream only sees what happens after it started
    wait_for(lambda: True)
    import time
    time.sleep(0.3)
    expect(S.req("POST", base + "/append_log", {"entries": [{"message": "new"}]}), 200)
    expect(S.req("PATCH", base, {"status": "running"}), 200)
    expect(S.req("PATCH", base, {"status": "completed"}), 200)
    th.join(30)
    msgs = [e[2]["data"].get("message") for e in box["r"][1] if e[1] == "task_run.log"]
    assert msgs == ["new"]


def run_of_status(base):
    return expect(S.req("GET", base), 200)["status"]


def test_connection_token_scope():
    t, run, base = agent_run("st4")
    t2, run2, base2 = agent_run("st4")
    tok = expect(S.req("GET", base + "/connection_token"), 200)
    assert tok["token"].count(".") == 2 and tok["expires_at"]
    expect(S.req("PATCH", base, {"status": "running"}), 200)
    expect(S.req("PATCH", base, {"status": "completed"}), 200)
    st, evs = sse(base + "/stream?token=" + tok["token"], key=None)
    assert st == 200 and evs[-1][1] == "task_run.completed"
    assert S.req("GET", base + "/logs", key=tok["token"]).status == 200
    # the token is for this run alone, and not for other endpoints
    assert S.req("GET", base2 + "/logs", key=tok["token"]).status == 403
    assert S.req("GET", P + "/tasks", key=tok["token"]).status == 401
    bad = tok["token"][:-2] + ("AA" if not tok["token"].endswith("AA") else "BB")
    assert S.req("GET", base + "/logs", key=bad).status == 401
    # a token does no more than the key that made it: one made by a
    # task:read key reads and streams, but sends no command (it could cancel)
    rkey = expect(S.req("POST", P + "/api_keys", {"name": "tok-r", "scopes": ["task:read"]}), 201)
    rk = rkey["key"]
    cmd = {"jsonrpc": "2.0", "method": "cancel", "id": 1}
    assert S.req("POST", base2 + "/command", cmd, key=rk).status == 403
    rtok = expect(S.req("GET", base2 + "/connection_token", key=rk), 200)["token"]
    assert S.req("GET", base2 + "/logs", key=rtok).status == 200
    r = S.req("POST", base2 + "/command", cmd, key=rtok)
    assert r.status == 403 and r.json["error"]["code"] == "token_scope", r
    assert run_of_status(base2) == "queued"
    wtok = expect(S.req("GET", base2 + "/connection_token"), 200)["token"]
    r = S.req("POST", base2 + "/command", cmd, key=wtok)
    assert r.status != 403, r          # the root key's token may (no sandbox here: 400)
    # a token dies with the key that made it
    expect(S.req("DELETE", P + "/api_keys/" + rkey["id"]), 200)
    r = S.req("GET", base2 + "/logs", key=rtok)
    assert r.status == 401 and r.json["error"]["code"] == "token_revoked", r
    assert S.req("GET", base2 + "/logs", key=wtok).status == 200


def test_project_stream_sees_every_run():
    box = {}
    tid = "pst-task-1"
    th = threading.Thread(target=lambda: box.update(r=sse(
        P + "/events/stream?start=latest", stop=lambda e: e[2]["task_id"] == tid
        and e[1] == "task_run.queued")))
    th.start()
    import time
    time.sleep(0.3)
    expect(S.req("POST", P + "/tasks", {"id": tid, "assigned_agent_id": "pst", "run": True}), 201)
    th.join(30)
    types = [e[1] for e in box["r"][1] if e[2]["task_id"] == tid]
    assert types == ["task.created", "task_run.queued"], types


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_subscriber_that_never_reads_costs_bounded_memory():
    import socket
    t, run, base = agent_run("slow")
    big = "x" * 2000

    def phase():
        before = rss_kb(S.proc.pid)
        for i in range(40):   # 40 x 100 entries x 2 KB = 8 MB of events
            expect(S.req("POST", base + "/append_log", {"entries": [{"message": big}] * 100}), 200)
        return rss_kb(S.proc.pid) - before

    phase()                   # warm-up: allocator arenas and page cache settle
    quiet = phase()           # the store's own growth, no subscriber
    sk = socket.create_connection((S.host, S.port))
    sk.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sk.sendall(("GET %s/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n"
                % (base, qlib.ROOT_KEY)).encode())
    stalled = phase()         # the same with a subscriber that never reads a byte
    sk.close()
    quiet2 = phase()
    # documented bound (docs/API.md): a stalled subscriber holds one buffer of
    # at most 256 events, not the 8 MB it did not take
    print("rss growth kB: quiet %d, stalled %d, quiet %d" % (quiet, stalled, quiet2))
    assert stalled - max(quiet, quiet2) < 8 * 1024, (quiet, stalled, quiet2)
    assert S.req("GET", "/healthz", key=None).status == 200


def test_an_open_stream_ends_when_its_key_is_revoked():
    # revoking a key "takes effect at once": a project stream opened with it
    # went on sending every event of the project, and a run stream opened
    # with a connection token went on after the token's key was revoked
    k = expect(S.req("POST", P + "/api_keys", {"name": "rv", "scopes": ["task:read"]}), 201)
    k2 = expect(S.req("POST", P + "/api_keys", {"name": "rv2", "scopes": ["task:read"]}), 201)
    t, run, base = agent_run("revoked-stream")
    expect(S.req("POST", P + "/workers/lease", {"agent_id": "revoked-stream"}), 200)
    tok = expect(S.req("GET", base + "/connection_token", key=k2["key"]), 200)["token"]
    seen = {"p": [], "r": []}
    ended = {}

    def read(name, path, headers):
        c = S.conn()
        c.request("GET", path, headers=headers)
        resp = c.getresponse()
        assert resp.status == 200, resp.status
        while True:
            line = resp.readline()
            if not line:
                break
            seen[name].append(line.decode())
        ended[name] = True
        c.close()
    ths = [threading.Thread(target=read, args=("p", P + "/events/stream?start=latest",
                                                {"Authorization": "Bearer " + k["key"]}), daemon=True),
           threading.Thread(target=read, args=("r", base + "/stream?start=latest&token=" + tok, {}),
                            daemon=True)]
    for th in ths:
        th.start()
    # both are open and reading: each gets an entry made now
    wait_for(lambda: expect(S.req("POST", base + "/append_log", {"entries": [
        {"type": "info", "message": "seen"}]}), 200) and all("seen" in "".join(v) for v in seen.values()),
        30, "both streams to read")
    expect(S.req("DELETE", P + "/api_keys/" + k["id"]), 200)
    expect(S.req("DELETE", P + "/api_keys/" + k2["id"]), 200)
    expect(S.req("POST", base + "/append_log", {"entries": [{"type": "info", "message": "after-revoke"}]}), 200)
    expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "revoked-stream-2", "name": "after-revoke"}), 201)
    for th in ths:
        th.join(30)
        assert not th.is_alive(), "a stream of a revoked key is still open"
    for name, lines in seen.items():
        assert ended.get(name) and "after-revoke" not in "".join(lines), (name, lines)
    # the root key's stream is not ended by another key's revocation
    other = expect(S.req("POST", P + "/api_keys", {"name": "rv3", "scopes": ["task:read"]}), 201)
    got = []
    th = threading.Thread(target=lambda: got.append(sse(
        P + "/events/stream?start=latest", stop=lambda e: e[2].get("data", {}).get("name") == "root-sees")),
        daemon=True)
    th.start()
    expect(S.req("DELETE", P + "/api_keys/" + other["id"]), 200)
    wait_for(lambda: expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "rs", "name": "root-sees"}), 201)
             and (th.join(0.5) or not th.is_alive()), 30, "the root key's stream to see the task")
    assert got and got[0][0] == 200, got


def test_unknown_run_stream_404():
    st, _ = sse(P + "/tasks/nope/runs/nope/stream")
    assert st == 404


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
