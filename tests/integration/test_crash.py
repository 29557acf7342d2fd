"""Crash safety: SIGKILL quernd under a write load several times, restart it
on the same data, and check every acknowledged task and log entry is there
and leased runs come back under the lease rules.  SIGKILL while a code run
(runtime sh) runs: the restart succeeds, the run ends failed with
node_restarted (runner_recover; retried when retries remain), the sandboxed
process tree is gone, and the node is ready.  Both stores (the runner runs
this file with QUERN_TEST_STORE=pg too)."""
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import ROOT_KEY, Server, expect, run_tests  # noqa: E402

P = "/api/projects/default"


def test_sigkill_loses_nothing_acknowledged():
    s = Server(env={"QUERN_LEASE_MS": "500"})
    acked_tasks, acked_logs = [], []
    leased = []
    try:
        for round_ in range(3):
            stop = threading.Event()

            def writer(n):
                try:
                    write_loop(n)
                except Exception:
                    return   # the server was killed under us

            def write_loop(n):
                i = 0
                while not stop.is_set():
                    try:
                        r = s.req("POST", P + "/tasks", {"name": "c%d-%d-%d" % (round_, n, i),
                                  "assigned_agent_id": "crash", "run": True,
                                  "settings": {"max_retries": 1, "retry_delay_ms": 0}})
                    except Exception:
                        return
                    if r.status == 201:
                        acked_tasks.append(r.json["id"])
                        run = s.req("GET", P + "/tasks/%s/runs" % r.json["id"])
                        if run.status != 200:
                            return
                        rid = run.json["data"][0]["id"]
                        lr = s.req("POST", P + "/tasks/%s/runs/%s/append_log" % (r.json["id"], rid),
                                   {"entries": [{"message": "m%d" % i}]})
                        if lr.status == 200:
                            acked_logs.append((r.json["id"], rid, "m%d" % i))
                    i += 1
            ths = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
            for t in ths:
                t.start()
            # lease some runs so the crash leaves leases behind
            got = s.req("POST", P + "/workers/lease", {"agent_id": "crash", "max": 3, "wait_ms": 2000})
            if got.status == 200:
                leased.extend(got.json["data"])
            while len(acked_tasks) < 20 * (round_ + 1):
                if not any(t.is_alive() for t in ths):
                    break
                threading.Event().wait(0.01)
            s.kill()
            stop.set()
            for t in ths:
                t.join(30)
            s.start()
        for tid in acked_tasks:
            expect(s.req("GET", P + "/tasks/" + tid), 200)
        for tid, rid, msg in acked_logs:
            lines = s.req("GET", P + "/tasks/%s/runs/%s/logs" % (tid, rid)).text
            assert msg in lines, (tid, msg)
        assert len(acked_tasks) >= 60
        # leased runs come back: after lease expiry they are leasable again (attempt 2)
        for run in leased:
            def back():
                r = expect(s.req("GET", P + "/task-runs/" + run["id"]), 200)
                if r["attempt"] > run["attempt"] or r["status"] == "queued":
                    return r
                if r["status"] == "failed" and r["error"]["code"] == "lease_expired":
                    return r   # that lease was the last attempt (a run leased twice)
                return None
            from qlib import wait_for
            r = wait_for(back, what="lease expiry after the crash")
            assert r["attempt"] == run["attempt"] + 1 or r["error"]["code"] == "lease_expired"
    finally:
        s.stop()


def procs_with(token):
    """Pids whose command line holds token (any user, any pid namespace)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if token in cmd:
            out.append(int(pid))
    return out


def code_run_killed(settings):
    """Starts a code run that sleeps (a token in its command line marks its
    processes), SIGKILLs quernd while it runs, restarts quernd on the same
    data.  Returns (server, task, run before the kill, token)."""
    from qlib import wait_for
    token = "30.%06d" % random.randrange(10 ** 6)   # sleep 30.xxxxxx: ours alone
    s = Server()
    t = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "settings": settings,
                                            "code": "sleep %s & sleep %s; wait" % (token, token)}), 201)
    run = wait_for(lambda: (lambda r: r if r["status"] == "running" else None)(
        expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 30, "the code run to start")
    wait_for(lambda: len(procs_with("sleep " + token)) == 2, 30, "the sandboxed sleeps")
    s.kill()
    s.start()   # raises when quernd does not come up
    return s, t, run, token


def ready(s):
    r = s.req("GET", "/readyz", key=None)
    return r.status == 200


def test_sigkill_during_a_code_run():
    from qlib import wait_for
    s, t, run, token = code_run_killed({"max_retries": 0})
    try:
        wait_for(lambda: ready(s), 30, "/readyz after the restart")
        # the sandbox (its pid namespace, PR_SET_PDEATHSIG) died with quernd
        wait_for(lambda: procs_with("sleep " + token) == [], 30, "the sandboxed processes gone")
        r = expect(s.req("GET", P + "/task-runs/" + run["id"]), 200)
        assert r["status"] == "failed", r
        assert r["error"]["code"] == "node_restarted", r
        assert r["attempt"] == run["attempt"], r
        runs = expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]
        assert len(runs) == 1, runs
        task = expect(s.req("GET", P + "/tasks/" + t["id"]), 200)
        assert task["status"] == "failed", task
        # the node still runs code
        t2 = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo after"}), 201)
        wait_for(lambda: expect(s.req("GET", P + "/tasks/%s/runs" % t2["id"]), 200)["data"][0]["status"]
                 == "completed", 60, "a new code run to complete")
    finally:
        s.stop()


def test_artifacts_left_by_a_crash_are_swept_at_start():
    # a run's files wait in runs/.artifacts/ until the runner stores them: a
    # crash between the two left them there for good
    s = Server()
    try:
        s.kill()
        left = os.path.join(s.data, "runs", ".artifacts", "run_x-ab12")
        os.makedirs(os.path.join(left, "deep"))
        with open(os.path.join(left, "deep", "a.bin"), "wb") as f:
            f.write(b"x" * 4096)
        s.start()
        assert os.path.isdir(os.path.join(s.data, "runs", ".artifacts"))
        assert os.listdir(os.path.join(s.data, "runs", ".artifacts")) == []
        # artifacts of runs after the start are stored as before
        t = expect(s.req("POST", P + "/tasks", {"code": 'echo a > "$QUERN_ARTIFACTS/a.txt"',
                                                "wait_for_result": True}), 201)
        assert [a["name"] for a in t["run"]["artifacts"]] == ["a.txt"], t["run"]
    finally:
        s.stop()


def test_sigkill_during_a_code_run_with_retries_left():
    from qlib import wait_for
    s, t, run, token = code_run_killed({"max_retries": 1, "retry_delay_ms": 0})
    try:
        wait_for(lambda: ready(s), 30, "/readyz after the restart")

        def second():
            r = expect(s.req("GET", P + "/task-runs/" + run["id"]), 200)
            return r if r["attempt"] == run["attempt"] + 1 and r["status"] == "running" else None
        r = wait_for(second, 60, "the second attempt running")
        assert "node_restarted" in [e["code"] for e in r["errors"]], r
        # the first attempt's processes are gone; the second attempt's run
        wait_for(lambda: len(procs_with("sleep " + token)) == 2, 30, "only the new attempt's sleeps")
        expect(s.req("POST", P + "/tasks/%s/runs/%s/cancel" % (t["id"], run["id"])), 200)
        wait_for(lambda: procs_with("sleep " + token) == [], 30, "the canceled run's processes gone")
        assert ready(s)
    finally:
        s.stop()


def test_sigkill_during_a_code_run_fails_its_dependants():
    # the run ended node_restarted at the restart, before the scheduler ran:
    # a task waiting on it waited queued (blocked_by) for ever
    from qlib import wait_for
    token = "30.%06d" % random.randrange(10 ** 6)
    s = Server()
    try:
        a = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "settings": {"max_retries": 0},
                                                "code": "sleep %s" % token}), 201)
        b = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo b",
                                                "dependencies": [a["id"]]}), 201)
        wait_for(lambda: procs_with("sleep " + token), 30, "the sandboxed sleep")
        s.kill()
        s.start()
        wait_for(lambda: ready(s), 30, "/readyz after the restart")
        ra = expect(s.req("GET", P + "/tasks/%s/runs" % a["id"]), 200)["data"][0]
        assert ra["status"] == "failed" and ra["error"]["code"] == "node_restarted", ra

        def b_ended():
            r = expect(s.req("GET", P + "/tasks/%s/runs" % b["id"]), 200)["data"][0]
            return r if r["status"] != "queued" else None
        rb = wait_for(b_ended, 30, "the dependant to end")
        assert rb["status"] == "failed" and rb["error"]["code"] == "dependency_failed", rb
        assert expect(s.req("GET", P + "/tasks/" + b["id"]), 200)["status"] == "failed"
    finally:
        s.stop()


def test_an_idempotent_create_cut_by_a_crash_is_not_made_twice():
    # the create commits, then waits for its run (wait_for_result) before it
    # answers and records its Idempotency-Key: SIGKILL in between, and the
    # client's retry with the same key made a second task
    from qlib import wait_for
    s = Server()
    try:
        body = {"name": "idem-crash", "runtime_id": "sh", "code": "sleep 30", "wait_for_result": True}
        hdr = {"Idempotency-Key": "idem-crash-1"}
        th = threading.Thread(target=lambda: _quiet(lambda: s.req("POST", P + "/tasks", body, headers=hdr)))
        th.start()

        def made():
            return [t for t in expect(s.req("GET", P + "/tasks?q=idem-crash"), 200)["data"]
                    if t["name"] == "idem-crash"]
        wait_for(made, 30, "the task stored")
        s.kill()
        th.join(30)
        s.start()
        r = s.req("POST", P + "/tasks", body, headers=hdr)
        assert r.status == 409 and r.json["error"]["code"] == "idempotency_outcome_unknown", r
        assert r.json["error"]["type"] == "conflict", r
        assert len(made()) == 1, made()
        # a new key is a new request
        r = s.req("POST", P + "/tasks", dict(body, wait_for_result=False), headers={"Idempotency-Key": "k2"})
        assert r.status == 201, r
    finally:
        s.stop()


def _lease_cut_by_a_crash(handoff):
    # A lease long-poll (wait_ms) with an Idempotency-Key that waited, then
    # leased a run when it resumed (woken by the scheduler, or handed the run
    # by the create's own transaction), stored that lease without its key:
    # quernd killed before the answer was recorded, the worker's retry with
    # the same key leased other runs, and the first stayed leased to nobody
    # until its lease ran out.  It is 409 idempotency_outcome_unknown, as
    # for any POST whose work was stored.
    import tempfile
    from qlib import wait_for
    hold = os.path.join(tempfile.mkdtemp(prefix="quern-hold-", dir=os.environ.get("QUERN_TEST_TMP")), "hold")
    open(hold, "w").close()
    s = Server(env={"QUERN_TEST_ANSWER_HOLD": hold, "QUERN_LEASE_MS": "600000"})
    try:
        agent = "cut-%s" % handoff
        body = {"agent_id": agent, "worker_id": "w1", "wait_ms": 60000}
        for attempt in range(20):
            hdr = {"Idempotency-Key": "lease-cut-%d" % attempt}
            c = s.conn()
            c.request("POST", P + "/workers/lease", body=json.dumps(body),
                      headers=dict(hdr, Authorization="Bearer " + ROOT_KEY,
                                   **{"Content-Type": "application/json"}))
            th = threading.Thread(target=lambda: _quiet(c.getresponse))
            th.start()
            # the long-poll holds its key while it waits: another request
            # with it is refused (one that came first instead answers its
            # 400 at once and takes the key: the long-poll is refused, try
            # another key)
            probe = {"not_a_field": True}
            if s.req("POST", P + "/workers/lease", probe, headers=hdr).status == 409:
                break
            th.join(30)
            c.close()
        else:
            raise AssertionError("the long-poll never held its key first")
        task = {"name": "lc", "assigned_agent_id": agent, "run": True}
        if not handoff:
            task["settings"] = {"concurrency_key": "lc", "max_concurrency": 5}   # never handed off: the scheduler wakes it
        time.sleep(0.2)   # let the long-poll reach its wait (not an assertion)
        a = expect(s.req("POST", P + "/tasks", task), 201)
        wait_for(lambda: os.path.exists(hold + ".reached"), 30, "the lease's answer held")
        b = expect(s.req("POST", P + "/tasks", dict(task, settings={"concurrency_key": "lc2", "max_concurrency": 5})), 201)
        s.kill()
        th.join(30)
        c.close()
        os.unlink(hold)
        s.start()
        ra = expect(s.req("GET", P + "/tasks/%s/runs" % a["id"]), 200)["data"][0]
        assert ra["status"] == "running" and ra["worker_id"] == "w1", ra
        r = s.req("POST", P + "/workers/lease", body, headers=hdr)
        assert r.status == 409 and r.json["error"]["code"] == "idempotency_outcome_unknown", r
        assert r.header("Retry-After") == "1", r
        rb = expect(s.req("GET", P + "/tasks/%s/runs" % b["id"]), 200)["data"][0]
        assert rb["status"] == "queued", rb
        # the run leased before the crash is still the worker's
        ra = expect(s.req("GET", P + "/tasks/%s/runs" % a["id"]), 200)["data"][0]
        assert ra["status"] == "running" and ra["worker_id"] == "w1" and ra["attempt"] == 1, ra
        return a["status"] == "running"   # handed off by the create's transaction
    finally:
        s.stop()


def test_a_woken_lease_long_poll_cut_by_a_crash_is_not_leased_twice():
    assert not _lease_cut_by_a_crash(handoff=False)


def test_a_handed_off_lease_long_poll_cut_by_a_crash_is_not_leased_twice():
    # the hand-off needs the long-poll waiting when the task comes: when it
    # was not yet (it leased the task itself), try again
    for attempt in range(5):
        if _lease_cut_by_a_crash(handoff=True):
            return
    raise AssertionError("the run was never handed off to the waiting long-poll")


def test_restart_waits_for_the_killed_quernds_last_children():
    # a box being spawned shares quernd's open quern.lock until its exec: a
    # restart right after the SIGKILL found the lock held by such a dying
    # child and exited "in use by another quernd" (pid: the dead one)
    import subprocess
    import tempfile
    data = tempfile.mkdtemp(prefix="quernd-", dir=os.environ.get("QUERN_TEST_TMP"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock = os.path.join(data, "quern.lock")
    with open(lock, "w") as f:
        f.write("%d\n" % dead.pid)
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, sys, time\n"
                               "f = open(sys.argv[1], 'r+')\n"
                               "fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "print('held', flush=True)\n"
                               "time.sleep(2)\n", lock], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    try:
        s = Server(data=data)   # raises when quernd refuses the directory
        s.stop()
    finally:
        holder.wait()
    # a live holder is still refused at once
    holder = subprocess.Popen([sys.executable, "-c",
                               "import fcntl, os, sys, time\n"
                               "f = open(sys.argv[1], 'r+')\n"
                               "fcntl.flock(f, fcntl.LOCK_EX)\n"
                               "f.seek(0); f.truncate(); f.write('%d\\n' % os.getpid()); f.flush()\n"
                               "print('held', flush=True)\n"
                               "time.sleep(30)\n", lock], stdout=subprocess.PIPE)
    assert holder.stdout.readline() == b"held\n"
    try:
        from qlib import BUILD, ROOT_KEY
        r = subprocess.run([os.path.join(BUILD, "quernd"), "--listen", "127.0.0.1:0", "--data", data],
                           env=dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY), capture_output=True, timeout=30)
        assert r.returncode == 1 and b"in use by another quernd" in r.stderr, r
    finally:
        holder.kill()
        holder.wait()


def test_a_completion_cut_from_its_dependants_starts_them_at_the_restart():
    # completing A starts B (a dependant with no run) in a write after A's
    # end: a SIGKILL in between left B never started (test_crash_random,
    # seed 54).  The state a kill leaves is made by hand here: B made after
    # A completed (which a restart must not start), then dated before it.
    import sqlite3
    if os.environ.get("QUERN_TEST_STORE") == "pg":
        return   # the state is written into the SQLite file
    from qlib import wait_for
    s = Server()
    try:
        a = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo a", "wait_for_result": True}),
                   201)
        assert a["status"] == "completed", a
        b = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo b", "run": False,
                                                "dependencies": [a["id"]]}), 201)
        late = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo late", "run": False,
                                                   "dependencies": [a["id"]]}), 201)
        s.stop()
        s.start()
        # made after the completion: a restart starts neither
        for t in (b, late):
            assert expect(s.req("GET", P + "/tasks/" + t["id"]), 200)["run_count"] == 0
        s.stop()
        db = sqlite3.connect(os.path.join(s.data, "quern.db"))
        # (and not changed since, as a task made before the completion:
        # updated_at is also in its hot column, which wins)
        db.execute("UPDATE tasks SET doc=json_set(doc, '$.created_at', '2000-01-01T00:00:00.000Z',"
                   " '$.updated_at', '2000-01-01T00:00:00.000Z'),"
                   " h_updated_at='\"2000-01-01T00:00:00.000Z\"' WHERE id=?", (b["id"],))
        db.commit()
        db.close()
        s.start()
        tb = wait_for(lambda: (lambda t: t if t["status"] == "completed" else None)(
            expect(s.req("GET", P + "/tasks/" + b["id"]), 200)), 30, "B started and completed")
        assert tb["run_count"] == 1, tb
        assert expect(s.req("GET", P + "/tasks/" + late["id"]), 200)["run_count"] == 0
        s.stop()
        s.start()   # once: the completion started it
        assert expect(s.req("GET", P + "/tasks/" + b["id"]), 200)["run_count"] == 1
    finally:
        s.stop()


def test_quernd_dying_inside_a_box_set_up_leaves_no_orphan_box():
    # A box child sets PR_SET_PDEATHSIG only after its mounts and credentials
    # change; quernd killed before that (after the sync byte) left a box that
    # ran its code with no parent.  QUERN_TEST_SPAWN_HOLD (test-only) holds
    # every box child right after its sync byte until we close `go`.
    import select
    import subprocess
    from qlib import BUILD, ROOT_KEY, wait_for
    go_r, go_w = os.pipe()
    at_r, at_w = os.pipe()

    class Held(Server):
        def _spawn(self):
            env = dict(os.environ, QUERN_BOOTSTRAP_KEY=ROOT_KEY,
                       QUERN_TEST_SPAWN_HOLD="%d,%d" % (go_r, at_w))
            self.proc = subprocess.Popen(
                [os.path.join(BUILD, "quernd"), "--listen", "127.0.0.1:0", "--data", self.data],
                stdout=subprocess.PIPE, stderr=open(os.path.join(self.data, "stderr.log"), "ab"),
                env=env, pass_fds=(go_r, at_w))
            return self.proc.stdout.readline().decode()

    token = "31.%06d" % random.randrange(10 ** 6)
    s = Held()
    os.close(go_r)
    os.close(at_w)
    try:
        expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "sleep %s" % token}), 201)
        ready_, _, _ = select.select([at_r], [], [], 60)
        assert ready_ and os.read(at_r, 1) == b"r", "no box child reached its set-up"
        quernd = os.path.realpath(os.path.join(BUILD, "quernd"))
        kids = []
        for tid in os.listdir("/proc/%d/task" % s.proc.pid):
            with open("/proc/%d/task/%s/children" % (s.proc.pid, tid)) as f:
                kids += [int(k) for k in f.read().split()]

        def in_set_up(pid):
            # still quernd's image (a CLONE_VM child before its exec), not a zombie
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return False
                return os.readlink("/proc/%d/exe" % pid) == quernd
            except OSError:
                return False
        held = [k for k in kids if in_set_up(k)]
        assert held, "the held box child is not among quernd's children %s" % kids
        s.kill()
        os.close(go_w)
        go_w = -1

        def fate(pid):
            # "gone" (exited, reaped or a zombie), "exec" (runs another
            # image: it went on), else None (still in its set-up, or exiting)
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return "gone"
            except OSError:
                return "gone"
            try:
                return "exec" if os.readlink("/proc/%d/exe" % pid) != quernd else None
            except OSError:
                return None
        fates = wait_for(lambda: (lambda f: f if None not in f else None)([fate(k) for k in held]),
                         60, "the box children to exit or exec")
        # each child exited in its set-up: none ran quern-init, nor the code
        assert fates == ["gone"] * len(held), "a box child went on without quernd: %s" % fates
        assert procs_with("sleep " + token) == [], "the orphaned box ran its code"
    finally:
        if go_w >= 0:
            os.close(go_w)
        os.close(at_r)
        s.proc.kill()
        s.proc.wait()


def _quiet(fn):
    try:
        fn()
    except Exception:
        pass   # the server was killed under the request


if __name__ == "__main__":
    run_tests(dict(globals()))
