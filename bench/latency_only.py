#!/usr/bin/env python3
"""bench/latency_only.py: only the harness's latency phase, several times, with the
outliers' times: where a p99 comes from.

usage: QUERN_URL=... QUERN_KEY=... QUERN_DEF=... bench/latency_only.py CLIENT [rounds] [n] [rate]
  CLIENT is the worker/producer command (e.g. build/bench/quern_client).
For each round: 8 workers up, n jobs at rate/s (the harness's own functions), then the
latency percentiles and the send times (seconds from the round's start) of the ten
slowest jobs.  A program, not a test: it prints figures and asserts nothing."""
import os
import sys
import tempfile

peers = os.environ.get("QUERN_PEERS", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                   "bench", "peers"))
sys.path.insert(0, peers)
import harness  # noqa: E402

cmd = sys.argv[1]
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
rate = float(sys.argv[4]) if len(sys.argv) > 4 else 200
tmp = tempfile.mkdtemp(prefix="quern-lat-")
for k in range(rounds):
    d = os.path.join(tmp, "lat%d" % k)
    ws = harness.start_workers(cmd + " worker", 8, d, 8)
    p = harness.run_producer(cmd + " producer", "rate", n, rate, tmp)
    rows = harness.wait_done(d, n, 120)
    harness.stop_workers(ws)
    lat = sorted(r[1] for r in rows)
    # a row is (done time, latency ms): the send time is done - latency
    slow = sorted(rows, key=lambda r: -r[1])[:10]
    print("round %d: p50 %.3f p90 %.3f p99 %.3f p999 %.3f max %.3f ms" % (
        k, harness.pct(lat, 50), harness.pct(lat, 90), harness.pct(lat, 99), harness.pct(lat, 99.9),
        lat[-1]))
    print("  t0 %.6f (epoch s); slowest at s: " % p["t0"] + " ".join("%.3f(%.2f)" % (r[0] - r[1] / 1000 - p["t0"], r[1]) for r in slow))
