#!/usr/bin/python3
"""quern beside the peers on noop-20k: one markdown table per durability pairing.

usage: bench/compare.py [quern-results.jsonl ...]
  default: every bench/results/harness-*.jsonl; the peers' lines are read from
  ../shared/bench/peers/results/*.jsonl (QUERN_PEERS overrides the directory).

Pairings (issue 8):
  durable: quern --fsync always  vs peers that fsync every write
           (beanstalkd -f 0, redis appendfsync always, postgres synchronous_commit=on)
  relaxed: quern --fsync batch   vs the peers' defaults (fsync about every second;
           graphile-worker's default is synchronous_commit=on, listed here too)
Each cell is the median over runs.  "quern / best" divides quern's median by the
best peer's: for throughput higher is better (target >= 2 with the C client, >= 1
with Python); for latency lower is better (target <= 1).
"""
import glob, json, os, statistics, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLS = ["enqueue_per_s", "enqueue_bulk_per_s", "drain_per_s", "e2e_per_s", "p50_ms", "p99_ms"]
LOWER_BETTER = {"p50_ms", "p99_ms"}


def peers_dir():
    for d in (os.environ.get("QUERN_PEERS"), os.path.join(ROOT, "..", "shared", "bench", "peers"),
              os.path.join(ROOT, "..", "..", "shared", "bench", "peers")):
        if d and os.path.isdir(os.path.join(d, "results")):
            return d
    sys.exit("compare.py: cannot find ../shared/bench/peers/results (set QUERN_PEERS)")


def load(files):
    rows = []
    for fn in files:
        with open(fn) as f:
            rows += [json.loads(l) for l in f if l.startswith("{")]
    return rows


def durable(r):
    d = r.get("durability", "")
    return "every 0ms" in d or "appendfsync always" in d or "synchronous_commit=on" in d


def relaxed(r):
    d = r.get("durability", "")
    return "every 0ms" not in d and "appendfsync always" not in d


def group(rows, key):
    g = {}
    for r in rows:
        g.setdefault(key(r), []).append(r)
    return {k: {c: statistics.median(x[c] for x in v) for c in COLS} | {"runs": len(v)}
            for k, v in g.items()}


def fmt(v, c):
    return ("%.3f" % v) if c in LOWER_BETTER else "%d" % round(v)


def table(title, peers, quern):
    print("\n### %s\n" % title)
    print("| system | runs | " + " | ".join(COLS) + " |")
    print("|---" * (len(COLS) + 2) + "|")
    for k, m in sorted(peers.items(), key=lambda kv: -kv[1]["e2e_per_s"]):
        print("| %s | %d | %s |" % (k, m["runs"], " | ".join(fmt(m[c], c) for c in COLS)))
    best = {c: (min if c in LOWER_BETTER else max)(m[c] for m in peers.values()) for c in COLS}
    print("| **best peer** | | %s |" % " | ".join(fmt(best[c], c) for c in COLS))
    for k, m in sorted(quern.items()):
        print("| **%s** | %d | %s |" % (k, m["runs"], " | ".join(fmt(m[c], c) for c in COLS)))
    for k, m in sorted(quern.items()):
        print("| %s / best peer | | %s |" % (k, " | ".join("%.2f" % (m[c] / best[c]) for c in COLS)))


def main():
    files = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "bench", "results", "harness-*.jsonl")))
    q = [r for r in load(files) if r.get("peer") == "quern"]
    p = load(sorted(glob.glob(os.path.join(peers_dir(), "results", "*.jsonl"))))
    pkey = lambda r: "%s %s (%s)" % (r["peer"], r.get("version", ""), r["durability"].split(";")[0])
    qkey = lambda r: "quern %s client" % {"py": "Python", "c": "C"}.get(r.get("lang"), r.get("lang"))
    table("Durable: quern --fsync always vs peers fsyncing every write",
          group([r for r in p if durable(r)], pkey),
          group([r for r in q if r.get("fsync") == "always"], qkey))
    table("Relaxed: quern --fsync batch vs the peers' defaults (fsync ~every second)",
          group([r for r in p if relaxed(r)], pkey),
          group([r for r in q if r.get("fsync") == "batch"], qkey))


if __name__ == "__main__":
    main()
