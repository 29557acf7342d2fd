"""Retention: finished runs (with logs and checkpoints) and events older than
the configured age are pruned by the leader; tasks and unfinished runs stay."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Receiver, Server, expect, run_tests, wait_for  # noqa: E402

P = "/api/projects/default"


def test_old_finished_runs_and_events_are_pruned():
    s = Server(extra_args=["--slots", "-1"],
               env={"QUERN_RETENTION_MS": "1500", "QUERN_RETENTION_EVERY_MS": "1000"})
    try:
        done = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "ret", "run": True}), 201)
        run = expect(s.req("POST", P + "/workers/lease", {"agent_id": "ret"}), 200)["data"][0]
        base = P + "/tasks/%s/runs/%s" % (done["id"], run["id"])
        expect(s.req("POST", base + "/append_log", {"entries": [{"message": "old"}]}), 200)
        expect(s.req("POST", base + "/checkpoints", {"data": {"k": 1}}), 200)
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": run["id"], "attempt": 1, "status": "completed"}]}), 200)
        waiting = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "nobody", "run": True}), 201)
        wrun = expect(s.req("GET", P + "/tasks/%s/runs" % waiting["id"]), 200)["data"][0]
        wait_for(lambda: s.req("GET", P + "/task-runs/" + run["id"]).status == 404, 60,
                 "the finished run to be pruned")
        # the task stays (with its status), the unfinished run stays
        assert expect(s.req("GET", P + "/tasks/" + done["id"]), 200)["status"] == "completed"
        assert expect(s.req("GET", P + "/task-runs/" + wrun["id"]), 200)["status"] == "queued"
        assert s.req("GET", base + "/logs").status == 404
        # the pruned run's events are gone from the project's history
        ev = s.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (waiting["id"], wrun["id"]))
        assert ev.status == 200
    finally:
        s.stop()


def test_event_ids_never_go_back_after_a_prune():
    """The pruner keeps the newest event, however old: a new event's id is
    the newest id + 1, so after a prune of everything ids would start over
    and a stream resuming from Last-Event-ID would miss the new events."""
    s = Server(extra_args=["--slots", "-1"],
               env={"QUERN_RETENTION_MS": "1000", "QUERN_RETENTION_EVERY_MS": "1000"})

    def events(task):
        run = expect(s.req("GET", P + "/tasks/%s/runs" % task["id"]), 200)["data"][0]
        return expect(s.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (task["id"], run["id"])),
                      200)

    try:
        a = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "ids-a", "run": True}), 201)
        b = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "ids-b", "run": True}), 201)
        newest = events(b)
        assert [e["type"] for e in newest] == ["task_run.queued"], newest
        wait_for(lambda: events(a) == [], 60, "the older events to be pruned")
        assert events(b) == newest, (events(b), newest)
        c = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "ids-c", "run": True}), 201)
        later = events(c)
        assert later and all(int(e["id"][4:]) > int(newest[-1]["id"][4:]) for e in later), \
            (newest, later)
    finally:
        s.stop()


def test_artifact_files_of_pruned_runs_are_deleted():
    """The retention pass deletes the artifact blobs no run names any more;
    a blob a live run still names stays, however old (here the grace after
    storing is 0)."""
    import hashlib
    s = Server(extra_args=["--slots", "-1"],
               env={"QUERN_RETENTION_MS": "1500", "QUERN_RETENTION_EVERY_MS": "1000",
                    "QUERN_BLOB_GRACE_MS": "0"})
    try:
        def leased(agent):
            t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": agent, "run": True}), 201)
            run = expect(s.req("POST", P + "/workers/lease", {"agent_id": agent}), 200)["data"][0]
            return t, run, P + "/tasks/%s/runs/%s" % (t["id"], run["id"])

        shared, only = "kept by another run\n", "only the pruned run's\n"
        _, old, old_base = leased("blob-old")
        expect(s.req("POST", old_base + "/artifacts", {"artifacts": [
            {"name": "a.txt", "content": shared}, {"name": "b.txt", "content": only}]}), 200)
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": old["id"], "attempt": 1, "status": "completed"}]}), 200)
        _, live, live_base = leased("blob-live")   # stays running: never pruned
        expect(s.req("POST", live_base + "/artifacts", {"artifacts": [
            {"name": "same.txt", "content": shared}]}), 200)
        files = {}
        for text in (shared, only):
            sha = hashlib.sha256(text.encode()).hexdigest()
            files[text] = os.path.join(s.data, "blobs", sha[:2], sha)
        local = os.path.exists(files[only])   # SQLite keeps blobs in files; PostgreSQL in itself
        wait_for(lambda: s.req("GET", P + "/task-runs/" + old["id"]).status == 404, 60,
                 "the finished run to be pruned")
        if local:
            wait_for(lambda: not os.path.exists(files[only]), 60, "its own blob to be deleted")
            assert os.path.exists(files[shared])
        got = s.req("GET", live_base + "/artifacts/content?name=same.txt")
        assert got.status == 200 and got.text == shared, got
    finally:
        s.stop()


def test_ended_webhook_deliveries_are_pruned_pending_ones_stay():
    """A delivery that succeeded (or failed for good) goes with the rest of
    the history; one still being retried stays, however old.  They were
    never pruned: with a webhook on, the deliveries table grew by one row
    per event for ever."""
    rx_ok, rx_bad = Receiver(), Receiver(status=500)
    s = Server(extra_args=["--slots", "-1"],
               env={"QUERN_RETENTION_MS": "1500", "QUERN_RETENTION_EVERY_MS": "1000",
                    "QUERN_OUTBOUND_ALLOW_PRIVATE": "1"})
    try:
        ok = expect(s.req("POST", P + "/webhooks", {"url": rx_ok.url, "events": ["task.created"]}), 201)
        bad = expect(s.req("POST", P + "/webhooks", {"url": rx_bad.url, "events": ["task.created"]}), 201)
        expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "dlv", "run": False}), 201)

        def deliveries(hook):
            return expect(s.req("GET", P + "/webhooks/%s/deliveries" % hook["id"]), 200)

        wait_for(lambda: [d["status"] for d in deliveries(ok)["data"]] == ["succeeded"], 60,
                 "the delivery to succeed")
        wait_for(lambda: deliveries(bad)["data"] and deliveries(bad)["data"][0]["attempt_count"] >= 1,
                 60, "the failing delivery's first attempt")
        wait_for(lambda: deliveries(ok)["total"] == 0, 60, "the ended delivery to be pruned")
        left = deliveries(bad)
        assert left["total"] == 1 and left["data"][0]["status"] == "pending", left
    finally:
        s.stop()
        rx_ok.close()
        rx_bad.close()


def test_zero_keeps_everything():
    s = Server(extra_args=["--slots", "-1"],
               env={"QUERN_RETENTION_MS": "0", "QUERN_RETENTION_EVERY_MS": "1000"})
    try:
        t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "keep", "run": True}), 201)
        run = expect(s.req("POST", P + "/workers/lease", {"agent_id": "keep"}), 200)["data"][0]
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": run["id"], "attempt": 1, "status": "completed"}]}), 200)
        s.stop()
        s.start()   # a pass runs at start: still nothing to prune
        assert expect(s.req("GET", P + "/task-runs/" + run["id"]), 200)["status"] == "completed"
        del t
    finally:
        s.stop()


if __name__ == "__main__":
    run_tests(dict(globals()))
