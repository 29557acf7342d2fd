"""Scheduling semantics: priority order and FIFO, concurrency limits,
deadlines (before and after start), retries with backoff, and chains where
completing a task starts its dependants."""
import os
import sys
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests, wait_for  # noqa: E402

S = Server()
P = "/api/projects/default"


def task(**kw):
    body = {"run": True}
    body.update(kw)
    return expect(S.req("POST", P + "/tasks", body), 201)


def lease(agent, n=1, **kw):
    body = {"agent_id": agent, "max": n}
    body.update(kw)
    return expect(S.req("POST", P + "/workers/lease", body), 200)["data"]


def report(run, status="completed", **kw):
    res = {"run_id": run["id"], "attempt": run["attempt"], "status": status}
    res.update(kw)
    out = expect(S.req("POST", P + "/workers/report", {"results": [res]}), 200)["data"][0]
    assert out["ok"], out


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (dt.microsecond // 1000)


def test_priority_order_and_fifo():
    ids = {}
    for name, prio in [("l1", "low"), ("m1", "medium"), ("u1", "urgent"), ("h1", "high"),
                       ("m2", "medium"), ("u2", "urgent"), ("l2", "low")]:
        ids[task(name=name, assigned_agent_id="prio", priority=prio)["id"]] = name
    got = [ids[r["task_id"]] for r in lease("prio", 10)]
    assert got == ["u1", "u2", "h1", "m1", "m2", "l1", "l2"], got


def test_concurrency_limit_holds_extra_runs():
    ts = [task(assigned_agent_id="conc", settings={"concurrency_key": "db", "max_concurrency": 2})
          for _ in range(5)]
    first = lease("conc", 10)
    assert len(first) == 2
    assert lease("conc", 10) == []
    report(first[0])
    nxt = lease("conc", 10)
    assert len(nxt) == 1
    # another key is not held back
    other = task(assigned_agent_id="conc", settings={"concurrency_key": "api", "max_concurrency": 1})
    assert [r["task_id"] for r in lease("conc", 10)] == [other["id"]]
    del ts


def runs_of_task(t):
    return expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]


def test_patch_to_running_takes_a_concurrency_slot():
    """A worker's PATCH {status: running} and a resume of a paused run by
    PATCH start runs as a lease does: past the key's max_concurrency they
    are refused (409 concurrency_limit) and the run stays where it was
    (both used to start, two runs running under max_concurrency 1)."""
    wk = expect(S.req("POST", P + "/api_keys", {"name": "conc-w", "scopes": ["worker"]}), 201)["key"]
    st = {"concurrency_key": "patch", "max_concurrency": 1}
    r1, r2, r3 = [runs_of_task(task(assigned_agent_id="concp", settings=st))[0] for _ in range(3)]
    path = lambda r: P + "/tasks/%s/runs/%s" % (r["task_id"], r["id"])   # noqa: E731
    assert expect(S.req("PATCH", path(r1), {"status": "running"}, key=wk), 200)["status"] == "running"
    full = S.req("PATCH", path(r2), {"status": "running"}, key=wk)
    assert full.status == 409 and full.json["error"]["code"] == "concurrency_limit", full
    assert "max_concurrency 1 of concurrency_key patch is reached" in full.json["error"]["message"], full
    assert expect(S.req("GET", path(r2)), 200)["status"] == "queued"
    assert lease("concp", 5) == []
    # r1 pauses (its slot frees), r2 is leased, r1 cannot come back meanwhile
    expect(S.req("PATCH", path(r1), {"status": "paused"}), 200)
    assert [r["id"] for r in lease("concp", 5)] == [r2["id"]]
    back = S.req("PATCH", path(r1), {"status": "running"})
    assert back.status == 409 and back.json["error"]["code"] == "concurrency_limit", back
    assert expect(S.req("GET", path(r1)), 200)["status"] == "paused"
    report(expect(S.req("GET", path(r2)), 200))
    assert expect(S.req("PATCH", path(r1), {"status": "running"}), 200)["status"] == "running"
    expect(S.req("PATCH", path(r1), {"status": "completed"}), 200)
    assert [r["id"] for r in lease("concp", 5)] == [r3["id"]]


def test_runs_held_for_approval_hold_no_concurrency_slot():
    """Runs waiting for approval have not started: approving one of three
    under max_concurrency 1 lets it run at once (the two still waiting used
    to count as running, so it stayed queued until both were answered)."""
    st = {"concurrency_key": "appr", "max_concurrency": 1, "require_approval": True}
    runs = [runs_of_task(task(assigned_agent_id="concappr", settings=st))[0] for _ in range(3)]
    assert [r["status"] for r in runs] == ["interaction_required"] * 3, runs
    first = runs[0]
    expect(S.req("POST", P + "/tasks/%s/runs/%s/interaction" % (first["task_id"], first["id"]),
                 {"response": {"approved": True}}), 200)
    got = lease("concappr", 5, wait_ms=2000)
    assert [r["id"] for r in got] == [first["id"]], got
    # the next one approved waits for the slot, then goes
    nxt = runs[1]
    expect(S.req("POST", P + "/tasks/%s/runs/%s/interaction" % (nxt["task_id"], nxt["id"]),
                 {"response": {"approved": True}}), 200)
    assert lease("concappr", 5) == []
    report(got[0])
    assert [r["id"] for r in lease("concappr", 5, wait_ms=2000)] == [nxt["id"]]


def test_runs_of_a_paused_task_wait_paused():
    """A run of a paused task that becomes queued again -- a retry, an
    approval, an expired lease's next attempt -- waits paused, and the
    task's resume queues it (they were leased while the task was paused)."""
    t = task(assigned_agent_id="pzr", settings={"max_retries": 2, "retry_delay_ms": 10})
    r = lease("pzr")[0]
    ta = task(assigned_agent_id="pzr", settings={"require_approval": True})
    for x in (t, ta):
        expect(S.req("POST", P + "/tasks/%s/pause" % x["id"]), 200)
    report(r, "failed", error="boom")
    ra = runs_of_task(ta)[0]
    expect(S.req("POST", P + "/tasks/%s/runs/%s/interaction" % (ta["id"], ra["id"]),
                 {"response": {"approved": True}}), 200)
    assert [runs_of_task(x)[0]["status"] for x in (t, ta)] == ["paused", "paused"]
    assert lease("pzr", 5, wait_ms=300) == []
    for x in (t, ta):
        expect(S.req("POST", P + "/tasks/%s/resume" % x["id"]), 200)
    got = wait_for(lambda: lease("pzr", 5, wait_ms=1000), what="the resumed runs")
    got += lease("pzr", 5, wait_ms=300)
    assert sorted((g["task_id"], g["attempt"]) for g in got) == sorted([(t["id"], 2), (ta["id"], 1)]), got


def test_a_paused_blocked_run_sees_its_dependency_end_on_resume():
    """A run blocked on A and paused with its task while A ends is decided
    when the task resumes: runnable if A completed (it used to stay queued
    and blocked on A for good), dependency_failed if A failed."""
    for end, want in [("completed", "queued"), ("failed", "failed")]:
        agent = "pzdep-" + end
        a = task(assigned_agent_id=agent)
        b = task(assigned_agent_id=agent + "-b", dependencies=[a["id"]])
        expect(S.req("POST", P + "/tasks/%s/pause" % b["id"]), 200)
        report(lease(agent)[0], end)
        expect(S.req("POST", P + "/tasks/%s/resume" % b["id"]), 200)
        rb = runs_of_task(b)[0]
        assert rb["status"] == want, rb
        if want == "queued":
            assert not rb.get("blocked_by"), rb
            assert [r["task_id"] for r in lease(agent + "-b", wait_ms=1000)] == [b["id"]]
        else:
            assert rb["error"]["code"] == "dependency_failed", rb


def test_a_dependant_of_a_task_that_failed_already_fails_at_once():
    """A task made (or run again) depending on a task whose latest run has
    failed for good fails with dependency_failed, as its end would have made
    it: it waited queued for ever.  A dependency not yet run still blocks."""
    a = task(assigned_agent_id="dfail", settings={"max_retries": 0})
    report(lease("dfail")[0], "failed")
    b = task(assigned_agent_id="dfail-b", dependencies=[a["id"]])
    rb = runs_of_task(b)[0]
    assert rb["status"] == "failed" and rb["error"]["code"] == "dependency_failed", rb
    assert a["id"] in rb["error"]["message"], rb
    # a new run of the dependant, the dependency still failed: the same
    again = expect(S.req("POST", P + "/tasks/%s/runs" % b["id"], {}), 201)
    assert again["status"] == "failed" and again["error"]["code"] == "dependency_failed", again
    # a dependency that never ran blocks, as before
    c = task(assigned_agent_id="dfail-c", run=False)
    d = task(assigned_agent_id="dfail-d", dependencies=[c["id"]])
    rd = runs_of_task(d)[0]
    assert rd["status"] == "queued" and rd["blocked_by"] == [c["id"]], rd
    # and so does a run made by POST .../runs (it was runnable past them)
    rd2 = expect(S.req("POST", P + "/tasks/%s/runs" % d["id"], {}), 201)
    assert rd2["status"] == "queued" and rd2["blocked_by"] == [c["id"]], rd2
    assert lease("dfail-d", wait_ms=300) == []


def test_an_approved_run_sees_the_dependency_that_ended_while_it_was_held():
    """A run blocked on A and held for approval while A ends is decided when
    it is approved: runnable if A completed, dependency_failed if A failed
    (the approved run used to wait queued, blocked on A, for good)."""
    for end, want in [("completed", "queued"), ("failed", "failed")]:
        agent = "apdep-" + end
        a = task(assigned_agent_id=agent)
        b = task(assigned_agent_id=agent + "-b", dependencies=[a["id"]],
                 settings={"require_approval": True})
        rb = runs_of_task(b)[0]
        assert rb["status"] == "interaction_required" and rb["blocked_by"] == [a["id"]], rb
        report(lease(agent)[0], end)
        rb = expect(S.req("POST", P + "/tasks/%s/runs/%s/interaction" % (b["id"], rb["id"]),
                          {"response": {"approved": True}}), 200)
        assert rb["status"] == want, rb
        assert rb["interaction"] is None, rb
        if want == "queued":
            assert not rb.get("blocked_by"), rb
            assert [r["task_id"] for r in lease(agent + "-b", wait_ms=1000)] == [b["id"]]
        else:
            assert rb["error"]["code"] == "dependency_failed", rb
            assert rb["started_at"] is None, rb


def test_deadline_before_start_never_starts():
    past = iso(datetime.now(timezone.utc) - timedelta(seconds=1))
    t = task(assigned_agent_id="dl1", deadline=past)
    run = wait_for(lambda: (lambda r: r if r["status"] == "failed" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), what="deadline")
    assert run["error"]["code"] == "deadline_exceeded" and run["started_at"] is None
    assert lease("dl1") == []


def test_deadline_while_held_for_approval_says_it_never_started():
    # the message said "before the run finished" for a run that waited for
    # an approval and never started
    soon = iso(datetime.now(timezone.utc) + timedelta(milliseconds=500))
    t = task(assigned_agent_id="dl-held", deadline=soon, settings={"require_approval": True})
    run = wait_for(lambda: (lambda r: r if r["status"] == "failed" else None)(
        runs_of_task(t)[0]), what="deadline")
    assert run["error"]["code"] == "deadline_exceeded" and run["started_at"] is None, run
    assert run["error"]["message"] == "the task's deadline passed before the run started", run
    assert run["interaction"] is None, run


def test_deadline_while_running_fails_the_run():
    soon = iso(datetime.now(timezone.utc) + timedelta(seconds=1))
    t = task(assigned_agent_id="dl2", deadline=soon)
    run = lease("dl2")[0]
    done = wait_for(lambda: (lambda r: r if r["status"] == "failed" else None)(
        expect(S.req("GET", P + "/task-runs/" + run["id"]), 200)), what="deadline")
    assert done["error"]["code"] == "deadline_exceeded" and done["started_at"]
    out = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "attempt": 1, "status": "completed"}]}), 200)["data"][0]
    assert out["ok"] is False
    del t


def test_code_deadline_stops_the_sandbox():
    soon = iso(datetime.now(timezone.utc) + timedelta(seconds=1))
    t = task(code="sleep 300", deadline=soon)
    run = wait_for(lambda: (lambda r: r if r["status"] in ("failed", "canceled") else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), what="deadline")
    assert run["error"]["code"] == "deadline_exceeded"


def test_retries_with_exponential_backoff():
    t = task(assigned_agent_id="retry", settings={"max_retries": 2, "retry_delay_ms": 50,
                                                  "retry_backoff": "exponential"})
    attempts = []
    for _ in range(3):
        run = wait_for(lambda: lease("retry"), what="a retry")[0]
        attempts.append(run["attempt"])
        report(run, "failed", error="boom")
    assert attempts == [1, 2, 3]
    final = expect(S.req("GET", P + "/task-runs/" + run["id"]), 200)
    assert final["status"] == "failed" and len(final["errors"]) == 3
    evs = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs?event_types=task_run.retrying"
                       % (t["id"], run["id"])), 200)
    delays = [e["data"]["delay_ms"] for e in evs]
    assert len(delays) == 2 and 25 <= delays[0] <= 50 and 50 <= delays[1] <= 100, delays


def test_exponential_backoff_never_below_a_long_base():
    # the 1 h cap of the doubling does not cut a longer retry_delay_ms: a 2 h
    # base waits as long as it would with "fixed" (jitter over its upper half)
    t = task(assigned_agent_id="retrylong", settings={"max_retries": 1, "retry_delay_ms": 7200000,
                                                      "retry_backoff": "exponential"})
    run = wait_for(lambda: lease("retrylong"), what="the first attempt")[0]
    report(run, "failed", error="boom")
    evs = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs?event_types=task_run.retrying"
                       % (t["id"], run["id"])), 200)
    delays = [e["data"]["delay_ms"] for e in evs]
    assert len(delays) == 1 and 3600000 <= delays[0] <= 7200000, delays
    expect(S.req("DELETE", P + "/tasks/" + t["id"]), 200)


def test_completing_a_task_starts_its_dependants():
    a = task(assigned_agent_id="chainA", run=False)
    b = task(assigned_agent_id="chainB", run=False, dependencies=[a["id"]])
    c = task(assigned_agent_id="chainC", run=False, dependencies=[b["id"]])
    expect(S.req("POST", P + "/tasks/%s/run" % a["id"]), 201)
    report(lease("chainA")[0])
    rb = wait_for(lambda: lease("chainB", wait_ms=1000), what="B starts")[0]
    assert rb["task_id"] == b["id"]
    report(rb)
    rc = wait_for(lambda: lease("chainC", wait_ms=1000), what="C starts")[0]
    assert rc["task_id"] == c["id"]


def runs_of(t):
    return expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]


def test_a_dependency_is_decided_by_its_tasks_latest_run():
    # A has two runs; only the latest one's end decides for C, which depends
    # on A (an older run's end used to unblock or fail C)
    for first, latest, want in [("completed", "failed", "failed"), ("failed", "completed", "queued")]:
        agent = "dep-" + first
        a = task(assigned_agent_id=agent)
        expect(S.req("POST", P + "/tasks/%s/run" % a["id"]), 201)
        c = task(assigned_agent_id=agent + "-child", dependencies=[a["id"]])
        older, newer = sorted(lease(agent, 2), key=lambda r: r["created_at"])
        report(older, first)
        (crun,) = runs_of(c)
        assert crun["status"] == "queued" and crun["blocked_by"] == [a["id"]], crun
        assert expect(S.req("GET", P + "/tasks/" + a["id"]), 200)["status"] == "running"
        report(newer, latest)
        crun = wait_for(lambda: (lambda r: r if r["status"] == want and (
            want == "failed" or not r["blocked_by"]) else None)(runs_of(c)[0]), 30,
            "C decided by A's latest run")
        if want == "failed":
            assert crun["error"]["code"] == "dependency_failed", crun
        else:
            assert lease(agent + "-child", wait_ms=1000)[0]["task_id"] == c["id"]


def test_dependants_are_started_after_a_restart():
    """The scheduler finds its dependants again when quernd restarts (it
    reloads the tasks flagged has_dependencies, store index v3)."""
    s = Server()
    try:
        a = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "rsA"}), 201)
        b = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "rsB", "dependencies": [a["id"]]}), 201)
        s.stop()
        s.start()
        expect(s.req("POST", P + "/tasks/%s/run" % a["id"]), 201)
        ra = expect(s.req("POST", P + "/workers/lease", {"agent_id": "rsA", "max": 1, "wait_ms": 5000}), 200)["data"]
        assert ra and ra[0]["task_id"] == a["id"], ra
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": ra[0]["id"], "attempt": ra[0]["attempt"], "status": "completed"}]}), 200)
        rb = wait_for(lambda: expect(s.req("POST", P + "/workers/lease",
                                           {"agent_id": "rsB", "max": 1, "wait_ms": 1000}), 200)["data"],
                      what="B starts after A, across a restart")
        assert rb[0]["task_id"] == b["id"], rb
    finally:
        s.stop()


def test_a_run_handed_to_a_waiting_lease_says_queued_then_started():
    # a run created while a worker long-polls is stored running: its
    # task_run.queued event said "status": "running"
    import threading
    got = []
    th = threading.Thread(target=lambda: got.extend(lease("handoff", wait_ms=10000)))
    th.start()
    import time
    time.sleep(0.3)   # lets the long-poll park (else the run is leased from the queue: passes too)
    t = task(assigned_agent_id="handoff")
    th.join(30)
    assert got and got[0]["task_id"] == t["id"], got
    ev = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (t["id"], got[0]["id"])), 200)
    moves = [(e["type"], e["data"]["status"]) for e in ev if e["type"].startswith("task_run.")]
    assert moves[:2] == [("task_run.queued", "queued"), ("task_run.started", "running")], moves


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
