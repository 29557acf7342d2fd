#!/usr/bin/env python3
"""quern's test runner.

--unit BIN...            runs each unit-test program (each prints "N passed, M failed")
--integration DIR        runs every DIR/test_*.py in its own process, in parallel

Every program runs with a timeout in its own temp directory.  The last line is
"N passed, M failed" over everything that ran; the exit code is 0 only when
nothing failed and something passed.
"""
import concurrent.futures as cf
import os
import re
import subprocess
import sys
import tempfile
import time

TIMEOUT = int(os.environ.get("QUERN_TEST_TIMEOUT", "600"))
JOBS = int(os.environ.get("QUERN_TEST_JOBS", str(max(2, (os.cpu_count() or 2) * 2))))
LINE = re.compile(r"^(\d+) passed, (\d+) failed", re.M)


def run_one(cmd, label):
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="quern-test-") as tmp:
        env = dict(os.environ, QUERN_TEST_TMP=tmp)
        try:
            p = subprocess.run(cmd, cwd=os.getcwd(), env=env, capture_output=True,
                               text=True, timeout=TIMEOUT, errors="replace")
            out, rc = p.stdout + p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
            out += f"\nTIMEOUT after {TIMEOUT}s\n"
            rc = -1
    m = LINE.findall(out)
    passed = sum(int(a) for a, _ in m)
    failed = sum(int(b) for _, b in m)
    if rc != 0 and failed == 0:
        failed = 1  # crashed, sanitizer report, or timed out
    return label, passed, failed, rc, out, time.monotonic() - start


def main():
    args = sys.argv[1:]
    cmds = []
    if args and args[0] == "--unit":
        cmds = [([b], os.path.basename(b)) for b in args[1:]]
    elif args and args[0] == "--integration":
        d = args[1]
        only = os.environ.get("QUERN_TEST_ONLY")
        for f in sorted(os.listdir(d)):
            if f.startswith("test_") and f.endswith(".py"):
                if only and only not in f:
                    continue
                cmds.append(([sys.executable, os.path.join(d, f)], f))
    else:
        print(__doc__)
        return 2
    total_p = total_f = 0
    with cf.ThreadPoolExecutor(JOBS) as ex:
        futs = [ex.submit(run_one, c, l) for c, l in cmds]
        for fu in cf.as_completed(futs):
            label, p, f, rc, out, dur = fu.result()
            total_p += p
            total_f += f
            status = "ok" if f == 0 else "FAIL"
            print(f"{status:4} {label}: {p} passed, {f} failed ({dur:.1f}s)", flush=True)
            if f:
                print("\n".join("    " + l for l in out.splitlines()[-80:]), flush=True)
    print(f"{total_p} passed, {total_f} failed")
    return 0 if total_f == 0 and total_p > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
