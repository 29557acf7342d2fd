"""Schema migrations of the SQLite store: a database written by an older
quernd (schema v1: no hot-field columns, full indexes) opens with this one,
keeps every document, and run changes move its tasks as before."""
import json
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
    if "h_completed_at" in [r[1] for r in db.execute("PRAGMA table_info(runs)")]:
        db.execute("UPDATE runs SET doc = json_set(doc, '$.completed_at', json(h_completed_at)) "
                   "WHERE h_completed_at IS NOT NULL")
        db.execute("ALTER TABLE runs DROP COLUMN h_completed_at")
    # v7 rebuilt runs (one UNIQUE index on id) and events (no AUTOINCREMENT):
    # back to v1's tables, keeping every row; the sequence a v1 store kept is
    # set above the newest event, as if the newest events had been pruned
    if db.execute("SELECT count(*) FROM sqlite_schema WHERE name='sqlite_autoindex_runs_1'").fetchone()[0] == 0:
        db.executescript("""
            CREATE TABLE runs_v1(seq INTEGER PRIMARY KEY, project_id TEXT NOT NULL, id TEXT NOT NULL,
              doc TEXT NOT NULL, f_task_id TEXT, f_status TEXT, f_definition_id TEXT,
              UNIQUE(project_id, id));
            INSERT INTO runs_v1 SELECT seq, project_id, id, doc, f_task_id, f_status, f_definition_id
              FROM runs;
            DROP TABLE runs;
            ALTER TABLE runs_v1 RENAME TO runs;
            CREATE INDEX runs_id ON runs(id);
            CREATE INDEX runs_task_id ON runs(project_id, f_task_id, seq);
            CREATE INDEX runs_status ON runs(project_id, f_status, seq);
            CREATE INDEX runs_definition_id ON runs(project_id, f_definition_id, seq);
            CREATE TABLE events_v1(id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,
              run_id TEXT, type TEXT NOT NULL, created_at INTEGER NOT NULL, doc TEXT NOT NULL);
            INSERT INTO events_v1 SELECT * FROM events;
            DROP TABLE events;
            ALTER TABLE events_v1 RENAME TO events;
            CREATE INDEX events_run ON events(run_id, id);
            CREATE INDEX events_project ON events(project_id, id);
            DROP INDEX tasks_type;
            CREATE INDEX tasks_type ON tasks(project_id, f_type, seq);
            DROP INDEX tasks_priority;
            CREATE INDEX tasks_priority ON tasks(project_id, f_priority, seq);
        """)
        db.execute("UPDATE sqlite_sequence SET seq = seq + 1000 WHERE name = 'events'")
    db.execute("DROP TABLE IF EXISTS blob_refs")
    db.execute("DROP TABLE IF EXISTS task_meta")   # v11
    if any(r[1] == "q_name" for r in db.execute("PRAGMA table_info(tasks)")):
        db.execute("ALTER TABLE tasks DROP COLUMN q_name")
    db.execute("DROP INDEX IF EXISTS tasks_project")   # v9
    db.execute("DROP INDEX IF EXISTS runs_project")
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
        # one finished run from before: the migration gives it its column
        done_task = expect(s.req("POST", P + "/tasks", {"name": "old-done", "assigned_agent_id": "md",
                                                        "run": True}), 201)
        run = expect(s.req("POST", P + "/workers/lease", {"agent_id": "md", "max": 1}), 200)["data"][0]
        art = expect(s.req("POST", P + "/tasks/%s/runs/%s/artifacts" % (done_task["id"], run["id"]),
                           {"artifacts": [{"name": "x.txt", "content": "x"}]}), 200)["data"][0]
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": run["id"], "attempt": 1, "status": "completed"}]}), 200)
        # tasks with metadata from before v11: the migration indexes them
        md_task = expect(s.req("POST", P + "/tasks", {"name": "old-md", "assigned_agent_id": "mmd", "metadata": {
            "team": "sales", "n": 3, "none": None, "a.b": "dot"}}), 201)
        s.stop()
        to_v1(os.path.join(s.data, "quern.db"))
        db = sqlite3.connect(os.path.join(s.data, "quern.db"))
        old_seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()[0]
        db.close()
        s.start()
        db = sqlite3.connect(os.path.join(s.data, "quern.db"))
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 8
        # v8: the runs' artifact blobs are referenced (for the blob sweep)
        refs = db.execute("SELECT sha, run_id FROM blob_refs").fetchall()
        assert refs == [(art["sha256"], run["id"])], refs
        # v7: runs have one index on their id, unique, that serves both
        # lookups; events need no sqlite_sequence row; the index of run events
        # and the two task indexes leave out the rows no filter reads there
        assert db.execute("SELECT count(*) FROM sqlite_schema WHERE name='sqlite_autoindex_runs_1'"
                          ).fetchone()[0] == 0
        for q in ("SELECT doc FROM runs WHERE project_id='default' AND id='x'",
                  "SELECT doc FROM runs WHERE id='x' LIMIT 1"):
            plan = " ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + q))
            assert "runs_id" in plan, plan
        assert db.execute("SELECT count(*) FROM sqlite_sequence WHERE name='events'").fetchone()[0] == 0
        floor = db.execute("SELECT max(id) FROM events").fetchone()[0]
        assert floor == old_seq, (floor, old_seq)
        sql = dict(db.execute("SELECT name, sql FROM sqlite_schema WHERE type='index'").fetchall())
        assert "run_id IS NOT NULL" in sql["events_run"], sql["events_run"]
        assert "!= 'manual'" in sql["tasks_type"] and "!= 'medium'" in sql["tasks_priority"], sql
        plan = " ".join(r[3] for r in db.execute(
            "EXPLAIN QUERY PLAN SELECT doc FROM tasks WHERE 1 AND project_id='default' "
            "AND f_priority = 'high' AND f_priority != 'medium' ORDER BY seq DESC"))
        assert "tasks_priority" in plan, plan
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
            "EXPLAIN QUERY PLAN SELECT project_id, id FROM runs WHERE h_completed_at < '#' AND "
            "h_completed_at < '\"2026' AND f_status IN "
            "('completed','failed','timed_out','denied','canceled') LIMIT 10"))
        assert "runs_finished" in plan, plan
        # the unfiltered lists, newest first, read in index order: no sort
        # of every row of the project for each page (v9); with a cursor too
        for t in ("tasks", "runs"):
            for cur in ("", " AND seq < (SELECT seq FROM %s WHERE id='x' AND project_id='default')" % t):
                plan = " ".join(r[3] for r in db.execute(
                    "EXPLAIN QUERY PLAN SELECT doc FROM %s WHERE 1 AND project_id='default'%s "
                    "ORDER BY seq DESC LIMIT 50 OFFSET 0" % (t, cur)))
                assert "%s_project" % t in plan and "TEMP B-TREE" not in plan, plan
        # the metadata filter reads task_meta (v11), filled from the old
        # tasks, in seq order: neither a scan of the project nor a sort
        names = dict(db.execute("SELECT id, q_name FROM tasks").fetchall())
        assert names[md_task["id"]] == "old-md" and names[ids[0]] == "old-0", names
        rows = sorted(db.execute("SELECT m_key, m_value FROM task_meta").fetchall())
        assert rows == [("a.b", "dot"), ("n", "3"), ("team", "sales")], rows
        for cur in ("", " AND m_seq < (SELECT seq FROM tasks WHERE id='x' AND project_id='default')"):
            plan = " ".join(r[3] for r in db.execute(
                "EXPLAIN QUERY PLAN SELECT doc FROM task_meta CROSS JOIN tasks ON seq=m_seq"
                " WHERE 1 AND m_project='default' AND m_key='team' AND m_value='sales'"
                " AND project_id='default' AND (CASE json_type(doc, '$.metadata.\"team\"')"
                " WHEN 'text' THEN json_extract(doc, '$.metadata.\"team\"') WHEN 'null' THEN NULL"
                " ELSE doc -> ('$.metadata.\"team\"') END) = 'sales'%s"
                " ORDER BY m_seq DESC LIMIT 50 OFFSET 0" % cur))
            assert "SEARCH task_meta USING PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan
            assert "SEARCH tasks USING INTEGER PRIMARY KEY" in plan, plan
        h, at = db.execute("SELECT h_completed_at, json_extract(doc, '$.completed_at') FROM runs "
                           "WHERE id=?", (run["id"],)).fetchone()
        assert at and h == json.dumps(at), (h, at)
        db.close()
        got = expect(s.req("GET", P + "/tasks/%s/runs/%s" % (done_task["id"], run["id"])), 200)
        assert got["status"] == "completed" and got["completed_at"] == at, got
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
        assert sorted(t["id"] for t in lst["data"]) == sorted(ids + [done_task["id"]]), lst
        # a filter on a sparse field still finds its rows
        r = expect(s.req("GET", P + "/tasks?assigned_agent_id=m"), 200)
        assert len(r["data"]) == 3, r
        # new tasks after the migration
        n = expect(s.req("POST", P + "/tasks", {"name": "new", "assigned_agent_id": "m", "run": True}), 201)
        assert n["status"] == "queued", n
        # its events' ids go on above every id the old store gave out
        nrun = expect(s.req("GET", P + "/tasks/%s/runs" % n["id"]), 200)["data"][0]
        evs = expect(s.req("GET", P + "/tasks/%s/runs/%s/session_logs" % (n["id"], nrun["id"])), 200)
        assert evs and all(int(e["id"][4:]) > old_seq for e in evs), (old_seq, evs)
        # filters on the two task fields whose index leaves out the usual value
        hi = expect(s.req("POST", P + "/tasks", {"name": "hi", "priority": "high", "type": "triggered",
                                                 "assigned_agent_id": "m2"}),
                    201)
        for q, want in (("priority=high", [hi["id"]]), ("type=triggered", [hi["id"]]),
                        ("type=manual&priority=medium", [n["id"]] + list(reversed(ids)))):
            got = expect(s.req("GET", P + "/tasks?%s&assigned_agent_id=m&limit=50" % q
                               if "manual" in q else P + "/tasks?" + q), 200)["data"]
            assert [t["id"] for t in got] == want, (q, got)
        for q in ("metadata.team=sales", "metadata.n=3", "metadata.a.b=dot"):
            got = expect(s.req("GET", P + "/tasks?" + q), 200)["data"]
            assert [t["id"] for t in got] == [md_task["id"]], (q, got)
        assert expect(s.req("GET", P + "/tasks?metadata.none=null"), 200)["total"] == 0
        # q reads the name's column (v11), filled from the old tasks' documents
        got = expect(s.req("GET", P + "/tasks?q=OLD-M"), 200)["data"]
        assert [t["id"] for t in got] == [md_task["id"]], got
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
