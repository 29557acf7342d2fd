"""Three quernd nodes on one PostgreSQL (PostgreSQL runs only).

Code tasks and external workers leasing from different nodes; every attempt
of every run starts exactly once (counted from the workers' leases and from
the task_run.started events), no run is lost; SIGKILL of a node mid-load:
its leased runs come back by lease expiry and its code runs are ended by the
leader (node_lost), and the other nodes complete them all; a cron schedule
fires once per instant across the nodes, also after its leader is killed.
Artifacts (uploaded, or left by code) are kept in PostgreSQL and served
byte-exact by every node, presigned URLs included; the blobs of pruned runs
are deleted.  Storage instances' files travel between nodes through
PostgreSQL (deletions too, the later end winning per file), every node
lists the same size, and a project's default instance is made once.  Writes that lose a conflict (injected, QUERN_PG_FAULT_*) are
retried by the server, not answered 503.
The network-cut case (veth/netns) is test_netcut.py's."""
import base64
import collections
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from qlib import Receiver, Server, expect, run_tests, sse, unit_on_postgres, wait_for  # noqa: E402

if os.environ.get("QUERN_TEST_STORE") != "pg":
    print("skip: several nodes need PostgreSQL (run through tests/run-pg.sh)")
    print("0 passed, 0 failed")
    sys.exit(0)

import pgcluster  # noqa: E402

P = "/api/projects/default"
URL = pgcluster.new_database()
ENV = {"QUERN_LEASE_MS": "3000", "QUERN_OUTBOUND_ALLOW_PRIVATE": "1"}
NODES = []


def start_node():
    s = Server(extra_args=["--store", URL, "--slots", "2"], env=ENV)
    NODES.append(s)
    return s


def live():
    return [n for n in NODES if n.proc.poll() is None]


class Ledger:
    """Every (run, attempt) a worker was handed, from any node."""
    def __init__(self):
        self.mu = threading.Lock()
        self.leases = collections.Counter()

    def add(self, run):
        with self.mu:
            self.leases[(run["id"], run["attempt"])] += 1

    def doubles(self):
        with self.mu:
            return {k: v for k, v in self.leases.items() if v > 1}


def worker(node, agent, ledger, stop, hold=None):
    """Leases from one node and completes; with hold (a list), keeps the
    runs without reporting (a worker that dies with its node)."""
    while not stop.is_set() and node.proc.poll() is None:
        try:
            r = node.req("POST", P + "/workers/lease",
                         {"agent_id": agent, "max": 4, "wait_ms": 300, "worker_id": "w%d" % node.port})
        except OSError:
            return
        if r.status != 200:
            time.sleep(0.05)
            continue
        for run in r.json["data"]:
            ledger.add(run)
            if hold is not None:
                hold.append(run)
                continue
            res = {"run_id": run["id"], "attempt": run["attempt"], "status": "completed",
                   "output": {"by": node.port}}
            for _ in range(20):
                try:
                    rr = node.req("POST", P + "/workers/report", {"results": [res]})
                except OSError:
                    return
                if rr.status == 200:
                    break
                time.sleep(0.05)


def run_of(node, task_id):
    return expect(node.req("GET", P + "/tasks/%s/runs" % task_id), 200)["data"][0]


def started_events(node, run):
    """The attempts of run that started, from its event stream."""
    st, evs = sse_run(node, run)
    assert st == 200, evs
    return [e[2]["data"]["attempt"] for e in evs if e[1] == "task_run.started"]


def sse_run(node, run):
    import qlib
    return qlib.sse(node, P + "/tasks/%s/runs/%s/stream?start=earliest" % (run["task_id"], run["id"]))


def all_final(node, tasks, status="completed"):
    def check():
        for t in tasks:
            if run_of(node, t["id"])["status"] != status:
                return False
        return True
    return check


def get_bytes(node, path, key=True):
    c = http.client.HTTPConnection(node.host, node.port, timeout=60)
    h = {"Authorization": "Bearer qk_root_test_key_0123456789"} if key else {}
    c.request("GET", path, headers=h)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def local_blob_files(node):
    """Blob files in the node's own data dir (none when PostgreSQL keeps them)."""
    out = []
    for root, _, files in os.walk(os.path.join(node.data, "blobs")):
        if os.path.basename(root) != "tmp":
            out += files
    return out


def test_artifacts_through_any_node():
    a, b, c = NODES[:3]
    t = expect(a.req("POST", P + "/tasks", {"assigned_agent_id": "mnart", "run": True}), 201)
    run = run_of(a, t["id"])
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    big = os.urandom(5 * 256 * 1024 + 12345)       # several chunks, more than one query
    edge = os.urandom(2 * 256 * 1024)             # ends on a chunk boundary
    expect(a.req("POST", base + "/artifacts", {"artifacts": [
        {"name": "big.bin", "content_base64": base64.b64encode(big).decode()},
        {"name": "empty.txt", "content": ""},
        {"name": "t.txt", "content": "héllo\n", "content_type": "text/plain"}]}), 200)
    cn = http.client.HTTPConnection(a.host, a.port, timeout=60)
    cn.request("POST", base + "/artifacts?name=edge.bin", body=edge,
               headers={"Authorization": "Bearer qk_root_test_key_0123456789",
                        "Content-Type": "application/octet-stream"})
    r = cn.getresponse()
    assert r.status == 200, r.read()
    r.read()
    cn.close()
    want = {"big.bin": big, "empty.txt": b"", "t.txt": "héllo\n".encode(), "edge.bin": edge}
    for node in (b, c, a):
        for name, data in want.items():
            st, got = get_bytes(node, base + "/artifacts/content?name=" + name)
            assert st == 200 and got == data, (node.port, name, st, len(got))
    # a presigned URL made on a works on b and c, without a key
    path = [x for x in expect(a.req("GET", base), 200)["artifacts"] if x["name"] == "big.bin"][0]["storage_path"]
    url = expect(a.req("POST", base + "/artifacts/presign", {"storage_path": path}), 200)["url"]
    for node in (b, c):
        st, got = get_bytes(node, url, key=False)
        assert st == 200 and got == big, (node.port, st, len(got))
    # a code run leaves files on whichever node ran it; every node serves them
    code = ('i=0; while [ $i -lt 20000 ]; do echo "line $i"; i=$((i+1)); done > "$QUERN_ARTIFACTS/lines.txt"; '
            'printf abc > "$QUERN_ARTIFACTS/small.txt"')
    ct = expect(b.req("POST", P + "/tasks", {"runtime_id": "sh", "code": code}), 201)
    wait_for(all_final(c, [ct]), 60, "the code run completed")
    crun = run_of(c, ct["id"])
    lines = "".join("line %d\n" % i for i in range(20000)).encode()
    cbase = P + "/tasks/%s/runs/%s" % (ct["id"], crun["id"])
    names = sorted(x["name"] for x in crun["artifacts"])
    assert names == ["lines.txt", "small.txt"], crun["artifacts"]
    for node in (a, b, c):
        st, got = get_bytes(node, cbase + "/artifacts/content?name=lines.txt")
        assert st == 200 and got == lines, (node.port, st, len(got))
        assert get_bytes(node, cbase + "/artifacts/content?name=small.txt") == (200, b"abc")
    # the bytes are in PostgreSQL, not in any node's directory
    for node in (a, b, c):
        assert local_blob_files(node) == [], local_blob_files(node)
    db = URL.rsplit("/", 1)[1]
    shas = pgcluster.cluster().psql("SELECT sha FROM blobs", db=db).split()
    for data in (big, edge, lines, b""):
        assert hashlib.sha256(data).hexdigest() in shas


def wait_run_end(node, task_id, run_id):
    return wait_for(lambda: (lambda r: r if r["status"] in ("completed", "failed", "timed_out", "canceled") else None)(
        expect(node.req("GET", P + "/tasks/%s/runs/%s" % (task_id, run_id)), 200)), 60, "the run's end")


def run_logs(node, task_id, run_id):
    return node.req("GET", P + "/tasks/%s/runs/%s/logs" % (task_id, run_id)).text


def test_storage_files_travel_between_nodes():
    """Each node keeps an instance's files under its own DATA/storage: a run
    on node A wrote into QUERN_STORAGE_PROJECT and a later run of the same
    task on node B did not find it, and a listing's size_bytes was the
    answering node's.  The files now go through PostgreSQL: written back
    when a run ends, brought up to date before the next run starts, deletions
    included, and every node lists the same size."""
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    b = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    try:
        b.stop()   # one node with slots at a time: each run goes where we want it
        code = r"""S="$QUERN_STORAGE_PROJECT"
n=$(cat "$S/count" 2>/dev/null || echo 0)
echo "count=$n gone=$(cat "$S/gone.txt" 2>/dev/null || echo none) deep=$(cat "$S/sub/deep.txt" 2>/dev/null || echo none)"
echo "link=$(readlink "$S/link" || echo none)"
if [ "$n" = 0 ]; then echo first > "$S/gone.txt"; mkdir -p "$S/sub"; echo deep > "$S/sub/deep.txt"; chmod 640 "$S/sub/deep.txt"; ln -s /etc/passwd "$S/link"; fi
if [ "$n" = 1 ]; then rm "$S/gone.txt"; echo deeper > "$S/sub/deep.txt"; fi
echo $((n+1)) > "$S/count"
"""
        t = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "code": code, "run": True}), 201)
        r1 = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
        assert r1["status"] == "completed", run_logs(a, t["id"], r1["id"])
        assert "count=0 gone=none deep=none" in run_logs(a, t["id"], r1["id"])
        # links stay on their node, and the run's log says so
        assert "only regular files are shared" in run_logs(a, t["id"], r1["id"])

        b.start()
        a.stop()
        r2 = expect(b.req("POST", P + "/tasks/%s/run" % t["id"]), 201)
        r2 = wait_run_end(b, t["id"], r2.get("id") or r2["run"]["id"])
        assert r2["status"] == "completed", run_logs(b, t["id"], r2["id"])
        assert r2["node_id"] != r1["node_id"], (r1["node_id"], r2["node_id"])
        assert "count=1 gone=first deep=deep" in run_logs(b, t["id"], r2["id"]), run_logs(b, t["id"], r2["id"])
        assert "link=none" in run_logs(b, t["id"], r2["id"])
        bdir = [os.path.join(root, f) for root, _, fs in os.walk(os.path.join(b.data, "storage"))
                for f in fs if f == "deep.txt"]
        assert bdir and (os.stat(bdir[0]).st_mode & 0o777) == 0o640, bdir

        a.start()
        b.stop()
        r3 = expect(a.req("POST", P + "/tasks/%s/run" % t["id"]), 201)
        r3 = wait_run_end(a, t["id"], r3.get("id") or r3["run"]["id"])
        assert r3["status"] == "completed", run_logs(a, t["id"], r3["id"])
        # the deletion on b reached a's copy, and so did the new content
        assert "count=2 gone=none deep=deeper" in run_logs(a, t["id"], r3["id"]), run_logs(a, t["id"], r3["id"])

        b.start()
        sizes = []
        for node in (a, b):
            listed = expect(node.req("GET", P + "/storage"), 200)["data"]
            sizes.append([(x["id"], x["size_bytes"]) for x in listed if x["scope"] == "project"])
        # count "3\n" and sub/deep.txt "deeper\n"
        assert sizes[0] == sizes[1] and sizes[0][0][1] == 2 + 7, sizes
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_sync_never_follows_a_link_of_the_copy():
    """quernd is root on the host and a box owns what is in its storage: a
    link in a node's copy where another node wrote a directory must not
    lead the sync out of the copy.  The file is left out on that node, and
    the run starts."""
    import tempfile
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    b = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    outside = tempfile.mkdtemp(prefix="pgstorage-outside-")
    try:
        b.stop()
        t = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "run": True, "code":
                   'mkdir -p "$QUERN_STORAGE_PROJECT/sub" && echo x > "$QUERN_STORAGE_PROJECT/sub/x"; true'}), 201)
        r1 = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
        assert r1["status"] == "completed", run_logs(a, t["id"], r1["id"])
        inst = [x for x in expect(a.req("GET", P + "/storage"), 200)["data"] if x["scope"] == "project"][0]
        copy = os.path.join(b.data, "storage", "default", inst["id"])
        os.makedirs(copy)
        os.symlink(outside, os.path.join(copy, "sub"))   # as a box on b would have made it
        b.start()
        a.stop()
        r2 = expect(b.req("POST", P + "/tasks/%s/run" % t["id"]), 201)
        r2 = wait_run_end(b, t["id"], r2.get("id") or r2["run"]["id"])
        assert r2["status"] == "completed", (r2, run_logs(b, t["id"], r2["id"]))
        assert os.listdir(outside) == [], os.listdir(outside)
        assert os.path.islink(os.path.join(copy, "sub"))
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()
        shutil.rmtree(outside, ignore_errors=True)


def test_storage_a_file_and_a_directory_trading_places_reach_the_other_node():
    """A pull fetched the store's new files before it removed the ones the
    store no longer has, and then marked the copy up to date: a file that
    became a directory on node A (`a` -> `a/b`) met the old file `a` on
    node B's way and was left out, and a directory that became a file
    (`d/x` -> `d`) met the directory, so B's runs never saw either (until
    some other write-back bumped the version).  Deletions now go first, and
    an empty directory where the store has a file gives way to it."""
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    b = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)

    def run_on(node, code):
        t = expect(node.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": st, "run": True,
                                                   "code": code}), 201)
        r = wait_run_end(node, t["id"], run_of(node, t["id"])["id"])
        assert r["status"] == "completed", run_logs(node, t["id"], r["id"])
        return run_logs(node, t["id"], r["id"])
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-swap"}), 201)
        st = {"project": inst["id"]}
        b.stop()
        run_on(a, 'cd "$QUERN_STORAGE_PROJECT" && echo file > a && mkdir d && echo x > d/x')
        b.start()
        a.stop()
        logs = run_on(b, 'cd "$QUERN_STORAGE_PROJECT" && echo "a=$(cat a) dx=$(cat d/x)"')
        assert "a=file dx=x" in logs, logs
        a.start()
        b.stop()
        run_on(a, 'cd "$QUERN_STORAGE_PROJECT" && rm a && mkdir a && echo in > a/b && '
                  'rm -r d && echo now > d')
        b.start()
        a.stop()
        code = 'cd "$QUERN_STORAGE_PROJECT" && echo "ab=$(cat a/b 2>/dev/null || echo none) d=$(cat d 2>/dev/null || echo none)"'
        logs = run_on(b, code)
        assert "ab=in d=now" in logs, logs
        logs = run_on(b, code)   # and it stays so: nothing left to send back
        assert "ab=in d=now" in logs, logs
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_pull_does_not_read_a_huge_sparse_file_of_the_copy():
    """A file of a node's copy that the node never synced, where the store
    has a file, is compared by its hash: the pull read it to the end first,
    so a box's sparse file of terabytes (one truncate) held the runner
    thread, every run of the node with it, for as long as reading its holes
    took.  A size that differs now settles it unread: the run starts, and
    the node's own file is kept (it is a change of this node's)."""
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    b = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    try:
        b.stop()
        t = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "run": True, "code":
                   'echo x > "$QUERN_STORAGE_PROJECT/big"'}), 201)
        r1 = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
        assert r1["status"] == "completed", run_logs(a, t["id"], r1["id"])
        inst = [x for x in expect(a.req("GET", P + "/storage"), 200)["data"] if x["scope"] == "project"][0]
        copy = os.path.join(b.data, "storage", "default", inst["id"])
        os.makedirs(copy)
        with open(os.path.join(copy, "big"), "wb") as f:   # as a box on b would have made it
            f.truncate(8 << 40)
        b.start()
        a.stop()
        t2 = expect(b.req("POST", P + "/tasks", {"runtime_id": "sh", "run": True, "code":
                    'wc -c < "$QUERN_STORAGE_PROJECT/big"'}), 201)
        r2 = wait_run_end(b, t2["id"], run_of(b, t2["id"])["id"])
        assert r2["status"] == "completed", (r2, run_logs(b, t2["id"], r2["id"]))
        assert str(8 << 40) in run_logs(b, t2["id"], r2["id"]), run_logs(b, t2["id"], r2["id"])
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_a_name_not_in_utf8_is_said_to_stay_on_the_node():
    """The manifest and the store keep paths as JSON strings: a file whose
    name is not UTF-8 could not be one, and the write-back dropped it
    without a word, though a link or a FIFO gets a `warn` line.  It stays
    on its node as those do, and the run's log says so."""
    a = live()[0]
    inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-utf8"}), 201)
    t = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": {"project": inst["id"]},
                                           "run": True, "code":
               'echo x > "$QUERN_STORAGE_PROJECT/$(printf \'\\377\')"; echo y > "$QUERN_STORAGE_PROJECT/ok"'}), 201)
    r = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
    assert r["status"] == "completed", run_logs(a, t["id"], r["id"])
    logs = run_logs(a, t["id"], r["id"])
    assert "1 links, special files, names not in UTF-8" in logs, logs
    listed = [x for x in expect(a.req("GET", P + "/storage"), 200)["data"] if x["id"] == inst["id"]]
    assert listed[0]["size_bytes"] == 2, listed   # "ok" alone went to the store


def test_storage_partial_mark_comes_back_after_another_node_cleared_it():
    """A node whose copy is past the write-back limits marks the instance
    partial in the store; another node's write-back clears the mark (its
    own is complete).  The first node's next write-back, still refused,
    skipped the mark because its own state said it had set it already, so
    the listing said complete while that node held files it could not
    send.  Every refused write-back now sets the mark."""
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)
    b = Server(extra_args=["--store", url, "--slots", "2"], env=ENV)

    def run_on(node, code):
        t = expect(node.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": st, "run": True,
                                                   "code": code}), 201)
        r = wait_run_end(node, t["id"], run_of(node, t["id"])["id"])
        assert r["status"] == "completed", run_logs(node, t["id"], r["id"])
        return run_logs(node, t["id"], r["id"])

    def partial(node):
        listed = [x for x in expect(node.req("GET", P + "/storage"), 200)["data"] if x["id"] == inst["id"]]
        return listed[0].get("size_bytes_partial") is True
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-partial"}), 201)
        st = {"project": inst["id"]}
        b.stop()
        # 20 sparse files of 60 MiB: 1.2 GiB, past the 1 GiB a write-back sends
        logs = run_on(a, 'cd "$QUERN_STORAGE_PROJECT" && for i in $(seq 20); do '
                         'dd if=/dev/null of=f$i bs=1 seek=62914560 2>/dev/null; done; echo made')
        assert "was not written back" in logs, logs
        assert partial(a)
        b.start()
        a.stop()
        run_on(b, 'echo b > "$QUERN_STORAGE_PROJECT/from-b"')
        assert not partial(b)
        a.start()
        b.stop()
        logs = run_on(a, 'cat "$QUERN_STORAGE_PROJECT/from-b"')
        assert "was not written back" in logs, logs
        assert partial(a)
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def two_nodes(env=None):
    """Two nodes on a database of their own, the second stopped: one node
    with slots at a time, so each run goes where the test wants it."""
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "2"], env=dict(ENV, **(env or {})))
    b = Server(extra_args=["--store", url, "--slots", "2"], env=dict(ENV, **(env or {})))
    b.stop()
    return a, b


def swap(stop, start):
    stop.stop()
    start.start()


def run_on(node, st, code, wait=True):
    t = expect(node.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": st, "run": True,
                                               "code": code}), 201)
    if not wait:
        return t
    r = wait_run_end(node, t["id"], run_of(node, t["id"])["id"])
    assert r["status"] == "completed", (r, run_logs(node, t["id"], r["id"]))
    return run_logs(node, t["id"], r["id"])


def warns(logs):
    return [e["message"] for e in map(json.loads, logs.splitlines()) if e.get("level") == "warn"]


def test_storage_a_pull_does_not_overwrite_a_change_made_while_it_fetched(env=None):
    """A pull checked a file, fetched the store's, then renamed it into
    place: a live run of the node that wrote (or made) the file in between
    lost its change to the rename, silently.  The rename now neither
    replaces a file made meanwhile nor keeps a replaced file that changed
    (RENAME_NOREPLACE, RENAME_EXCHANGE and a check): the local change is
    kept, and its run's end sends it.  QUERN_TEST_SYNC_PAUSE holds the pull
    in that gap while the test writes the copy as a live run would."""
    import tempfile
    hold = os.path.join(tempfile.mkdtemp(prefix="syncpause-"), "hold")
    a, b = two_nodes(dict(env or {}, QUERN_TEST_SYNC_PAUSE=hold))
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-race"}), 201)
        st = {"project": inst["id"]}
        copy = os.path.join(b.data, "storage", "default", inst["id"])
        run_on(a, st, 'echo v1 > "$QUERN_STORAGE_PROJECT/f"')
        swap(a, b)
        assert "v1" in run_on(b, st, 'cat "$QUERN_STORAGE_PROJECT/f"')
        for name in ("f", "g"):   # f: b's changed meanwhile; g: b has none, made meanwhile
            swap(b, a)
            run_on(a, st, 'echo a > "$QUERN_STORAGE_PROJECT/%s"' % name)
            swap(a, b)
            open(hold, "w").close()
            t = run_on(b, st, 'cat "$QUERN_STORAGE_PROJECT/%s"' % name, wait=False)
            wait_for(lambda: os.path.exists(hold + ".reached"), 60, "the pull in its gap")
            with open(os.path.join(copy, name), "w") as f:
                f.write("local-%s\n" % name)
            os.unlink(hold)
            os.unlink(hold + ".reached")
            r = wait_run_end(b, t["id"], run_of(b, t["id"])["id"])
            logs = run_logs(b, t["id"], r["id"])
            assert r["status"] == "completed" and "local-%s" % name in logs, (r, logs)
            with open(os.path.join(copy, name)) as f:
                assert f.read() == "local-%s\n" % name
            assert not [x for x in os.listdir(copy) if x.startswith(".quern-sync-")], os.listdir(copy)
        swap(b, a)
        # b's run ends sent the local changes
        assert "f=local-f g=local-g" in run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "f=$(cat f) g=$(cat g)"')
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_a_pull_does_not_delete_a_file_changed_while_it_checked(env=None):
    """A file another node deleted is removed by the pull when this node's
    copy of it is unchanged since its last sync: the pull checked, then
    unlinked, and a live run that wrote the file in between lost its
    write.  The file is now moved aside, checked again and put back when
    it changed; that run's end sends it.  QUERN_TEST_SYNC_PAUSE holds the
    pull between the check and the removal."""
    import tempfile
    hold = os.path.join(tempfile.mkdtemp(prefix="syncpause-"), "hold")
    a, b = two_nodes(dict(env or {}, QUERN_TEST_SYNC_PAUSE=hold))
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-rm"}), 201)
        st = {"project": inst["id"]}
        copy = os.path.join(b.data, "storage", "default", inst["id"])
        run_on(a, st, 'echo v1 > "$QUERN_STORAGE_PROJECT/f"')
        swap(a, b)
        assert "v1" in run_on(b, st, 'cat "$QUERN_STORAGE_PROJECT/f"')
        swap(b, a)
        run_on(a, st, 'rm "$QUERN_STORAGE_PROJECT/f"')
        swap(a, b)
        open(hold, "w").close()
        t = run_on(b, st, 'echo "f=$(cat "$QUERN_STORAGE_PROJECT/f")"', wait=False)
        wait_for(lambda: os.path.exists(hold + ".reached"), 60, "the pull in its gap")
        with open(os.path.join(copy, "f"), "a") as f:
            f.write("local\n")
        os.unlink(hold)
        r = wait_run_end(b, t["id"], run_of(b, t["id"])["id"])
        logs = run_logs(b, t["id"], r["id"])
        assert r["status"] == "completed" and "f=v1" in logs and "local" in logs, (r, logs)
        assert not [x for x in os.listdir(copy) if x.startswith(".quern-sync-")], os.listdir(copy)
        swap(b, a)
        assert "f=v1 local" in run_on(a, st, 'echo "f="$(cat "$QUERN_STORAGE_PROJECT/f")')
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


NO_RENAME_FLAGS = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
/* renameat2 as a file system without its flags answers (some FUSE, NFS) */
int renameat2(int od, const char *op, int nd, const char *np, unsigned int flags)
{
    if (flags) {
        errno = EINVAL;
        return -1;
    }
    return renameat(od, op, nd, np);
}
"""


def test_storage_pulls_work_on_a_file_system_without_rename_flags():
    """On a file system without renameat2's RENAME_NOREPLACE and
    RENAME_EXCHANGE (EINVAL), every pull that fetched or removed a file
    failed, and so did the run (storage_unavailable).  The pull now does
    without them (link() and rename()), keeping a live run's change made
    while it fetched or removed a file, and the node's log says so once.
    A preloaded renameat2 answers EINVAL to any flag, as such a file
    system does."""
    import tempfile
    d = tempfile.mkdtemp(prefix="norenameflags-")
    with open(os.path.join(d, "shim.c"), "w") as f:
        f.write(NO_RENAME_FLAGS)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", os.path.join(d, "shim.so"), os.path.join(d, "shim.c")],
                   check=True)
    env = {"LD_PRELOAD": os.path.join(d, "shim.so")}
    if os.environ.get("QUERN_ASAN"):
        env["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"
    test_storage_a_pull_does_not_overwrite_a_change_made_while_it_fetched(env)
    test_storage_a_pull_does_not_delete_a_file_changed_while_it_checked(env)
    a, b = two_nodes(env)
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-noflags"}), 201)
        st = {"project": inst["id"]}
        run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo 1 > f; echo 1 > g')
        swap(a, b)
        run_on(b, st, 'true')
        swap(b, a)
        run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo 2 > f; rm g; echo 3 > h')
        swap(a, b)
        logs = run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "seen:" $(ls -a) "f=$(cat f)"')
        assert "seen: . .. f h f=2" in logs, logs
        with open(os.path.join(b.data, "stderr.log")) as f:
            said = [x for x in f if "no renameat2 RENAME_NOREPLACE" in x]
        assert len(said) == 2, said   # once per process: b pulled in two of its starts
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_a_fetched_file_is_recorded_as_it_is_after_its_rename():
    """A pull recorded a fetched file's stat before renaming it into place,
    and the rename sets the file's ctime: until a run's end here read it
    again, the file looked changed here, so the next pull kept it as this
    node's change and still marked the copy up to date.  Here b's run that
    fetched f is still live (its node killed, so it never writes back) when
    a changes f; b's next run saw the old f, and so did every later one.
    The rename sets ctime only when a clock tick passed since the stat
    (coarse timestamps), so the pull is held a moment in between
    (QUERN_TEST_SYNC_PAUSE) to make that certain."""
    import tempfile
    hold = os.path.join(tempfile.mkdtemp(prefix="syncpause-"), "hold")
    a, b = two_nodes({"QUERN_TEST_SYNC_PAUSE": hold})
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-ctime"}), 201)
        st = {"project": inst["id"]}
        run_on(a, st, 'echo v1 > "$QUERN_STORAGE_PROJECT/f"')
        swap(a, b)
        open(hold, "w").close()
        t = run_on(b, st, 'cat "$QUERN_STORAGE_PROJECT/f"; sleep 120', wait=False)
        wait_for(lambda: os.path.exists(hold + ".reached"), 60, "the pull in its gap")
        time.sleep(0.05)   # past a tick of the coarse clock: not a timed assertion
        os.unlink(hold)
        state = os.path.join(b.data, "storage", "default", inst["id"] + ".sync")
        wait_for(lambda: os.path.exists(state), 60, "the pull's end")
        wait_for(lambda: run_of(b, t["id"])["status"] == "running", 60, "running")
        b.kill()
        a.start()
        run_on(a, st, 'echo v2 > "$QUERN_STORAGE_PROJECT/f"')
        swap(a, b)
        for _ in range(2):
            logs = run_on(b, st, 'echo "f=$(cat "$QUERN_STORAGE_PROJECT/f")"')
            assert "f=v2" in logs, logs
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_a_torn_sync_state_does_not_bring_back_deleted_files():
    """A node's <instance>.sync was written without an fsync, and a torn
    one read as "never synced": the next pull kept every file the node had,
    those other nodes deleted too, and the run's end sent them back.  It is
    now written durably, and a torn one makes the pull bring the copy to
    the store's files."""
    a, b = two_nodes()
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-torn"}), 201)
        st = {"project": inst["id"]}
        run_on(a, st, 'echo 1 > "$QUERN_STORAGE_PROJECT/keep"; echo 22 > "$QUERN_STORAGE_PROJECT/gone"')
        swap(a, b)
        assert "keep gone" in run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo $(ls -r)')
        swap(b, a)
        run_on(a, st, 'rm "$QUERN_STORAGE_PROJECT/gone"')
        swap(a, b)
        state = os.path.join(b.data, "storage", "default", inst["id"] + ".sync")
        with open(state, "rb") as f:
            text = f.read()
        with open(state, "wb") as f:
            f.write(text[:len(text) // 2])   # as a crash while saving it left it
        logs = run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls)')
        assert "files: keep" in logs, logs
        listed = [x for x in expect(b.req("GET", P + "/storage"), 200)["data"] if x["id"] == inst["id"]]
        assert listed[0]["size_bytes"] == 2, listed   # "keep" alone
        swap(b, a)
        assert "files: keep" in run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls)')
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_each_write_back_warning_has_its_own_log_line():
    """The run's storage warnings were one line: the links one dropped the
    "files not written back" one, and a state that could not be saved, or a
    copy that could not be opened at the run's end, said nothing.  Each is
    now its own `warn` line."""
    a, b = two_nodes()
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-warn"}), 201)
        st = {"project": inst["id"]}
        copy = os.path.join(a.data, "storage", "default", inst["id"])
        run_on(a, st, 'ln -s /etc/passwd "$QUERN_STORAGE_PROJECT/l"')
        with open(os.path.join(copy, "big"), "wb") as f:   # past what a write-back sends
            f.truncate((64 << 20) + 1)
        os.mkdir(copy + ".sync.tmp")   # the state cannot be saved
        w = warns(run_on(a, st, 'true'))
        assert len(w) == 3, w
        assert any("1 links, special files" in x for x in w), w
        assert any("1 files of storage instance" in x and "(the first: big)" in x for x in w), w
        assert any("could not be saved" in x for x in w), w
        os.rmdir(copy + ".sync.tmp")
        os.unlink(os.path.join(copy, "big"))
        # the copy's directory gone from its place while the run is live
        t = run_on(a, st, 'while [ ! -e "$QUERN_STORAGE_PROJECT/go" ]; do sleep 0.05; done', wait=False)
        wait_for(lambda: run_of(a, t["id"])["status"] == "running", 60, "running")
        os.rename(copy, copy + ".moved")
        os.symlink(copy + ".moved", copy)
        open(os.path.join(copy + ".moved", "go"), "w").close()
        r = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
        w = warns(run_logs(a, t["id"], r["id"]))
        assert len(w) == 1 and "could not be opened" in w[0], w
        os.unlink(copy)
        os.rename(copy + ".moved", copy)
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_temp_files_of_an_interrupted_pull_are_removed():
    """A node killed while it fetched a file left the pull's temp file
    (.quern-sync-*) in the copy, and every later box saw it.  The next pull
    removes those of an interrupted pull."""
    import tempfile
    hold = os.path.join(tempfile.mkdtemp(prefix="syncpause-"), "hold")
    a, b = two_nodes({"QUERN_TEST_SYNC_PAUSE": hold})
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-tmp"}), 201)
        st = {"project": inst["id"]}
        copy = os.path.join(b.data, "storage", "default", inst["id"])
        run_on(a, st, 'mkdir "$QUERN_STORAGE_PROJECT/d"; echo v > "$QUERN_STORAGE_PROJECT/d/f"')
        swap(a, b)
        open(hold, "w").close()
        run_on(b, st, 'true', wait=False)
        wait_for(lambda: os.path.exists(hold + ".reached"), 60, "the pull in its gap")
        b.kill()
        os.unlink(hold)
        assert [x for x in os.listdir(os.path.join(copy, "d")) if x.startswith(".quern-sync-")]
        b.start()
        logs = run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "seen:" $(ls -a d)')
        assert "seen: . .. f" in logs, logs
        assert os.listdir(os.path.join(copy, "d")) == ["f"], os.listdir(os.path.join(copy, "d"))
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_a_pull_that_fails_midway_keeps_what_it_fetched_as_synced():
    """A pull that failed after it had fetched some files (a blob it could
    not read, PostgreSQL gone mid-pull) did not save the copy's state: the
    files it had put in place looked like this node's own changes to every
    later pull, which kept them when another node changed them (the run
    saw the stale bytes) and whose run's end then sent them back over the
    other node's newer ones.  The state is now saved with what the pull
    did, at the old version, so the next pull fetches the newer files."""
    a, b = two_nodes()
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-midway"}), 201)
        st = {"project": inst["id"]}
        run_on(a, st, 'echo one > "$QUERN_STORAGE_PROJECT/f1"; echo two > "$QUERN_STORAGE_PROJECT/f2"')
        # f2's bytes unreadable: b's pull fetches f1 (paths in order), then fails
        db = a.extra[a.extra.index("--store") + 1].rsplit("/", 1)[1]
        sha = hashlib.sha256(b"two\n").hexdigest()
        pgcluster.cluster().psql("DELETE FROM blob_chunks WHERE sha='%s'; DELETE FROM blobs WHERE sha='%s'"
                                 % (sha, sha), db=db)
        swap(a, b)
        t = run_on(b, st, 'true', wait=False)
        r = wait_run_end(b, t["id"], run_of(b, t["id"])["id"])
        assert r["status"] == "failed" and r["error"]["code"] == "storage_unavailable", r
        copy = os.path.join(b.data, "storage", "default", inst["id"])
        with open(os.path.join(copy, "f1")) as f:
            assert f.read() == "one\n"
        swap(b, a)
        run_on(a, st, 'echo three > "$QUERN_STORAGE_PROJECT/f1"; echo four > "$QUERN_STORAGE_PROJECT/f2"')
        swap(a, b)
        logs = run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "f1=$(cat f1) f2=$(cat f2)"')
        assert "f1=three f2=four" in logs, logs
        swap(b, a)
        logs = run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "f1=$(cat f1) f2=$(cat f2)"')
        assert "f1=three f2=four" in logs, logs
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


READDIR_FAIL_C = r"""
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* readdir of a directory named "unreadable" fails (EIO), as on a bad disk */
static int bad(DIR *d)
{
    char p[64], t[4096];
    snprintf(p, sizeof p, "/proc/self/fd/%d", dirfd(d));
    ssize_t n = readlink(p, t, sizeof t - 1);
    if (n < 0)
        return 0;
    t[n] = 0;
    return n >= 11 && !strcmp(t + n - 11, "/unreadable");
}
struct dirent *readdir(DIR *d)
{
    static struct dirent *(*next)(DIR *);
    if (!next)
        next = (struct dirent *(*)(DIR *))dlsym(RTLD_NEXT, "readdir");
    if (bad(d)) {
        errno = EIO;
        return NULL;
    }
    return next(d);
}
struct dirent64 *readdir64(DIR *d)
{
    static struct dirent64 *(*next)(DIR *);
    if (!next)
        next = (struct dirent64 *(*)(DIR *))dlsym(RTLD_NEXT, "readdir64");
    if (bad(d)) {
        errno = EIO;
        return NULL;
    }
    return next(d);
}
"""


def test_storage_a_directory_that_fails_to_read_sends_no_deletions():
    """The write-back's walk took a readdir that failed (EIO: a bad disk)
    for the end of the directory, so the files in it looked deleted and
    their deletion was sent to the store: every node lost them.  A failed
    readdir now makes the walk incomplete, as a directory that cannot be
    opened does: no deletions, and a warn line.  (LD_PRELOAD makes readdir
    fail; not under ASan, whose runtime must come first.)"""
    if os.environ.get("QUERN_ASAN"):
        return
    import tempfile
    tmp = tempfile.mkdtemp(prefix="readdirfail-")
    src, so = os.path.join(tmp, "r.c"), os.path.join(tmp, "r.so")
    with open(src, "w") as f:
        f.write(READDIR_FAIL_C)
    subprocess.run(["cc", "-shared", "-fPIC", "-o", so, src, "-ldl"], check=True)
    a, b = two_nodes()
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-readdir"}), 201)
        st = {"project": inst["id"]}
        run_on(a, st, 'mkdir "$QUERN_STORAGE_PROJECT/unreadable"; echo x > "$QUERN_STORAGE_PROJECT/unreadable/f"')
        a.stop()
        a.env = dict(a.env, LD_PRELOAD=so)
        a.start()
        w = warns(run_on(a, st, 'echo y > "$QUERN_STORAGE_PROJECT/top"'))
        assert any("could not be read" in x for x in w), w
        swap(a, b)
        logs = run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "f=$(cat unreadable/f) top=$(cat top)"')
        assert "f=x top=y" in logs, logs
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_storage_a_current_copy_starts_without_reading_its_file_list():
    """Every run start read and parsed the copy's whole state file (a JSON
    of one entry per file: 15 MB and 0.3 s of the runner thread for 100 000
    files) only to compare its version with the store's, also when the copy
    was current.  The version is now read from the file's first bytes (the
    file is whole when it ends with its end mark), and the list is parsed
    only when the copy is behind.  QUERN_TEST_SYNC_LOADS counts whole reads;
    a run end still reads it once (its walk compares every file)."""
    import tempfile
    loads = os.path.join(tempfile.mkdtemp(prefix="syncloads-"), "loads")
    a, b = two_nodes({"QUERN_TEST_SYNC_LOADS": loads})

    def count():
        try:
            with open(loads) as f:
                return len([x for x in f.read().splitlines() if x.endswith("/" + inst["id"])])
        finally:
            if os.path.exists(loads):
                os.unlink(loads)
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-peek"}), 201)
        st = {"project": inst["id"]}
        run_on(a, st, 'echo 1 > "$QUERN_STORAGE_PROJECT/one"; mkdir "$QUERN_STORAGE_PROJECT/d"; '
                      'echo 22 > "$QUERN_STORAGE_PROJECT/d/two"')
        swap(a, b)
        assert "one two" in run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo $(cat one >/dev/null; ls; ls d)').replace("d ", "")
        count()
        # current: the start reads none, the end one
        assert "files: d one" in run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls)')
        assert count() == 1
        state = os.path.join(b.data, "storage", "default", inst["id"] + ".sync")
        with open(state) as f:
            m = json.load(f)
        # an older node's layout (version not first, no end mark): read whole
        # once, then rewritten
        with open(state, "w") as f:
            json.dump({"files": m["files"], "version": m["version"]}, f)
        assert "files: d one" in run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls)')
        assert count() == 2
        assert "files: d one" in run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls)')
        assert count() == 1
        # cut short (a lost tail) at the current version: not taken for
        # current, the copy is brought to the store's files
        with open(state, "rb") as f:
            text = f.read()
        with open(state, "wb") as f:
            f.write(text[:-3])
        open(os.path.join(b.data, "storage", "default", inst["id"], "stray"), "w").close()
        logs = run_on(b, st, 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls) "."')
        assert "files: d one ." in logs, logs
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_a_restored_older_store_does_not_undo_a_copy():
    """PostgreSQL restored from a backup holds an older version of an
    instance than a node's copy was brought to.  The pull took the store
    for newer: it removed the copy's files the backup lacked (made after
    it), put the backup's older bytes over unchanged newer ones and brought
    back files deleted since.  A store version lower than the copy's is now
    taken for a restore: the copy is kept, its run's end writes it back
    over the store's (new, changed and deleted files) with a warn line, and
    the version goes past the copy's, so other nodes pull it."""
    a, b = two_nodes()
    try:
        db = a.extra[a.extra.index("--store") + 1].rsplit("/", 1)[1]
        psql = pgcluster.cluster().psql
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-restore"}), 201)
        st = {"project": inst["id"]}
        ls = 'cd "$QUERN_STORAGE_PROJECT"; echo "files:" $(ls) "old=$(cat old)"'
        run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo 1 > keep; echo 1 > old; echo 1 > gone')
        swap(a, b)
        assert "files: gone keep old old=1" in run_on(b, st, ls)
        swap(b, a)
        # the backup
        psql("CREATE TABLE bk_state AS SELECT * FROM storage_state; "
             "CREATE TABLE bk_files AS SELECT * FROM storage_files", db=db)
        run_on(a, st, 'cd "$QUERN_STORAGE_PROJECT"; echo 2 > old; rm gone; echo n > new')
        run_on(a, st, 'echo m > "$QUERN_STORAGE_PROJECT/more"')
        # the restore
        psql("DELETE FROM storage_state; DELETE FROM storage_files; "
             "INSERT INTO storage_state SELECT * FROM bk_state; "
             "INSERT INTO storage_files SELECT * FROM bk_files", db=db)
        t = run_on(a, st, ls, wait=False)
        r = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
        logs = run_logs(a, t["id"], r["id"])
        assert r["status"] == "completed" and "files: keep more new old old=2" in logs, logs
        assert any("is older" in x and "restore" in x for x in warns(logs)), warns(logs)
        version = int(psql("SELECT version FROM storage_state WHERE instance_id='%s'" % inst["id"], db=db))
        assert version > 3, version   # past the copy's 3
        # b (at the backup's version) pulls the copy a wrote back
        swap(a, b)
        logs = run_on(b, st, ls)
        assert "files: keep more new old old=2" in logs, logs
        assert not warns(logs), logs
        listed = [x for x in expect(b.req("GET", P + "/storage"), 200)["data"] if x["id"] == inst["id"]]
        assert listed[0]["size_bytes"] == 8, listed   # keep, old, new, more: 2 bytes each
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_limits_hold_for_the_nodes_together():
    """Each node checked the write-back limits (1 GiB, 100 000 files) on
    its own copy alone: two nodes each writing 540 MiB at once, neither
    having pulled the other's, put 1080 MiB in the store.  The commit now
    checks the instance's totals in its transaction: the second write-back
    is refused as one past the limits is (its files stay on its node, the
    instance is marked partial, a warn line says so)."""
    url = pgcluster.new_database()
    a = Server(extra_args=["--store", url, "--slots", "1"], env=ENV)
    b = Server(extra_args=["--store", url, "--slots", "1"], env=ENV)
    b.stop()
    nine = 'cd "$QUERN_STORAGE_PROJECT" && for i in $(seq 9); do ' \
           'dd if=/dev/null of=%s$i bs=1 seek=62914560 2>/dev/null; done'
    try:
        inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-total"}), 201)
        st = {"project": inst["id"]}
        # a's run holds 540 MiB and waits; its one slot is busy, so b takes the next
        t = run_on(a, st, (nine % "a") + '; while [ ! -e go ]; do sleep 0.05; done; rm go', wait=False)
        wait_for(lambda: run_of(a, t["id"])["status"] == "running", 60, "running")
        b.start()
        logs = run_on(b, st, nine % "b")
        assert not warns(logs), logs
        listed = [x for x in expect(b.req("GET", P + "/storage"), 200)["data"] if x["id"] == inst["id"]]
        assert listed[0]["size_bytes"] == 9 * 62914560 and not listed[0].get("size_bytes_partial"), listed
        open(os.path.join(a.data, "storage", "default", inst["id"], "go"), "w").close()
        r = wait_run_end(a, t["id"], run_of(a, t["id"])["id"])
        w = warns(run_logs(a, t["id"], r["id"]))
        assert r["status"] == "completed" and len(w) == 1, (r, w)
        assert "was not written back" in w[0] and "other nodes" in w[0], w
        listed = [x for x in expect(a.req("GET", P + "/storage"), 200)["data"] if x["id"] == inst["id"]]
        assert listed[0]["size_bytes"] == 9 * 62914560 and listed[0]["size_bytes_partial"] is True, listed
    finally:
        for n in (a, b):
            if n.proc.poll() is None:
                n.stop()


def test_storage_the_later_end_wins_per_file():
    """Two runs of one instance live at once, on whichever nodes: each
    writes the same file and one of its own.  Per file the run that ended
    later wins (x waits for a message until y has ended), and the file only
    one of them wrote is kept too: a later run, on any node, sees both."""
    a, b = live()[:2]
    inst = expect(a.req("POST", P + "/storage", {"scope": "project", "name": "mn-later"}), 201)
    st = {"project": inst["id"]}
    x = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": st, "run": True, "code":
               'read line; echo x > "$QUERN_STORAGE_PROJECT/f"; echo x > "$QUERN_STORAGE_PROJECT/only-x"'}), 201)
    xr = wait_for(lambda: (lambda r: r if r["status"] == "running" else None)(run_of(a, x["id"])), 60, "x running")
    y = expect(b.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": st, "run": True, "code":
               'echo y > "$QUERN_STORAGE_PROJECT/f"; echo y > "$QUERN_STORAGE_PROJECT/only-y"'}), 201)
    yr = wait_run_end(b, y["id"], run_of(b, y["id"])["id"])
    assert yr["status"] == "completed", run_logs(b, y["id"], yr["id"])
    cmd = {"jsonrpc": "2.0", "method": "user_message", "params": {"text": "go"}, "id": 1}
    sent = [n for n in live() if n.req("POST", P + "/tasks/%s/runs/%s/command" % (x["id"], xr["id"]),
                                       cmd).status == 200]
    assert len(sent) == 1, sent   # the node running x
    xr = wait_run_end(a, x["id"], xr["id"])
    assert xr["status"] == "completed", run_logs(a, x["id"], xr["id"])
    for node in (a, b):
        z = expect(node.req("POST", P + "/tasks", {"runtime_id": "sh", "storage": st, "run": True, "code":
                   'cd "$QUERN_STORAGE_PROJECT" && echo "f=$(cat f) x=$(cat only-x) y=$(cat only-y)"'}), 201)
        zr = wait_run_end(node, z["id"], run_of(node, z["id"])["id"])
        assert "f=x x=x y=y" in run_logs(node, z["id"], zr["id"]), run_logs(node, z["id"], zr["id"])


def test_default_storage_instance_is_made_once_across_nodes():
    """Two nodes starting the first runs of a project at the same moment
    each created the project's default instance (neither saw the other's
    uncommitted row): two `default` project instances.  The default
    instance's id is now made from its project, scope and account, so the
    second insert finds the first."""
    a, b = live()[:2]
    dups = []
    for i in range(10):
        pid = "mnsto%d" % i
        expect(a.req("POST", "/api/projects", {"name": pid, "id": pid}), 201)
        pp = "/api/projects/%s" % pid
        made = [None, None]

        def create(k, node):
            made[k] = expect(node.req("POST", pp + "/tasks", {"runtime_id": "sh", "code": "true",
                                                             "run": True}), 201)
        ths = [threading.Thread(target=create, args=(k, n)) for k, n in enumerate((a, b))]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        for t in made:
            wait_for(lambda: expect(a.req("GET", pp + "/tasks/%s/runs" % t["id"]), 200)["data"][0]["status"]
                     in ("completed", "failed"), 60, "the run's end")
        listed = expect(b.req("GET", pp + "/storage"), 200)["data"]
        n = len([x for x in listed if x["scope"] == "project" and x["name"] == "default"])
        if n != 1:
            dups.append((pid, n))
    assert dups == [], dups


def test_a_named_storage_instance_made_on_two_nodes_at_once_is_made_once():
    """Creating a named instance checks the name, then inserts: two nodes
    creating the same name at the same moment each found none and both
    inserted (two instances of one name).  A unique index on the name (v7)
    now makes the second insert fail: 409 already_exists to the loser."""
    nodes = live()[:3]
    pp = P + "/storage"
    names = ["race%d" % i for i in range(40)]
    got = collections.defaultdict(list)
    mu = threading.Lock()
    go = threading.Barrier(len(nodes))

    def create(node):
        for name in names:   # every node sends each name at once
            go.wait()
            r = node.req("POST", pp, {"scope": "project", "name": name})
            with mu:
                got[name].append((r.status, (r.json or {}).get("error", {}).get("code")))

    ths = [threading.Thread(target=create, args=(n,)) for n in nodes]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    bad = {n: v for n, v in got.items()
           if sorted(v) != sorted([(201, None)] + [(409, "already_exists")] * (len(nodes) - 1))}
    assert bad == {}, bad
    listed = expect(nodes[1].req("GET", pp + "?limit=500"), 200)["data"]
    counts = collections.Counter(x["name"] for x in listed if x["name"] in names)
    assert all(counts[n] == 1 for n in names), counts


def test_duplicate_named_storage_instances_left_by_the_race_are_renamed_by_the_migration():
    """A database made by a quernd before v7 may hold two instances of one
    name: the migration keeps the name on the oldest and renames each other
    "<name> (duplicate <id>)", files kept, before it adds the unique index."""
    url = pgcluster.new_database()
    db = url.rsplit("/", 1)[1]
    s = Server(extra_args=["--store", url], env=ENV)
    try:
        first = expect(s.req("POST", P + "/storage", {"scope": "project", "name": "twice"}), 201)
        acct = expect(s.req("POST", P + "/storage", {"scope": "account", "name": "twice",
                                                     "account_id": "acc1"}), 201)
    finally:
        s.stop()
    c = pgcluster.cluster()
    newest = c.psql("SELECT max(version) FROM quern_schema", db=db).strip()
    # what the race left, as the schema before v7 allowed it (and without
    # what later migrations add, which run again after v7's)
    c.psql("ALTER TABLE tasks DROP COLUMN q_name; DROP TABLE task_meta;", db=db)
    c.psql("DROP INDEX storage_name_unique; DELETE FROM quern_schema; INSERT INTO quern_schema VALUES(6);"
           "INSERT INTO storage(project_id, id, doc, f_scope, f_name, f_account_id) SELECT "
           "project_id, 'sto_dup' || k, replace(doc, id, 'sto_dup' || k), f_scope, f_name, "
           "f_account_id FROM storage, generate_series(1, 2) k WHERE id='%s'" % first["id"], db=db)
    s = Server(extra_args=["--store", url], env=ENV)
    try:
        listed = expect(s.req("GET", P + "/storage?limit=100"), 200)["data"]
        by_id = {x["id"]: x["name"] for x in listed}
        assert by_id[first["id"]] == "twice", by_id
        assert by_id[acct["id"]] == "twice", by_id   # another scope: not a duplicate
        assert by_id["sto_dup1"] == "twice (duplicate sto_dup1)", by_id
        assert by_id["sto_dup2"] == "twice (duplicate sto_dup2)", by_id
        r = s.req("POST", P + "/storage", {"scope": "project", "name": "twice"})
        assert r.status == 409 and r.json["error"]["code"] == "already_exists", r
        assert c.psql("SELECT max(version) FROM quern_schema", db=db).strip() == newest
    finally:
        s.stop()


def test_webhooks_made_on_any_node_deliver_each_event_once():
    """The leader's webhook dispatcher idles while no webhook exists; one made
    through another node is still found, and every event reaches every
    webhook exactly once."""
    rec = Receiver()
    url = rec.url
    hooks = []
    try:
        for n in NODES[:3]:
            hooks.append((n, expect(n.req("POST", P + "/webhooks", {"url": url, "events": ["task.created"]}), 201)))
        ids = {expect(n.req("POST", P + "/tasks", {"assigned_agent_id": "mnhook", "run": False}), 201)["id"]
               for n in NODES[:3]}

        def mine():
            return [e for e in rec.delivered() if e.get("task_id") in ids]
        wait_for(lambda: len(mine()) >= 9, 30, "3 events x 3 webhooks")
        time.sleep(1.5)   # room for a duplicate to show up
        per_event = collections.Counter(e["id"] for e in mine())
        assert len(per_event) == 3 and set(per_event.values()) == {3}, per_event
    finally:
        for n, w in hooks:
            n.req("DELETE", P + "/webhooks/" + w["id"])
        rec.close()


def test_blobs_of_pruned_runs_are_deleted():
    url = pgcluster.new_database()
    db = url.rsplit("/", 1)[1]
    s = Server(extra_args=["--store", url, "--slots", "-1"],
               env={"QUERN_RETENTION_MS": "1500", "QUERN_RETENTION_EVERY_MS": "1000",
                    "QUERN_BLOB_GRACE_MS": "2000"})
    try:
        def finished_run_with(files):
            t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "gc", "run": True}), 201)
            run = expect(s.req("POST", P + "/workers/lease", {"agent_id": "gc"}), 200)["data"][0]
            base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
            expect(s.req("POST", base + "/artifacts", {"artifacts": files}), 200)
            return t, run, base
        only = os.urandom(300000)
        shared = os.urandom(1000)
        f_only = {"name": "only.bin", "content_base64": base64.b64encode(only).decode()}
        f_shared = {"name": "shared.bin", "content_base64": base64.b64encode(shared).decode()}
        t1, r1, _ = finished_run_with([f_only, f_shared])
        expect(s.req("POST", P + "/workers/report", {"results": [
            {"run_id": r1["id"], "attempt": 1, "status": "completed"}]}), 200)
        # the same bytes on a run that stays (unfinished)
        t2, r2, base2 = finished_run_with([f_shared])
        sha_only, sha_shared = hashlib.sha256(only).hexdigest(), hashlib.sha256(shared).hexdigest()
        psql = pgcluster.cluster().psql
        assert sha_only in psql("SELECT sha FROM blobs", db=db)
        wait_for(lambda: s.req("GET", P + "/task-runs/" + r1["id"]).status == 404, 60,
                 "the finished run to be pruned")
        wait_for(lambda: sha_only not in psql("SELECT sha FROM blobs", db=db), 30,
                 "its own blob deleted")
        assert psql("SELECT count(*) FROM blob_chunks WHERE sha='%s'" % sha_only, db=db).strip() == "0"
        assert sha_shared in psql("SELECT sha FROM blobs", db=db)
        assert get_bytes(s, base2 + "/artifacts/content?name=shared.bin") == (200, shared)
    finally:
        s.stop()


def conflicting_uploads(env):
    """12 concurrent uploads on a node whose writes lose conflicts (injected):
    every client gets 200, each artifact is recorded once, and each of its
    events is stored once and published live once (a rolled-back run of a
    write ran its post-commit hooks with committed=false only).  Returns the
    node's log."""
    url = pgcluster.new_database()
    s = Server(extra_args=["--store", url, "--slots", "-1"], env=env)
    try:
        t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "conf", "run": True}), 201)
        run = run_of(s, t["id"])
        base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
        live = []
        listener = threading.Thread(target=lambda: live.append(sse_run(s, run)))
        listener.start()
        time.sleep(0.3)   # let the listener subscribe (not an assertion)
        results = []

        def upload(i):
            results.append(s.req("POST", base + "/artifacts", {"artifacts": [
                {"name": "f%d.txt" % i, "content": "content %d" % i}]}))
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(12)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert [r.status for r in results] == [200] * 12, results
        arts = expect(s.req("GET", base), 200)["artifacts"]
        assert sorted(x["name"] for x in arts) == sorted("f%d.txt" % i for i in range(12)), arts
        expect(s.req("POST", base + "/cancel"), 200)   # the run ends: its streams too
        listener.join(30)
        want = collections.Counter("f%d.txt" % i for i in range(12))
        st, evs = sse_run(s, run)
        got = collections.Counter(e[2]["data"]["name"] for e in evs if e[1] == "task_run.artifact")
        assert got == want, got
        assert live and live[0][0] == 200, live
        got = collections.Counter(e[2]["data"]["name"] for e in live[0][1] if e[1] == "task_run.artifact")
        assert got == want, got
        ids = [e[0] for e in live[0][1]]
        assert len(ids) == len(set(ids)), ids
        with open(os.path.join(s.data, "stderr.log"), errors="replace") as f:
            return f.read()
    finally:
        s.stop()


def test_write_conflicts_are_retried_per_job():
    """Each retryable write loses its first run inside its own savepoint."""
    log = conflicting_uploads({"QUERN_PG_FAULT_JOB_CONFLICTS": "1000000"})
    # the 12 uploads, the creation of their task, and the run's cancel
    assert log.count("lost a conflict with another node; retry 1 of") == 14, log[-3000:]
    assert "retry 2 of" not in log, log[-3000:]


def test_write_conflicts_are_retried_per_batch():
    """Whole group commits lose at COMMIT after their jobs succeeded: every
    job of the batch runs again, its hooks are not run twice."""
    log = conflicting_uploads({"QUERN_PG_FAULT_BATCH_CONFLICTS": "1000000"})
    # only batches made of first runs lose (a batch that also holds a second
    # run commits), so how many writes ran twice varies; at least one did
    assert log.count("lost a conflict with another node; retry 1 of") >= 1, log[-3000:]
    assert "retry 2 of" not in log, log[-3000:]



def test_a_writer_connection_marked_broken_recovers_after_its_reset():
    """The server's goodbye (a FATAL notice: a restart, pg_terminate_backend)
    read behind a COMMIT's answer marks the writer's connection broken while
    libpq still says it is up.  The next write resets it, but the flag was
    never cleared, so every write after it was 503 store_unreachable for
    ever; now the reset session writes (injected, twice)."""
    url = pgcluster.new_database()
    s = Server(extra_args=["--store", url], env=dict(ENV, QUERN_PG_FAULT_WRITER_GOODBYES="2"))
    try:
        for i in range(6):
            r = s.req("POST", P + "/tasks", {"assigned_agent_id": "goodbye%d" % i})
            assert r.status == 201, (i, r)
        assert len(expect(s.req("GET", P + "/tasks?limit=50"), 200)["data"]) >= 6
    finally:
        s.stop()


def test_a_read_whose_statement_fails_is_an_error_not_a_404():
    """A read statement that fails on a live connection (here the
    database's statement_timeout, the table held by a lock) answered 404,
    as if the task did not exist; it is now 500 store_error."""
    url = pgcluster.new_database()
    db = url.rsplit("/", 1)[1]
    c = pgcluster.cluster()
    c.psql("ALTER DATABASE %s SET statement_timeout = '300ms'" % db)
    s = Server(extra_args=["--store", url], env=ENV)
    locker = None
    try:
        t = expect(s.req("POST", P + "/tasks", {"assigned_agent_id": "locked"}), 201)
        expect(s.req("GET", P + "/tasks/" + t["id"]), 200)
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(c.port), "-U", pgcluster.SUPERUSER,
             "-d", db, "-c", "SET statement_timeout = 0",
             "-c", "BEGIN", "-c", "LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE",
             "-c", "SELECT pg_sleep(60)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: c.psql("SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = "
                                "l.relation WHERE r.relname = 'tasks' AND l.mode = "
                                "'AccessExclusiveLock' AND l.granted", db=db).strip() == "1",
                 30, "the lock on tasks")
        r = s.req("GET", P + "/tasks/" + t["id"])
        assert r.status == 500 and r.json["error"]["code"] == "store_error", r
    finally:
        if locker:
            locker.kill()
            locker.wait()
        s.stop()


def test_a_storage_listing_whose_sizes_cannot_be_read_is_500_and_leaks_nothing():
    """A storage listing reads each instance's size from storage_state; when
    that read failed (here statement_timeout, the table held by a lock) the
    handler answered 500 but dropped the page it had listed without freeing
    it (LeakSanitizer at exit with QUERN_ASAN=1)."""
    url = pgcluster.new_database()
    db = url.rsplit("/", 1)[1]
    c = pgcluster.cluster()
    c.psql("ALTER DATABASE %s SET statement_timeout = '300ms'" % db)
    s = Server(extra_args=["--store", url], env=ENV)
    locker = None
    try:
        expect(s.req("POST", P + "/storage", {"scope": "project", "name": "locked"}), 201)
        expect(s.req("GET", P + "/storage"), 200)
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(c.port), "-U", pgcluster.SUPERUSER,
             "-d", db, "-c", "SET statement_timeout = 0",
             "-c", "BEGIN", "-c", "LOCK TABLE storage_state IN ACCESS EXCLUSIVE MODE",
             "-c", "SELECT pg_sleep(60)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: c.psql("SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = "
                                "l.relation WHERE r.relname = 'storage_state' AND l.mode = "
                                "'AccessExclusiveLock' AND l.granted", db=db).strip() == "1",
                 30, "the lock on storage_state")
        for _ in range(3):
            r = s.req("GET", P + "/storage")
            assert r.status == 500 and r.json["error"]["code"] == "store_error", r
    finally:
        if locker:
            locker.kill()
            locker.wait()
        s.stop()   # with QUERN_ASAN=1: no leak at exit


def test_an_idempotency_key_that_cannot_be_read_does_nothing():
    """A POST with an Idempotency-Key whose earlier answer could not be read
    (the idempotency table held by a lock past statement_timeout) went on as
    a new request: a client retrying it later made the task twice.  It is
    now 500 store_error with nothing done, and the retry makes it once."""
    url = pgcluster.new_database()
    db = url.rsplit("/", 1)[1]
    c = pgcluster.cluster()
    c.psql("ALTER DATABASE %s SET statement_timeout = '300ms'" % db)
    s = Server(extra_args=["--store", url], env=ENV)
    locker = None
    hdr = {"Idempotency-Key": "idem-locked-1"}
    body = {"assigned_agent_id": "idem", "name": "once"}
    try:
        locker = subprocess.Popen(
            ["psql", "-X", "-q", "-h", "127.0.0.1", "-p", str(c.port), "-U", pgcluster.SUPERUSER,
             "-d", db, "-c", "SET statement_timeout = 0",
             "-c", "BEGIN", "-c", "LOCK TABLE idempotency IN ACCESS EXCLUSIVE MODE",
             "-c", "SELECT pg_sleep(60)"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: c.psql("SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = "
                                "l.relation WHERE r.relname = 'idempotency' AND l.mode = "
                                "'AccessExclusiveLock' AND l.granted", db=db).strip() == "1",
                 30, "the lock on idempotency")
        r = s.req("POST", P + "/tasks", body, headers=hdr)
        assert r.status == 500 and r.json["error"]["code"] == "store_error", r
        locker.kill()
        locker.wait()
        locker = None
        # the server side of the killed psql holds the lock until it is ended
        c.psql("SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_class r ON r.oid = "
               "l.relation WHERE r.relname = 'idempotency' AND l.mode = 'AccessExclusiveLock'",
               db=db)
        wait_for(lambda: c.psql("SELECT count(*) FROM pg_locks l JOIN pg_class r ON r.oid = "
                                "l.relation WHERE r.relname = 'idempotency' AND l.mode = "
                                "'AccessExclusiveLock'", db=db).strip() == "0",
                 30, "the lock on idempotency to go")
        first = expect(s.req("POST", P + "/tasks", body, headers=hdr), 201)
        again = s.req("POST", P + "/tasks", body, headers=hdr)
        assert again.status == 201 and again.json["id"] == first["id"], again
        named = [t for t in expect(s.req("GET", P + "/tasks?limit=500"), 200)["data"]
                 if t.get("name") == "once"]
        assert len(named) == 1, named
    finally:
        if locker:
            locker.kill()
            locker.wait()
        s.stop()


def test_blob_and_retry_unit_program_on_postgres():
    """tests/unit/test_blob.c against this cluster: blob round trips through
    the store (chunk edges, a second store instance reading), and the retry
    loop of store_write_retry with injected conflicts (runs, hooks, give-up)."""
    unit_on_postgres("test_blob")

def test_three_nodes_share_workers_and_code_runs():
    a, b, c = NODES[:3]
    ledger, stop = Ledger(), threading.Event()
    workers = [threading.Thread(target=worker, args=(n, "mn1", ledger, stop)) for n in (a, b, c)
               for _ in range(2)]
    for w in workers:
        w.start()
    tasks, code = [], []
    try:
        for i in range(90):
            n = (a, b, c)[i % 3]
            tasks.append(expect(n.req("POST", P + "/tasks", {"assigned_agent_id": "mn1", "run": True,
                                                            "name": "w%d" % i}), 201))
            if i % 6 == 0:
                code.append(expect(n.req("POST", P + "/tasks", {
                    "runtime_id": "sh", "code": "echo hi from $QUERN_RUN_ID"}), 201))
        wait_for(all_final(b, tasks), 120, "every worker run completed")
        wait_for(all_final(c, code), 120, "every code run completed")
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert ledger.doubles() == {}, ledger.doubles()
    assert len(ledger.leases) == len(tasks), (len(ledger.leases), len(tasks))
    # every attempt started exactly once, whichever node is asked
    for t in tasks[::7] + code:
        run = run_of(a, t["id"])
        assert started_events(c, run) == [1], (run["id"], started_events(c, run))
    # the code ran on more than one node, and each run once
    nodes = {run_of(a, t["id"]).get("node_id") for t in code}
    assert None not in nodes


def test_secrets_need_the_one_key_file_on_every_node():
    """Secrets are sealed under DATA_DIR/secret.key, and each node has its own
    data directory.  A node without the file used to make a key of its own:
    a secret set through it was sealed under that key, and the runs it
    dispatched could not open the others' secrets.  Now the store remembers
    the key's fingerprint: the node refuses, makes no key, and once the
    file is copied to it, sets and opens secrets like the others."""
    def req(n, method, path, body=None):
        # a node's first write after PostgreSQL came back may be 503 "retry it"
        for _ in range(20):
            r = n.req(method, path, body)
            if r.status != 503:
                return r
            time.sleep(0.2)
        return r

    nodes = live()
    a, b = nodes[0], nodes[1]
    for n in nodes:
        req(n, "GET", P + "/secrets")
    r = req(a, "POST", P + "/secrets", {"name": "MN_SECRET", "value": "mn-secret-value-1"})
    assert r.status in (200, 201), r
    bkey = os.path.join(b.data, "secret.key")
    if os.path.exists(bkey):
        os.unlink(bkey)   # copied there by another test: b is the node without it
    r = req(b, "POST", P + "/secrets", {"name": "MN_OTHER", "value": "mn-other-value-2"})
    assert r.status == 500 and r.json["error"]["code"] == "secret_key_unavailable", r
    assert not os.path.exists(bkey), "the node made a key of its own"
    with open(os.path.join(a.data, "secret.key"), "rb") as f:
        good = f.read()
    for n in nodes[1:]:
        k = os.path.join(n.data, "secret.key")
        with open(k, "wb") as f:
            f.write(good)
        os.chmod(k, 0o600)
    expect(req(b, "POST", P + "/secrets", {"name": "MN_OTHER", "value": "mn-other-value-2"}), 201)
    ts = [expect(req(n, "POST", P + "/tasks", {"code": "cat /run/secrets/MN_SECRET /run/secrets/MN_OTHER",
                                                "runtime_id": "sh", "secrets": ["MN_SECRET", "MN_OTHER"]}), 201)
          for n in nodes for _ in range(3)]
    for t in ts:
        run = wait_for(lambda: (lambda r: r if r["status"] in ("completed", "failed") else None)(
            expect(req(a, "GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "run end")
        assert run["status"] == "completed", run


def test_sigkill_of_a_node_mid_load():
    a, b, c = NODES[:3]
    ledger, stop = Ledger(), threading.Event()
    held = []
    tasks = []
    for i in range(30):
        n = (a, b, c)[i % 3]
        tasks.append(expect(n.req("POST", P + "/tasks", {
            "assigned_agent_id": "mn2", "run": True, "settings": {"max_retries": 3}}), 201))
    # a code run on a: the node will die while it runs
    slow = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "sleep 3; echo done",
                                                "settings": {"max_retries": 2}}), 201)
    wait_for(lambda: run_of(a, slow["id"])["status"] == "running", 30, "the code run starts on a")
    # a worker on a takes some runs and dies with a
    ha = threading.Thread(target=worker, args=(a, "mn2", ledger, stop, held))
    ha.start()
    wait_for(lambda: len(held) >= 4, 30, "runs leased through a")
    stop.set()
    ha.join()
    a.kill()
    stop = threading.Event()
    workers = [threading.Thread(target=worker, args=(n, "mn2", ledger, stop)) for n in (b, c)]
    for w in workers:
        w.start()
    try:
        try:
            wait_for(all_final(b, tasks), 120, "every run completed by b and c")
            wait_for(all_final(c, [slow]), 120, "the code run retried elsewhere and completed")
        except AssertionError:
            left = [(r["id"], r["status"], r["attempt"], r.get("lease_expires_at"))
                    for r in (run_of(b, t["id"]) for t in tasks + [slow]) if r["status"] != "completed"]
            logs = {}
            for n, name in ((b, "b"), (c, "c")):
                with open(os.path.join(n.data, "stderr.log"), errors="replace") as f:
                    logs[name] = f.read()[-3000:]
            raise AssertionError("not completed: %r; leader: %r; logs: %r"
                                 % (left, leader_of([b, c]), logs))
        finally:
            stop.set()
            for w in workers:
                w.join()
    finally:
        a.start()   # back for the next tests (as a new node), whatever happened here
    assert ledger.doubles() == {}, ledger.doubles()
    for run in held:
        now = run_of(b, run["task_id"])
        assert now["status"] == "completed" and now["attempt"] == run["attempt"] + 1, now
        errs = [e["code"] for e in now["errors"]]
        assert "lease_expired" in errs, now
    sr = run_of(b, slow["id"])
    assert sr["attempt"] >= 2 and "node_lost" in [e["code"] for e in sr["errors"]], sr
    for t in tasks:
        run = run_of(b, t["id"])
        got = started_events(c, run)
        assert sorted(got) == list(range(1, run["attempt"] + 1)), (run["id"], got)


def test_streams_see_events_of_other_nodes():
    """A run stream and the project stream on one node show, as they happen,
    the events other nodes write: a log entry appended through b (which
    changes no run) and a task created through b; the run stream ends on
    the end c stored, and its ids resume on another node."""
    a, b, c = live()[:3]
    t = expect(a.req("POST", P + "/tasks", {"assigned_agent_id": "mnsse", "run": True}), 201)
    run = run_of(a, t["id"])
    base = P + "/tasks/%s/runs/%s" % (t["id"], run["id"])
    seen = {"run": [], "project": []}

    def follow(name, path):
        seen[name] = sse(a, path, stop=lambda e: seen[name].append(e) or False)[1]
    readers = [threading.Thread(target=follow, args=("run", base + "/stream"), daemon=True),
               threading.Thread(target=follow, args=("project", P + "/events/stream?start=latest"),
                                daemon=True)]
    for th in readers:
        th.start()
    wait_for(lambda: seen["run"], 30, "the run stream's history on a")
    leased = expect(b.req("POST", P + "/workers/lease", {"agent_id": "mnsse", "max": 1,
                                                         "wait_ms": 5000}), 200)["data"]
    assert [r["id"] for r in leased] == [run["id"]], leased
    expect(b.req("POST", base + "/append_log", {"entries": [{"message": "from b"}]}), 200)
    types = lambda name: [e[1] for e in seen[name]]   # noqa: E731
    wait_for(lambda: "task_run.log" in types("run") and "task_run.log" in types("project"),
             15, "the log entry appended through b, on a's streams")
    other = expect(b.req("POST", P + "/tasks", {"assigned_agent_id": "mnsse-none"}), 201)
    wait_for(lambda: any(e[1] == "task.created" and e[2]["task_id"] == other["id"]
                         for e in seen["project"]), 15, "the task created through b, on a")
    expect(c.req("PATCH", base, {"status": "completed", "output": {"ok": True}}), 200)
    readers[0].join(30)
    assert not readers[0].is_alive(), "the run stream on a did not end"
    got = seen["run"]
    stored = expect(b.req("GET", base + "/session_logs"), 200)
    assert [e[0] for e in got] == [e["id"] for e in stored], (got, stored)
    assert got[-1][1] == "task_run.completed", got
    st, rest = sse(c, base + "/stream", headers={"Last-Event-ID": got[1][0]})
    assert st == 200 and [e[0] for e in rest] == [e[0] for e in got[2:]], rest


def test_max_concurrency_holds_across_nodes():
    """settings.max_concurrency caps a key's running runs over every node:
    runs leased through three nodes at once, and code runs dispatched by
    three nodes, never exceed it (each node's scheduler alone counted only
    the runs it had heard of, and three nodes ran three at once)."""
    a, b, c = live()[:3]
    settings = {"concurrency_key": "mnconc", "max_concurrency": 2}
    tasks = [expect((a, b, c)[i % 3].req("POST", P + "/tasks", {
        "assigned_agent_id": "mnconc", "run": True, "settings": settings}), 201) for i in range(6)]
    held, mu = [], threading.Lock()

    def lease(node):
        for _ in range(4):
            r = expect(node.req("POST", P + "/workers/lease",
                                {"agent_id": "mnconc", "max": 5, "wait_ms": 300}), 200)
            with mu:
                held.extend(r["data"])
    ths = [threading.Thread(target=lease, args=(n,)) for n in (a, b, c) for _ in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert len(held) == 2, [(r["id"], r["worker_id"]) for r in held]
    for run in held:
        expect(b.req("PATCH", P + "/tasks/%s/runs/%s" % (run["task_id"], run["id"]),
                     {"status": "completed"}), 200)
    for t in tasks:   # the rest, so that nothing of this key stays queued
        for run in expect(c.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]:
            if run["status"] == "queued":
                expect(c.req("POST", P + "/tasks/%s/runs/%s/cancel" % (t["id"], run["id"]), {}), 200)
    code = [expect((a, b, c)[i % 3].req("POST", P + "/tasks", {
        "runtime_id": "sh", "code": "sleep 0.3", "settings": {
            "concurrency_key": "mnconc-code", "max_concurrency": 1}}), 201) for i in range(9)]
    wait_for(all_final(a, code), 120, "every code run completed")
    spans = sorted((r["started_at"], r["completed_at"], r["node_id"])
                   for r in (run_of(b, t["id"]) for t in code))
    overlaps = [(x, y) for x, y in zip(spans, spans[1:]) if y[0] < x[1]]
    assert not overlaps, overlaps


def test_patch_to_running_holds_max_concurrency_across_nodes():
    """Workers starting runs by PATCH {status: running} through three nodes
    at once: one of a key with max_concurrency 1 starts, the others are
    409 concurrency_limit (all started; a PATCH did not look at the key).
    Runs held for approval hold no slot on any node."""
    nodes = live()[:3]
    st = {"concurrency_key": "mnpatch", "max_concurrency": 1}
    runs = [run_of(nodes[0], expect(nodes[i % 3].req("POST", P + "/tasks", {
        "assigned_agent_id": "mnpatch", "run": True, "settings": st}), 201)["id"]) for i in range(6)]
    got, mu = [], threading.Lock()

    def start(node, run):
        r = node.req("PATCH", P + "/tasks/%s/runs/%s" % (run["task_id"], run["id"]), {"status": "running"})
        with mu:
            got.append(r)
    ths = [threading.Thread(target=start, args=(nodes[i % 3], run)) for i, run in enumerate(runs)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    codes = sorted(r.status for r in got)
    assert codes == [200] + [409] * 5, got
    assert all(r.json["error"]["code"] == "concurrency_limit" for r in got if r.status == 409), got
    running = [r for r in runs if run_of(nodes[1], r["task_id"])["status"] == "running"]
    assert len(running) == 1, running
    for run in runs:
        expect(nodes[2].req("POST", P + "/tasks/%s/runs/%s/cancel" % (run["task_id"], run["id"]), {}), 200)
    # approval: two waiting, one approved through another node is leased at once
    st = {"concurrency_key": "mnappr", "max_concurrency": 1, "require_approval": True}
    runs = [run_of(nodes[0], expect(nodes[i].req("POST", P + "/tasks", {
        "assigned_agent_id": "mnappr", "run": True, "settings": st}), 201)["id"]) for i in range(2)]
    expect(nodes[1].req("POST", P + "/tasks/%s/runs/%s/interaction" % (runs[0]["task_id"], runs[0]["id"]),
                        {"response": {"approved": True}}), 200)
    leased = expect(nodes[2].req("POST", P + "/workers/lease", {"agent_id": "mnappr", "max": 2,
                                                                "wait_ms": 5000}), 200)["data"]
    assert [r["id"] for r in leased] == [runs[0]["id"]], leased
    for run in runs:
        expect(nodes[0].req("POST", P + "/tasks/%s/runs/%s/cancel" % (run["task_id"], run["id"]), {}), 200)


def test_dependants_made_through_another_node_start():
    """A task that depends on A, made through node a just before A's run
    completes through node c, is started: every node that knows a dependant
    acts on the completion, not only the node that stored it (c had often not
    yet heard of the new task, and the chain stopped there: 1-2 in 20 in a
    probe script; a race, so this test does not catch the old code every time).
    And each dependant starts once, however many nodes act."""
    a, b, c = live()[:3]
    pairs = []
    for _ in range(40):
        dep = expect(a.req("POST", P + "/tasks", {"assigned_agent_id": "mndagA", "run": True}), 201)
        ra = wait_for(lambda: expect(c.req("POST", P + "/workers/lease", {
            "agent_id": "mndagA", "max": 1, "wait_ms": 1000}), 200)["data"], 30, "A leased")[0]
        child = expect(a.req("POST", P + "/tasks", {"assigned_agent_id": "mndagB", "run": False,
                                                    "dependencies": [dep["id"]]}), 201)
        expect(c.req("POST", P + "/workers/report", {"results": [
            {"run_id": ra["id"], "attempt": 1, "status": "completed"}]}), 200)
        pairs.append(child)
    def started():
        return all(expect(b.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"] for t in pairs)
    wait_for(started, 30, "every dependant started")
    # complete them all quickly: no node starts one again for the same completion
    done = 0
    while done < len(pairs):
        got = expect(b.req("POST", P + "/workers/lease", {"agent_id": "mndagB", "max": 50,
                                                          "wait_ms": 1000}), 200)["data"]
        assert got, "a dependant's run is missing"
        expect(b.req("POST", P + "/workers/report", {"results": [
            {"run_id": r["id"], "attempt": r["attempt"], "status": "completed"} for r in got]}), 200)
        done += len(got)
    time.sleep(1)   # room for a late node to start one again
    counts = [len(expect(a.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"]) for t in pairs]
    assert counts == [1] * len(pairs), counts
    assert "dependency_runs" not in expect(a.req("GET", P + "/tasks/" + pairs[0]["id"]), 200)


def test_a_second_node_acting_late_on_a_completion_starts_nothing_more():
    """Every node that knows a dependant acts on a dependency's completion:
    one that does so late (here: its write taken for failed and made again
    each second, QUERN_TEST_DEP_START_LOST, until the test lets it go),
    after the other node's work has ended, starts nothing more.  A run made
    blocked on the dependency, released by the completion and ended, and a
    dependant started by a newer completion of its dependency since, were
    each started once more by the late node (run_count 2 and 3)."""
    url = pgcluster.new_database()
    d = tempfile.mkdtemp(prefix="depdup-", dir=os.environ.get("QUERN_TEST_TMP"))
    hold = os.path.join(d, "hold")
    open(hold, "w").close()
    x = Server(extra_args=["--store", url], env=ENV)
    y = Server(extra_args=["--store", url], env=dict(ENV, QUERN_TEST_DEP_START_LOST=hold))
    try:
        def task(**kw):
            return expect(x.req("POST", P + "/tasks", dict({"run": True}, **kw)), 201)

        def finish(agent):
            got = expect(x.req("POST", P + "/workers/lease", {"agent_id": agent, "max": 2,
                                                              "wait_ms": 5000}), 200)["data"]
            assert len(got) == 1, got
            expect(x.req("POST", P + "/workers/report", {"results": [
                {"run_id": got[0]["id"], "attempt": got[0]["attempt"], "status": "completed"}]}), 200)
            return got[0]

        def run_count(t):
            return expect(x.req("GET", P + "/tasks/" + t["id"]), 200)["run_count"]
        a = task(assigned_agent_id="mdd-a")
        b = task(assigned_agent_id="mdd-b", dependencies=[a["id"]])
        c = task(assigned_agent_id="mdd-c")
        e = task(assigned_agent_id="mdd-e", run=False, dependencies=[c["id"]])
        # y hears of the dependants before the completions (commit order);
        # one it did not act on fails the wait below
        ra, rc1 = finish("mdd-a"), finish("mdd-c")
        finish("mdd-b")
        finish("mdd-e")
        expect(x.req("POST", P + "/tasks/%s/runs" % c["id"], {}), 201)
        rc2 = finish("mdd-c")
        finish("mdd-e")
        os.unlink(hold)

        def acted():
            try:
                with open(hold + ".acted") as f:
                    got = set(f.read().split())
            except FileNotFoundError:
                return False
            return all(r["id"] in got for r in (ra, rc1, rc2))
        wait_for(acted, 30, "y acting on the completions")
        assert [run_count(t) for t in (b, e)] == [1, 2], [run_count(t) for t in (b, e)]
        for ag in ("mdd-b", "mdd-e"):
            assert expect(x.req("POST", P + "/workers/lease", {"agent_id": ag}), 200)["data"] == [], ag
    finally:
        for n in (x, y):
            n.stop()


def signed(secret, body):
    import hashlib as hl
    import hmac
    t = int(time.time())
    return "t=%d,sha256=%s" % (t, hmac.new(secret.encode(), b"%d." % t + body, hl.sha256).hexdigest())


def test_a_signed_hook_sent_to_every_node_at_once_starts_one_run():
    """The same signed request to three nodes at once (a sender's retries
    through a load balancer) starts one run; every node answers its id.
    Each fire read the replay record before locking the trigger, so the
    nodes that raced all found none and each started a run."""
    nodes = live()[:3]
    t = expect(nodes[0].req("POST", P + "/tasks", {"assigned_agent_id": "mnhook-in", "run": False}), 201)
    trg = expect(nodes[0].req("POST", P + "/triggers", {"task_id": t["id"]}), 201)
    for i in range(10):
        body = json.dumps({"i": i}).encode()
        sig = signed(trg["secret"], body)
        got = []

        def send(n):
            got.append(n.req("POST", "/hooks/" + trg["id"], raw=body, key=None,
                             headers={"X-Quern-Signature": sig}))
        ths = [threading.Thread(target=send, args=(n,)) for n in nodes]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert [r.status for r in got] == [202] * 3, got
        assert len({r.json["run_id"] for r in got}) == 1, got
        # and replayed later through another node
        again = expect(nodes[(i + 1) % 3].req("POST", "/hooks/" + trg["id"], raw=body, key=None,
                                              headers={"X-Quern-Signature": sig}), 202)
        assert again["run_id"] == got[0].json["run_id"], (again, got)
    runs = expect(nodes[1].req("GET", P + "/tasks/%s/runs?limit=100" % t["id"]), 200)["data"]
    assert len(runs) == 10, [r["input"] for r in runs]
    listed = expect(nodes[2].req("GET", P + "/triggers?task_id=" + t["id"]), 200)["data"]
    assert [x["fire_count"] for x in listed] == [10], listed


def pg_ctl(*args):
    c = pgcluster.cluster()
    subprocess.run(c.prefix + [os.path.join(pgcluster.PGBIN, "pg_ctl"), "-D", c.data, "-l", c.log,
                               "-w"] + list(args), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)


def test_postgres_down_answers_503_and_nodes_recover():
    """While PostgreSQL is down every node answers 503 store_unreachable
    (Retry-After) -- also for a key or a project it has not cached, which
    used to be 401 invalid_api_key and 404 -- and once it is back, the
    first requests succeed (the stale pooled connections used to fail them
    with 500 store_error)."""
    nodes = live()[:2]
    key = expect(nodes[0].req("POST", P + "/api_keys", {"name": "outage", "scopes": ["task:read"]}),
                 201)["key"]
    expect(nodes[0].req("POST", "/api/projects", {"id": "outage", "name": "outage"}), 201)
    for n in nodes:   # every pooled connection of the nodes is used once
        for _ in range(4):
            expect(n.req("GET", P + "/tasks?limit=1"), 200)
    pg_ctl("-m", "fast", "stop")
    try:
        for n in nodes:
            for r in (n.req("GET", P + "/tasks", key=key), n.req("GET", "/api/projects/outage/tasks"),
                      n.req("POST", P + "/tasks", {"assigned_agent_id": "outage"})):
                assert r.status == 503 and r.json["error"]["code"] == "store_unreachable", r
                assert r.header("Retry-After") == "1", r
    finally:
        pg_ctl("restart")   # with the options the cluster was started with
    for n in nodes:
        expect(n.req("GET", P + "/tasks?limit=1"), 200)
        expect(n.req("GET", P + "/tasks?limit=1", key=key), 200)
        expect(n.req("POST", P + "/tasks", {"assigned_agent_id": "outage"}), 201)


def test_first_requests_after_a_postgres_restart_succeed():
    """A pooled read connection whose server restarted while it sat idle
    passed its check (the goodbye came in the same read as the answers to
    its primed BEGIN), so the first requests after a restart that read --
    /readyz, lists, and a write with a key the node had not cached yet --
    were 503 store_unreachable though PostgreSQL was back; such a
    connection is now dropped before use."""
    nodes = live()[:2]
    keys = [expect(nodes[0].req("POST", P + "/api_keys", {"name": "restart%d" % i, "scopes": ["task:write"]}),
                   201)["key"] for i in range(len(nodes))]

    def use_pool(n):   # several pooled connections each run a read and wait primed
        ts = [threading.Thread(target=lambda: [n.req("GET", P + "/tasks?limit=1") for _ in range(4)])
              for _ in range(6)]
        [t.start() for t in ts]
        [t.join() for t in ts]

    for _ in range(2):
        for n in nodes:
            use_pool(n)
        pg_ctl("restart")
        for n, key in zip(nodes, keys):
            expect(n.req("GET", "/readyz", key=None), 200)
            expect(n.req("POST", P + "/tasks", {"assigned_agent_id": "restart"}, key=key), 201)
            for _ in range(6):
                expect(n.req("GET", P + "/tasks?limit=1"), 200)
        keys = [expect(nodes[0].req("POST", P + "/api_keys", {"name": "again", "scopes": ["task:write"]}),
                       201)["key"] for _ in nodes]


def test_a_postgres_outage_logs_one_json_line_per_change():
    """The PostgreSQL backend wrote its errors as plain text (libpq's
    messages spanning several lines) past the JSON log, and one or two per
    request during an outage (86 lines for 40 requests); now every line is
    JSON, and an outage is one line when it starts and one when it ends."""
    n = live()[0]
    expect(n.req("GET", P + "/tasks?limit=1"), 200)
    path = os.path.join(n.data, "stderr.log")
    with open(path, "rb") as f:
        start = len(f.read())
    pg_ctl("-m", "fast", "stop")
    try:
        for _ in range(20):
            assert n.req("GET", P + "/tasks?limit=1").status == 503
            assert n.req("POST", P + "/tasks", {"assigned_agent_id": "outage-log"}).status == 503
        # the scrape says the store could not be read (quern_runs was merely absent)
        m = n.req("GET", "/metrics", key=None)
        assert m.status == 200 and "\nquern_store_up 0\n" in m.text and "quern_runs{" not in m.text, m.text
    finally:
        pg_ctl("restart")
    expect(n.req("POST", P + "/tasks", {"assigned_agent_id": "outage-log"}), 201)
    assert "\nquern_store_up 1\n" in n.req("GET", "/metrics", key=None).text

    def lines():
        with open(path, "rb") as f:
            return f.read()[start:].decode().splitlines()
    wait_for(lambda: any("PostgreSQL is reachable again" in l for l in lines()), 30, "back line")
    got = [json.loads(l) for l in lines()]   # every line is JSON
    assert all({"ts", "level", "component", "msg"} <= set(o) for o in got), got
    down = [o for o in got if o["msg"].startswith("PostgreSQL is unreachable")]
    up = [o for o in got if o["msg"] == "PostgreSQL is reachable again"]
    assert len(down) == 1 and len(up) == 1, got
    assert down[0]["level"] == "error" and "\n" not in down[0]["error"], down
    assert len(got) <= 6, got   # not one per request


def postgres_pids():
    c = pgcluster.cluster()
    with open(os.path.join(c.data, "postmaster.pid")) as f:
        pm = int(f.readline())
    kids = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pm)], stdout=subprocess.PIPE).stdout.split()
    return [pm] + [int(k) for k in kids]


def test_a_paused_postgres_holds_no_request_for_ever():
    """A paused PostgreSQL (SIGSTOP: connections stay open, the kernel
    acknowledges every byte, nothing answers) held /readyz, reads and writes
    for ever, and with them the HTTP threads (so /healthz too); now /readyz
    answers 503 store_unreachable saying the store does not answer, the
    calls under way are cut off, and everything works again on SIGCONT."""
    n = live()[0]
    expect(n.req("GET", P + "/tasks?limit=1"), 200)
    pids = postgres_pids()
    res = {}

    def call(name, method, path, body=None, key=True):
        c = http.client.HTTPConnection(n.host, n.port, timeout=45)   # the old code: never
        h = {"Authorization": "Bearer qk_root_test_key_0123456789"} if key else {}
        try:
            c.request(method, path, body=json.dumps(body) if body else None, headers=h)
            r = c.getresponse()
            res[name] = (r.status, json.loads(r.read() or b"null"))
        except Exception as e:   # noqa: BLE001
            res[name] = (repr(e), None)

    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        ts = [threading.Thread(target=call, args=a) for a in
              [("readyz", "GET", "/readyz", None, False), ("list", "GET", P + "/tasks?limit=1"),
               ("create", "POST", P + "/tasks", {"assigned_agent_id": "paused"})]]
        [t.start() for t in ts]
        [t.join() for t in ts]
        call("healthz", "GET", "/healthz", None, False)
    finally:
        for p in pids:
            os.kill(p, signal.SIGCONT)
    assert res["healthz"][0] == 200, res
    assert res["readyz"][0] == 503 and res["readyz"][1]["error"]["code"] == "store_unreachable", res
    assert "does not answer" in res["readyz"][1]["error"]["message"], res
    assert res["list"][0] == 503, res
    assert res["create"][0] in (500, 503), res   # 500 store_error only if its COMMIT was cut
    wait_for(lambda: n.req("GET", "/readyz", key=None).status == 200, 30, "ready again")
    expect(n.req("POST", P + "/tasks", {"assigned_agent_id": "paused"}), 201)
    expect(n.req("GET", P + "/tasks?limit=1"), 200)


def test_runs_naming_secrets_right_after_postgres_restarts():
    """A code run reads its secrets on the runner's own read connection.
    Left dead by a PostgreSQL restart, that read saw no secret, and the run
    failed secret_unavailable "deleted?" though the secret was there; the
    runner now reads again on a fresh connection."""
    def req(n, method, path, body=None):
        for _ in range(50):   # a node's first write after the restart may be 503 "retry it"
            r = n.req(method, path, body)
            if r.status != 503:
                return r
            time.sleep(0.2)
        return r

    nodes = live()
    r = req(nodes[0], "POST", P + "/secrets", {"name": "MN_AFTER", "value": "mn-after-value-3"})
    assert r.status in (200, 201), r
    with open(os.path.join(nodes[0].data, "secret.key"), "rb") as f:
        good = f.read()
    for n in nodes[1:]:
        k = os.path.join(n.data, "secret.key")
        with open(k, "wb") as f:
            f.write(good)
        os.chmod(k, 0o600)
    # every node's runner reads once (its read connection is in the pool)
    ts = [expect(req(n, "POST", P + "/tasks", {"code": "cat /run/secrets/MN_AFTER", "runtime_id": "sh",
                                                "secrets": ["MN_AFTER"], "wait_for_result": True}), 201)
          for n in nodes]
    pg_ctl("restart")
    ts += [expect(req(n, "POST", P + "/tasks", {"code": "cat /run/secrets/MN_AFTER", "runtime_id": "sh",
                                                 "secrets": ["MN_AFTER"]}), 201)
           for n in nodes for _ in range(2)]
    for t in ts:
        run = wait_for(lambda: (lambda r: r if r["status"] in ("completed", "failed") else None)(
            expect(req(nodes[0], "GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "run end")
        assert run["status"] == "completed", run


def leader_of(nodes):
    """The live nodes whose log says they took the leader lock (and did not lose it)."""
    # ask each live node's log for its latest leadership line
    found = []
    for n in nodes:
        with open(os.path.join(n.data, "stderr.log"), errors="replace") as f:
            lines = f.read().splitlines()
        starts = [i for i, l in enumerate(lines) if "this node (" in l and "is the leader" in l]
        lost = [i for i, l in enumerate(lines) if "no longer the leader" in l]
        if starts and (not lost or lost[-1] < starts[-1]):
            found.append((n, lines[starts[-1]]))
    return found


def test_cron_fires_once_per_instant_across_nodes_and_leader_death():
    nodes = live()
    t = expect(nodes[0].req("POST", P + "/tasks", {"assigned_agent_id": "mncron",
                                                   "schedule": "* * * * * *"}), 201)
    wait_for(lambda: len(expect(nodes[1].req("GET", P + "/tasks/%s/runs?limit=100" % t["id"]), 200)["data"]) >= 3,
             30, "three fires")
    leaders = [n for n, _ in wait_for(lambda: leader_of(live()), 30, "a leader")]
    assert len(leaders) == 1, leaders
    leaders[0].kill()
    rest = live()
    before = len(expect(rest[0].req("GET", P + "/tasks/%s/runs?limit=500" % t["id"]), 200)["data"])
    wait_for(lambda: len(expect(rest[0].req("GET", P + "/tasks/%s/runs?limit=500" % t["id"]), 200)["data"])
             >= before + 4, 30, "fires after the leader died")
    expect(rest[0].req("POST", P + "/tasks/%s/pause" % t["id"]), 200)
    time.sleep(1.5)
    runs = expect(rest[1].req("GET", P + "/tasks/%s/runs?limit=500" % t["id"]), 200)["data"]
    seconds = collections.Counter(r["created_at"][:19] for r in runs)
    assert all(v == 1 for v in seconds.values()), [k for k, v in seconds.items() if v > 1]
    new_leaders = leader_of(live())
    assert len(new_leaders) == 1 and new_leaders[0][0] is not leaders[0], new_leaders
    leaders[0].start()


def node_lock_key(node_id):
    """store_pg.c's node_key(): FNV-1a of the id, top bits fixed."""
    h = 1469598103934665603
    for b in node_id.encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return (h & 0x3FFFFFFFFFFFFFFF) | 0x4000000000000000


def test_a_restart_ends_its_previous_runs_while_postgres_still_holds_the_old_lock():
    """A node killed and started again on its data directory ended its old
    process's code runs only if PostgreSQL had already dropped that
    process's node lock: in the moment before it notices the dead session
    (a flake of test_crash on PostgreSQL) the runs stayed `running`, and the
    leader's sweep ended them seconds later as `node_lost`.  The data
    directory now names its last node id (DATA/node): that process is gone
    whatever pg_locks says.  Here a session holding the old node's lock
    stands in for PostgreSQL's late notice."""
    s = Server(extra_args=["--store", pgcluster.new_database(), "--slots", "1"], env=ENV)
    holder = None
    try:
        t = expect(s.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "sleep 60",
                                                "settings": {"max_retries": 0}}), 201)
        run = wait_for(lambda: (lambda r: r if r["status"] == "running" else None)(
            expect(s.req("GET", P + "/tasks/%s/runs" % t["id"]), 200)["data"][0]), 60, "the run to start")
        node = run["node_id"]
        assert node, run
        holder = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(pgcluster.cluster().port),
                                   "-U", pgcluster.SUPERUSER, "-d", "postgres"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        holder.stdin.write(b"SELECT pg_advisory_lock(%d); SELECT 'held';\n" % node_lock_key(node))
        holder.stdin.flush()
        out = b""
        while b"held" not in out and holder.poll() is None:
            out += holder.stdout.readline()
        assert b"held" in out, out
        s.kill()
        s.start()
        r = expect(s.req("GET", P + "/task-runs/" + run["id"]), 200)
        assert r["status"] == "failed" and r["error"]["code"] == "node_restarted", r
    finally:
        if holder:
            holder.stdin.close()
            holder.wait(30)
        s.stop()


if __name__ == "__main__":
    try:
        for _ in range(3):
            start_node()
        run_tests(dict(globals()))
    finally:
        for n in NODES:
            try:
                n.stop()
            except Exception:
                n.kill()
