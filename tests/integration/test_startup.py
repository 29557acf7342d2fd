"""How quernd starts, refuses to start, and takes signals: one quernd per data
directory, quern.conf errors named by file and line, store URLs it cannot
serve, SIGHUP (API.md "Starting it", docs/API.md "Starting and stopping")."""
import json
import os
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import qlib  # noqa: E402
from qlib import ROOT_KEY, Server, expect, run_tests, wait_for  # noqa: E402

P = "/api/projects/default"


def tmpdir():
    return tempfile.mkdtemp(prefix="quern-startup-", dir=os.environ.get("QUERN_TEST_TMP"))


def quernd(args, env=None):
    """Starts quernd with args; returns (listening, exit status, stderr).  A
    quernd that starts listening (a refusal that did not happen) is killed."""
    err = tempfile.TemporaryFile()
    e = dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY)
    e.update(env or {})
    p = subprocess.Popen([os.path.join(qlib.BUILD, "quernd")] + list(args), stdout=subprocess.PIPE,
                         stderr=err, env=e)
    line = p.stdout.readline().decode()
    listening = "listening on http://" in line
    if listening:
        p.kill()
    rc = p.wait(60)
    err.seek(0)
    return listening, rc, err.read().decode(errors="replace")


def refused(args, *expected):
    listening, rc, err = quernd(args)
    assert not listening, "quernd started; expected a refusal naming %r" % (expected,)
    assert rc > 0, "quernd exited %s (a signal is a crash): %s" % (rc, err)
    for e in expected:
        assert e in err, "expected %r in: %s" % (e, err)
    return err


def with_conf(text):
    d = tmpdir()
    path = os.path.join(d, "quern.conf")
    with open(path, "wb") as f:
        f.write(text)
    return d, path


def test_a_second_quernd_on_the_same_data_directory_is_refused_and_the_first_is_unharmed():
    s = Server()
    try:
        t = expect(s.req("POST", P + "/tasks", {"code": "echo started; sleep 2; echo finished"}), 201)
        run = lambda: expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]  # noqa: E731
        logs = lambda: [json.loads(x)["message"] for x in s.req(  # noqa: E731
            "GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], run()["id"])).text.split("\n") if x]
        wait_for(lambda: "started" in logs(), what="the code to start")
        err = refused(["--listen", "127.0.0.1:0", "--data", s.data] + s.extra,
                      "in use by another quernd", "pid %d" % s.proc.pid)
        assert ROOT_KEY not in err
        done = wait_for(lambda: (lambda r: r if r["status"] not in ("queued", "running") else None)(run()),
                        what="the run to end")
        assert done["status"] == "completed" and done["attempt"] == 1, done
        assert "finished" in logs()
    finally:
        s.stop()
    # the lock goes with the process: the same directory starts again
    s.start()
    s.stop()


def test_a_file_as_the_data_directory_is_refused():
    d = tmpdir()
    path = os.path.join(d, "afile")
    open(path, "w").close()
    refused(["--listen", "127.0.0.1:0", "--data", path], path, "is not a directory")


def test_sighup_is_ignored_not_fatal():
    s = Server()
    try:
        s.proc.send_signal(signal.SIGHUP)
        s.proc.send_signal(signal.SIGHUP)
        expect(s.req("GET", P + "/tasks"), 200)
        assert s.proc.poll() is None
    finally:
        s.stop()    # SIGTERM still drains and exits 0
    with open(os.path.join(s.data, "stderr.log")) as f:
        assert "SIGHUP ignored" in f.read()


def test_text_logs_name_warnings_and_errors():
    # QUERN_LOG_FORMAT=text showed no level: a warning read as any line
    s = Server(env={"QUERN_LOG_FORMAT": "text"})
    try:
        s.proc.send_signal(signal.SIGHUP)
        expect(s.req("GET", P + "/tasks"), 200)
    finally:
        s.stop()
    with open(os.path.join(s.data, "stderr.log")) as f:
        text = f.read()
    assert "quernd: server: warn: SIGHUP ignored" in text, text
    assert "quernd: server: listening" in text, text   # info stays unmarked


def test_a_directory_as_the_config_file_is_refused():
    d = tmpdir()
    refused(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data"), "--config", d],
            "cannot read " + d, "Is a directory")


def test_an_empty_quern_config_is_no_config_and_an_empty_config_file_is_read():
    d, conf = with_conf(b"")
    listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                env={"QUERN_CONFIG": ""})
    assert listening, (rc, err)
    listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data"),
                                 "--config", conf])
    assert listening, (rc, err)


def test_a_config_file_with_a_byte_order_mark_and_crlf_is_read():
    d, conf = with_conf(b"\xef\xbb\xbf[server] ; main\r\nlisten = 127.0.0.1:0  # any port\r\n")
    listening, rc, err = quernd(["--data", os.path.join(d, "data"), "--config", conf])
    assert listening, (rc, err)


def test_config_values_are_checked_with_their_file_and_line():
    for text, what in ((b'[server]\nlisten = "127.0.0.1:0"\n', "listen: values are written without quotes"),
                       (b"[server]\n\nlisten = 127.0.0.1\n", "listen wants HOST:PORT, not 127.0.0.1"),
                       (b"[server]\nfsync = sometimes\n", "fsync must be always, batch or off"),
                       (b"# c\n[server]\n[limits]\nlease_ms = 5x\n", "expected an integer")):
        d, conf = with_conf(text)
        line = text.decode().rstrip("\n").count("\n") + 1
        refused(["--data", os.path.join(d, "data"), "--config", conf], "%s:%d: " % (conf, line), what)


def test_store_urls_quernd_cannot_serve_are_refused():
    d = tmpdir()
    for url, what in (("sqlite:", "needs a file path"), ("sqlite::memory:", "needs a file path"),
                      ("mysql://quern:s3cret@db/quern", "unknown store URL scheme mysql://")):
        err = refused(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data"), "--store", url], what)
        assert "s3cret" not in err, err


def test_a_bootstrap_key_that_could_not_be_used_is_refused():
    d = tmpdir()
    for key, what in (("short", "16 to 256 characters"), ("qk_" + "a" * 300, "16 to 256 characters"),
                      ("qk_with a space_0123456789", "without spaces"),
                      ("abc.def.0123456789abcdef", "connection token")):
        listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                    env={"QUERN_BOOTSTRAP_KEY": key})
        assert not listening and rc == 2, (key, rc, err)
        assert "QUERN_BOOTSTRAP_KEY " + what.split()[0] in err or what in err, err
        assert key not in err, "the key is a secret: " + err
    assert not os.path.exists(os.path.join(d, "data", "quern.db"))


def test_a_different_bootstrap_key_on_an_old_store_is_logged_and_not_used():
    s = Server()
    s.stop()
    other = "qk_another_root_key_0123456789"
    s.env = {"QUERN_BOOTSTRAP_KEY": other}
    s.start()
    try:
        assert s.req("GET", P + "/tasks", key=other).status == 401
        expect(s.req("GET", P + "/tasks"), 200)
    finally:
        s.stop()
    with open(os.path.join(s.data, "stderr.log")) as f:
        log = f.read()
    assert log.count("QUERN_BOOTSTRAP_KEY is not a key of this store") == 1, log
    assert other not in log
    # the store's own root key given again: nothing to say
    s.env = {}
    s.start()
    s.stop()
    with open(os.path.join(s.data, "stderr.log")) as f:
        assert f.read().count("QUERN_BOOTSTRAP_KEY is not a key of this store") == 1


def test_environment_values_over_their_maximum_are_refused():
    d = tmpdir()
    for name in ("QUERN_LEASE_MS", "MAX_TASK_TIMEOUT_MS", "QUERN_HTTP_IDLE_TIMEOUT_MS", "QUERN_DRAIN_GRACE_MS"):
        listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                    env={name: "9223372036854775807"})
        assert not listening and rc == 2, (name, rc, err)
        assert name + "=9223372036854775807: must be an integer from" in err, err


def test_a_lease_under_100_ms_is_refused_by_the_environment_as_by_quern_conf():
    # QUERN_LEASE_MS took 1 ms while lease_ms in quern.conf needs 100
    d = tmpdir()
    for value in ("1", "99"):
        listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                    env={"QUERN_LEASE_MS": value})
        assert not listening and rc == 2, (value, rc, err)
        assert "QUERN_LEASE_MS=%s: must be an integer from 100 to 86400000" % value in err, err
    conf = os.path.join(d, "quern.conf")
    with open(conf, "w") as f:
        f.write("[limits]\nlease_ms = 99\n")
    listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data"),
                                 "--config", conf])
    assert not listening and rc == 2 and "from 100 to 86400000" in err, (rc, err)
    listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                env={"QUERN_LEASE_MS": "100"})
    assert listening, err


def test_a_switch_set_to_another_word_is_refused_naming_it():
    # QUERN_LOG_REQUESTS took any value but empty and 0 for on ("off",
    # "no" logged every request); it is checked as QUERN_OUTBOUND_ALLOW_PRIVATE is
    d = tmpdir()
    for name in ("QUERN_LOG_REQUESTS", "QUERN_OUTBOUND_ALLOW_PRIVATE"):
        for value in ("off", "yes", "2"):
            listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                        env={name: value})
            assert not listening and rc == 2, (name, value, rc, err)
            assert "%s=%s: must be 1, true, 0 or false" % (name, value) in err, err
        for value in ("", "0", "1", "true", "false"):
            listening, rc, err = quernd(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data")],
                                        env={name: value})
            assert listening, (name, value, err)


def test_a_listen_address_quernd_cannot_use_stops_it_before_the_store_is_made():
    d = tmpdir()
    data = os.path.join(d, "data")
    for addr in ("[::1", "::1:0", "no-such-host.invalid:0", ":0", "[127.0.0.1]:0"):
        listening, rc, err = quernd(["--listen", addr, "--data", data], env={"QUERN_BOOTSTRAP_KEY": ""})
        assert not listening and rc == 2, (addr, rc, err)
        assert "cannot parse listen address" in err or "--listen wants" in err, err
        # no store was bootstrapped with a root key nobody was shown
        assert not os.path.exists(data), os.listdir(data)


def _ipv6_loopback():
    import socket
    try:
        with socket.socket(socket.AF_INET6) as t:
            t.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_ipv6_addresses_in_brackets_are_served():
    import http.client
    if not _ipv6_loopback():
        print("SKIP: this host has no IPv6 loopback")
        return
    for addr, also_v4 in (("[::1]:0", False), ("[::]:0", True)):
        d = tmpdir()
        e = dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY)
        p = subprocess.Popen([os.path.join(qlib.BUILD, "quernd"), "--listen", addr, "--data",
                              os.path.join(d, "data")], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=e)
        try:
            line = p.stdout.readline().decode()
            assert line.startswith("quernd listening on http://[") and "]:" in line, line
            port = int(line.rsplit(":", 1)[1])
            c = http.client.HTTPConnection("::1", port, timeout=30)
            c.request("GET", "/api/projects", headers={"Authorization": "Bearer " + ROOT_KEY})
            assert c.getresponse().status == 200
            if also_v4:   # [::] takes IPv4 too, as 0.0.0.0 would
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/healthz")
                assert c.getresponse().status == 200
        finally:
            p.send_signal(signal.SIGTERM)
            assert p.wait(60) == 0


def test_a_port_in_use_is_named_as_such():
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        d = tmpdir()
        err = refused(["--listen", "127.0.0.1:%d" % port, "--data", os.path.join(d, "data")],
                      "cannot listen on 127.0.0.1:%d: Address already in use" % port)
        assert not os.path.exists(os.path.join(d, "data")), err
    finally:
        taken.close()


def test_with_stdout_closed_nothing_is_written_into_the_data_directory():
    d = tmpdir()
    data = os.path.join(d, "data")
    with open(os.path.join(d, "stderr.log"), "wb") as err:
        p = subprocess.Popen([os.path.join(qlib.BUILD, "quernd"), "--listen", "127.0.0.1:0", "--data", data],
                             stdin=subprocess.DEVNULL, stderr=err, preexec_fn=lambda: os.close(1),
                             env=dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY))
    try:
        def port():
            with open(os.path.join(d, "stderr.log")) as f:
                for line in f:
                    if '"listening"' in line:
                        return json.loads(line)["port"]
        wait_for(port, what="quernd to listen")
        assert not os.readlink("/proc/%d/fd/1" % p.pid).startswith(data), os.readlink("/proc/%d/fd/1" % p.pid)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(60) == 0
    with open(os.path.join(data, "quern.lock")) as f:
        assert f.read().strip().isdigit()


def test_a_runtime_with_a_missing_interpreter_is_said_at_start():
    d, conf = with_conf(b"[runtime.gone]\ninterpreter = /nonexistent/bin/gone\n")
    s = Server(extra_args=["--config", conf])
    try:
        t = expect(s.req("POST", P + "/tasks", {"code": "true", "runtime_id": "gone",
                                                "wait_for_result": True}), 201)
        assert t["run"]["status"] == "failed" and t["run"]["error"]["code"] == "runtime_unavailable", t
    finally:
        s.stop()
    with open(os.path.join(s.data, "stderr.log")) as f:
        warned = [json.loads(x) for x in f if "is unavailable on this node" in x]
    assert [(w["runtime"], w["interpreter"]) for w in warned] == [("gone", "/nonexistent/bin/gone")], warned
    _, relative = with_conf(b"[runtime.python]\ninterpreter = python3\n")
    refused(["--listen", "127.0.0.1:0", "--data", os.path.join(d, "data2"), "--config", relative],
            relative + ":2: ", "interpreter = python3")


def test_sigterm_twice_with_code_past_its_grace_exits_0_and_the_run_is_recovered():
    s = Server(env={"QUERN_DRAIN_GRACE_MS": "300"})
    try:
        t = expect(s.req("POST", P + "/tasks", {"code": "echo started; exec sleep 600"}), 201)
        run = lambda: expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]  # noqa: E731
        wait_for(lambda: run()["status"] == "running", what="the code to run")
        s.proc.send_signal(signal.SIGTERM)
        s.proc.send_signal(signal.SIGTERM)   # changes nothing: the drain goes on
        s.proc.send_signal(signal.SIGINT)
        assert s.proc.wait(60) == 0
        s.start()
        r = wait_for(lambda: (lambda x: x if x["status"] == "failed" else None)(run()), what="recovery")
        assert r["error"]["code"] == "node_restarted", r
    finally:
        s.stop()


if __name__ == "__main__":
    run_tests(globals())
