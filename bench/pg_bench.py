"""Throughput of quernd on SQLite and on PostgreSQL with 1, 2 and 3 nodes.

Prints two figures per setup:
  create/s  durable task creation: POST /tasks (one task per request, fsync
            policy "always": each acknowledged task is committed), from
            CLIENTS concurrent clients spread over the nodes;
  runs/s    end-to-end no-op runs: N queued runs (created in batches), then
            external workers on every node lease (max 100) and report them
            completed in batches; the clock runs from the first lease to the
            last completion.
A benchmark prints figures; it asserts nothing about time.  Needs the
PostgreSQL server binaries (tests/integration/pgcluster.py starts a private
cluster).  Usage: python3 bench/pg_bench.py [--seconds S] [--runs N]
"""
import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
import pgcluster  # noqa: E402
from qlib import Server  # noqa: E402

P = "/api/projects/default"
KEY = "qk_root_test_key_0123456789"


class Client:
    def __init__(self, node):
        self.c = http.client.HTTPConnection(node.host, node.port, timeout=120)

    def req(self, method, path, body=None):
        h = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
        self.c.request(method, path, body=json.dumps(body) if body is not None else None, headers=h)
        r = self.c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None


def bench_create(nodes, seconds, clients):
    stop = time.monotonic() + seconds
    counts = [0] * clients

    def loop(i):
        c = Client(nodes[i % len(nodes)])
        while time.monotonic() < stop:
            st, _ = c.req("POST", P + "/tasks", {"assigned_agent_id": "bench-create", "name": "t"})
            if st == 201:
                counts[i] += 1
    ts = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(counts) / (time.monotonic() - t0)


def bench_runs(nodes, n, agent):
    c = Client(nodes[0])
    left = n
    while left > 0:
        k = min(left, 500)
        st, _ = c.req("POST", P + "/tasks/batch",
                      {"tasks": [{"assigned_agent_id": agent, "run": True} for _ in range(k)]})
        assert st in (200, 201), st
        left -= k
    time.sleep(0.5)   # every node hears of the runs
    done = [0]
    mu = threading.Lock()
    first = [None]

    def worker(node):
        w = Client(node)
        idle = 0
        while True:
            with mu:
                if done[0] >= n:
                    return
            st, body = w.req("POST", P + "/workers/lease", {"agent_id": agent, "max": 100, "wait_ms": 200})
            runs = body["data"] if st == 200 else []
            if not runs:
                idle += 1
                if idle > 25:
                    return
                continue
            idle = 0
            with mu:
                if first[0] is None:
                    first[0] = time.monotonic()
            res = [{"run_id": r["id"], "attempt": r["attempt"], "status": "completed"} for r in runs]
            st, body = w.req("POST", P + "/workers/report", {"results": res})
            ok = sum(1 for x in body["data"] if x["ok"]) if st == 200 else 0
            with mu:
                done[0] += ok
    ts = [threading.Thread(target=worker, args=(nd,)) for nd in nodes for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return done[0] / (time.monotonic() - (first[0] or time.monotonic())), done[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--clients", type=int, default=16)
    a = ap.parse_args()
    build = os.environ.get("QUERN_BUILD", os.path.join(HERE, "..", "build"))
    os.environ["QUERN_BUILD"] = build
    os.environ.pop("QUERN_TEST_STORE", None)
    print("%-22s %10s %10s" % ("store", "create/s", "runs/s"))
    setups = [("sqlite", 1)] + [("postgres", k) for k in (1, 2, 3)]
    for store, k in setups:
        nodes = []
        try:
            if store == "sqlite":
                d = tempfile.mkdtemp(prefix="quern-bench-")
                nodes.append(Server(data=d, extra_args=["--slots", "-1"]))
            else:
                url = pgcluster.new_database()
                for _ in range(k):
                    nodes.append(Server(extra_args=["--store", url, "--slots", "-1"]))
            cr = bench_create(nodes, a.seconds, a.clients)
            rr, n = bench_runs(nodes, a.runs, "bench-runs")
            label = "%s, %d node%s" % (store, k, "s" if k > 1 else "")
            print("%-22s %10.0f %10.0f%s" % (label, cr, rr, "" if n == a.runs else
                                               "  (only %d of %d runs completed)" % (n, a.runs)),
                  flush=True)
        finally:
            for nd in nodes:
                nd.stop()


if __name__ == "__main__":
    main()
