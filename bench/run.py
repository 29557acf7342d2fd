#!/usr/bin/python3
"""quern's own micro benchmarks (bench/qbench.c), one fresh quernd per figure.

usage: bench/run.py [--fsync always,batch] [--quick] [--out FILE]

Each benchmark starts build/quernd on a free loopback port in a temp dir,
creates a definition without code, runs one qbench command, and prints one
JSON line: qbench's figures plus the server's peak RSS (VmHWM), its CPU
seconds during the benchmark (utime+stime from /proc), the client's CPU
seconds, and the exact command.  A markdown table follows on stderr.
"""
import argparse, json, os, resource, shutil, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("QUERN_BUILD", "build")
QBENCH = os.path.join(ROOT, BUILD, "bench", "qbench")
CLK = os.sysconf("SC_CLK_TCK")


class Quernd:
    def __init__(self, fsync):
        self.dir = tempfile.mkdtemp(prefix="quern-bench-")
        self.key = "qk_bench_" + os.urandom(16).hex()
        env = dict(os.environ, QUERN_BOOTSTRAP_KEY=self.key)
        self.p = subprocess.Popen([os.path.join(ROOT, BUILD, "quernd"), "--listen", "127.0.0.1:0",
                                   "--data", self.dir, "--fsync", fsync], stdout=subprocess.PIPE,
                                  stderr=open(os.path.join(self.dir, "stderr.log"), "wb"), env=env)
        line = self.p.stdout.readline().decode()
        if "listening on" not in line:
            raise SystemExit("quernd did not start: " + line)
        self.url = line.split("listening on ", 1)[1].strip()
        self.env = dict(os.environ, QUERN_URL=self.url, QUERN_KEY=self.key)
        self.env["QUERN_DEF"] = subprocess.check_output(
            ["/usr/bin/python3", os.path.join(ROOT, "bench", "peers", "quern_client.py"), "setup"],
            env=self.env).decode().strip()

    def cpu(self):
        with open("/proc/%d/stat" % self.p.pid) as f:
            v = f.read().rsplit(")", 1)[1].split()
        return (int(v[11]) + int(v[12])) / CLK

    def status(self, field):
        with open("/proc/%d/status" % self.p.pid) as f:
            for l in f:
                if l.startswith(field + ":"):
                    return int(l.split()[1])  # kB

    def disk_bytes(self):
        return sum(os.path.getsize(os.path.join(self.dir, f)) for f in os.listdir(self.dir)
                   if f.startswith("quern.db"))

    def stop(self):
        self.p.terminate()
        try:
            self.p.wait(60)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def qbench(srv, *args):
    cmd = [QBENCH] + [str(a) for a in args]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = srv.cpu()
    out = subprocess.run(cmd, env=srv.env, check=True, stdout=subprocess.PIPE).stdout.decode()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = json.loads(out.strip().splitlines()[-1])
    res["server_cpu_s"] = round(srv.cpu() - c0, 2)
    res["client_cpu_s"] = round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 2)
    res["server_peak_rss_kb"] = srv.status("VmHWM")
    res["command"] = "qbench " + " ".join(str(a) for a in args)
    return res


def one(fsync, *args):
    srv = Quernd(fsync)
    try:
        res = qbench(srv, *args)
    finally:
        srv.stop()
    res["fsync"] = fsync
    return res


def memory(fsync, n):
    srv = Quernd(fsync)
    try:
        time.sleep(0.2)
        rss0 = srv.status("VmRSS")
        disk0 = srv.disk_bytes()
        res = qbench(srv, "create", n, 2, 1000)
        time.sleep(0.5)
        rss1 = srv.status("VmRSS")
        res.update(bench="memory", queued=n, rss0_kb=rss0, rss_kb=rss1,
                   rss_per_queued_run_bytes=round((rss1 - rss0) * 1024 / n),
                   store_bytes_per_run=round((srv.disk_bytes() - disk0) / n), fsync=fsync)
    finally:
        srv.stop()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fsync", default="always,batch")
    ap.add_argument("--quick", action="store_true", help="smaller N (smoke test)")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    a = ap.parse_args()
    k = 10 if a.quick else 1
    out = open(a.out, "a") if a.out else None
    rows = []

    def emit(r):
        rows.append(r)
        line = json.dumps(r)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    for fs in a.fsync.split(","):
        emit(one(fs, "create", 4000 // k, 1, 1))
        emit(one(fs, "create", 8000 // k, 8, 1))
        emit(one(fs, "create", 20000 // k, 1, 1000))
        emit(one(fs, "create", 20000 // k, 4, 1000))
        emit(one(fs, "drain", 10000 // k, 1, 64))
        emit(one(fs, "drain", 10000 // k, 8, 64))
        emit(one(fs, "latency", 1000 // k, 200, 2))
    emit(memory("batch", 100000 // k))

    print("\n| benchmark | fsync | figure | server CPU s | server peak RSS MiB | client CPU s | command |",
          file=sys.stderr)
    print("|---|---|---|---|---|---|---|", file=sys.stderr)
    for r in rows:
        b = r["bench"]
        if b == "create":
            fig = "%s tasks/s (req p50 %.2f ms, p99 %.2f ms)" % (r["tasks_per_s"], r["req_p50_ms"], r["req_p99_ms"])
        elif b == "drain":
            fig = "%s runs/s" % r["runs_per_s"]
        elif b == "latency":
            fig = "p50 %.3f / p99 %.3f / p999 %.3f ms" % (r["p50_ms"], r["p99_ms"], r["p999_ms"])
        else:
            fig = "%d B RSS per queued run (RSS %d -> %d KiB), %d B stored per run" % (
                r["rss_per_queued_run_bytes"], r["rss0_kb"], r["rss_kb"], r["store_bytes_per_run"])
        print("| %s | %s | %s | %s | %.1f | %s | `%s` |" % (
            b, r["fsync"], fig, r["server_cpu_s"], r["server_peak_rss_kb"] / 1024, r["client_cpu_s"],
            r["command"]), file=sys.stderr)


if __name__ == "__main__":
    main()
