#!/usr/bin/python3
"""quern producer and worker for the peers' harness (../shared/bench/peers/harness.py).

Python stdlib only: one keep-alive http.client connection per process, the same
weight as the peers' beanstalkd client (bs.py), so the comparison is server
against server.

usage:
  quern_client.py setup                  create the no-code definition, print its id
  quern_client.py producer MODE N RATE OUT
  quern_client.py worker DIR
env: QUERN_URL (http://127.0.0.1:PORT), QUERN_KEY (a key with task:write + worker),
     QUERN_DEF (the definition id from `setup`), QUERN_LEASE_MAX (default 64).

A job is a task of a definition without code, created with "run": true, so its
run is queued at once and workers lease it with the cheap filter
{"definitions": [id]}.  Single enqueue = POST .../tasks; bulk = POST
.../tasks/batch with 1000 tasks.  A worker long-polls POST .../workers/lease
(max QUERN_LEASE_MAX, wait 30 s), "runs" each job (no body), reports the whole
batch as completed in one POST .../workers/report, and once that reply has
arrived writes the harness's per-job line (the beanstalkd client does the same
after its DELETED reply).
"""
import http.client
import json
import os
import sys
import time
from urllib.parse import urlsplit


def _peers_dir():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(os.path.dirname(here))
    for d in (os.environ.get("QUERN_PEERS"), os.path.join(root, "..", "shared", "bench", "peers"),
              os.path.join(root, "..", "..", "shared", "bench", "peers")):
        if d and os.path.exists(os.path.join(d, "pyrec.py")):
            return d
    sys.exit("quern_client.py: cannot find ../shared/bench/peers (set QUERN_PEERS)")


sys.path.insert(0, _peers_dir())
from pyrec import Rec, pace  # noqa: E402  (the peers' recorder, used in place)

BASE = "/api/projects/default"
BATCH = 1000


class Conn:
    def __init__(self):
        u = urlsplit(os.environ.get("QUERN_URL", "http://127.0.0.1:7070"))
        self.c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=120)
        self.c.connect()  # http.client sets TCP_NODELAY
        # Prefer: a producer needs the ids only ({id, status, run_id} per task,
        # as a peer's enqueue answers with its job id), not the whole task
        self.h = {"Authorization": "Bearer " + os.environ["QUERN_KEY"],
                  "Content-Type": "application/json", "Prefer": "return=minimal"}

    def post(self, path, body):
        self.c.request("POST", BASE + path, body, self.h)
        r = self.c.getresponse()
        data = r.read()
        if r.status >= 300:
            raise RuntimeError("POST %s: %d %s" % (path, r.status, data[:300]))
        return data


def setup():
    body = json.dumps({"title": "bench-noop", "description": "no code: leased by bench workers"})
    print(json.loads(Conn().post("/definitions", body))["id"])


def producer(mode, n, rate, out):
    c, d = Conn(), os.environ["QUERN_DEF"]
    t0 = time.time()
    if mode == "bulk":
        for b in range(0, n, BATCH):
            tasks = [{"definition_id": d, "run": True, "input": {"i": i, "ts": time.time()}}
                     for i in range(b, min(n, b + BATCH))]
            c.post("/tasks/batch", json.dumps({"tasks": tasks}))
    else:
        for i in range(n):
            if mode == "rate":
                pace(i, t0, rate)
            c.post("/tasks", json.dumps({"definition_id": d, "run": True,
                                         "input": {"i": i, "ts": time.time()}}))
    t1 = time.time()
    json.dump({"t0": t0, "t1": t1}, open(out, "w"))


def worker(d):
    rec, c = Rec(d), Conn()
    lease = json.dumps({"worker_id": "py-%d" % os.getpid(), "definitions": [os.environ["QUERN_DEF"]],
                        "max": int(os.environ.get("QUERN_LEASE_MAX", "64")), "wait_ms": 30000})
    rec.ready()
    while True:
        runs = json.loads(c.post("/workers/lease", lease))["data"]
        if not runs:
            continue
        start = time.time()
        results = [{"run_id": r["id"], "attempt": r["attempt"], "status": "completed"} for r in runs]
        rep = json.loads(c.post("/workers/report", json.dumps({"results": results})))["data"]
        bad = [x for x in rep if not x.get("ok")]
        if bad:
            raise RuntimeError("report refused: %r" % bad[:3])
        for r in runs:
            rec.done(r["input"]["ts"], start)


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup()
    elif sys.argv[1] == "producer":
        producer(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        worker(sys.argv[2])
