"""The run state machine under concurrent, conflicting requests: many threads
change the same runs at once (worker reports with current and stale attempts,
PATCH, set_output completing a run, heartbeats, short leases expiring, run and
task cancels, task pause/resume/retry/delete, approvals, reviews, code that
exits or times out while it is canceled).  Afterwards the invariants are
checked from outside, whatever the interleaving was: no 5xx; each run's events
(session_logs, the project stream, webhooks) are one legal path of the
transition table ending in its status, nothing after a terminal event; a
task's status is its latest run's; run_count and /metrics agree with the
lists.  Also the state-machine corners the storm found."""
import http.client
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Receiver, Server, expect, run_tests, sse, wait_for  # noqa: E402
from qlib import RUN_MOVES as ALLOWED, RUN_TERMINAL as TERMINAL  # noqa: E402

S = Server(env={"QUERN_LEASE_MS": "300", "QUERN_OUTBOUND_ALLOW_PRIVATE": "1",
                "QUERN_WEBHOOK_RETRY_BASE_MS": "100"})
P = "/api/projects/default"

STATUS_EVENTS = {"task_run." + s for s in ALLOWED if s not in ("running", "queued")} | {
    "task_run.queued", "task_run.started", "task_run.resumed", "task_run.retrying"}


def check_path(run, events):
    """events: the run's events in order; raises unless they are a legal path
    of the table that ends in the run's status, with nothing after the end."""
    cur = None
    for i, e in enumerate(events):
        t = e["type"]
        assert cur not in TERMINAL, "%s: event %s after terminal %s: %s" % (
            run["id"], t, cur, [x["type"] for x in events])
        if t not in STATUS_EVENTS:
            continue
        if cur is None:
            assert t == "task_run.queued", "%s starts with %s" % (run["id"], t)
            cur = "queued"
            continue
        if t == "task_run.retrying" and "retry_of" in (e.get("data") or {}):
            # a task's retry: the new run's second event, right after queued
            assert i == 1, "%s: task retry event not after queued: %s" % (
                run["id"], [x["type"] for x in events])
            continue
        if t == "task_run.retrying":
            ok = "failed" in ALLOWED[cur] or "timed_out" in ALLOWED[cur]
            to = "queued"
        else:
            to = {"task_run.started": "running", "task_run.resumed": "running"}.get(
                t, t[len("task_run."):])
            ok = to in ALLOWED[cur]
            if t == "task_run.started":
                ok = ok and cur == "queued"
            if t == "task_run.resumed":
                ok = ok and cur != "queued"
        assert ok, "%s: illegal %s -> %s in %s" % (run["id"], cur, t, [x["type"] for x in events])
        cur = to
    assert cur == run["status"], "%s: events end in %s, run is %s: %s" % (
        run["id"], cur, run["status"], [x["type"] for x in events])


class Stream:
    """The project's event stream read by a thread until an event with stop_name
    (its events are there once the thread has ended)."""

    def __init__(self, stop_name):
        self.events = []
        self.stop_name = stop_name
        self.ready = threading.Event()
        self.t = threading.Thread(target=self.read, daemon=True)
        self.t.start()
        assert self.ready.wait(30)

    def read(self):
        status, evs = sse(S, P + "/events/stream?start=latest", opened=self.ready.set,
                          stop=lambda e: e[2].get("type") == "task.created"
                          and e[2].get("task_id") == self.stop_name)
        assert status == 200, evs
        self.events = [data for _, _, data in evs]


def all_pages(path):
    out, off = [], 0
    while True:
        sep = "&" if "?" in path else "?"
        js = expect(S.req("GET", path + sep + "limit=500&offset=%d" % off), 200)
        out += js["data"]
        if not js.get("has_more"):
            return out
        off += 500


def session_events(run):
    js = expect(S.req("GET", P + "/tasks/%s/runs/%s/session_logs?limit=10000" % (
        run["task_id"], run["id"])), 200)
    return js


def metrics_runs():
    r = S.req("GET", "/metrics", key=None)
    assert r.status == 200, r
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r'^quern_runs\{status="([a-z_]+)"\} (\d+)$', r.text, re.M)}


class Storm:
    """Records every answer's status; a 5xx or an undocumented one fails."""

    OK = {200, 201, 400, 404, 409}

    def __init__(self, nodes):
        self.lock = threading.Lock()
        self.bad = []
        self.seen = {}
        self.nodes = nodes

    def req(self, method, path, body=None):
        try:
            r = random.choice(self.nodes).req(method, path, body)
        except (OSError, http.client.HTTPException) as e:
            with self.lock:
                self.bad.append((method, path, repr(e)))
            return None
        with self.lock:
            key = re.sub(r"(task|run)_[0-9a-z]+", ":id", path)
            self.seen[(method, key, r.status)] = self.seen.get((method, key, r.status), 0) + 1
            if r.status not in self.OK:
                self.bad.append((method, path, r.status, r.text[:300]))
        return r


def storm(seconds, n_tasks, seed, nodes=None):
    st = Storm(nodes or [S])
    rec = Receiver()
    expect(S.req("POST", P + "/webhooks", {"url": rec.url, "events": ["task.*", "task_run.*"]}), 201)
    stop_name = "stop-%d" % seed
    stream = Stream(stop_name)
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    tasks = []
    for i in range(n_tasks):
        kind = i % 6
        body = {"name": "storm-%d" % i, "assigned_agent_id": "storm", "run": True,
                "settings": {"max_retries": i % 3}}
        if kind == 1:
            body["output_schema"] = schema
        elif kind == 2:
            body["settings"]["require_review"] = True
        elif kind == 3:
            body["settings"]["require_approval"] = True
        elif kind == 4:
            # code quernd runs itself: exits, times out, or is canceled
            body = {"name": "storm-code-%d" % i, "code": "sleep 0.%d; echo done" % (i % 4),
                    "runtime_id": "sh", "settings": {"max_retries": i % 2,
                                                     "timeout_ms": 150 + 100 * (i % 3)}}
        tasks.append(expect(S.req("POST", P + "/tasks", body), 201))
    ids = [t["id"] for t in tasks]
    code_ids = [t["id"] for t in tasks if "code" in t["name"]]
    leased = []           # runs workers hold (with the attempt they got)
    lk = threading.Lock()
    end = time.monotonic() + seconds

    def runs_of(tid):
        r = st.req("GET", P + "/tasks/%s/runs" % tid)
        return r.json["data"] if r is not None and r.status == 200 else []

    def worker(wid):
        wr = random.Random(seed * 100 + wid)
        while time.monotonic() < end:
            r = st.req("POST", P + "/workers/lease", {"agent_id": "storm", "worker_id": "w%d" % wid,
                                                      "max": 3, "wait_ms": 50})
            if r is None or r.status != 200:
                continue
            with lk:
                leased.extend(r.json["data"])
            for run in r.json["data"]:
                if wr.random() < 0.2:
                    time.sleep(wr.choice((0.1, 0.3, 0.35)))   # about the lease's end
                base = P + "/tasks/%s/runs/%s" % (run["task_id"], run["id"])
                op = wr.randrange(9)
                att = run["attempt"] if wr.random() < 0.8 else run["attempt"] + wr.choice((-1, 1))
                if op == 0:
                    st.req("POST", P + "/workers/report", {"results": [
                        {"run_id": run["id"], "attempt": att, "status": "completed"}]})
                elif op == 1:
                    st.req("POST", P + "/workers/report", {"results": [
                        {"run_id": run["id"], "attempt": att, "status": "failed", "error": "x"}]})
                elif op == 2:
                    # the same run twice in one batch
                    st.req("POST", P + "/workers/report", {"results": [
                        {"run_id": run["id"], "attempt": att, "status": "completed"},
                        {"run_id": run["id"], "attempt": att, "status": wr.choice(
                            ("failed", "completed", "canceled", "review_required"))}]})
                elif op == 3:
                    st.req("PATCH", base, {"status": wr.choice(("completed", "failed", "paused",
                                                                  "running", "canceled")),
                                           "attempt": att})
                elif op == 4:
                    st.req("PATCH", base + "/set_output", {"output": {"n": wr.randrange(5)}})
                elif op == 5:
                    st.req("POST", base + "/heartbeat", {"progress": 0.5})
                elif op == 6:
                    st.req("PATCH", base, {"status": "interaction_required"})
                # else: keep it and let the lease expire (or report later)

    def chaos(cid):
        cr = random.Random(seed * 1000 + cid)
        while time.monotonic() < end:
            op = cr.randrange(16)
            tid = cr.choice(code_ids if op in (6, 10) else ids)
            tp = P + "/tasks/" + tid
            if op == 0:
                st.req("POST", tp + "/cancel")
            elif op == 1:
                st.req("POST", tp + "/pause")
            elif op == 2:
                st.req("POST", tp + "/resume")
            elif op == 3:
                st.req("POST", tp + "/retry")
            elif op == 4 and cr.random() < 0.02:
                st.req("DELETE", tp)
            elif op == 5 and cr.random() < 0.3:
                st.req("POST", tp + "/run", {})
            else:
                runs = runs_of(tid)
                if not runs:
                    continue
                run = runs[0] if cr.random() < 0.7 else cr.choice(runs)   # mostly the newest
                base = tp + "/runs/" + run["id"]
                if op in (6, 7):
                    st.req("POST", base + "/cancel", {"message": "c%d" % cid})
                elif op == 8:
                    st.req("POST", base + "/interaction", {"response": {"approved": cr.random() < 0.7}})
                elif op == 9:
                    st.req("POST", base + "/review", {"decision": cr.choice(("approve", "reject"))})
                elif op == 10:
                    st.req("POST", base + "/command", {"jsonrpc": "2.0", "method": "cancel", "id": 1})
                elif op == 11:
                    st.req("PATCH", base, {"status": cr.choice(("running", "completed", "failed",
                                                                  "queued", "paused"))})
                elif op == 12:
                    st.req("PATCH", base + "/set_output", {"output": {"n": 1}})
                elif op == 13:
                    st.req("POST", base + "/heartbeat", {})
                else:
                    with lk:
                        old = list(leased[-20:])
                    if old:
                        o = cr.choice(old)
                        # a report of an old lease (it may have expired, been re-leased…)
                        st.req("POST", P + "/workers/report", {"results": [
                            {"run_id": o["id"], "attempt": o["attempt"], "status": "completed"}]})

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)] + \
              [threading.Thread(target=chaos, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # the end: every task canceled, then wait until no run is live
    for tid in ids:
        st.req("POST", P + "/tasks/%s/cancel" % tid)

    def settled():
        runs = all_pages(P + "/runs")
        return runs if all(r["status"] in TERMINAL for r in runs if r["task_id"] in ids) else None
    try:
        runs = wait_for(settled, 30, "every run to end")
    except AssertionError:
        live = [r for r in all_pages(P + "/runs") if r["status"] not in TERMINAL and r["task_id"] in ids]
        raise AssertionError("runs still live: %s" % [
            (r["id"], r["status"], r["task_id"] in ids, types_of({"id": r["task_id"]}, r)) for r in live[:5]])
    expect(S.req("POST", P + "/tasks", {"id": stop_name, "name": "stop", "run": False,
                                        "assigned_agent_id": "nobody"}), 201)
    stream.t.join(60)
    assert not stream.t.is_alive(), "the event stream never got the stop task's task.created"
    assert not st.bad, st.bad[:10]

    # each run: a legal path, ending in its status; the stream saw the same
    by_run = {}
    for ev in stream.events:
        if ev.get("run_id"):
            by_run.setdefault(ev["run_id"], []).append(ev)
    all_ids = set()
    for run in runs:
        if run["task_id"] not in ids:
            continue
        evs = session_events(run)
        check_path(run, evs)
        ids_ = [e["id"] for e in evs]
        assert len(ids_) == len(set(ids_)), run["id"]
        all_ids |= set(ids_)
        if run["task_id"] in ids:
            assert [e["id"] for e in by_run.get(run["id"], [])] == ids_, \
                (run["id"], [e["type"] for e in by_run.get(run["id"], [])], [e["type"] for e in evs])
    # tasks: status of the latest run, run_count of the runs listed
    tasks_now = {t["id"]: t for t in all_pages(P + "/tasks")}
    for tid in ids:
        if tid not in tasks_now:
            continue
        t = tasks_now[tid]
        truns = all_pages(P + "/tasks/%s/runs" % tid)
        assert t["run_count"] == len(truns), (tid, t["run_count"], len(truns))
        # newest first: the first is the latest
        assert truns and truns[0]["status"] == t["status"], (tid, t["status"], truns[:2])
    # metrics agree with the list
    counts = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    m = metrics_runs()
    assert {k: v for k, v in m.items() if v} == counts, (m, counts)
    # webhooks: every run event once
    run_ids = {e["id"] for e in stream.events}
    wait_for(lambda: run_ids <= {e["id"] for e in rec.delivered()}, 60, "webhook deliveries")
    ids = [e["id"] for e in rec.delivered()]
    dup = [i for i in set(ids) if ids.count(i) > 1]
    assert not dup, dup[:10]
    rec.close()
    return st


def test_storm_of_conflicting_changes_keeps_the_invariants():
    st = storm(seconds=8, n_tasks=30, seed=int(os.environ.get("QUERN_RACES_SEED", "7")))
    # the storm did reach the contested paths
    if os.environ.get("QUERN_RACES_VERBOSE"):
        for k in sorted(st.seen):
            print(k, st.seen[k])
    codes = {k[2] for k in st.seen}
    assert 409 in codes and 200 in codes, st.seen


def test_storm_across_two_nodes():
    # PostgreSQL: a second node on the same database takes half the requests
    if os.environ.get("QUERN_TEST_STORE") != "pg":
        return
    import pgcluster
    other = Server(extra_args=["--store", pgcluster.database_for(S.data)],
                   env={"QUERN_LEASE_MS": "300", "QUERN_OUTBOUND_ALLOW_PRIVATE": "1",
                        "QUERN_WEBHOOK_RETRY_BASE_MS": "100"})
    try:
        storm(seconds=8, n_tasks=30, seed=11, nodes=[S, other])
    finally:
        other.stop()


def test_a_tasks_cancel_and_a_report_on_two_nodes():
    # PostgreSQL: a task's cancel on one node lists its runs unlocked; a
    # report on another node completing one of them in between was then
    # overwritten (completed, then canceled: two terminal events), and the
    # lock-order deadlock between them was answered 503
    if os.environ.get("QUERN_TEST_STORE") != "pg":
        return
    import pgcluster
    other = Server(extra_args=["--store", pgcluster.database_for(S.data)])
    try:
        bad, codes = [], []
        for rnd in range(6):
            pairs = []
            for i in range(30):
                agent = "pair-%d-%d" % (rnd, i)
                t = task(agent)
                x = expect(S.req("POST", P + "/workers/lease", {"agent_id": agent}), 200)["data"][0]
                # a newer run: x is no longer the latest, its change does not lock the task
                expect(S.req("POST", P + "/tasks/%s/run" % t["id"], {}), 201)
                pairs.append((t, x))
            calls = []
            for t, x in pairs:
                calls.append(lambda t=t: S.req("POST", P + "/tasks/%s/cancel" % t["id"]))
                calls.append(lambda x=x: other.req("POST", P + "/workers/report", {"results": [
                    {"run_id": x["id"], "attempt": 1, "status": "completed"}]}))
            ths = [threading.Thread(target=lambda f=f: codes.append(f().status)) for f in calls]
            for th in ths:
                th.start()
            for th in ths:
                th.join()
            for t, x in pairs:
                end = expect(S.req("GET", P + "/tasks/%s/runs/%s" % (t["id"], x["id"])), 200)
                try:
                    check_path(end, session_events(end))
                except AssertionError as e:
                    bad.append(str(e))
        assert set(codes) == {200}, sorted(set(codes))
        assert not bad, bad[:3]
    finally:
        other.stop()


def test_run_and_task_operations_survive_a_lost_conflict():
    # PostgreSQL: every retryable write loses its first run (injected 40P01):
    # run operations and task actions are run again, answering as once, with
    # one event per change (they were answered 503 write_conflict)
    if os.environ.get("QUERN_TEST_STORE") != "pg":
        return
    import pgcluster
    f = Server(extra_args=["--store", pgcluster.database_for(S.data)],
               env={"QUERN_PG_FAULT_JOB_CONFLICTS": "1000000"})
    try:
        t = expect(f.req("POST", P + "/tasks", {"assigned_agent_id": "faulty", "run": True,
                                                "settings": {"max_retries": 0}}), 201)
        run = expect(f.req("POST", P + "/workers/lease", {"agent_id": "faulty"}), 200)["data"][0]
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        expect(f.req("POST", base + "/heartbeat", {"progress": 0.5}), 200)
        expect(f.req("POST", base + "/append_log", {"entries": [{"message": "m"}]}), 200)
        expect(f.req("POST", base + "/checkpoints", {"data": {"k": 1}}), 200)
        expect(f.req("PATCH", base, {"status": "interaction_required"}), 200)
        r = f.req("POST", base + "/review", {"decision": "approve"})
        assert r.status == 409 and r.json["error"]["code"] == "no_review", r
        expect(f.req("POST", base + "/interaction", {"response": {"a": 1}}), 200)
        expect(f.req("POST", P + "/tasks/%s/pause" % t["id"]), 200)
        expect(f.req("POST", P + "/tasks/%s/resume" % t["id"]), 200)
        assert expect(f.req("POST", base + "/cancel", {}), 200)["status"] == "canceled"
        r = f.req("POST", base + "/cancel", {})
        assert r.status == 409 and r.json["error"]["code"] == "invalid_transition", r
        nr = expect(f.req("POST", P + "/tasks/%s/retry" % t["id"]), 201)
        expect(f.req("POST", P + "/tasks/%s/cancel" % t["id"]), 200)
        for x in (run, nr):
            end = expect(f.req("GET", P + "/tasks/%s/runs/%s" % (t["id"], x["id"])), 200)
            assert end["status"] == "canceled", end
            evs = session_events(end)
            check_path(end, evs)
            types = [e["type"] for e in evs]
            assert types.count("task_run.canceled") == 1, types
        assert [e["type"] for e in session_events(dict(run, task_id=t["id"]))].count("task_run.log") == 1
    finally:
        f.stop()


def task(agent, **kw):
    body = {"assigned_agent_id": agent, "run": True}
    body.update(kw)
    return expect(S.req("POST", P + "/tasks", body), 201)


def types_of(t, run):
    return [e["type"] for e in session_events(dict(run, task_id=t["id"]))
            if e["type"].startswith("task_run.")]


def test_a_retry_of_a_paused_task_waits_paused():
    t = task("corner-paused")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-paused", "max": 1}), 200)["data"][0]
    out = expect(S.req("POST", P + "/workers/report", {"results": [
        {"run_id": run["id"], "attempt": 1, "status": "failed"}]}), 200)["data"][0]
    assert out["ok"], out
    expect(S.req("POST", P + "/tasks/%s/pause" % t["id"]), 200)
    nr = expect(S.req("POST", P + "/tasks/%s/retry" % t["id"]), 201)
    assert nr["status"] == "paused", nr
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-paused", "max": 5}),
                  200)["data"] == []
    assert types_of(t, nr) == ["task_run.queued", "task_run.retrying", "task_run.paused"]
    assert expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["status"] == "paused"
    expect(S.req("POST", P + "/tasks/%s/resume" % t["id"]), 200)
    got = expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-paused", "max": 5}),
                 200)["data"]
    assert [r["id"] for r in got] == [nr["id"]] and got[0]["attempt"] == 2


def test_a_new_run_of_a_paused_task_held_for_approval():
    t = task("corner-approval", run=False, settings={"require_approval": True})
    expect(S.req("POST", P + "/tasks/%s/pause" % t["id"]), 200)
    # was 409 invalid_state: the run held for approval was then "paused"
    r1 = expect(S.req("POST", P + "/tasks/%s/runs" % t["id"], {}), 201)
    r2 = expect(S.req("POST", P + "/tasks/%s/run" % t["id"], {}), 201)
    for r in (r1, r2):
        assert r["status"] == "interaction_required", r
    # approved while the task is paused: it waits paused
    a = expect(S.req("POST", P + "/tasks/%s/runs/%s/interaction" % (t["id"], r1["id"]),
                     {"response": {"approved": True}}), 200)
    assert a["status"] == "paused", a
    assert expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-approval", "max": 5}),
                  200)["data"] == []


def test_a_retry_refused_by_policy_says_retrying_before_denied():
    t = task("corner-policy")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-policy", "max": 1}), 200)["data"][0]
    expect(S.req("POST", P + "/tasks/%s/runs/%s/cancel" % (t["id"], run["id"]), {}), 200)
    expect(S.req("PUT", P + "/policy", {"allowed_runtimes": ["python"]}), 200)
    try:
        nr = expect(S.req("POST", P + "/tasks/%s/retry" % t["id"]), 201)
    finally:
        expect(S.req("PUT", P + "/policy", {}), 200)
    assert nr["status"] == "denied", nr
    # the terminal event is the last one (retrying came after it)
    got = types_of(t, nr)
    assert got == ["task_run.queued", "task_run.retrying", "task_run.denied"], got


def ms(ts):
    from datetime import datetime
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp() * 1000


def test_an_answered_worker_question_gets_a_fresh_lease():
    # the worker cannot heartbeat while its question waits (409 not_running):
    # the answer moved the run back to running with the lease that had run
    # out meanwhile, and the run failed lease_expired at once
    t = task("corner-ask")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-ask", "max": 1}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("PATCH", base, {"status": "interaction_required"}), 200)
    assert S.req("POST", base + "/heartbeat", {}).status == 409
    wait_for(lambda: time.time() * 1000 > ms(run["lease_expires_at"]) + 100, 10, "the old lease's end")
    r = expect(S.req("POST", base + "/interaction", {"response": {"ok": True}}), 200)
    assert r["status"] == "running", r
    # a whole lease from the answer (QUERN_LEASE_MS is 300 here)
    assert ms(r["lease_expires_at"]) - ms(r["updated_at"]) >= 299, r


def test_nothing_is_added_to_a_run_after_its_end():
    # the API took logs, checkpoints and artifacts for a finished run, and
    # quernd stored what live code printed after a PATCH had ended its run:
    # their events came after the terminal one (a run stream ends on it)
    t = task("corner-late")
    run = expect(S.req("POST", P + "/workers/lease", {"agent_id": "corner-late", "max": 1}), 200)["data"][0]
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    expect(S.req("PATCH", base, {"status": "completed"}), 200)
    for path, body in (("/append_log", {"entries": [{"message": "late"}]}),
                       ("/checkpoints", {"data": {"k": 1}}),
                       ("/artifacts", {"artifacts": [{"name": "a.txt", "content": "aGk="}]})):
        r = S.req("POST", base + path, body)
        assert r.status == 409 and r.json["error"]["code"] == "run_finished", (path, r)
    end = expect(S.req("GET", base), 200)
    check_path(end, session_events(end))
    # code: one slot, so the second task runs once the first box is gone
    one = Server(extra_args=["--slots", "1"])
    try:
        code = "trap 'echo bye; exit 0' TERM; echo ready; while :; do echo tick; sleep 0.02; done"
        t1 = expect(one.req("POST", P + "/tasks", {"code": code, "runtime_id": "sh",
                                                   "settings": {"kill_grace_ms": 5000}}), 201)
        r1 = expect(one.req("GET", P + "/tasks/%s/runs" % t1["id"]), 200)["data"][0]
        b1 = P + "/tasks/%s/runs/%s" % (t1["id"], r1["id"])
        wait_for(lambda: "ready" in one.req("GET", b1 + "/logs").text, 60, "ready")
        expect(one.req("PATCH", b1, {"status": "failed", "error_message": "enough"}), 200)
        t2 = expect(one.req("POST", P + "/tasks", {"code": "echo two", "runtime_id": "sh"}), 201)
        wait_for(lambda: expect(one.req("GET", P + "/tasks/" + t2["id"]), 200)["status"] == "completed",
                 60, "the second task")
        end = expect(one.req("GET", b1), 200)
        assert end["status"] == "failed", end
        evs = expect(one.req("GET", b1 + "/session_logs?limit=10000"), 200)
        check_path(end, evs)
        assert "bye" not in one.req("GET", b1 + "/logs").text
    finally:
        one.stop()


def test_live_code_is_not_suspended_by_a_patch():
    # queued started a second box beside the live one (the run then failed
    # sandbox_error); paused lost the code's end (the run stayed paused for
    # good); review_required let the code's end pass the review;
    # interaction_required showed a question nobody had asked
    for to in ("queued", "paused", "review_required", "interaction_required"):
        t = expect(S.req("POST", P + "/tasks", {"code": "echo ready; sleep 0.5; echo end",
                                                 "runtime_id": "sh"}), 201)
        run = wait_for(lambda: (lambda x: x if x["status"] == "running" else None)(
            expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "running")
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        r = S.req("PATCH", base, {"status": to})
        assert r.status == 409 and r.json["error"]["code"] == "code_running", (to, r)
        end = wait_for(lambda: (lambda x: x if x["status"] in TERMINAL else None)(
            expect(S.req("GET", base), 200)), 60, "the end")
        assert end["status"] == "completed", (to, end)
        check_path(end, session_events(end))


def test_a_patch_does_not_drop_the_question_live_code_waits_on():
    # PATCH {status: running} of code waiting on its own input_request
    # dropped the question: the answer could no longer be given (409) and
    # the code waited on stdin until its timeout
    code = "echo '{\"type\":\"input_request\",\"prompt\":\"name?\"}' >&3; read l; echo \"got $l\""
    t = expect(S.req("POST", P + "/tasks", {"code": code, "runtime_id": "sh"}), 201)
    run = wait_for(lambda: (lambda x: x if x["status"] == "interaction_required" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "the question")
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    r = S.req("PATCH", base, {"status": "running"})
    assert r.status == 409 and r.json["error"]["code"] == "code_running", r
    expect(S.req("POST", base + "/interaction", {"response": "Ada"}), 200)
    end = wait_for(lambda: (lambda x: x if x["status"] in TERMINAL else None)(
        expect(S.req("GET", base), 200)), 60, "the end")
    assert end["status"] == "completed", end
    assert 'got {' in S.req("GET", base + "/logs").text and 'Ada' in S.req("GET", base + "/logs").text


def test_a_patch_ending_live_code_does_not_retry_beside_it():
    # failed or timed_out with retries left queued the next attempt while
    # this one's code ran on: its lines landed in the new attempt, which then
    # failed sandbox_error ("the sandbox could not start the run": the box
    # still held the run).  Ended from outside, the run has ended.
    code = "echo ready $QUERN_ATTEMPT; while :; do echo tick; sleep 0.05; done"
    for to in ("failed", "timed_out"):
        t = expect(S.req("POST", P + "/tasks", {"code": code, "runtime_id": "sh", "settings": {
            "max_retries": 2, "retry_delay_ms": 0, "kill_grace_ms": 200}}), 201)
        run = wait_for(lambda: (lambda x: x if x["status"] == "running" else None)(
            expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "running")
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        wait_for(lambda: "ready 1" in S.req("GET", base + "/logs").text, 60, "ready")
        r = expect(S.req("PATCH", base, {"status": to, "error_message": "enough"}), 200)
        assert r["status"] == to and r["attempt"] == 1, r
        evs = session_events(r)
        types = [e["type"] for e in evs]
        assert "task_run.retrying" not in types, types
        end = expect(S.req("GET", base), 200)
        assert end["status"] == to and end["attempt"] == 1, end
        assert end["error"]["message"] == "enough", end
        check_path(end, evs)
        runs = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]
        assert len(runs) == 1, runs


def test_a_worker_report_does_not_end_live_code():
    # workers/report is for leased runs: one failing a code run queued its
    # retry beside the live code (which then failed sandbox_error)
    code = "echo ready; while :; do sleep 0.05; done"
    t = expect(S.req("POST", P + "/tasks", {"code": code, "runtime_id": "sh", "settings": {
        "max_retries": 2, "retry_delay_ms": 0, "kill_grace_ms": 200}}), 201)
    run = wait_for(lambda: (lambda x: x if x["status"] == "running" else None)(
        expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "running")
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    for st in ("failed", "completed", "running"):
        res = expect(S.req("POST", P + "/workers/report", {"results": [
            {"run_id": run["id"], "attempt": 1, "status": st}]}), 200)["data"][0]
        assert not res["ok"] and res["error"]["code"] == "code_running", res
        assert res["error"]["type"] == "conflict", res
    now = expect(S.req("GET", base), 200)
    assert now["status"] == "running" and now["attempt"] == 1, now
    expect(S.req("POST", base + "/cancel", {}), 200)
    end = wait_for(lambda: (lambda x: x if x["status"] in TERMINAL else None)(
        expect(S.req("GET", base), 200)), 60, "the end")
    assert end["status"] == "canceled" and end["attempt"] == 1, end


if __name__ == "__main__":
    try:
        run_tests(globals())
    finally:
        S.stop()
