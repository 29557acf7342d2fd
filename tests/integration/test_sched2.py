"""Scheduling, second part (test_sched.py has the basics): the cycle check
of a PATCH on large dependency graphs, concurrency keys behind many held
runs, and the dispatch order and concurrency counts a restart rebuilds."""
import json
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import ROOT_KEY, Server, expect, run_tests, wait_for  # noqa: E402

S = Server()
P = "/api/projects/default"


def task(srv=None, **kw):
    body = {"run": True}
    body.update(kw)
    return expect((srv or S).req("POST", P + "/tasks", body), 201)


def lease(agent, n=1, srv=None, **kw):
    body = {"agent_id": agent, "max": n}
    body.update(kw)
    return expect((srv or S).req("POST", P + "/workers/lease", body), 200)["data"]


def report(run, status="completed", srv=None):
    res = {"run_id": run["id"], "attempt": run["attempt"], "status": status}
    out = expect((srv or S).req("POST", P + "/workers/report", {"results": [res]}), 200)["data"][0]
    assert out["ok"], out


def task_run_count(srv, t):
    return expect(srv.req("GET", P + "/tasks/" + t["id"]), 200)["run_count"]


def lease_and_complete(srv, agent):
    """Leases the one run waiting for agent on srv and reports it completed."""
    got = lease(agent, srv=srv, wait_ms=5000)
    assert len(got) == 1, got
    report(got[0], srv=srv)
    return got[0]


def test_the_cycle_check_looks_at_each_task_once():
    """A PATCH of dependencies walks the graph below them once per task: it
    walked every path, 3^16 of them through 16 levels of three tasks that
    each depend on the three below (the write lock held for minutes), and it
    answers the cycle the PATCH would close, named task by task."""
    level = [task(assigned_agent_id="cyc", run=False)["id"] for _ in range(3)]
    bottom = level[0]
    for _ in range(16):
        level = [task(assigned_agent_id="cyc", run=False, dependencies=level)["id"] for _ in range(3)]
    top = task(assigned_agent_id="cyc", run=False)
    r = S.req("PATCH", P + "/tasks/" + top["id"], {"dependencies": [level[0]]})
    assert r.status == 200 and r.json["dependencies"] == [level[0]], r
    r = S.req("PATCH", P + "/tasks/" + bottom, {"dependencies": [top["id"]]})
    assert r.status == 400 and r.json["error"]["code"] == "dependency_cycle", r
    names = r.json["error"]["message"].split(": ", 1)[1].split(" -> ")
    # bottom -> top -> level[0] -> (one task of each level) -> bottom
    assert names[:3] == [bottom, top["id"], level[0]] and names[-1] == bottom, names
    assert len(names) == 2 + 16 + 1, names


def test_a_long_chain_is_not_taken_for_a_cycle():
    """A chain deeper than 200 tasks is no cycle (the check gave up at depth
    200 and refused it as one); closing it is still refused."""
    first = prev = task(assigned_agent_id="chain", run=False)["id"]
    for _ in range(250):
        prev = task(assigned_agent_id="chain", run=False, dependencies=[prev])["id"]
    last = task(assigned_agent_id="chain", run=False)
    expect(S.req("PATCH", P + "/tasks/" + last["id"], {"dependencies": [prev]}), 200)
    r = S.req("PATCH", P + "/tasks/" + first, {"dependencies": [last["id"]]})
    assert r.status == 400 and r.json["error"]["code"] == "dependency_cycle", r
    assert len(r.json["error"]["message"].split(" -> ")) == 253, r.json["error"]["message"][:200]


def test_a_free_concurrency_key_is_not_hidden_behind_held_runs():
    """300 runs of a full key queued ahead of a run of another key: the run
    of the free key is leased (the dispatcher looked at 256 runs of a list
    and never reached it while the first key stayed full)."""
    held = {"concurrency_key": "busy", "max_concurrency": 1}
    for _ in range(3):
        expect(S.req("POST", P + "/tasks/batch", {"tasks": [
            {"assigned_agent_id": "scan", "settings": held, "run": True} for _ in range(100)]}), 201)
    first = lease("scan")
    assert len(first) == 1
    free = task(assigned_agent_id="scan", settings={"concurrency_key": "free", "max_concurrency": 1})
    got = lease("scan", 5)
    assert [r["task_id"] for r in got] == [free["id"]], got
    report(first[0])
    nxt = lease("scan", 5)
    assert len(nxt) == 1 and nxt[0]["task_id"] != free["id"], nxt


def test_a_restart_rebuilds_the_dispatch_order_and_the_slots():
    """What quernd rebuilds at start is what it had: the runs go in the same
    order (priority, then the time each was queued; a resumed run was
    queued again after runs made later, and went before them after a
    restart), and a key's slots held by leased runs stay held."""
    s = Server()
    try:
        prios = ["low", "medium", "high", "urgent"]
        ts = [task(s, assigned_agent_id="rs", priority=prios[i % 4], name=str(i))["id"]
              for i in range(40)]
        again = [t for i, t in enumerate(ts) if i % 3 == 0]
        for t in again:
            expect(s.req("POST", P + "/tasks/%s/pause" % t), 200)
        for t in again:
            expect(s.req("POST", P + "/tasks/%s/resume" % t), 200)
        order = [t for t in ts if t not in again] + again
        want = sorted(order, key=lambda t: (3 - ts.index(t) % 4, order.index(t)))
        conc = {"concurrency_key": "rs-k", "max_concurrency": 2}
        ks = [task(s, assigned_agent_id="rs-c", settings=conc)["id"] for _ in range(4)]
        held = lease("rs-c", 5, s)
        assert [r["task_id"] for r in held] == ks[:2], held
        s.stop()
        s.start()
        got = []
        while True:
            one = lease("rs", 1, s)
            if not one:
                break
            got.append(one[0]["task_id"])
        assert got == want, (got, want)
        assert lease("rs-c", 5, s) == []
        report(held[0], srv=s)
        assert [r["task_id"] for r in lease("rs-c", 5, s, wait_ms=2000)] == [ks[2]]
        assert lease("rs-c", 5, s) == []
    finally:
        s.stop()


def test_a_freed_slot_wakes_the_long_poll_that_takes_the_held_run():
    """A slot of a key frees while two long-polls wait: the one whose agent
    the held run is for gets it at once, and the older one, of another
    agent, waits on.  The freed slot woke the project's oldest long-poll,
    which found nothing, and the run's own worker slept until its wait_ms
    ran out (after the other's)."""
    st = {"concurrency_key": "wake", "max_concurrency": 1}
    task(assigned_agent_id="wake-y", settings=st)
    held = task(assigned_agent_id="wake-y", settings=st)
    first = lease("wake-y")[0]
    got = {}

    def poll(agent):
        got[agent] = lease(agent, 1, wait_ms=20000)

    other = threading.Thread(target=poll, args=("wake-x",))
    other.start()
    # the other agent's long-poll is waiting (and is the older one)
    assert lease("wake-x", 1) == [] and other.is_alive()
    mine = threading.Thread(target=poll, args=("wake-y",))
    mine.start()
    # let it reach its wait: a correct quernd passes either way, the pause
    # only lets the test see a wrong wake-up
    time.sleep(0.3)
    report(first)
    mine.join()
    assert [r["task_id"] for r in got["wake-y"]] == [held["id"]], got
    assert other.is_alive(), "the other agent's long-poll ended first"
    x = task(assigned_agent_id="wake-x")
    other.join()
    assert [r["task_id"] for r in got["wake-x"]] == [x["id"]], got


def test_a_lease_answered_as_quernd_stops_stays_leased():
    """A worker has its lease's answer, then quernd is stopped: the run
    stays leased to it (running, same attempt) across the restart.  The
    request's end, seen by quernd only as it stopped, was taken for a
    client gone: the run went back to queued and, after the restart, the
    same attempt was leased a second time (both workers could report).
    The window is narrow (a few percent of the stops): it is tried 60 times."""
    s = Server()
    try:
        for _ in range(60):
            for _ in range(3):
                task(s, assigned_agent_id="stop")
            got = lease("stop", 5, s)
            assert len(got) == 3, got
            s.stop()
            s.start()
            for g in got:
                run = expect(s.req("GET", P + "/task-runs/" + g["id"]), 200)
                assert run["status"] == "running" and run["attempt"] == g["attempt"], run
                evs = expect(s.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (g["task_id"], g["id"])),
                             200)
                assert [e["type"] for e in evs] == ["task_run.queued", "task_run.started"], evs
            assert lease("stop", 5, s) == []
            for g in got:
                report(g, srv=s)
    finally:
        s.stop()


def runs_of(t):
    return expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]


def test_a_dependency_taken_away_by_patch_no_longer_blocks():
    """A PATCH that takes a dependency away frees the runs that wait on it
    (they waited queued for good, and the deletion of the former
    dependency failed them with dependency_failed); the dependencies kept
    still block, and one added applies to the runs made afterwards."""
    a = task(assigned_agent_id="unb-a", run=False)
    c = task(assigned_agent_id="unb-c", run=False)
    b = task(assigned_agent_id="unb-b", dependencies=[a["id"], c["id"]])
    (rb,) = runs_of(b)
    assert rb["status"] == "queued" and sorted(rb["blocked_by"]) == sorted([a["id"], c["id"]]), rb
    expect(S.req("PATCH", P + "/tasks/" + b["id"], {"dependencies": [c["id"]]}), 200)
    assert runs_of(b)[0]["blocked_by"] == [c["id"]]
    assert lease("unb-b", 5) == []
    expect(S.req("DELETE", P + "/tasks/" + a["id"]), 200)
    assert runs_of(b)[0]["status"] == "queued"
    # c taken away as well, d added: the run is free
    d = task(assigned_agent_id="unb-d", run=False)
    expect(S.req("PATCH", P + "/tasks/" + b["id"], {"dependencies": [d["id"]]}), 200)
    (rb,) = runs_of(b)
    assert rb["status"] == "queued" and rb["blocked_by"] == [], rb
    expect(S.req("DELETE", P + "/tasks/" + c["id"]), 200)
    got = lease("unb-b", 5, wait_ms=2000)
    assert [r["id"] for r in got] == [rb["id"]], got
    report(got[0])
    evs = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs?event_types=task_run.unblocked"
                       % (b["id"], rb["id"])), 200)
    assert sorted(e["data"]["dependency"] for e in evs) == sorted([a["id"], c["id"]]), evs
    # a run made now waits for d
    rn = expect(S.req("POST", P + "/tasks/%s/runs" % b["id"], {}), 201)
    assert rn["status"] == "queued" and rn["blocked_by"] == [d["id"]], rn


def test_a_run_is_in_line_from_when_its_dependencies_are_met():
    """A run whose last dependency completes, or is taken away by a PATCH,
    is in line (FIFO and ageing) from then, as a retry is from the end of
    its delay: it kept the time it was made, so the wait for a dependency
    put it ahead of runs queued meanwhile.  A restart keeps that order."""
    s = Server()
    try:
        def runs(t):
            return expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]
        for restart in (False, True):
            ag = "il-%s" % restart
            a = task(s, assigned_agent_id=ag + "-a")
            x = task(s, assigned_agent_id=ag + "-x", run=False)
            b = task(s, assigned_agent_id=ag, dependencies=[a["id"]])
            d = task(s, assigned_agent_id=ag, dependencies=[x["id"]])
            c = task(s, assigned_agent_id=ag)
            e = task(s, assigned_agent_id=ag)
            time.sleep(0.005)   # the clock past e's millisecond (a tie goes by id)
            report(lease(ag + "-a", srv=s)[0], srv=s)
            wait_for(lambda: runs(b)[0]["blocked_by"] == [], what="b unblocked")
            time.sleep(0.005)
            expect(s.req("PATCH", P + "/tasks/" + d["id"], {"dependencies": []}), 200)
            assert runs(d)[0]["blocked_by"] == []
            if restart:
                s.stop()
                s.start()
            got = []
            while True:
                one = lease(ag, 1, s)
                if not one:
                    break
                got.append(one[0]["task_id"])
            assert got == [c["id"], e["id"], b["id"], d["id"]], (restart, got)
    finally:
        s.stop()


def test_a_restart_does_not_run_again_a_dependant_its_dependency_released():
    """A run made blocked on its dependency, released by that dependency's
    completion and ended since, is what that completion started: a restart
    (which starts the dependants a completion left unstarted) does not
    start its task a second time.  It did: the run was made before the
    completion, so the task was taken for one never started."""
    s = Server()
    try:
        a = task(s, assigned_agent_id="rel-a")
        b = task(s, assigned_agent_id="rel-b", dependencies=[a["id"]])
        report(lease("rel-a", srv=s, wait_ms=2000)[0], srv=s)
        got = lease("rel-b", srv=s, wait_ms=2000)
        assert [r["task_id"] for r in got] == [b["id"]], got
        report(got[0], srv=s)
        assert expect(s.req("GET", P + "/tasks/" + b["id"]), 200)["run_count"] == 1
        s.stop()
        s.start()
        # the restart's catch-up is done before quernd listens (sched_start)
        tb = expect(s.req("GET", P + "/tasks/" + b["id"]), 200)
        assert tb["run_count"] == 1 and tb["status"] == "completed", tb
        assert lease("rel-b", srv=s) == []
    finally:
        s.stop()


def test_a_restart_does_not_start_a_task_made_a_dependant_after_the_completion():
    """A dependency added by a PATCH after that dependency completed
    applies to what comes next: a restart does not take the completion for
    one that left the task unstarted (it started it: its last run, made and
    ended before the completion, looked like one never acted on)."""
    s = Server()
    try:
        d = task(s, assigned_agent_id="late-d")
        report(lease("late-d", srv=s, wait_ms=2000)[0], srv=s)
        t = task(s, assigned_agent_id="late-t")
        report(lease("late-t", srv=s, wait_ms=2000)[0], srv=s)
        expect(s.req("PATCH", P + "/tasks/" + d["id"], {"dependencies": [t["id"]]}), 200)
        s.stop()
        s.start()
        td = expect(s.req("GET", P + "/tasks/" + d["id"]), 200)
        assert td["run_count"] == 1 and td["status"] == "completed", td
        assert lease("late-d", srv=s) == []
    finally:
        s.stop()


def lost_server(var="QUERN_TEST_DEP_START_LOST"):
    """A server whose writes that start a completion's dependants are taken
    for failed after they commit (a COMMIT's answer lost; var
    QUERN_TEST_DEP_START_FAIL: rolled back) while the returned path exists:
    each is made again every second until the path is gone (MULTINODE.md)."""
    d = tempfile.mkdtemp(prefix="depdup-", dir=os.environ.get("QUERN_TEST_TMP"))
    hold = os.path.join(d, "hold")
    open(hold, "w").close()
    return Server(env={var: hold}), hold


def acted_on(hold, *runs):
    """Lets the retried writes go and waits until each of runs' completions
    has been acted on once more (the write after hold is gone)."""
    os.unlink(hold)

    def done():
        try:
            with open(hold + ".acted") as f:
                got = set(f.read().split())
        except FileNotFoundError:
            return False
        return all(r["id"] in got for r in runs)
    wait_for(done, 30, "the retried writes")


def test_a_retried_completion_does_not_start_a_dependant_again():
    """The write that acts on a completion is made again a second later when
    it failed, and a failed COMMIT may have committed: the retry, made after
    what the first attempt did has ended, starts nothing more.  A dependant
    the completion started, one whose run (made blocked on the dependency)
    it released, and a completion overtaken by a newer completion of the
    same dependency are each acted on once.  The released run's task and
    the overtaken completion's dependant were started once more by the
    retry: run_count 2 and 3."""
    s, hold = lost_server()
    try:
        # started: b has no run when a completes
        a = task(s, assigned_agent_id="dd-a")
        b = task(s, assigned_agent_id="dd-b", run=False, dependencies=[a["id"]])
        # released: c's run waits on x
        x = task(s, assigned_agent_id="dd-x")
        c = task(s, assigned_agent_id="dd-c", dependencies=[x["id"]])
        # overtaken: y completes twice, d is started by each completion
        y = task(s, assigned_agent_id="dd-y")
        d = task(s, assigned_agent_id="dd-d", run=False, dependencies=[y["id"]])
        ra, rx, ry = (lease_and_complete(s, ag) for ag in ("dd-a", "dd-x", "dd-y"))
        lease_and_complete(s, "dd-b")
        lease_and_complete(s, "dd-c")
        lease_and_complete(s, "dd-d")
        expect(s.req("POST", P + "/tasks/%s/runs" % y["id"], {}), 201)
        ry2 = lease_and_complete(s, "dd-y")
        lease_and_complete(s, "dd-d")
        acted_on(hold, ra, rx, ry, ry2)
        counts = [task_run_count(s, t) for t in (b, c, d)]
        assert counts == [1, 1, 2], counts
        for ag in ("dd-b", "dd-c", "dd-d"):
            assert lease(ag, srv=s) == [], ag
    finally:
        s.stop()


def test_a_failed_start_after_a_release_does_not_start_the_dependant_again():
    """A completion releases the runs waiting on it in one write and starts
    the dependants in the next: when the second fails (rolled back) and is
    made again after the released run has ended, it starts nothing more
    (it started the task a second time: run_count 2).  A dependant the
    failed write did not start is started by the retry, once."""
    s, hold = lost_server("QUERN_TEST_DEP_START_FAIL")
    try:
        a = task(s, assigned_agent_id="df-a")
        b = task(s, assigned_agent_id="df-b", run=False, dependencies=[a["id"]])
        x = task(s, assigned_agent_id="df-x")
        c = task(s, assigned_agent_id="df-c", dependencies=[x["id"]])
        ra, rx = lease_and_complete(s, "df-a"), lease_and_complete(s, "df-x")
        lease_and_complete(s, "df-c")
        assert task_run_count(s, b) == 0
        acted_on(hold, ra, rx)
        lease_and_complete(s, "df-b")
        counts = [task_run_count(s, t) for t in (b, c)]
        assert counts == [1, 1], counts
        for ag in ("df-b", "df-c"):
            assert lease(ag, srv=s) == [], ag
    finally:
        s.stop()


def dead_long_polls(agent, n):
    """n lease long-polls whose workers then die (their sockets closed while
    quernd holds the requests suspended)."""
    import socket
    body = json.dumps({"agent_id": agent, "max": 4, "wait_ms": 60000}).encode()
    socks = []
    for _ in range(n):
        c = socket.create_connection((S.host, S.port))
        c.sendall(b"POST " + (P + "/workers/lease").encode() + b" HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + ROOT_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        socks.append(c)
    time.sleep(0.5)   # let quernd suspend them (not an assertion)
    for c in socks:
        c.close()


def test_a_run_is_not_lost_to_the_long_polls_of_dead_workers():
    """Killed workers leave their lease long-polls suspended in quernd, the
    oldest of all: a new run was handed to one of them (refused: its client
    left), its wake-up went to the next (answered to no one), and the live
    worker slept until its wait ran out.  Dead long-polls are passed over,
    both when a create hands its run to a waiting long-poll and when a run
    that cannot be handed (a concurrency key) wakes one."""
    for extra in ({}, {"settings": {"concurrency_key": "dead-polls", "max_concurrency": 1}}):
        agent = "dead-" + str(len(extra))
        dead_long_polls(agent, 3)
        out = {}

        def poll():
            out["r"] = S.req("POST", P + "/workers/lease", {"agent_id": agent, "wait_ms": 60000})
        th = threading.Thread(target=poll)
        th.start()
        time.sleep(0.3)   # let the live one wait too (not an assertion)
        t = task(assigned_agent_id=agent, **extra)
        th.join(30)
        assert not th.is_alive(), "the live long-poll was not woken by the new run (%r)" % extra
        data = expect(out["r"], 200)["data"]
        assert [r["task_id"] for r in data] == [t["id"]], (extra, data)
        report(data[0])


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
