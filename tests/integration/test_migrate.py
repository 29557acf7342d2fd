"""Schema migrations of the SQLite store: a database written by an older
quernd (schema v1: no hot-field columns, full indexes) opens with this one,
keeps every document, and run changes move its tasks as before."""
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Server, expect, run_tests  # noqa: E402

P = "/api/projects/default"
HOT = ["status", "progress", "updated_at", "last_run_at", "latest_run_id", "run_count"]
SPARSE = [("tasks", "parent_id"), ("tasks", "assigned_agent_id"), ("tasks", "definition_id"),
          ("runs", "definition_id"), ("tasks", "scheduled"), ("tasks", "has_dependencies")]


def to_v1(path):
    """Turns a current database back into the v1 shape: documents hold every
    field, no h_ columns, indexes without WHERE."""
    db = sqlite3.connect(path)
    cols = [r[1] for r in db.execute("PRAGMA table_info(tasks)")]
    for f in HOT:
        if "h_" + f in cols:
            # fold the column into doc first, as a v1 quernd would have written it
            db.execute("UPDATE tasks SET doc = json_set(doc, '$.%s', json(h_%s)) WHERE h_%s IS NOT NULL"
                       % (f, f, f))
            db.execute("ALTER TABLE tasks DROP COLUMN h_%s" % f)
    for t, f in SPARSE:
        db.execute("DROP INDEX %s_%s" % (t, f))
        db.execute("CREATE INDEX %s_%s ON %s(project_id, f_%s, seq)" % (t, f, t, f))
    db.execute("DROP INDEX IF EXISTS deliveries_status_any")
    db.execute("CREATE INDEX IF NOT EXISTS tasks_id ON tasks(id)")
    db.execute("DROP INDEX IF EXISTS runs_finished")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()


def test_v1_database_opens_and_runs_move_its_tasks():
    if os.environ.get("QUERN_TEST_STORE") == "pg":
        return   # SQLite's schema only
    s = Server()
    try:
        ids = []
        for i in range(3):
            r = expect(s.req("POST", P + "/tasks", {"name": "old-%d" % i, "assigned_agent_id": "m",
                                                    "run": True}), 201)
            ids.append(r["id"])
        s.stop()
        to_v1(os.path.join(s.data, "quern.db"))
        s.start()
        db = sqlite3.connect(os.path.join(s.data, "quern.db"))
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 6
        # the scheduler's flag lookups use the partial index (v3)
        plan = " ".join(r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT doc FROM tasks WHERE 1 AND project_id='default' "
            "AND f_scheduled = 'true' AND 'true' IS NOT NULL ORDER BY seq"))
        assert "tasks_scheduled" in plan, plan
        # pending deliveries across projects never walk the history (v4)
        plan = " ".join(r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT doc FROM deliveries WHERE 1 AND f_status = 'pending' "
            "ORDER BY seq ASC"))
        assert "deliveries_status_any" in plan, plan
        # tasks are found by (project, id) through the UNIQUE index; the
        # index on id alone is gone (v5)
        assert db.execute("SELECT count(*) FROM sqlite_schema WHERE name='tasks_id'").fetchone()[0] == 0
        plan = " ".join(r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT doc FROM tasks WHERE project_id='default' AND id='x'"))
        assert "sqlite_autoindex_tasks_1" in plan, plan
        # retention finds finished runs by completion time through the
        # partial index, not by reading every run (v6)
        plan = " ".join(r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT project_id, id FROM runs WHERE f_status IN "
            "('completed','failed','timed_out','denied','canceled') AND "
            "json_extract(doc, '$.completed_at') < '2026' LIMIT 10"))
        assert "runs_finished" in plan, plan
        db.close()
        for tid in ids:
            t = expect(s.req("GET", P + "/tasks/" + tid), 200)
            assert t["status"] == "queued" and t["run_count"] == 1, t
        # the runs of the migrated tasks lease and complete, and their tasks follow
        got = expect(s.req("POST", P + "/workers/lease", {"agent_id": "m", "max": 10}), 200)["data"]
        assert sorted(r["task_id"] for r in got) == sorted(ids), got
        mid = expect(s.req("GET", P + "/tasks/" + ids[0]), 200)
        assert mid["status"] == "running", mid
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": r["id"], "attempt": r["attempt"], "status": "completed"} for r in got]}), 200)
        for tid in ids:
            t = expect(s.req("GET", P + "/tasks/" + tid), 200)
            assert t["status"] == "completed", t
        lst = expect(s.req("GET", P + "/tasks?status=completed&limit=10"), 200)
        assert sorted(t["id"] for t in lst["data"]) == sorted(ids), lst
        # a filter on a sparse field still finds its rows
        r = expect(s.req("GET", P + "/tasks?assigned_agent_id=m"), 200)
        assert len(r["data"]) == 3, r
        # new tasks after the migration
        n = expect(s.req("POST", P + "/tasks", {"name": "new", "assigned_agent_id": "m", "run": True}), 201)
        assert n["status"] == "queued", n
        # a restart keeps both the migrated and the new rows' state
        s.stop()
        s.start()
        for tid in ids:
            assert expect(s.req("GET", P + "/tasks/" + tid), 200)["status"] == "completed"
        assert expect(s.req("GET", P + "/tasks/" + n["id"]), 200)["status"] == "queued"
    finally:
        s.stop()


def test_hot_fields_never_leak_into_a_store_copy():
    """quern store copy reads whole documents: the hot columns are merged in."""
    if os.environ.get("QUERN_TEST_STORE") == "pg":
        return
    s = Server()
    try:
        r = expect(s.req("POST", P + "/tasks", {"name": "c", "assigned_agent_id": "m", "run": True}), 201)
        got = expect(s.req("POST", P + "/workers/lease", {"agent_id": "m", "max": 1}), 200)["data"]
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": got[0]["id"], "attempt": 1, "status": "completed"}]}), 200)
        s.stop()
        import subprocess
        import tempfile
        dst = os.path.join(tempfile.mkdtemp(prefix="quern-copy-"), "copy.db")
        build = os.environ.get("QUERN_BUILD", "build")
        subprocess.run([os.path.join(build, "quern"), "store", "copy", os.path.join(s.data, "quern.db"),
                        dst], check=True, capture_output=True)
        db = sqlite3.connect(dst)
        doc = db.execute("SELECT doc FROM tasks WHERE id=?", (r["id"],)).fetchone()[0]
        import json
        assert json.loads(doc)["status"] == "completed", doc
        db.close()
    finally:
        s.stop()


if __name__ == "__main__":
    run_tests(globals())
