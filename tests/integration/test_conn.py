"""Connections under hostile clients: idle and half-sent requests are closed,
long-polls and event streams are not, a flood of connections leaves quernd
descriptors for its own work, and an oversized body is refused without
being read.  quernd runs with a short idle timeout so that the tests do not
wait a minute; no assertion is on time."""
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import BUILD, ROOT_KEY, Server, expect, run_tests, wait_for  # noqa: E402

IDLE_ENV = {"QUERN_HTTP_IDLE_TIMEOUT_MS": "2000"}
S = Server(env=IDLE_ENV)
P = "/api/projects/default"
AUTH = b"Authorization: Bearer " + ROOT_KEY.encode() + b"\r\n"


def connect(server=S):
    return socket.create_connection((server.host, server.port), timeout=30)


def read_until_closed(s, limit=30):
    """Everything the server sends until it closes the connection; None if
    it is still open after `limit` seconds (the generous bound of a test,
    not a measure)."""
    s.settimeout(limit)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    except socket.timeout:
        return None
    except ConnectionResetError:
        return out


def post(path, body, extra=b""):
    b = json.dumps(body).encode()
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n" % len(b) + AUTH + extra + b"\r\n" + b)


def test_an_idle_connection_is_closed():
    # it was held for ever: a client could keep thousands of them open
    s = connect()
    assert read_until_closed(s) == b""
    s.close()


def test_a_request_that_stops_halfway_is_closed():
    s = connect()
    s.sendall(b"GET " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\n")   # headers unfinished
    assert read_until_closed(s) is not None
    s.close()
    s = connect()
    s.sendall(b"POST " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
              + AUTH + b"\r\n{")   # 1 of 100 bytes
    assert read_until_closed(s) is not None
    s.close()


def test_an_idle_keep_alive_connection_is_closed_after_its_answer():
    s = connect()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    out = read_until_closed(s)
    assert out is not None and out.startswith(b"HTTP/1.1 200"), out
    s.close()


def test_a_long_poll_outlasts_the_idle_timeout():
    s = connect()
    s.sendall(post(P + "/workers/lease", {"worker_id": "w", "definitions": ["def_none"],
                                          "wait_ms": 5000}))
    out = read_until_closed(s, 60)
    assert out is not None and out.startswith(b"HTTP/1.1 200") and out.endswith(b'{"data":[]}'), out
    s.close()


def test_wait_for_result_outlasts_the_idle_timeout():
    s = connect()
    s.sendall(post(P + "/tasks", {"code": "sleep 4; echo done", "runtime_id": "sh",
                                  "wait_for_result": True}))
    out = read_until_closed(s, 60)
    assert out is not None and out.startswith(b"HTTP/1.1 201"), out
    assert json.loads(out.split(b"\r\n\r\n", 1)[1])["run"]["status"] == "completed", out
    s.close()


def test_an_idle_event_stream_outlasts_the_idle_timeout():
    s = connect()
    s.sendall(b"GET " + P.encode() + b"/events/stream?start=latest HTTP/1.1\r\nHost: x\r\n"
              + AUTH + b"\r\n")
    s.settimeout(30)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(4)   # quiet for twice the idle timeout (the stream is suspended meanwhile)
    t = expect(S.req("POST", P + "/tasks", {"name": "seen-by-the-stream", "code": "true", "runtime_id": "sh",
                                                "run": False}), 201)
    got = b""
    while t["id"].encode() not in got:
        d = s.recv(65536)
        assert d, "the stream was closed: %r" % got[-300:]
        got += d
    s.close()


def test_an_oversized_content_length_is_refused_before_its_body():
    # it was answered 100 Continue, and the 413 came only once the whole
    # body had been read and dropped
    # (the limit is 16 MiB; a body under twice that without Expect is still
    # read for its 413, as a client that does not wait must send it whole)
    for length, expect_hdr in ((1 << 30, b""), (1 << 30, b"Expect: 100-continue\r\n"),
                               (20 << 20, b"Expect: 100-continue\r\n")):
        s = connect()
        s.sendall(b"POST " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n" % length + expect_hdr + AUTH + b"\r\n")   # and no body
        out = read_until_closed(s)
        s.close()
        assert out is not None and out.startswith(b"HTTP/1.1 413 "), out
        assert b"100 Continue" not in out, out
        body = json.loads(out.split(b"\r\n\r\n", 1)[1])
        assert body["error"]["type"] == "payload_too_large", body


def chunked_post(sock, mib, end=True):
    """Sends a chunked POST of `mib` MiB; returns the MiB sent before the
    server stopped taking them."""
    sock.sendall(b"POST " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\nConnection: close\r\n" + AUTH + b"\r\n")
    chunk = b"100000\r\n" + b"a" * 0x100000 + b"\r\n"
    for i in range(mib):
        try:
            sock.sendall(chunk)
        except OSError:
            return i
    if end:
        sock.sendall(b"0\r\n\r\n")
    return mib


def test_a_body_a_little_over_the_limit_sent_whole_is_413():
    s = connect()
    assert chunked_post(s, 20) == 20   # the limit is 16 MiB
    out = read_until_closed(s)
    s.close()
    assert out is not None and out.startswith(b"HTTP/1.1 413 "), out
    # a client that sends its body without waiting reads the 413 after it
    r = S.req("POST", P + "/tasks", raw="x" * (20 << 20))
    assert r.status == 413 and r.json["error"]["type"] == "payload_too_large", r


def test_a_never_ending_chunked_body_is_cut_off():
    # it was read for as long as the client sent, and dropped
    s = connect()
    sent = chunked_post(s, 1024, end=False)
    s.close()
    assert sent < 1024, "quernd took 1 GiB of a 16 MiB-limited body"
    expect(S.req("GET", "/healthz", key=None), 200)


class LowFdServer(Server):
    """quernd with a low descriptor limit, so that a test floods it with a
    few hundred connections rather than tens of thousands."""
    NOFILE = 1024

    def _spawn(self):
        env = dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY, **self.env)
        n = self.NOFILE
        self.proc = subprocess.Popen(
            [os.path.join(BUILD, "quernd"), "--listen", "127.0.0.1:0", "--data", self.data] + self.extra,
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.data, "stderr.log"), "ab"), env=env,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (n, n)))
        return self.proc.stdout.readline().decode()


def test_a_large_body_without_a_valid_key_is_refused_before_it_is_read():
    # quernd read (and held) a body of up to 16 MiB before it looked at the
    # key: slow uploads without a key took it from 18 to 345 MB
    for auth, status in ((b"", 401), (b"Authorization: Bearer qk_nope\r\n", 401)):
        s = connect()
        s.sendall(b"POST " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 8000000\r\n" + auth + b"\r\n"
                  + b"[" * 1000)   # and then nothing more
        out = read_until_closed(s)
        assert out is not None and out.startswith(b"HTTP/1.1 %d" % status), out
        s.close()
    # chunked, no key: the same
    s = connect()
    s.sendall(b"POST " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"10\r\n0123456789abcdef\r\n")
    out = read_until_closed(s)
    assert out is not None and out.startswith(b"HTTP/1.1 401"), out
    s.close()
    # with a valid key a large body is read and answered as before (400: not a task)
    body = b'{"name": "' + b"n" * 30000 + b'"}'
    s = connect()
    s.sendall(b"POST " + P.encode() + b"/tasks HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n" % len(body) + AUTH + b"\r\n" + body)
    out = read_until_closed(s)
    assert out is not None and out.startswith(b"HTTP/1.1 400") and b"name" in out, out[:300]
    s.close()
    # a small body with a bad key is still read and answered 401 (not reset)
    r = S.req("POST", P + "/tasks", {"assigned_agent_id": "x"}, key="qk_nope")
    assert r.status == 401 and r.json["error"]["code"] == "invalid_api_key", r


def test_a_connection_flood_leaves_quernd_its_descriptors_and_passes():
    # connections took every descriptor: quernd could open nothing (its
    # store, a sandbox, a blob), and, never closed, they hung every client
    # for as long as the flooding client kept them
    L = LowFdServer(env=IDLE_ENV)
    try:
        t = expect(L.req("POST", P + "/tasks", {"code": "sleep 2; echo done", "runtime_id": "sh"}), 201)
        flood = []
        for _ in range(LowFdServer.NOFILE + 100):
            try:
                flood.append(connect(L))
            except OSError:
                break
        # the flood is still open on this side; quernd closes it as idle
        # and serves others again
        def healthy():
            try:
                return L.req("GET", "/healthz", key=None).status == 200
            except OSError:
                return False
        wait_for(healthy, 60, "quernd serving again during the flood")
        wait_for(lambda: L.req("GET", P + "/tasks/" + t["id"]).json["status"] not in ("queued", "running"),
                 60, "the run started before the flood ending")
        run = expect(L.req("GET", P + "/tasks/" + t["id"] + "/runs"), 200)["data"][0]
        assert run["status"] == "completed", run   # it failed: "pipe: Too many open files"
        for s in flood:
            s.close()
    finally:
        L.stop()


def _until_limited(L, path, key, n=60):
    """Sends GETs with key until one is refused 429 (within n: at 1 request a
    second with bursts of 3, n requests would take the client n - 3 s to
    stay under); returns (responses before it, the 429)."""
    ok = []
    for _ in range(n):
        r = L.req("GET", path, key=key)
        if r.status == 429:
            return ok, r
        assert r.status == 200, r
        ok.append(r)
    raise AssertionError("no 429 after %d requests at 1/s with bursts of 3" % n)


def test_requests_over_a_keys_rate_are_429_with_retry_after():
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.write("[limits]\nrequests_per_second = 1\nrequest_burst = 3\n")
    conf.close()
    L = Server(extra_args=["--config", conf.name])
    try:
        b = expect(L.req("POST", P + "/api_keys", {"name": "b", "scopes": ["task:write"]}), 201)
        ok, r = _until_limited(L, P + "/tasks", ROOT_KEY)
        assert 1 <= len(ok) <= 60, ok
        assert ok[0].header("X-RateLimit-Limit") == "1", ok[0]
        assert int(ok[0].header("X-RateLimit-Remaining")) <= 2, ok[0]
        err = r.json["error"]
        assert err["type"] == "rate_limited" and err["code"] == "rate_limited", err
        assert "1 requests a second" in err["message"] and "bursts of 3" in err["message"], err
        assert int(r.header("Retry-After")) >= 1, r
        assert r.header("X-RateLimit-Remaining") == "0", r
        # another key has its own bucket
        expect(L.req("GET", P + "/tasks", key=b["key"]), 200)
        # no key, or a bad one: 401 as before (a limit is per key)
        assert L.req("GET", P + "/tasks", key="qk_" + "0" * 64).status == 401
        # after the wait it told, the key goes on
        time.sleep(int(r.header("Retry-After")) + 0.2)
        expect(L.req("GET", P + "/tasks", key=ROOT_KEY), 200)
        # a connection token's requests count as the key's that made it
        t = expect(L.req("POST", P + "/tasks", {"assigned_agent_id": "x", "run": True}, key=b["key"]), 201)
        run = expect(L.req("GET", P + "/tasks/%s/runs" % t["id"], key=b["key"]), 200)["data"][0]
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        tok = L.req("GET", base + "/connection_token", key=b["key"])
        if tok.status == 429:
            time.sleep(int(tok.header("Retry-After")) + 0.2)
            tok = L.req("GET", base + "/connection_token", key=b["key"])
        tok = expect(tok, 200)["token"]
        _until_limited(L, base + "/logs", tok)
        assert L.req("GET", P + "/tasks", key=b["key"]).status == 429
    finally:
        L.stop()
        os.unlink(conf.name)


def test_keys_of_the_same_id_in_two_projects_have_their_own_buckets():
    """A key's id is chosen by its project's admin and is unique only in its
    project: the bucket was named by the id alone, so project A's key "ci"
    used up project B's key "ci" (B's first request was 429)."""
    conf = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    conf.write("[limits]\nrequests_per_second = 1\nrequest_burst = 10\n")
    conf.close()
    L = Server(extra_args=["--config", conf.name])
    try:
        keys = {}
        for p in ("rla", "rlb"):
            expect(L.req("POST", "/api/projects", {"id": p, "name": p}), 201)
            keys[p] = expect(L.req("POST", "/api/projects/%s/api_keys" % p,
                                   {"id": "ci", "scopes": ["task:read"]}), 201)["key"]
        _until_limited(L, "/api/projects/rla/tasks", keys["rla"])
        r = L.req("GET", "/api/projects/rlb/tasks", key=keys["rlb"])
        assert r.status == 200, r   # it was 429
        assert int(r.header("X-RateLimit-Remaining")) == 9, r   # a full bucket of its own
    finally:
        L.stop()
        os.unlink(conf.name)


def test_request_logs_survive_what_clients_send():
    """With QUERN_LOG_REQUESTS=1 an unmatched request's path (decoded) and
    its method are in the log line: "GET /%ff" (no key needed) crashed
    quernd in JSON mode (SIGSEGV: the line's object could not be built from
    invalid UTF-8), and "/%0a{...}" forged a whole line in text mode."""
    for fmt in ("json", "text"):
        s = Server(env={"QUERN_LOG_REQUESTS": "1", "QUERN_LOG_FORMAT": fmt})
        try:
            for path in ("/nothing%ff", "/x%0a%7b%22level%22:%22error%22%7d", "/x%1b[31mred%00z"):
                assert s.req("GET", path, key=None).status == 404
            c = socket.create_connection((s.host, s.port))
            c.sendall(b"G\xffT /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            c.recv(100)
            c.close()
            expect(s.req("GET", "/healthz", key=None), 200)   # alive

            def logged():
                # a request's line is written once its answer is sent: a client
                # may read it first, so wait for all four lines
                with open(os.path.join(s.data, "stderr.log"), "rb") as f:
                    got = f.read().decode().splitlines()   # valid UTF-8
                n = sum('"component":"http"' in l or l.startswith("quernd: http:") for l in got)
                return got if n >= 5 else None
            lines = wait_for(logged, 30, "the five request lines")
            if fmt == "json":
                msgs = [json.loads(l) for l in lines]
                assert all({"ts", "level", "msg"} <= set(o) for o in msgs), lines
                # the bad method's line keeps its fields (json_pack refused it)
                bad = [o for o in msgs if o.get("component") == "http"
                       and o["msg"].startswith("G\\xffT")]
                assert bad and all(o.get("method") == "?" and "status" in o for o in bad), bad
                msgs = [o["msg"] for o in msgs]
            else:
                assert all(l.startswith("quernd: ") for l in lines), lines
                assert not any("\x1b" in l for l in lines), lines
                msgs = lines
            # the bad byte is shown, escaped
            assert sum("GET /nothing\\xff" in m for m in msgs) == 1, lines
        finally:
            s.stop()


def test_a_bad_rate_setting_stops_quernd():
    for env in ({"QUERN_RATE_LIMIT": "fast"}, {"QUERN_RATE_BURST": "-1"}):
        p = subprocess.run([os.path.join(BUILD, "quernd"), "--listen", "127.0.0.1:0",
                            "--data", tempfile.mkdtemp(prefix="quernd-")],
                           env=dict(os.environ, **env), capture_output=True, timeout=60)
        assert p.returncode == 2, p
        assert list(env)[0].encode() in p.stderr, p.stderr


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
