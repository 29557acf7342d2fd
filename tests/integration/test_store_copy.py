"""quern store copy: an installation on SQLite moved to PostgreSQL keeps
everything: tasks and runs (same ids, same order), logs, events (same ids),
the root key and server secret (meta), remembered idempotent responses; and
new writes on the copy continue after the copied ids.  Skipped when the
PostgreSQL server is not installed."""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pgcluster  # noqa: E402
import qlib  # noqa: E402
from qlib import BUILD, Server, expect, run_tests, wait_for  # noqa: E402

P = "/api/projects/default"


def have_pg():
    return (os.environ.get("QUERN_TEST_STORE") == "pg"
            or os.path.exists(os.path.join(pgcluster.PGBIN, "initdb")))


def snapshot(S, tasks):
    out = {"tasks": expect(S.req("GET", P + "/tasks?limit=100"), 200)["data"]}
    for t in tasks:
        runs = expect(S.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]
        out[t["id"]] = runs
        for r in runs:
            out[r["id"] + "/logs"] = S.req("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], r["id"])).text
            if r["status"] != "completed":
                continue   # the stream of an unfinished run does not end
            st, evs = qlib.sse(S, P + "/tasks/%s/runs/%s/stream?start=earliest" % (t["id"], r["id"]))
            assert st == 200
            out[r["id"] + "/events"] = evs
    return out


def test_sqlite_to_postgres_keeps_everything():
    if not have_pg():
        print("skip: no PostgreSQL server in %s" % pgcluster.PGBIN)
        return
    s = Server(extra_args=["--store", "sqlite:" + os.path.join(
        __import__("tempfile").mkdtemp(prefix="quern-copy-", dir=os.environ.get("QUERN_TEST_TMP")),
        "quern.db")])
    db = s.extra[s.extra.index("--store") + 1][len("sqlite:"):]
    data = s.data
    tasks = []
    try:
        for i in range(5):
            tasks.append(expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "copy", "run": True,
                                                             "name": "c%d" % i,
                                                             "metadata": {"half": i % 2}}), 201))
        leased = expect(s.req("POST", P + "/workers/lease", {"agent_id": "copy", "max": 3}), 200)["data"]
        # an artifact (before its run ends: a finished run takes none): its
        # bytes are a file beside the SQLite database
        r0 = leased[0]
        art_base = P + "/tasks/%s/runs/%s" % (r0["task_id"], r0["id"])
        expect(s.req("POST", art_base + "/artifacts", {"artifacts": [
            {"name": "moved.txt", "content": "artifact bytes " * 1000}]}), 200)
        for r in leased:
            base = P + "/tasks/%s/runs/%s" % (r["task_id"], r["id"])
            expect(s.req("POST", base + "/append_log", {"entries": [{"message": "hello " + r["id"]}]}), 200)
            out = expect(s.req("POST", P + "/workers/report", {"results": [
                {"run_id": r["id"], "attempt": r["attempt"], "status": "completed", "output": {"ok": 1}}]}), 200)
            assert out["data"][0]["ok"]
        idem = s.req("POST", P + "/tasks", {"assigned_agent_id": "copy", "name": "idem"},
                     headers={"Idempotency-Key": "copy-key-1"})
        assert idem.status == 201
        tasks.append(idem.json)
        before = snapshot(s, tasks)
    finally:
        s.stop()
    url = pgcluster.new_database()
    p = subprocess.run([os.path.join(BUILD, "quern"), "store", "copy", "--data", data, "sqlite:" + db, url],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p.returncode == 0, p.stdout.decode()
    assert b"events" in p.stdout and b"copied" in p.stdout and b"blobs" in p.stdout, p.stdout
    # a second copy into the same target is refused
    p2 = subprocess.run([os.path.join(BUILD, "quern"), "store", "copy", "sqlite:" + db, url],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p2.returncode != 0 and b"not empty" in p2.stdout, p2.stdout
    pg = Server(data=data, extra_args=["--store", url])
    try:
        after = snapshot(pg, tasks)
        assert json.dumps(before, sort_keys=True) == json.dumps(after, sort_keys=True)
        # the copied tasks are in the target's metadata index
        got = expect(pg.req("GET", P + "/tasks?metadata.half=1"), 200)["data"]
        assert [x["id"] for x in got] == [tasks[3]["id"], tasks[1]["id"]], got
        again = pg.req("POST", P + "/tasks", {"assigned_agent_id": "copy", "name": "idem"},
                       headers={"Idempotency-Key": "copy-key-1"})
        assert again.status == 201 and again.json["id"] == tasks[-1]["id"], again
        # the artifact is served from PostgreSQL, even by a node with a fresh data dir
        other = Server(extra_args=["--store", url])
        try:
            got = other.req("GET", art_base + "/artifacts/content?name=moved.txt")
            assert got.status == 200 and got.text == "artifact bytes " * 1000, (got.status, got.text[:80])
            assert not any(len(d) == 2 for d in os.listdir(os.path.join(other.data, "blobs"))
                           if os.path.isdir(os.path.join(other.data, "blobs", d))), "blob was local"
        finally:
            other.stop()
        # new writes continue after the copied ids and sequence numbers
        t = expect(pg.req("POST", P + "/tasks", {"assigned_agent_id": "copy", "run": True, "name": "new"}), 201)
        listed = expect(pg.req("GET", P + "/tasks?limit=1"), 200)["data"]
        assert listed[0]["id"] == t["id"]
        run = expect(pg.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]
        st, evs = qlib.sse(pg, P + "/tasks/%s/runs/%s/stream?start=earliest" % (t["id"], run["id"]),
                           max_events=1)
        last_old = max(e[0] for k, v in before.items() if k.endswith("/events") for e in v)
        assert evs[0][0] > last_old, (evs[0][0], last_old)
    finally:
        pg.stop()


def test_a_copy_cut_short_is_never_served():
    """A copy killed half-way leaves part of the rows in its target.  quernd
    started on that target served the part as if it were the whole store
    (here 2500 of 3000 runs); it now refuses to start, and a second copy
    says the target holds an unfinished copy."""
    if not have_pg():
        print("skip: no PostgreSQL server in %s" % pgcluster.PGBIN)
        return
    import pty
    import tempfile
    db = os.path.join(tempfile.mkdtemp(prefix="quern-copy-", dir=os.environ.get("QUERN_TEST_TMP")),
                      "quern.db")
    s = Server(extra_args=["--slots", "-1", "--fsync", "off", "--store", "sqlite:" + db])
    try:
        for _ in range(4):
            expect(s.req("POST", P + "/tasks/batch", {"tasks": [
                {"assigned_agent_id": "cut", "run": True} for _ in range(500)]},
                headers={"Prefer": "return=minimal"}), 201)
    finally:
        s.stop()
    url = pgcluster.new_database()
    # a terminal for its progress lines: one line per table, as it goes
    master, slave = pty.openpty()
    p = subprocess.Popen([os.path.join(BUILD, "quern"), "store", "copy", "sqlite:" + db, url],
                         stdout=slave, stderr=slave)
    os.close(slave)
    seen = b""
    with os.fdopen(master, "rb", buffering=0) as tty:
        while b"\nruns " not in seen:
            chunk = tty.read(4096)
            assert chunk, seen
            seen += chunk
        p.kill()   # tasks and runs are in, their events are not
        p.wait()
    assert p.returncode == -9, (p.returncode, seen)
    data = tempfile.mkdtemp(prefix="quernd-", dir=os.environ.get("QUERN_TEST_TMP"))
    q = subprocess.Popen([os.path.join(BUILD, "quernd"), "--listen", "127.0.0.1:0", "--data", data,
                          "--store", url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, QUERN_BOOTSTRAP_KEY=qlib.ROOT_KEY))
    line = q.stdout.readline()
    if line:
        q.kill()
        q.wait()
    assert not line, "quernd served a copy cut short: %r" % line
    assert q.wait(60) == 1
    assert b"did not finish" in q.stderr.read()
    p2 = subprocess.run([os.path.join(BUILD, "quern"), "store", "copy", "sqlite:" + db, url],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p2.returncode == 1 and b"did not finish" in p2.stdout, p2.stdout


def test_usage_errors():
    p = subprocess.run([os.path.join(BUILD, "quern"), "store", "move"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    assert p.returncode == 2 and b"quern store copy FROM TO" in p.stdout, p.stdout
    # a command of the table as every other: its help, and the list of commands
    p = subprocess.run([os.path.join(BUILD, "quern"), "help", "store", "copy"], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    assert p.returncode == 0 and b"--data DIR" in p.stdout, p.stdout
    p = subprocess.run([os.path.join(BUILD, "quern"), "--help"], stdout=subprocess.PIPE)
    assert b"store copy FROM TO" in p.stdout, p.stdout
    p = subprocess.run([os.path.join(BUILD, "quern"), "store", "copy", "sqlite:x.db"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.returncode == 2, p.stdout
    p = subprocess.run([os.path.join(BUILD, "quern"), "store", "copy", "sqlite:/nonexistent/dir/x.db",
                        "sqlite:/nonexistent/dir/y.db"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert p.returncode == 1 and b"store copy" in p.stdout


if __name__ == "__main__":
    run_tests(dict(globals()))
