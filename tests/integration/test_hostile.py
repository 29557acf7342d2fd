"""Hostile code through the API (RUNTIME.md "Isolation"): each run ends with
the right status, the host is untouched, and quernd stays healthy."""
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests  # noqa: E402

S = Server()
P = "/api/projects/default"


def run(code, runtime="sh", **settings):
    body = {"code": code, "runtime_id": runtime, "wait_for_result": True}
    if settings:
        body["settings"] = settings
    t = expect(S.req("POST", P + "/tasks", body), 201)
    r = t["run"]
    lines = [l for l in S.req("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], r["id"])).text.splitlines()]
    assert S.req("GET", "/healthz", key=None).status == 200
    return r, "\n".join(lines)


def test_fork_bomb_is_contained():
    r, _ = run(":(){ :|:& };:; sleep 2", timeout_ms=8000, kill_grace_ms=200)
    assert r["status"] in ("failed", "timed_out", "completed"), r


def test_memory_bomb():
    r, _ = run("a = bytearray(0)\nwhile True:\n    a += bytearray(16 << 20)\n", "python",
               memory_limit_mb=64, timeout_ms=20000)
    assert r["status"] == "failed" and r["error"]["code"] == "memory_limit_exceeded", r


def test_infinite_stdout():
    import json
    r, logs = run("yes hello", max_output_bytes=100000, timeout_ms=20000)
    assert r["status"] == "failed" and r["error"]["code"] == "output_limit_exceeded", r
    kept = sum(len(json.loads(l)["message"] or "") + 1 for l in logs.splitlines())
    assert 0 < kept <= 100000, kept   # the log is kept up to the limit


def test_sleep_forever_times_out():
    r, _ = run("sleep 100000", timeout_ms=500, kill_grace_ms=100)
    assert r["status"] == "timed_out" and r["error"]["code"] == "timeout"


def test_host_files_and_environment_are_not_visible():
    os.environ["QUERN_HOST_SECRET_FOR_TEST"] = "do-not-leak-12345"
    r, logs = run('cat /etc/shadow; echo "rc=$?"; cat /proc/1/environ | tr "\\0" "\\n"; '
                  'ls /root /home 2>&1 | head -3; env')
    assert "root:" not in logs and "rc=1" in logs
    assert "do-not-leak-12345" not in logs and "QUERN_BOOTSTRAP_KEY" not in logs


def test_writes_outside_scratch_fail():
    r, logs = run('for p in /usr/x /etc/x /x /proc/sys/kernel/hostname; do '
                  '(echo hi > $p) 2>/dev/null && echo "WROTE $p"; done; echo ok > ./here && echo scratch-ok')
    assert "WROTE" not in logs and "scratch-ok" in logs


def test_no_network_to_the_host():
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    port = ls.getsockname()[1]
    got = []
    th = threading.Thread(target=lambda: got.append(ls.accept()), daemon=True)
    th.start()
    r, logs = run("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n"
                  "    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)\n" % port, "python")
    ls.close()
    assert "CONNECTED" not in logs and "refused" in logs and not got


def test_daemon_does_not_outlive_the_run():
    r, _ = run("(setsid sh -c 'sleep 300 & echo $! > /tmp/pid; exec sleep 300' &) ; sleep 0.2; echo done")
    assert r["status"] == "completed"
    # nothing of the run is left on the host: no process runs as the box's uid
    import subprocess
    ps = subprocess.run(["ps", "-o", "uid=,cmd=", "-U", "100000"], capture_output=True, text=True)
    assert "sleep 300" not in ps.stdout, ps.stdout



IPC_PROBE = r"""
import ctypes, os
def n(kind):
    return len(open("/proc/sysvipc/" + kind).read().splitlines()) - 1
rt = ctypes.CDLL("librt.so.1", use_errno=True)
libc = ctypes.CDLL(None, use_errno=True)
left = rt.mq_open(b"/quern-probe", os.O_RDONLY) >= 0
print("found", n("shm"), n("msg"), n("sem"), int(left))
made = [libc.shmget(0x51, 4096, 0o1600), libc.msgget(0x51, 0o1600), libc.semget(0x51, 1, 0o1600),
        rt.mq_open(b"/quern-probe", os.O_RDONLY | os.O_CREAT, 0o600, None)]
print("made", *[int(x >= 0) for x in made])
"""


def test_ipc_objects_do_not_outlive_their_run():
    # System V and POSIX IPC objects left by a run are gone for the next
    # one, whichever slot it gets (more runs than slots, sh and warm python)
    for i in range(12):
        rt = "python" if i % 3 == 2 else "sh"
        code = IPC_PROBE if rt == "python" else "python3 - <<'EOF'\n" + IPC_PROBE + "\nEOF\n"
        r, logs = run(code, rt)
        assert r["status"] == "completed", (r, logs)
        assert '"found 0 0 0 0"' in logs and '"made 1 1 1 1"' in logs, logs

if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
