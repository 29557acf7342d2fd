"""A network cut between one quernd node and PostgreSQL (PostgreSQL runs only).

Node A runs in a network namespace the test creates (qn-<pid>) and reaches
the test's private PostgreSQL cluster over a veth pair; nodes B and C run in
the root namespace on the loopback URL.  A second veth pair carries HTTP
between the test and A, so A stays reachable while its database link is
cut.  The addresses are link-local (169.254/16), one /30 per veth pair,
chosen from the pid; the namespace has no other interface and no default
route, so nothing leaves those two links.

With A the leader, running a code run and holding worker leases, A's
database link is taken down.  Checked: A stops calling itself leader; B or
C takes over and the cron schedule keeps firing once per instant; A's
leased runs come back by lease expiry (lease_expired) and its code run is
ended as node_lost, and B and C complete them all; every attempt of every
run is handed out / started once.  When the link comes back, A reconnects
and serves again: its stale reports are refused, its code run's old attempt
does not overwrite the retry, and new work shared by A, B and C still runs
once per attempt.

Needs root and `ip netns`; skips otherwise.  Namespace and veths are
removed in all cases: by the finally below, and by a reaper process if this
process is killed."""
import collections
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import qlib  # noqa: E402
from qlib import Server, expect, run_tests, wait_for  # noqa: E402


def skip(why):
    print("skip: " + why)
    print("0 passed, 0 failed")
    sys.exit(0)


if os.environ.get("QUERN_TEST_STORE") != "pg":
    skip("a network cut to PostgreSQL needs PostgreSQL (run through tests/run-pg.sh)")
if os.geteuid() != 0:
    skip("network namespaces need root")


def ip(*args, check=True):
    p = subprocess.run(["ip"] + list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if check and p.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), p.stdout.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


try:
    if subprocess.run(["ip", "netns", "list"], stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL).returncode != 0:
        skip("`ip netns` is not available")
except OSError:
    skip("`ip` is not installed")

import pgcluster  # noqa: E402

PID = os.getpid()
NS = "qn-%d" % PID
PG_ROOT, PG_NS = "qpa%d" % PID, "qpb%d" % PID        # the database link
HTTP_ROOT, HTTP_NS = "qha%d" % PID, "qhb%d" % PID    # the test's link to A's API
# eight link-local addresses per pid: two /30s (never 169.254.169.x)
_n = PID % (200 * 32)
_third = 10 + _n // 32
if _third == 169:
    _third = 210
_base = "169.254.%d." % _third
_b = (_n % 32) * 8
PG_ROOT_ADDR, PG_NS_ADDR = _base + str(_b + 1), _base + str(_b + 2)
HTTP_ROOT_ADDR, HTTP_NS_ADDR = _base + str(_b + 5), _base + str(_b + 6)

P = "/api/projects/default"
ENV = {"QUERN_LEASE_MS": "3000"}
NODES = []

# Removes the namespace (killing what still runs in it) and the veths when
# this process goes away for any reason, like pgcluster's reaper.
_REAPER = r"""
import subprocess, sys
ns, links = sys.argv[1], sys.argv[2:]
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
def run(*a):
    return subprocess.run(list(a), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode()
for pid in run("ip", "netns", "pids", ns).split():
    run("kill", "-9", pid)
for l in links:
    run("ip", "link", "del", l)
run("ip", "netns", "del", ns)
"""


class Net:
    def __init__(self):
        r, w = os.pipe()
        self.reaper = subprocess.Popen([sys.executable, "-c", _REAPER, NS, PG_ROOT, HTTP_ROOT],
                                       stdin=r, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(r)
        self._pipe = w
        ip("netns", "add", NS)
        ip("-n", NS, "link", "set", "lo", "up")
        for root, inner, ra, na in ((PG_ROOT, PG_NS, PG_ROOT_ADDR, PG_NS_ADDR),
                                    (HTTP_ROOT, HTTP_NS, HTTP_ROOT_ADDR, HTTP_NS_ADDR)):
            ip("link", "add", root, "type", "veth", "peer", "name", inner, "netns", NS)
            ip("addr", "add", ra + "/30", "dev", root)
            ip("-n", NS, "addr", "add", na + "/30", "dev", inner)
            ip("link", "set", root, "up")
            ip("-n", NS, "link", "set", inner, "up")

    def cut(self, how):
        """Cuts the database link: "down" takes A's end down (A's sends fail
        at once, the server hears nothing); "silent" keeps the link up and
        points both ends' neighbour entries at MACs nobody has, so every
        frame is dropped by the receiving veth and both sides hear nothing."""
        if how == "down":
            ip("-n", NS, "link", "set", PG_NS, "down")
        else:
            ip("-n", NS, "neigh", "replace", PG_ROOT_ADDR, "lladdr", "02:00:00:00:00:01",
               "dev", PG_NS, "nud", "permanent")
            ip("neigh", "replace", PG_NS_ADDR, "lladdr", "02:00:00:00:00:02",
               "dev", PG_ROOT, "nud", "permanent")

    def mend(self):
        ip("-n", NS, "link", "set", PG_NS, "up")
        ip("-n", NS, "neigh", "del", PG_ROOT_ADDR, "dev", PG_NS, check=False)
        ip("neigh", "del", PG_NS_ADDR, "dev", PG_ROOT, check=False)

    def close(self):
        os.close(self._pipe)       # the reaper removes everything
        self.reaper.wait(60)


def start_pg():
    """The private cluster, restarted to listen on the database veth as well,
    trusting A's address."""
    c = pgcluster.cluster()
    hba = os.path.join(c.data, "pg_hba.conf")
    with open(hba, "a") as f:
        f.write("\nhost all all %s/32 trust\n" % PG_NS_ADDR)
    opts = ("-p %d -k %s -c listen_addresses=127.0.0.1,%s -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
            "-c shared_buffers=32MB -c logging_collector=off" % (c.port, c.top, PG_ROOT_ADDR))
    c._run([os.path.join(pgcluster.PGBIN, "pg_ctl"), "-D", c.data, "-l", c.log, "-o", opts,
            "-w", "-t", "60", "restart"])


def start_nodes():
    """A new database; A (in the namespace, through the veth) started first
    so that it leads, then B and C on the loopback URL."""
    url = pgcluster.new_database()
    veth_url = url.replace("@127.0.0.1:", "@%s:" % PG_ROOT_ADDR)
    del NODES[:]
    NODES.append(NsServer(extra_args=["--store", veth_url, "--slots", "2"], env=ENV))
    wait_for(lambda: leader_of(NODES), 30, "A leads")
    for _ in range(2):
        NODES.append(Server(extra_args=["--store", url, "--slots", "2"], env=ENV))
    return url.rsplit("/", 1)[1]


def stop_nodes():
    for n in NODES:
        try:
            n.stop()
        except Exception:
            n.kill()


class NsServer(Server):
    """A quernd inside the namespace, listening on the HTTP veth."""
    def start(self):
        env = dict(os.environ, QUERN_BOOTSTRAP_KEY=qlib.ROOT_KEY, **self.env)
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", NS, os.path.join(qlib.BUILD, "quernd"),
             "--listen", HTTP_NS_ADDR + ":0", "--data", self.data] + self.extra,
            stdout=subprocess.PIPE, stderr=open(os.path.join(self.data, "stderr.log"), "ab"), env=env)
        line = self.proc.stdout.readline().decode()
        if "listening on http://" not in line:
            raise RuntimeError("quernd did not start in %s: %s" % (NS, line))
        self.host, port = line.strip().rsplit("http://", 1)[1].rsplit(":", 1)
        self.port = int(port)

    def conn(self):
        import http.client
        return http.client.HTTPConnection(self.host, self.port, timeout=90)


def log_of(n):
    with open(os.path.join(n.data, "stderr.log"), errors="replace") as f:
        return f.read()


def leader_of(nodes):
    """The nodes whose log says they hold the leader lock now."""
    found = []
    for n in nodes:
        lines = log_of(n).splitlines()
        starts = [i for i, l in enumerate(lines) if "this node (" in l and "is the leader" in l]
        lost = [i for i, l in enumerate(lines) if "no longer the leader" in l]
        if starts and (not lost or lost[-1] < starts[-1]):
            found.append(n)
    return found


def node_id_of(n):
    """A node's id, from its leadership line or its code runs (None if unknown)."""
    for l in log_of(n).splitlines():
        if "this node (" in l:
            return l.split("this node (", 1)[1].split(")", 1)[0]
    return None


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


def worker(node, agent, ledger, stop, hold=None, hold_max=None):
    """Leases from one node and completes; with hold (a list) keeps up to
    hold_max runs without reporting (a worker cut off with its node)."""
    while not stop.is_set() and node.proc.poll() is None:
        want = 4
        if hold is not None:
            want = min(4, hold_max - len(hold))
            if want <= 0:
                return
        try:
            r = node.req("POST", P + "/workers/lease",
                         {"agent_id": agent, "max": want, "wait_ms": 300,
                          "worker_id": "w%d" % node.port})
        except OSError:
            time.sleep(0.2)
            continue
        if r.status != 200:
            time.sleep(0.1)
            continue
        for run in r.json["data"]:
            ledger.add(run)
            if hold is not None:
                hold.append(run)
                continue
            res = {"run_id": run["id"], "attempt": run["attempt"], "status": "completed",
                   "output": {"by": node.port}}
            for _ in range(40):
                try:
                    rr = node.req("POST", P + "/workers/report", {"results": [res]})
                except OSError:
                    time.sleep(0.2)
                    continue
                if rr.status == 200:
                    break
                time.sleep(0.1)


def creator(node, agent, out, stop):
    """Creates tasks through node until stop; keeps those acknowledged."""
    while not stop.is_set():
        try:
            r = node.req("POST", P + "/tasks", {"assigned_agent_id": agent, "run": True,
                                                "settings": {"max_retries": 3}})
        except OSError:
            time.sleep(0.2)
            continue
        if r.status == 201:
            out.append(r.json)
        else:
            time.sleep(0.1)


def runs_of(node, task_id, limit=100):
    return expect(node.req("GET", P + "/tasks/%s/runs?limit=%d" % (task_id, limit)), 200)["data"]


def run_of(node, task_id):
    return runs_of(node, task_id, 1)[0]


def started_events(node, run):
    st, evs = qlib.sse(node, P + "/tasks/%s/runs/%s/stream?start=earliest"
                       % (run["task_id"], run["id"]))
    assert st == 200, evs
    return [e[2]["data"]["attempt"] for e in evs if e[1] == "task_run.started"]


def all_final(node, tasks, status="completed"):
    return lambda: all(run_of(node, t["id"])["status"] == status for t in tasks)


def once_per_second(node, task_id):
    runs = runs_of(node, task_id, 500)
    seconds = collections.Counter(r["created_at"][:19] for r in runs)
    return [k for k, v in seconds.items() if v > 1]


def pg_sessions(db):
    """What every session of the test database is doing (printed on failure)."""
    return pgcluster.cluster().psql(
        "SELECT pid, application_name, client_addr, state, wait_event_type, wait_event, "
        "now() - xact_start, left(query, 60) FROM pg_stat_activity WHERE datname = '%s'"
        % db)


def scenario(how):
    db = start_nodes()
    try:
        cut_scenario(how)
    except BaseException:
        print(pg_sessions(db))
        raise
    finally:
        stop_nodes()
        net.mend()


def test_link_down_between_a_node_and_postgres():
    scenario("down")


def test_silent_cut_between_a_node_and_postgres():
    scenario("silent")


def cut_scenario(how):
    a, b, c = NODES
    ledger = Ledger()
    a_id = node_id_of(a)
    assert leader_of([a, b, c]) == [a], "A started first and should lead"
    cron = expect(b.req("POST", P + "/tasks", {"assigned_agent_id": "nccron",
                                               "schedule": "* * * * * *"}), 201)
    wait_for(lambda: len(runs_of(c, cron["id"])) >= 3, 30, "three cron fires led by A")

    tasks = []
    for i in range(30):
        n = (a, b, c)[i % 3]
        tasks.append(expect(n.req("POST", P + "/tasks", {
            "assigned_agent_id": "nc", "run": True, "name": "nc%d" % i,
            "settings": {"max_retries": 3}}), 201))
    # a code run executing on A when the link goes
    slow = None
    for _ in range(5):
        t = expect(a.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "sleep 6; echo done",
                                                 "settings": {"max_retries": 2}}), 201)
        wait_for(lambda: run_of(a, t["id"])["status"] == "running", 30, "the code run starts")
        if run_of(a, t["id"]).get("node_id") == a_id:
            slow = t
            break
    assert slow, "no code run started on A"
    slow_run = run_of(a, slow["id"])
    # a worker on A takes some runs and is cut off with A
    held, stop = [], threading.Event()
    ha = threading.Thread(target=worker, args=(a, "nc", ledger, stop, held, 6))
    ha.start()
    ha.join(60)
    assert len(held) >= 1, held

    # load through A across the cut: its writer is most likely inside a
    # transaction (holding row and event locks) when the link goes
    loaded, lstop = [], threading.Event()
    loaders = [threading.Thread(target=creator, args=(a, "nc", loaded, lstop)) for _ in range(3)]
    for t in loaders:
        t.start()
    wait_for(lambda: len(loaded) >= 10, 30, "load through A")
    net.cut(how)
    fires_at_cut = len(runs_of(b, cron["id"], 500))
    stop = threading.Event()
    # workers on B and C, and one on A that keeps trying through the cut
    workers = [threading.Thread(target=worker, args=(n, "nc", ledger, stop)) for n in (b, c, a)]
    for w in workers:
        w.start()
    try:
        wait_for(lambda: "no longer the leader" in log_of(a), 30, "A gives up leadership")
        new = wait_for(lambda: [n for n in leader_of([b, c])], 30, "B or C takes over")
        assert len(new) == 1, new
        wait_for(all_final(b, tasks), 120, "every worker run completed through B and C")
        wait_for(all_final(c, [slow]), 120, "A's code run retried elsewhere and completed")
        wait_for(lambda: len(runs_of(c, cron["id"], 500)) >= fires_at_cut + 4, 30,
                 "the schedule fires during the cut")
        for run in held:
            now = run_of(b, run["task_id"])
            assert now["status"] == "completed" and now["attempt"] == run["attempt"] + 1, now
            assert "lease_expired" in [e["code"] for e in now["errors"]], now
        sr = run_of(b, slow["id"])
        assert sr["attempt"] >= 2 and "node_lost" in [e["code"] for e in sr["errors"]], sr
        assert sr["node_id"] != a_id, sr

        net.mend()
        lstop.set()
        for t in loaders:
            t.join(120)
        tasks += loaded
        wait_for(all_final(b, tasks), 120, "every run created through A completed")
        # A reconnects and knows what happened meanwhile
        wait_for(lambda: run_of(a, slow["id"])["status"] == "completed", 60,
                 "A sees the retried code run completed")
        wait_for(lambda: all(run_of(a, t["id"])["status"] == "completed" for t in tasks), 60,
                 "A sees every run completed")
        # the cut-off worker's late reports through A change nothing
        late = [{"run_id": r["id"], "attempt": r["attempt"], "status": "completed",
                 "output": {"late": True}} for r in held]
        rr = a.req("POST", P + "/workers/report", {"results": late})
        assert rr.status in (200, 409), rr
        for run in held:
            now = run_of(c, run["task_id"])
            assert now["attempt"] == run["attempt"] + 1 and now["output"] != {"late": True}, now
        # new work shared by all three, A included
        more = [expect((a, b, c)[i % 3].req("POST", P + "/tasks", {
            "assigned_agent_id": "nc", "run": True, "name": "after%d" % i}), 201)
            for i in range(15)]
        wait_for(all_final(a, more), 120, "work after the cut completed")
        code = [expect(n.req("POST", P + "/tasks", {"runtime_id": "sh", "code": "echo again"}), 201)
                for n in (a, a, b)]
        wait_for(all_final(b, code), 60, "code runs after the cut completed")
    finally:
        lstop.set()
        stop.set()
        for w in workers:
            w.join(120)
        net.mend()

    assert ledger.doubles() == {}, ledger.doubles()
    for t in tasks + more:
        run = run_of(b, t["id"])
        got = started_events(c, run)
        assert sorted(got) == list(range(1, run["attempt"] + 1)), (run["id"], got)
    sr = run_of(a, slow["id"])
    assert started_events(b, sr) == list(range(1, sr["attempt"] + 1)), started_events(b, sr)
    assert sr["status"] == "completed" and sr["attempt"] == run_of(c, slow["id"])["attempt"]
    assert slow_run["attempt"] == 1
    # still exactly one leader, and the schedule fired once per instant
    expect(c.req("POST", P + "/tasks/%s/pause" % cron["id"]), 200)
    time.sleep(1.5)
    assert once_per_second(a, cron["id"]) == []
    assert len(leader_of([a, b, c])) == 1, leader_of([a, b, c])
    assert any("is gone: ending its code runs" in log_of(n) for n in (b, c))


if __name__ == "__main__":
    net = None
    try:
        net = Net()
        start_pg()
        run_tests(dict(globals()))
    finally:
        stop_nodes()
        if net:
            net.close()
