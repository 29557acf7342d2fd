"""Cron schedules end to end: 6-field expressions fire runs, the schedule
listing in the task's time zone, validation, pause, and a missed fire after
downtime that runs once with the rest recorded as skipped."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests, wait_for  # noqa: E402
import qlib  # noqa: E402

P = "/api/projects/default"
S = Server()


def runs(s, task):
    return expect(s.req("GET", P + "/tasks/%s/runs?limit=500" % task["id"]), 200)["data"]


def test_six_field_cron_fires_runs():
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "cron1", "schedule": "* * * * * *"}), 201)
    assert t["type"] == "scheduled" and t["next_run_at"] and t["run_count"] == 0
    wait_for(lambda: len(runs(S, t)) >= 2, what="two fires")
    got = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
    assert got["run_count"] >= 2 and got["next_run_at"] > t["next_run_at"]
    expect(S.req("POST", P + "/tasks/%s/pause" % t["id"]), 200)
    paused = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
    assert paused["next_run_at"] is None
    n = len(runs(S, t))
    sched = expect(S.req("GET", P + "/tasks/%s/schedule" % t["id"]), 200)
    assert sched["paused"] is True
    expect(S.req("POST", P + "/tasks/%s/resume" % t["id"]), 200)
    wait_for(lambda: len(runs(S, t)) > n, what="fires after resume")
    expect(S.req("DELETE", P + "/tasks/" + t["id"]), 200)


def test_schedule_listing_in_time_zone():
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "cron2", "schedule": "30 2 * * *",
                                            "timezone": "America/New_York"}), 201)
    s = expect(S.req("GET", P + "/tasks/%s/schedule?count=3" % t["id"]), 200)
    assert len(s["data"]) == 3
    for x in s["data"]:
        assert x["local"][11:16] == "02:30" or x["local"][11:16] == "03:00", x   # 03:00 on spring-forward day
        assert x["local"][-6:] in ("-05:00", "-04:00")
    assert s["data"][0]["at"] == s["next_run_at"]
    assert S.req("GET", P + "/tasks/%s/schedule?count=0" % t["id"]).status == 400
    r = S.req("PATCH", P + "/tasks/" + t["id"], {"timezone": "Mars/Olympus"})
    assert r.status == 400 and r.json["error"]["param"] == "timezone"
    up = expect(S.req("PATCH", P + "/tasks/" + t["id"], {"schedule": "@hourly", "timezone": "UTC"}), 200)
    assert up["next_run_at"][14:] == "00:00.000Z"
    # a schedule given or taken by PATCH moves the type, as at create
    m = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "x", "run": False}), 201)
    assert m["type"] == "manual"
    m = expect(S.req("PATCH", P + "/tasks/" + m["id"], {"schedule": "@daily"}), 200)
    assert m["type"] == "scheduled", m
    assert m["id"] in [x["id"] for x in expect(S.req("GET", P + "/tasks?type=scheduled&limit=500"), 200)["data"]]
    m = expect(S.req("PATCH", P + "/tasks/" + m["id"], {"schedule": None}), 200)
    assert m["type"] == "manual" and m["next_run_at"] is None, m
    # timezone null by PATCH is the default (UTC) again, as at create
    z = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "x", "schedule": "0 9 * * *",
                                            "timezone": "Asia/Tokyo", "run": False}), 201)
    assert z["next_run_at"][11:13] == "00", z
    z = expect(S.req("PATCH", P + "/tasks/" + z["id"], {"timezone": None}), 200)
    assert z["timezone"] == "UTC" and z["next_run_at"][11:19] == "09:00:00", z


def test_bad_cron_and_timezone_are_400():
    for body, param in [({"schedule": "61 * * * *"}, "schedule"), ({"schedule": "* * *"}, "schedule"),
                        ({"schedule": "@often"}, "schedule"),
                        ({"schedule": "@daily", "timezone": "../../etc/passwd"}, "timezone")]:
        body["assigned_agent_id"] = "x"
        r = S.req("POST", P + "/tasks", body)
        assert r.status == 400 and r.json["error"]["param"] == param, (body, r)


def iso_in(seconds):
    """A deadline about seconds from now, half way between two whole seconds,
    so no fire instant (whole seconds) is made right at it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + seconds)) + ".500Z"


def test_deadline_ends_the_schedule():
    # a run made at or after the task's deadline could never start: the
    # schedule stops there instead of adding a failed run every fire
    dl = iso_in(3)
    t = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "cron4", "schedule": "* * * * * *",
                                            "deadline": dl}), 201)
    assert t["next_run_at"] and t["next_run_at"] < dl
    s = expect(S.req("GET", P + "/tasks/%s/schedule?count=100" % t["id"]), 200)
    assert s["data"] and all(x["at"] < dl for x in s["data"]), s
    wait_for(lambda: expect(S.req("GET", P + "/tasks/" + t["id"]), 200)["next_run_at"] is None,
             what="the schedule to end at the deadline")
    n = len(runs(S, t))
    assert all(r["created_at"] < dl for r in runs(S, t))
    assert expect(S.req("GET", P + "/tasks/%s/schedule" % t["id"]), 200)["data"] == []
    later = expect(S.req("GET", P + "/tasks/" + t["id"]), 200)
    assert later["next_run_at"] is None and len(runs(S, t)) == n
    # a later deadline (or none) by PATCH arms it again
    up = expect(S.req("PATCH", P + "/tasks/" + t["id"], {"deadline": None}), 200)
    assert up["next_run_at"], up
    wait_for(lambda: len(runs(S, t)) > n, what="a fire after the deadline was lifted")
    expect(S.req("DELETE", P + "/tasks/" + t["id"]), 200)
    # a deadline already past: created without a schedule to fire
    past = expect(S.req("POST", P + "/tasks", {"assigned_agent_id": "cron4", "schedule": "@hourly",
                                               "deadline": "2020-01-01T00:00:00Z"}), 201)
    assert past["next_run_at"] is None, past


def test_missed_fires_after_downtime_run_once():
    s = Server()
    try:
        t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "cron3", "schedule": "* * * * * *"}), 201)
        wait_for(lambda: len(runs(s, t)) >= 1, what="first fire")
        s.stop()
        time.sleep(4)   # several instants pass while quernd is down
        s.start()
        st, evs = qlib.sse(s, P + "/events/stream", stop=lambda e: e[1] == "task.schedule_skipped")
        assert st == 200
        skipped = [e for e in evs if e[1] == "task.schedule_skipped"]
        assert skipped and skipped[0][2]["task_id"] == t["id"]
        assert skipped[0][2]["data"]["skipped"] >= 2
        # the missed instants ran once: one run queued in the same commit
        i = evs.index(skipped[0])
        same = [e for e in evs[:i] if e[1] == "task_run.queued" and e[2]["task_id"] == t["id"]]
        before_stop = [e for e in same if e[0] <= skipped[0][0]]
        assert before_stop
    finally:
        s.stop()


def test_deadline_passed_while_down_ends_the_schedule():
    s = Server()
    try:
        dl = iso_in(5)
        t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "cron5", "schedule": "* * * * * *",
                                                "deadline": dl}), 201)
        wait_for(lambda: len(runs(s, t)) >= 1, what="first fire")
        s.stop()
        while time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z" <= dl:
            time.sleep(0.5)   # the deadline passes while quernd is down
        s.start()
        st, evs = qlib.sse(s, P + "/events/stream", stop=lambda e: e[1] == "task.schedule_skipped")
        skipped = [e for e in evs if e[1] == "task.schedule_skipped"]
        assert skipped and skipped[0][2]["data"]["skipped"] >= 1, evs
        assert "deadline" in skipped[0][2]["data"]["reason"], skipped
        # no run was made for the missed instants, and none will be
        assert all(r["created_at"] < dl for r in runs(s, t)), runs(s, t)
        got = expect(s.req("GET", P + "/tasks/" + t["id"]), 200)
        assert got["next_run_at"] is None, got
    finally:
        s.stop()


def test_type_scheduled_needs_a_schedule():
    # it was stored (201), and never fired
    r = S.req("POST", P + "/tasks", {"type": "scheduled", "code": "true"})
    assert r.status == 400 and r.json["error"]["param"] == "schedule", r.json
    r = S.req("POST", P + "/tasks/batch", {"tasks": [{"type": "scheduled", "code": "true"}]})
    assert r.status == 400 and r.json["error"]["param"] == "tasks[0].schedule", r.json


if __name__ == "__main__":
    try:
        run_tests(dict(globals()))
    finally:
        S.stop()
