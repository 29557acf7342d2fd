"""Crash safety: SIGKILL quernd under a write load several times, restart it
on the same data, and check every acknowledged task and log entry is there
and leased runs come back under the lease rules."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests  # noqa: E402

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


if __name__ == "__main__":
    run_tests(dict(globals()))
