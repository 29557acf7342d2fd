#!/usr/bin/env python3
"""SSE fan-out: events per second delivered to N concurrent subscribers of a
project's event stream, and the memory N idle subscribers cost quernd.

  python3 bench/sse_bench.py [--subs 1000] [--events 2000] [--idle 10000]

Starts build/quernd on a free port in a temp dir; prints JSON lines.
"""
import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

KEY = "qk_sse_bench_0123456789"


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def req(base, method, path, body=None):
    r = urllib.request.Request(base + path, method=method,
                               data=json.dumps(body).encode() if body is not None else None,
                               headers={"Authorization": "Bearer " + KEY,
                                        "Content-Type": "application/json"})
    with urllib.request.urlopen(r) as resp:
        return json.loads(resp.read())


async def subscriber(host, port, path, want, counts, i, ready):
    """Counts task_run.log events, decoding HTTP chunked framing first (a
    chunk boundary can fall anywhere inside an SSE line)."""
    r, w = await asyncio.open_connection(host, port)
    w.write(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (path, KEY)).encode())
    await w.drain()
    while (await r.readline()) not in (b"\r\n", b""):
        pass   # status line and headers
    n, pending = 0, b""
    while n < want:
        size_line = await r.readline()
        if not size_line:
            break
        size = int(size_line.strip() or b"0", 16)
        if size == 0:
            break
        data = await r.readexactly(size)
        await r.readexactly(2)
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.startswith(b"event: task_run.log"):
                n += 1
        counts[i] = n
    w.close()


async def idle(host, port, path, conns):
    r, w = await asyncio.open_connection(host, port)
    w.write(("GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n" % (path, KEY)).encode())
    await w.drain()
    conns.append(w)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--subs", type=int, default=1000)
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--build", default=os.environ.get("QUERN_BUILD", "build"))
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    data = tempfile.mkdtemp(prefix="quern-sse-")
    p = subprocess.Popen([os.path.join(a.build, "quernd"), "--listen", "127.0.0.1:0", "--data", data,
                          "--fsync", "batch", "--slots", "-1"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, env=dict(os.environ, QUERN_BOOTSTRAP_KEY=KEY))
    line = p.stdout.readline().decode()
    hostport = line.strip().rsplit("http://", 1)[1]
    host, port = hostport.rsplit(":", 1)
    port = int(port)
    base = "http://" + hostport
    try:
        t = req(base, "POST", "/api/projects/default/tasks", {"assigned_agent_id": "sse", "run": True})
        run = req(base, "GET", "/api/projects/default/tasks/%s/runs" % t["id"])["data"][0]
        path = "/api/projects/default/events/stream?start=latest"
        counts = [0] * a.subs
        ready = asyncio.Event()
        subs = [asyncio.create_task(subscriber(host, port, path, a.events, counts, i, ready))
                for i in range(a.subs)]
        await asyncio.sleep(2)   # let every subscriber connect
        rss0 = rss_kb(p.pid)
        t0 = time.monotonic()
        per = 100
        loop = asyncio.get_running_loop()
        for b in range(a.events // per):
            await loop.run_in_executor(None, req, base, "POST",
                                       "/api/projects/default/tasks/%s/runs/%s/append_log" % (t["id"], run["id"]),
                                       {"entries": [{"message": "e%d" % (b * per + k)} for k in range(per)]})
        try:
            await asyncio.wait_for(asyncio.gather(*subs), a.timeout)
        except asyncio.TimeoutError:
            short = [c for c in counts if c < a.events]
            print(json.dumps({"bench": "sse_fanout", "error": "timed out", "short_subscribers": len(short),
                              "min_received": min(counts), "events": a.events}))
            raise SystemExit(1)
        dt = time.monotonic() - t0
        delivered = sum(counts)
        print(json.dumps({"bench": "sse_fanout", "subscribers": a.subs, "events": a.events,
                          "delivered": delivered, "secs": round(dt, 2),
                          "deliveries_per_s": round(delivered / dt),
                          "quernd_rss_kb": rss_kb(p.pid), "rss_growth_kb": rss_kb(p.pid) - rss0}))
        conns = []
        rss1 = rss_kb(p.pid)
        for k in range(0, a.idle, 500):
            await asyncio.gather(*(idle(host, port, path, conns) for _ in range(min(500, a.idle - k))))
        await asyncio.sleep(2)
        rss2 = rss_kb(p.pid)
        print(json.dumps({"bench": "sse_idle", "subscribers": len(conns), "rss_growth_kb": rss2 - rss1,
                          "bytes_per_idle_subscriber": round((rss2 - rss1) * 1024 / max(1, len(conns)))}))
        for w in conns:
            w.close()
    finally:
        p.terminate()
        p.wait(30)
        subprocess.run(["rm", "-rf", data])


if __name__ == "__main__":
    asyncio.run(main())
