"""quernd's peak memory while a box prints without end (`yes`, max_output_bytes 1 GiB,
timeout 10 s), then while its whole log is read back (GET .../logs).  Prints the figures:
python3 bench/output_mem.py [BUILD]  (a program, not a test: tests/integration/test_hostile.py
asserts only a generous bound)."""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "integration"))
if len(sys.argv) > 1:
    os.environ["QUERN_BUILD"] = sys.argv[1]
from qlib import ROOT_KEY, Server, expect  # noqa: E402

S = Server()
P = "/api/projects/default"


def peak_mib():
    st = open("/proc/%d/status" % S.proc.pid).read()
    return int([l for l in st.splitlines() if l.startswith("VmHWM")][0].split()[1]) // 1024


try:
    print("quernd peak RSS at start: %d MiB" % peak_mib())
    t0 = time.monotonic()
    t = expect(S.req("POST", P + "/tasks", {
        "code": "yes quern-quern-quern-quern", "runtime_id": "sh", "wait_for_result": True,
        "settings": {"max_output_bytes": 1 << 30, "timeout_ms": 10000}}), 201)
    print("run: %s after %.1f s; quernd peak RSS %d MiB" % (t["run"]["status"], time.monotonic() - t0,
                                                           peak_mib()))
    c = S.conn()
    c.request("GET", P + "/tasks/%s/runs/%s/logs" % (t["id"], t["run"]["id"]),
              headers={"Authorization": "Bearer " + ROOT_KEY})
    r = c.getresponse()
    lines = size = 0
    t0 = time.monotonic()
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        lines += chunk.count(b"\n")
        size += len(chunk)
    print("GET logs: %d lines, %d MiB in %.1f s; quernd peak RSS %d MiB" % (
        lines, size >> 20, time.monotonic() - t0, peak_mib()))
finally:
    S.stop()
